"""Queue depth, read from ``GetQueueAttributes`` on an interval, for alerts and autoscalers.

Gauges for the source queue and its DLQ (visible, in flight, delayed) let Prometheus alert on a
DLQ that is not empty and an autoscaler scale on backlog without CloudWatch. A read that fails
leaves the gauges as they were, and the time of the last good read with them, so that alerts can
tell a count that is current from one that only was.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

import structlog

from worker.consume.sqs import Queue, describe_failure
from worker.metrics import Metrics

if TYPE_CHECKING:
    from types_aiobotocore_sqs.literals import QueueAttributeNameType

log = structlog.get_logger("worker.consume.depth")

_ATTRIBUTES: dict[QueueAttributeNameType, str] = {
    "ApproximateNumberOfMessages": "visible",
    "ApproximateNumberOfMessagesNotVisible": "in_flight",
    "ApproximateNumberOfMessagesDelayed": "delayed",
}


class QueueDepth:
    """Refreshes the depth gauges of the source queue and its DLQ."""

    def __init__(
        self, metrics: Metrics, queues: Sequence[tuple[Queue, str, str]], interval: float
    ) -> None:
        self._metrics = metrics
        self._queues = queues  # (queue, name, role)
        self._interval = interval

    async def refresh(self) -> None:
        """Read each queue's attributes once; a failure is logged, counted and skipped."""
        for queue, name, role in self._queues:
            try:
                attributes = await queue.attributes(list(_ATTRIBUTES))
            except Exception as exc:  # noqa: BLE001 -- depth is advisory; try again next time
                log.warning("sqs.depth_failed", queue=name, error=describe_failure(exc))
                continue
            counts = {state: int(attributes.get(key, 0)) for key, state in _ATTRIBUTES.items()}
            self._metrics.set_depth(name, role, counts)

    async def run(self) -> None:
        """Refresh every interval until cancelled."""
        while True:
            await self.refresh()
            await asyncio.sleep(self._interval)
