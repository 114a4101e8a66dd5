"""The message path end to end, against a moto server over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
import time

import pytest

from tests.brokers import Flaw
from tests.support import (
    Queues,
    break_pollers,
    depth,
    drain,
    eventually,
    make_queues,
    publish,
    running_worker,
    send,
)
from worker import Message, NonRetryableError
from worker.config import Settings
from worker.consume.sqs import open_sqs
from worker.consume.worker import receive_wait_seconds


class Recorder:
    """A handler that records every message it is given."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)

    @property
    def bodies(self) -> list[str]:
        return [message.body for message in self.messages]


class TestDelivery:
    """What a message handler sees, whether or not SNS wraps the payload."""

    async def test_sns_envelope_is_unwrapped(self, queues: Queues) -> None:
        recorder = Recorder()
        await publish(
            queues,
            '{"order": 1}',
            Subject="orders",
            MessageAttributes={"kind": {"DataType": "String", "StringValue": "created"}},
        )
        async with running_worker(queues.settings(), recorder):
            await eventually(lambda: len(recorder.messages) == 1)
        message = recorder.messages[0]
        assert message.body == '{"order": 1}'
        assert message.json() == {"order": 1}
        assert message.sns is not None
        assert message.sns.topic_arn == queues.topic_arn
        assert message.sns.subject == "orders"
        assert message.published_attributes["kind"].value == "created"
        assert message.receive_count == 1
        assert message.sent_at is not None
        assert json.loads(message.raw_body)["Type"] == "Notification"

    async def test_raw_delivery_body_is_the_payload(self, broker_endpoint: str) -> None:
        queues = await make_queues(broker_endpoint, raw_message_delivery=True)
        recorder = Recorder()
        # A String attribute: with raw delivery and a Binary one, moto's receives that ask for
        # all attributes come back empty (a moto flaw, not the worker's).
        await publish(
            queues,
            '{"order": 2}',
            MessageAttributes={"kind": {"DataType": "String", "StringValue": "raw"}},
        )
        async with running_worker(queues.settings(), recorder):
            await eventually(lambda: len(recorder.messages) == 1)
        message = recorder.messages[0]
        assert message.body == message.raw_body == '{"order": 2}'
        assert message.sns is None
        assert message.published_attributes["kind"].value == "raw"


