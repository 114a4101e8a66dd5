"""The runner's handler calls (pure logic: an in-memory queue, no SQS)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import pytest
from prometheus_client import CollectorRegistry

from tests.support import eventually
from tests.test_poller import settler_of
from worker.consume.backoff import ExponentialBackoff
from worker.consume.capacity import Capacity
from worker.consume.lease import Lease, LeaseKeeper
from worker.consume.memory_sqs import MemoryQueue
from worker.consume.outcome import Failure, FailureReason
from worker.consume.runner import Runner
from worker.consume.sqs import EntryFailure
from worker.handlers.adapters import Invocation
from worker.metrics import Metrics


async def test_a_handler_budget_ends_where_sqs_stops_holding_its_message() -> None:
    deadlines: list[float] = []

    async def adapter(leases: Sequence[Lease], deadline: float) -> Invocation:
        deadlines.append(deadline)
        return Invocation([None] * len(leases))

    queue = MemoryQueue()
    metrics = Metrics(CollectorRegistry(), queue="q")
    keeper = LeaseKeeper(queue, visibility_timeout=30, metrics=metrics)
    capacity = Capacity(1)
    runner = Runner(
        adapter,
        keeper=keeper,
        settler=settler_of(queue, metrics),
        capacity=capacity,
        metrics=metrics,
        retry_delay=ExponentialBackoff(2, 300),
        budget=43_200,  # as much as WORKER_MAX_PROCESSING_SECONDS allows
        batch_size=1,
        queue_name="q",
    )
    (lease,) = runner.lease([{"MessageId": "m", "ReceiptHandle": "r", "Body": "x"}])
    lease.hard_limit = lease.received_at + 5  # received long ago: 5 s of its 12 hours left
    await capacity.acquire(1)
    runner.start([lease], 1)
    for _ in range(100):
        if deadlines:
            break
        await asyncio.sleep(0.01)
    assert deadlines == [lease.hard_limit]


class RecordsChanges(MemoryQueue):
    """Answers every visibility change as done, and keeps the seconds asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[int] = []

    async def change_visibility_batch(
        self, changes: Mapping[str, tuple[str, int]]
    ) -> dict[str, EntryFailure]:
        self.seconds.extend(seconds for _, seconds in changes.values())
        return {}


@pytest.mark.parametrize(("left", "expected"), [(100, (90, 100)), (-5, (0, 0))])
async def test_a_retry_backoff_stops_where_sqs_stops_holding_its_message(
    left: float, expected: tuple[int, int]
) -> None:
    # A 150-300 s backoff, asked for near the end of SQS's 12 hours, is one SQS refuses whole.
    async def adapter(leases: Sequence[Lease], deadline: float) -> Invocation:
        return Invocation([Failure(FailureReason.TIMEOUT, "HandlerTimeoutError", "too long")])

    queue = RecordsChanges()
    metrics = Metrics(CollectorRegistry(), queue="q")
    capacity = Capacity(1)
    runner = Runner(
        adapter,
        keeper=LeaseKeeper(queue, visibility_timeout=30, metrics=metrics),
        settler=settler_of(queue, metrics),
        capacity=capacity,
        metrics=metrics,
        retry_delay=ExponentialBackoff(300, 300),  # 150 to 300 s
        budget=43_200,
        batch_size=1,
        queue_name="q",
    )
    (lease,) = runner.lease([{"MessageId": "m", "ReceiptHandle": "r", "Body": "x"}])
    lease.hard_limit = lease.received_at + left  # received long ago: this is left of 12 hours
    await capacity.acquire(1)
    runner.start([lease], 1)
    await eventually(lambda: bool(queue.seconds), timeout=5)
    low, high = expected
    assert low <= queue.seconds[0] <= high
