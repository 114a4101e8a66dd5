"""Gathering Lambda batches over a window (pure logic: a stand-in queue, no SQS).

What two pollers carry past the 6 MB payload limit is shared, so that it never waits behind an
empty gather. Whatever a gather takes from it must still be one batch, by count and by size,
under the one slot its poller holds.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from prometheus_client import CollectorRegistry

from worker.backoff import ExponentialBackoff
from worker.capacity import Capacity
from worker.handlers import Invocation
from worker.lambda_event import sqs_record
from worker.lease import Lease, LeaseKeeper
from worker.metrics import Metrics
from worker.poller import PAYLOAD_LIMIT_BYTES, Poller, record_size
from worker.runner import Runner

MIB_BODY = "x" * (1024 * 1024 - 100)  # SQS takes messages of up to 1 MiB


class StandInQueue:
    """Two receives of ten 1 MiB messages, the second a little later; then nothing."""

    def __init__(self) -> None:
        self.receives = 0
        self.sent = 0

    async def receive(self, count: int, wait: int, visibility_timeout: int | None) -> list[Any]:
        self.receives += 1
        if self.receives > 2:
            await asyncio.sleep(wait)
            return []
        await asyncio.sleep(0.05 * self.receives)
        messages = []
        for _ in range(count):
            self.sent += 1
            messages.append(
                {
                    "MessageId": f"m{self.sent}",
                    "ReceiptHandle": f"r{self.sent}",
                    "Body": MIB_BODY,
                    "Attributes": {"ApproximateReceiveCount": "1"},
                }
            )
        return messages

    async def change_visibility_batch(self, changes: Any) -> dict[str, Any]:
        return {}


class Settled:
    """The settler's interface, recording what each message came to."""

    def __init__(self) -> None:
        self.deleted: list[str] = []

    def delete(self, lease: Lease) -> None:
        lease.settling = True
        self.deleted.append(lease.message_id)

    def retry(self, lease: Lease, seconds: float) -> None:
        lease.settling = True

    def release(self, lease: Lease, reason: str) -> None:
        lease.settling = True


async def test_a_shared_carry_is_taken_one_batch_at_a_time() -> None:
    batches: list[list[Lease]] = []

    async def adapter(leases: list[Lease], deadline: float) -> Invocation:
        batches.append(list(leases))
        await asyncio.sleep(0.05)
        return Invocation([None] * len(leases))

    queue = StandInQueue()
    metrics = Metrics(CollectorRegistry(), queue="q")
    capacity = Capacity(2)
    settled = Settled()
    runner = Runner(
        adapter,  # type: ignore[arg-type]  # the adapter's call signature is all the runner uses
        keeper=LeaseKeeper(queue, visibility_timeout=30, metrics=metrics),  # type: ignore[arg-type]
        settler=settled,  # type: ignore[arg-type]
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
            queue,  # type: ignore[arg-type]
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
        for _ in range(100):
            if len(settled.deleted) == 20:
                break
            await asyncio.sleep(0.05)
    finally:
        for poller in pollers:
            poller.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert sorted(settled.deleted) == sorted(f"m{n}" for n in range(1, 21))
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
