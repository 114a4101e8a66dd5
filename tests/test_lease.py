"""The lease keeper's scheduling (pure logic: an in-memory queue, no SQS)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from tests.support import eventually
from worker.consume import settler as settler_module
from worker.consume.lease import LeaseKeeper
from worker.consume.memory_sqs import MemoryQueue
from worker.consume.settler import Settler
from worker.consume.sqs import EntryFailure
from worker.metrics import Metrics


class HangingFirstCall(MemoryQueue):
    """A queue whose first ChangeMessageVisibilityBatch never answers (a hung connection).

    The leases here are taken straight from the keeper, so every visibility change is answered
    as a success without a message behind it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.changes: list[list[str]] = []
        self.answered: list[list[str]] = []
        self.hang = asyncio.Event()  # set: the first call answers

    async def change_visibility_batch(
        self, changes: Mapping[str, tuple[str, int]]
    ) -> dict[str, EntryFailure]:
        handles = [handle for handle, _ in changes.values()]
        self.changes.append(handles)
        if len(self.changes) == 1:
            await self.hang.wait()
        self.answered.append(handles)
        return {}


def message(handle: str) -> Any:
    return {"MessageId": handle, "ReceiptHandle": handle, "Attributes": {}}


async def test_a_hung_extension_call_holds_up_no_other_lease() -> None:
    queue = HangingFirstCall()
    keeper = LeaseKeeper(
        queue,
        visibility_timeout=2,
        metrics=Metrics(CollectorRegistry(), queue="q"),
    )
    running = asyncio.create_task(keeper.run())
    try:
        first = keeper.take(message("first"), time.monotonic())
        await eventually(lambda: queue.changes == [["first"]], timeout=5)
        second = keeper.take(message("second"), time.monotonic())
        # Due half a second later: extended by a call of its own while the first still hangs.
        await eventually(lambda: ["second"] in queue.answered, timeout=5)
        assert queue.answered.count(["first"]) == 0
        assert first.extending is not None  # not due again while its call is in flight
        assert ["first"] not in queue.changes[1:]
        assert second.visible_at > time.monotonic()
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def test_a_release_is_sent_after_the_extension_in_flight() -> None:
    # Sent the other way round, the extension would undo the release: a message given back at
    # once would stay invisible for a whole visibility timeout.
    queue = HangingFirstCall()
    metrics = Metrics(CollectorRegistry(), queue="q")
    keeper = LeaseKeeper(queue, visibility_timeout=2, metrics=metrics)
    settled: list[str] = []
    settler = Settler(
        queue,
        queue_name="q",
        metrics=metrics,
        on_settled=lambda lease: settled.append(lease.message_id),
        flush_delay=0.01,
    )
    running = asyncio.create_task(keeper.run())
    try:
        lease = keeper.take(message("m"), time.monotonic())
        await eventually(lambda: queue.changes == [["m"]], timeout=5)  # the extension hangs
        settler.release(lease, reason="shutdown")
        await asyncio.sleep(0.3)
        assert queue.changes == [["m"]]  # the release waits for it
        queue.hang.set()
        await settler.close()
        assert queue.answered == [["m"], ["m"]]  # the extension, then the release
        assert settled == ["m"]
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def test_a_release_waits_for_an_extension_only_so_long(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A call stuck in the SDK's retries must not hold a shutdown's releases past the grace.
    monkeypatch.setattr(settler_module, "_EXTENSION_WAIT_SECONDS", 0.3)
    queue = HangingFirstCall()
    metrics = Metrics(CollectorRegistry(), queue="q")
    keeper = LeaseKeeper(queue, visibility_timeout=2, metrics=metrics)
    settler = Settler(
        queue,
        queue_name="q",
        metrics=metrics,
        on_settled=lambda lease: None,
        flush_delay=0.01,
    )
    running = asyncio.create_task(keeper.run())
    try:
        lease = keeper.take(message("m"), time.monotonic())
        await eventually(lambda: queue.changes == [["m"]], timeout=5)  # hangs for good
        with capture_logs() as logs:
            settler.release(lease, reason="shutdown")
            await settler.close()
        assert queue.answered == [["m"]]  # the release, sent beside the stuck extension
        assert [e["event"] for e in logs] == [
            "sqs.settling_beside_an_extension",
            "message.released",
        ]
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


class RefusesTheReceipt:
    """ChangeMessageVisibilityBatch that refuses every receipt handle, as for a deleted message."""

    def __init__(self, failure: EntryFailure) -> None:
        self.failure = failure
        self.calls = 0

    async def change_visibility_batch(
        self, changes: dict[str, tuple[str, int]]
    ) -> dict[str, EntryFailure]:
        self.calls += 1
        return dict.fromkeys(changes, self.failure)


class TestAGoneReceiptHandle:
    """A visibility change refused for its receipt handle means the message is gone."""

    @pytest.mark.parametrize(
        "failure",
        [
            pytest.param(
                EntryFailure("ReceiptHandleIsInvalid", "not a valid receipt handle", True),
                id="SQS",
            ),
            pytest.param(
                EntryFailure(
                    "InvalidParameterValueException",
                    "Value h for parameter ReceiptHandle is invalid. Reason: Message does not "
                    "exist or is not available for visibility timeout change.",
                    False,
                ),
                id="SenderFault false",
            ),
        ],
    )
    async def test_the_lease_is_lost_and_not_retried(self, failure: EntryFailure) -> None:
        queue = RefusesTheReceipt(failure)
        keeper = LeaseKeeper(
            queue,  # type: ignore[arg-type]  # the keeper calls change_visibility_batch only
            visibility_timeout=2,
            metrics=Metrics(CollectorRegistry(), queue="q"),
        )
        running = asyncio.create_task(keeper.run())
        try:
            with capture_logs() as logs:
                lease = keeper.take(message("m"), time.monotonic())
                await eventually(lambda: lease.lost, timeout=5)
            assert queue.calls == 1
            assert [e["gave_up"] for e in logs if e["event"] == "message.extension_failed"] == [
                True
            ]
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)

    def test_a_failure_of_sqs_itself_is_retried(self) -> None:
        assert not EntryFailure("InternalError", "try again", False).permanent
