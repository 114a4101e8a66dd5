"""The runner: starts the handler on what the pollers received, and settles each outcome.

Every received message is leased, grouped into batches of the handler type's size, and started
at once: the pollers only ask for as many messages as there are free slots, so nothing waits in a
local buffer. Each outcome goes to the settler: success is deleted, failure waits out the retry
backoff, a non-retryable failure is released at once. Tasks are kept in a set so that they cannot
be garbage-collected while they run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog

from worker.backoff import RetryDelay
from worker.capacity import Capacity
from worker.handlers import Adapter, Invocation
from worker.lease import Lease, LeaseKeeper
from worker.metrics import Metrics
from worker.outcome import Failure, FailureReason, Outcome
from worker.settler import Settler

if TYPE_CHECKING:
    from types_aiobotocore_sqs.type_defs import MessageTypeDef

log = structlog.get_logger("worker.runner")


class Runner:
    """Runs batches of leased messages through the adapter under the slots the pollers took."""

    def __init__(
        self,
        adapter: Adapter,
        *,
        keeper: LeaseKeeper,
        settler: Settler,
        capacity: Capacity,
        metrics: Metrics,
        retry_delay: RetryDelay,
        budget: float,
        batch_size: int,
        queue_name: str,
        log_bodies: bool = False,
    ) -> None:
        self._adapter = adapter
        self._keeper = keeper
        self._settler = settler
        self._capacity = capacity
        self._metrics = metrics
        self._retry_delay = retry_delay
        self._budget = budget
        self.batch_size = batch_size
        self._queue_name = queue_name
        self._log_bodies = log_bodies
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.last_arrival = time.monotonic()
        self.counts: dict[str, int] = {"received": 0, "succeeded": 0, "failed": 0}
        self.failures: dict[FailureReason, int] = dict.fromkeys(FailureReason, 0)

    @property
    def running(self) -> int:
        """Handler calls in progress (abandoned ones included)."""
        return len(self._tasks)

    def submit(self, messages: Sequence[MessageTypeDef], slots: int) -> None:
        """Start the handler on messages a poller received with ``slots`` slots in hand."""
        received_at = time.monotonic()
        leases = [self._keeper.take(raw, received_at) for raw in messages]
        batches = [
            leases[start : start + self.batch_size]
            for start in range(0, len(leases), self.batch_size)
        ]
        self._capacity.release(slots - len(batches))
        if leases:
            self.last_arrival = received_at
            self.counts["received"] += len(leases)
            self._metrics.received.inc(len(leases))
            for lease in leases:
                log.debug(
                    "message.received",
                    queue=self._queue_name,
                    message_id=lease.message_id,
                    receive_count=lease.receive_count,
                )
        if self._closed:
            # Shutting down: a long poll that was already open returned these. Give them back.
            for lease in leases:
                self._settler.release(lease, reason="shutdown")
            self._capacity.release(len(batches))
            return
        loop = asyncio.get_running_loop()
        for batch in batches:
            task = loop.create_task(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        """Start no more handlers; what arrives from now on is released."""
        self._closed = True

    async def drain(self, until: float) -> int:
        """Wait for running handlers until ``until`` (monotonic), then cancel the rest.

        Returns how many were cancelled; their messages are released.
        """
        self._closed = True
        if not self._tasks:
            return 0
        wait = max(0.0, until - time.monotonic())
        _, pending = await asyncio.wait(set(self._tasks), timeout=wait)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return len(pending)

    async def _run(self, batch: list[Lease]) -> None:
        try:
            invocation = await self._invoke(batch)
            if invocation.running is not None:
                # The handler ran out of budget and could not be stopped: its messages are
                # settled, but its slot stays taken until it really ends.
                await asyncio.wait({invocation.running})
        finally:
            self._capacity.release(1)

    async def _invoke(self, batch: list[Lease]) -> Invocation:
        started = time.monotonic()
        deadline = started + self._budget
        now = time.time()
        for lease in batch:
            lease.deadline = deadline
            self._metrics.receive_count.observe(lease.receive_count)
            sent = (lease.raw.get("Attributes") or {}).get("SentTimestamp")
            if sent is not None:
                self._metrics.message_age.observe(max(0.0, now - int(sent) / 1000))
        first = batch[0]
        context: dict[str, Any] = {"queue": self._queue_name}
        if len(batch) == 1:
            context.update(message_id=first.message_id, receive_count=first.receive_count)
        else:
            context.update(batch_size=len(batch))
        with structlog.contextvars.bound_contextvars(**context):
            try:
                invocation = await self._adapter(batch, deadline)
            except asyncio.CancelledError:
                # Shutdown ran out of time: the handler was interrupted, not at fault.
                for lease in batch:
                    self._settler.release(lease, reason="shutdown")
                raise
            except Exception as exc:
                log.exception("worker.adapter_error")
                invocation = Invocation([Failure.from_exception(exc)] * len(batch))
            duration = time.monotonic() - started
            self._metrics.handler_duration.labels(
                self._queue_name, _outcome_label(invocation.outcomes)
            ).observe(duration)
            for lease, outcome in zip(batch, invocation.outcomes, strict=True):
                self._settle(lease, outcome, duration, in_batch=len(batch) > 1)
        return invocation

    def _settle(self, lease: Lease, outcome: Outcome, duration: float, *, in_batch: bool) -> None:
        extra: dict[str, Any] = {}
        if self._log_bodies:
            extra["body"] = lease.raw.get("Body", "")
        if in_batch:  # the context names the batch; each line names its message
            extra.update(message_id=lease.message_id, receive_count=lease.receive_count)
        if outcome is None:
            self.counts["succeeded"] += 1
            self._metrics.succeeded.inc()
            log.debug("message.succeeded", duration_seconds=round(duration, 6), **extra)
            self._settler.delete(lease)
            return
        self.counts["failed"] += 1
        self.failures[outcome.reason] += 1
        self._metrics.failed[outcome.reason].inc()
        fields: dict[str, Any] = {
            "reason": outcome.reason.value,
            "error_type": outcome.error_type,
            "error": outcome.error_message,
            "duration_seconds": round(duration, 6),
            **extra,
        }
        if outcome.reason is FailureReason.NON_RETRYABLE:
            log.warning("message.failed", retry_in_seconds=0, **fields)
            self._settler.release(lease, reason="non_retryable")
        else:
            delay = self._retry_delay.seconds(lease.receive_count)
            log.warning("message.failed", retry_in_seconds=delay, **fields)
            self._settler.retry(lease, delay)


def _outcome_label(outcomes: Sequence[Outcome]) -> str:
    """One label per call: ``success``, a failure reason, or ``partial`` for a mixed batch."""
    failures = [outcome for outcome in outcomes if outcome is not None]
    if not failures:
        return "success"
    if len(failures) < len(outcomes):
        return "partial"
    return failures[0].reason.value