class TestSuccessAndFailure:
    """Success deletes; failure retries with backoff and ends in the DLQ."""

    async def test_success_deletes(self, queues: Queues) -> None:
        recorder = Recorder()
        await publish(queues, *(f"m{i}" for i in range(25)))
        async with running_worker(queues.settings(), recorder) as running:
            await eventually(lambda: len(set(recorder.bodies)) == 25)
        assert running.report.deleted >= 25
        assert await depth(queues, queues.queue_url) == (0, 0)
        assert await depth(queues, queues.dlq_url) == (0, 0)

    async def test_failure_reaches_dlq_after_max_receive_count(self, queues: Queues) -> None:
        calls: list[int] = []

        async def always_fails(message: Message) -> None:
            calls.append(message.receive_count)
            raise RuntimeError("boom")

        await publish(queues, "poison")
        async with running_worker(queues.settings(), always_fails) as running:
            await eventually(lambda: len(calls) == queues.max_receive_count)
            dead = await drain(queues, queues.dlq_url, expect=1)
        assert calls == [1, 2, 3]
        assert len(dead) == 1
        assert json.loads(dead[0]["Body"])["Message"] == "poison"
        assert running.report.failures == {"handler_error": 3}
        assert running.report.deleted == 0

    async def test_retry_waits_out_the_backoff(self, queues: Queues) -> None:
        seen: list[float] = []

        async def fails_once(message: Message) -> None:
            seen.append(time.monotonic())
            if message.receive_count == 1:
                raise RuntimeError("transient")

        await publish(queues, "flaky")
        settings = queues.settings(backoff_base_seconds=2.0, backoff_max_seconds=2.0)
        async with running_worker(settings, fails_once) as running:
            await eventually(lambda: len(seen) == 2)
        assert seen[1] - seen[0] >= 0.9  # equal jitter keeps at least half of the 2 s step
        assert running.report.retried == 1
        assert await depth(queues, queues.queue_url) == (0, 0)

    async def test_non_retryable_is_released_at_once(self, queues: Queues) -> None:
        calls: list[float] = []

        async def rejects(message: Message) -> None:
            calls.append(time.monotonic())
            raise NonRetryableError("bad order")

        await publish(queues, "invalid")
        # The backoff would keep it away for ten minutes: only a release brings it back quickly.
        settings = queues.settings(backoff_base_seconds=600.0, backoff_max_seconds=600.0)
        async with running_worker(settings, rejects) as running:
            dead = await drain(queues, queues.dlq_url, expect=1, timeout=20)
        assert len(calls) == queues.max_receive_count
        assert len(dead) == 1
        assert running.report.failures == {"non_retryable": 3}
        assert running.report.released == 3

    @pytest.mark.broker_flaw(Flaw.LOCALSTACK_LATE_REVISIBLE)
    async def test_non_retryable_waits_out_the_backoff_where_there_is_no_dlq(
        self, queues: Queues
    ) -> None:
        # Reprocessing a DLQ: it has no DLQ of its own, so a message released at once would come
        # straight back, as fast as SQS can hand it out, and the idle exit would never come.
        calls: list[float] = []

        async def rejects(message: Message) -> None:
            calls.append(time.monotonic())
            raise NonRetryableError("still bad")

        async with open_sqs(queues.settings()) as sqs:
            await sqs.send_message(QueueUrl=queues.dlq_url, MessageBody="poison")
        settings = queues.settings(
            queue_url=queues.dlq_url, backoff_base_seconds=1.0, backoff_max_seconds=1.0
        )
        async with running_worker(settings, rejects) as running:
            await eventually(lambda: len(calls) >= 2, timeout=10)
            await asyncio.sleep(1.5)
        assert len(calls) <= 4  # about once a second, the backoff's pace
        assert min(b - a for a, b in itertools.pairwise(calls)) >= 0.5
        assert running.report.released == 0
        assert running.report.retried == len(calls)


