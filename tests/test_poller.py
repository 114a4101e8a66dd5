"""Gathering Lambda batches over a window (pure logic: an in-memory queue, no SQS).

What two pollers carry past the 6 MB payload limit is shared, so that it never waits behind an
empty gather. Whatever a gather takes from it must still be one batch, by count and by size,
under the one slot its poller holds.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry

from worker.consume.backoff import ExponentialBackoff
from worker.consume.capacity import Capacity
from worker.consume.lease import Lease, LeaseKeeper
from worker.consume.memory_sqs import MemoryQueue
from worker.consume.poller import PAYLOAD_LIMIT_BYTES, Poller, record_size
from worker.consume.runner import Runner
from worker.consume.settler import Settler
from worker.handlers.adapters import Invocation
from worker.lambda_.event import sqs_record
from worker.metrics import Metrics

MIB_BODY = "x" * (1024 * 1024 - 100)  # SQS takes messages of up to 1 MiB


def megabyte_queue(messages: int) -> MemoryQueue:
    """A queue holding ``messages`` messages of 1 MiB: two receives overrun 6 MB."""
    queue = MemoryQueue()
    for _ in range(messages):
        queue.send(MIB_BODY)
    return queue


def settler_of(queue: MemoryQueue, metrics: Metrics) -> Settler:
    return Settler(queue, queue_name="q", metrics=metrics, on_settled=lambda lease: None)


async def test_a_shared_carry_is_taken_one_batch_at_a_time() -> None:
    batches: list[list[Lease]] = []

    async def adapter(leases: Sequence[Lease], deadline: float) -> Invocation:
        batches.append(list(leases))
        await asyncio.sleep(0.05)
        return Invocation([None] * len(leases))

    queue = megabyte_queue(20)
    metrics = Metrics(CollectorRegistry(), queue="q")
    capacity = Capacity(2)
    settler = settler_of(queue, metrics)
    runner = Runner(
        adapter,
        keeper=LeaseKeeper(queue, visibility_timeout=30, metrics=metrics),
        settler=settler,
        capacity=capacity,
        metrics=metrics,
        retry_delay=ExponentialBackoff(2, 300),
        budget=10,
        batch_size=10,
        queue_name="q",
    )
    carry: list[Lease] = []
    pollers = [
        Poller(
            queue,
            capacity=capacity,
            runner=runner,
            wait_seconds=1,
            visibility_timeout=None,
            batching_window=0.3,
            carry=carry,
        )
        for _ in range(2)
    ]
    tasks = [poller.start() for poller in pollers]
    try:
        async with asyncio.timeout(10):
            await queue.join()  # every message deleted
    finally:
        for poller in pollers:
            poller.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await settler.close()
    assert runner.counts["succeeded"] == 20
    assert sorted(lease.message_id for batch in batches for lease in batch) == sorted(
        {lease.message_id for batch in batches for lease in batch}
    )
    assert max(len(batch) for batch in batches) <= 10
    assert max(sum(record_size(lease) for lease in batch) for batch in batches) <= (
        PAYLOAD_LIMIT_BYTES
    )
    assert runner.running == 0


def test_a_records_size_estimate_is_at_least_its_share_of_the_event() -> None:
    raw: Any = {
        "MessageId": "m",
        "ReceiptHandle": "r" * 400,
        "Body": 'é "quoted" \\ \n' * 1000,  # escaped in JSON: up to twice its length
        "Attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1700000000000"},
        "MessageAttributes": {
            "large": {"DataType": "String", "StringValue": "v" * 100_000},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00" * 3000},
            **{f"a{n}": {"DataType": "Number", "StringValue": str(n)} for n in range(8)},
        },
    }
    lease = Lease(raw, received_at=0.0, visibility_timeout=30)
    record = sqs_record(raw, queue_arn="arn:aws:sqs:us-east-1:123456789012:q", region="us-east-1")
    assert record_size(lease) >= len(json.dumps(record, ensure_ascii=False).encode())