class TestVisibility:
    """A handler slower than the visibility timeout keeps its message to itself."""

    async def test_slow_handler_is_extended_and_not_redelivered(self, broker_endpoint: str) -> None:
        queues = await make_queues(broker_endpoint, visibility_timeout=2)
        calls: list[str] = []

        async def slow(message: Message) -> None:
            calls.append(message.message_id)
            await asyncio.sleep(5)  # two and a half visibility timeouts

        await publish(queues, "slow")
        async with running_worker(queues.settings(), slow) as running:
            await eventually(lambda: len(calls) == 1)
            await eventually(lambda: running.worker.keeper.in_flight == 0, timeout=15)
            await asyncio.sleep(2.5)  # had it not been extended, it would have come back by now
        assert len(calls) == 1
        assert running.report.extended >= 2
        assert running.report.deleted == 1
        assert await depth(queues, queues.queue_url) == (0, 0)

    async def test_a_queue_whose_visibility_timeout_is_0_still_leases(self, queues: Queues) -> None:
        # SQS allows 0; the worker then asks for SQS's default on each receive, or every message
        # would be handed to the next receive while its handler runs.
        async with open_sqs(queues.settings()) as sqs:
            await sqs.set_queue_attributes(
                QueueUrl=queues.queue_url, Attributes={"VisibilityTimeout": "0"}
            )
        calls: list[str] = []

        async def slow(message: Message) -> None:
            calls.append(message.message_id)
            await asyncio.sleep(2)

        await publish(queues, "slow")
        # One poller (no emulator race) that keeps receiving while the handler runs.
        settings = queues.settings(concurrency=2, pollers=1)
        async with running_worker(settings, slow) as running:
            await eventually(lambda: len(calls) == 1)
            await eventually(lambda: running.worker.keeper.in_flight == 0, timeout=10)
        assert running.worker.visibility_timeout == 30
        assert len(calls) == 1
        assert running.report.deleted == 1
        assert await depth(queues, queues.queue_url) == (0, 0)

    async def test_async_handler_over_budget_is_cancelled_and_retried(self, queues: Queues) -> None:
        attempts: list[int] = []
        cancelled: list[bool] = []

        async def hangs_first(message: Message) -> None:
            attempts.append(message.receive_count)
            if message.receive_count == 1:
                try:
                    await asyncio.sleep(60)
                except asyncio.CancelledError:
                    cancelled.append(True)
                    raise

        await publish(queues, "hangs")
        async with running_worker(
            queues.settings(max_processing_seconds=1), hangs_first
        ) as running:
            await eventually(lambda: attempts == [1, 2])
            await eventually(lambda: running.worker.keeper.in_flight == 0)
        assert cancelled == [True]
        assert running.report.failures == {"timeout": 1}
        assert running.report.succeeded == 1

    async def test_a_coroutine_that_will_not_stop_keeps_a_one_second_lease(
        self, atomic_broker_endpoint: str
    ) -> None:
        # Past its budget it is cancelled and given a second to unwind before it counts as
        # still running; its message was not extended in that second, and came back.
        queues = await make_queues(atomic_broker_endpoint, visibility_timeout=1)
        calls: list[float] = []

        async def will_not_stop(message: Message) -> None:
            calls.append(time.monotonic())
            end = time.monotonic() + 5
            while time.monotonic() < end:
                with contextlib.suppress(asyncio.CancelledError):  # swallowed
                    await asyncio.sleep(0.1)

        await publish(queues, "stubborn")
        settings = queues.settings(
            concurrency=3,
            pollers=2,
            max_processing_seconds=2,
            backoff_base_seconds=30,  # its retry, once it has ended, is not what is looked at
            backoff_max_seconds=30,
        )
        async with running_worker(settings, will_not_stop) as running:
            await eventually(lambda: len(calls) == 1)
            await eventually(lambda: running.worker.report().failures == {"timeout": 1})
            assert len(calls) == 1  # never handed out beside itself in its 5 s
            assert time.monotonic() - calls[0] >= 4.9

    async def test_sync_handler_over_budget_is_abandoned_and_keeps_its_slot(
        self, queues: Queues
    ) -> None:
        release = threading.Event()
        attempts: list[int] = []

        def blocks_first(message: Message) -> None:
            attempts.append(message.receive_count)
            if message.receive_count == 1:
                release.wait(30)

        await publish(queues, "blocks")
        settings = queues.settings(max_processing_seconds=1, concurrency=2)
        async with running_worker(settings, blocks_first) as running:
            await eventually(lambda: attempts == [1, 2])
            # The abandoned thread still holds its slot: its invocation has not ended.
            await eventually(lambda: running.worker.runner.running == 1)
            release.set()
            await eventually(lambda: running.worker.runner.running == 0)
        assert running.report.failures == {"timeout": 1}
        assert running.report.succeeded == 1


class TestPool:
    """Concurrency, sync handlers in threads, and handlers that misbehave."""

    async def test_concurrency_limit_is_never_exceeded(self, queues: Queues) -> None:
        active = 0
        peak = 0

        async def busy(message: Message) -> None:
            nonlocal active, peak
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.2)
            active -= 1

        handled: set[str] = set()

        async def counting(message: Message) -> None:
            await busy(message)
            handled.add(message.body)

        await send(queues, *(f"m{i}" for i in range(60)))
        async with running_worker(queues.settings(concurrency=7, pollers=3), counting):
            await eventually(lambda: len(handled) == 60, timeout=30)
        assert peak == 7  # reached, and never passed

    async def test_messages_received_ahead_wait_for_a_slot_in_order(self, queues: Queues) -> None:
        # Receive-ahead is sized from measured load (unit-tested in test_prefetch.py); here the
        # capacity is extended by hand, as the sizing does, to see what the path does with it.
        release = asyncio.Event()
        started: list[str] = []
        active = 0
        peak = 0

        async def held(message: Message) -> None:
            nonlocal active, peak
            started.append(message.body)
            active += 1
            peak = max(peak, active)
            await release.wait()
            active -= 1

        await send(queues, "m0", "m1")
        async with running_worker(queues.settings(concurrency=2, pollers=1), held) as running:
            await eventually(lambda: len(started) == 2)
            await send(queues, "m2", "m3", "m4", "m5")
            running.worker.capacity.extend(4)
            await eventually(lambda: running.worker.runner.waiting == 4)
            assert running.worker.runner.running == 2
            assert len(started) == 2  # received, but no slot is free
            release.set()
            await eventually(lambda: len(started) == 6)
            await eventually(lambda: running.worker.runner.running == 0)
        assert peak == 2  # the concurrency limit holds for messages received ahead
        assert started[2:] == ["m2", "m3", "m4", "m5"]  # started in the order received
        assert running.report.succeeded == 6
        assert await depth(queues, queues.queue_url) == (0, 0)

    async def test_shutdown_releases_messages_received_ahead_at_once(self, queues: Queues) -> None:
        release = asyncio.Event()
        started: list[str] = []

        async def held(message: Message) -> None:
            started.append(message.body)
            await release.wait()

        await send(queues, "first")
        async with running_worker(queues.settings(concurrency=1, pollers=1), held) as running:
            await eventually(lambda: started == ["first"])
            await send(queues, "ahead-1", "ahead-2")
            running.worker.capacity.extend(2)
            await eventually(lambda: running.worker.runner.waiting == 2)
            running.worker.stop("test")
            # Given back before the running handler finishes, not after: visible again at once.
            await eventually(lambda: running.worker.settler.counts["released"] == 2)
            assert running.worker.runner.waiting == 0
            release.set()
        assert started == ["first"]
        assert running.report.succeeded == 1
        assert running.report.released == 2
        assert await depth(queues, queues.queue_url) == (2, 0)

    async def test_sync_handler_runs_in_a_thread(self, queues: Queues) -> None:
        threads: list[int] = []
        loop_thread = threading.get_ident()

        def sync_handler(message: Message) -> None:
            threads.append(threading.get_ident())
            time.sleep(0.3)  # blocks its thread, not the event loop

        await send(queues, *(f"m{i}" for i in range(4)))
        async with running_worker(queues.settings(concurrency=4), sync_handler) as running:
            await eventually(lambda: len(threads) == 4)
            await eventually(lambda: running.worker.keeper.in_flight == 0)
        assert loop_thread not in threads
        assert running.report.succeeded == 4

    @pytest.mark.parametrize(
        "raised",
        [
            SystemExit(3),
            KeyboardInterrupt(),
            GeneratorExit(),
            MemoryError("fake"),
            StopIteration(),
            asyncio.CancelledError(),
        ],
        ids=[
            "SystemExit",
            "KeyboardInterrupt",
            "GeneratorExit",
            "MemoryError",
            "StopIteration",
            "CancelledError",
        ],
    )
    @pytest.mark.parametrize("kind", ["async", "sync"])
    async def test_base_exceptions_fail_only_their_message(
        self, queues: Queues, raised: BaseException, kind: str
    ) -> None:
        outcomes: list[str] = []

        def behave(message: Message) -> None:
            outcomes.append(message.body)
            if message.body == "bad" and message.receive_count == 1:
                raise raised

        async def async_behave(message: Message) -> None:
            behave(message)

        await send(queues, "bad", "good")
        handler = async_behave if kind == "async" else behave
        async with running_worker(queues.settings(), handler) as running:
            await eventually(lambda: sorted(outcomes) == ["bad", "bad", "good"])
            await eventually(lambda: running.worker.keeper.in_flight == 0)
        assert running.report.failures == {"handler_error": 1}
        assert running.report.succeeded == 2


class TestShutdownWithOpenPolls:
    """An open long poll is let end by itself on shutdown, however short the shutdown timeout."""

    async def test_a_poll_open_past_the_shutdown_timeout_still_brings_its_messages_back(
        self, queues: Queues
    ) -> None:
        handled: list[str] = []

        async def records(message: Message) -> None:
            handled.append(message.body)

        await send(queues, "first")
        settings = queues.settings(wait_time_seconds=9, shutdown_timeout=0, concurrency=1)
        async with running_worker(settings, records) as running:
            await eventually(lambda: handled == ["first"])
            await eventually(lambda: running.worker.keeper.in_flight == 0)
            # The poller is back in a 9 s receive. Stop, then send into that open receive
            # after the 5 s grace that follows a 0 s shutdown timeout.
            running.worker.stop("test")
            await asyncio.sleep(6.5)
            await send(queues, "late")
        assert handled == ["first"]  # not started: the worker was stopping
        assert running.report.released == 1  # received by the open poll, and given back
        assert await depth(queues, queues.queue_url) == (1, 0)  # visible again at once


class TestIdleExit:
    """``--exit-when-idle`` ends a drain once the queue is quiet."""

    async def test_exits_when_idle(self, queues: Queues) -> None:
        from worker.consume.worker import serve  # noqa: PLC0415

        recorder = Recorder()
        await send(queues, "a", "b")
        started = time.monotonic()
        report = await asyncio.wait_for(
            serve(queues.settings(exit_when_idle=1.5), handler=recorder), timeout=30
        )
        assert sorted(recorder.bodies) == ["a", "b"]
        assert report.stop_reason == "idle for 1.5s"
        assert time.monotonic() - started < 10

    @pytest.mark.parametrize(
        ("wait", "idle", "expected"),
        [(20, None, 20), (20, 12.0, 12), (20, 2.5, 2), (20, 0.5, 1), (5, 12.0, 5)],
    )
    def test_long_polls_wait_no_longer_than_the_idle_time(
        self, wait: int, idle: float | None, expected: int
    ) -> None:
        settings = Settings(wait_time_seconds=wait, exit_when_idle=idle)
        assert receive_wait_seconds(settings) == expected


class TestLostMessages:
    """A message that disappears while it is being handled is counted, and harms nothing."""

    async def test_extension_of_a_deleted_message_fails_and_is_counted(
        self, broker_endpoint: str
    ) -> None:
        queues = await make_queues(broker_endpoint, visibility_timeout=2)
        handled: list[str] = []

        async def deletes_itself(message: Message) -> None:
            if message.body == "vanishes":
                # Someone else (an operator, a purge) removes the message mid-flight.
                async with open_sqs(queues.settings()) as sqs:
                    await sqs.delete_message(
                        QueueUrl=queues.queue_url, ReceiptHandle=message.receipt_handle
                    )
                await asyncio.sleep(3)  # past the point where the keeper must extend
            handled.append(message.body)

        await send(queues, "vanishes")
        async with running_worker(queues.settings(), deletes_itself) as running:
            await eventually(lambda: handled == ["vanishes"])
            await send(queues, "next")
            await eventually(lambda: handled == ["vanishes", "next"])
            await eventually(lambda: running.worker.keeper.in_flight == 0)
        assert running.report.extension_failures == 1
        assert running.report.succeeded == 2
        assert await depth(queues, queues.queue_url) == (0, 0)


class TestBackoffOff:
    """``WORKER_BACKOFF=off`` leaves a failed message invisible for the queue's own timeout."""

    async def test_failed_message_returns_after_the_visibility_timeout(
        self, broker_endpoint: str
    ) -> None:
        queues = await make_queues(broker_endpoint, visibility_timeout=3)
        seen: list[float] = []

        async def fails_once(message: Message) -> None:
            seen.append(time.monotonic())
            if message.receive_count == 1:
                raise RuntimeError("transient")

        await send(queues, "x")
        async with running_worker(queues.settings(backoff="off"), fails_once) as running:
            await eventually(lambda: len(seen) == 2)
        assert seen[1] - seen[0] >= 2.5
        assert running.report.retried == 1


class TestPollerDeath:
    """A poller ends only by a bug; the messages it holds then go back instead of being held."""

    async def test_a_dead_pollers_messages_are_released(
        self, queues: Queues, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        break_pollers(monkeypatch)
        await send(queues, "a", "b", "c")
        async with running_worker(queues.settings(pollers=1), Recorder()) as running:
            await eventually(lambda: not running.worker.health.liveness().ok)
            # Visible again at once (the queue's visibility timeout is 30 s), not extended.
            await eventually(lambda: _depth_is(queues, (3, 0)))
            assert running.worker.keeper.in_flight == 0
        assert running.report.received == 3
        assert running.report.released == 3


async def _depth_is(queues: Queues, expected: tuple[int, int]) -> bool:
    return await depth(queues, queues.queue_url) == expected
