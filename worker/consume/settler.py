"""The settler: deletes what succeeded and sets the visibility of what failed, in batches.

Settlements are buffered and sent ten at a time (``DeleteMessageBatch``,
``ChangeMessageVisibilityBatch``), or after a short delay when fewer are waiting, so a busy worker
makes one call per ten messages and an idle one does not hold a result back. Entries SQS fails on
its side are retried; entries it refuses (an expired receipt handle) are logged and counted, and
the message comes back from SQS: a duplicate, never a loss.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import time
from collections.abc import Awaitable, Callable, Coroutine
from enum import StrEnum
from typing import Any, NamedTuple

import structlog

from worker.consume.lease import Lease
from worker.consume.sqs import MAX_BATCH, EntryFailure, Queue, describe_failure
from worker.metrics import Metrics

log = structlog.get_logger("worker.consume.settler")

# How long a visibility change waits for an extension of the same messages still in flight.
_EXTENSION_WAIT_SECONDS = 5.0
_PAST_DEADLINE = "not sent before the shutdown's deadline"


class Settlement(StrEnum):
    """What is done with a message."""

    DELETE = "delete"  # it succeeded
    RETRY = "retry"  # it failed: visible again after a backoff
    RELEASE = "release"  # give it back now (shutdown, or a non-retryable failure)


class _Entry(NamedTuple):  # a tuple: one is made per message, and tuples are made fastest
    lease: Lease
    settlement: Settlement
    seconds: int = 0
    reason: str = ""  # why a release: "shutdown" or "non_retryable"


class _Channel:
    """A buffer that sends its entries ten at a time, or after ``delay`` when fewer wait."""

    def __init__(
        self, send: Callable[[list[_Entry]], Coroutine[Any, Any, None]], delay: float
    ) -> None:
        self._send = send
        self._delay = delay
        self._pending: list[_Entry] = []
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def waiting(self) -> int:
        return len(self._pending)

    def put(self, entry: _Entry) -> None:
        self._pending.append(entry)
        if len(self._pending) >= MAX_BATCH:
            self.flush()
        elif self._timer is None:
            # A fresh context: the timer and the send must not carry the log context of
            # whichever message happened to be settled first.
            self._timer = asyncio.get_running_loop().call_later(
                self._delay, self.flush, context=contextvars.Context()
            )

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            task = asyncio.get_running_loop().create_task(
                self._send(batch), context=contextvars.Context()
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def drain(self, until: float) -> None:
        """Send what is buffered; cancel the calls still unanswered at ``until`` (monotonic)."""
        self.flush()
        while self._tasks and (remaining := until - time.monotonic()) > 0:
            await asyncio.wait(set(self._tasks), timeout=remaining)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class Settler:
    """Settles leases in batches and reports each one settled through ``on_settled``."""

    def __init__(
        self,
        queue: Queue,
        *,
        queue_name: str,
        metrics: Metrics,
        on_settled: Callable[[Lease], None],
        flush_delay: float = 0.05,
        max_attempts: int = 4,
        max_concurrent_calls: int = 8,
    ) -> None:
        self._queue = queue
        self._log = log.bind(queue=queue_name)
        self._metrics = metrics
        self._on_settled = on_settled
        self._max_attempts = max_attempts
        self._calls = asyncio.Semaphore(max_concurrent_calls)
        self._deletes = _Channel(self._send_deletes, flush_delay)
        self._changes = _Channel(self._send_changes, flush_delay)
        self.counts: dict[str, int] = {
            "deleted": 0,
            "retried": 0,
            "released": 0,
            "failed": 0,
        }

    @property
    def waiting(self) -> int:
        """Settlements buffered and not yet sent."""
        return self._deletes.waiting + self._changes.waiting

    def delete(self, lease: Lease) -> None:
        """The message succeeded: delete it."""
        lease.settling = True
        self._deletes.put(_Entry(lease, Settlement.DELETE))

    def retry(self, lease: Lease, seconds: int) -> None:
        """The message failed: make it visible again in ``seconds``."""
        lease.settling = True
        self._changes.put(_Entry(lease, Settlement.RETRY, seconds))

    def release(self, lease: Lease, *, reason: str) -> None:
        """Give the message back now (``reason``: shutdown, non_retryable, fifo_order)."""
        lease.settling = True
        self._changes.put(_Entry(lease, Settlement.RELEASE, 0, reason))

    async def close(self, until: float = math.inf) -> None:
        """Send everything buffered and wait for the calls in flight until ``until`` (monotonic).

        What is still unsent then is given up (logged and counted as a settle failure): SQS hands
        the message out again when its visibility runs out.
        """
        await asyncio.gather(self._deletes.drain(until), self._changes.drain(until))

    async def _send_deletes(self, entries: list[_Entry]) -> None:
        await self._send(
            entries,
            lambda batch: self._queue.delete_batch(
                {str(i): e.lease.receipt_handle for i, e in enumerate(batch)}
            ),
        )

    async def _send_changes(self, entries: list[_Entry]) -> None:
        extending = {entry.lease.extending for entry in entries if entry.lease.extending}
        if extending:
            # An extension sent before these messages were settled must not reach SQS after
            # their change and undo it: a release at once, or a short backoff, would become a
            # whole visibility timeout. Not waited for long: a call stuck in the SDK's retries
            # must not hold a shutdown's releases past the container's grace period.
            try:
                _, stuck = await asyncio.wait(extending, timeout=_EXTENSION_WAIT_SECONDS)
            except asyncio.CancelledError:
                self._give_up_all(entries, _PAST_DEADLINE)
                raise
            if stuck:
                self._log.warning("sqs.settling_beside_an_extension", messages=len(entries))
        await self._send(
            entries,
            lambda batch: self._queue.change_visibility_batch(
                {str(i): (e.lease.receipt_handle, e.seconds) for i, e in enumerate(batch)}
            ),
        )

    async def _send(
        self,
        entries: list[_Entry],
        call: Callable[[list[_Entry]], Awaitable[dict[str, EntryFailure]]],
    ) -> None:
        pending = list(entries)  # what is not settled yet: given up if the shutdown cuts in
        try:
            await self._attempts(pending, call)
        except asyncio.CancelledError:
            self._give_up_all(pending, _PAST_DEADLINE)
            raise

    async def _attempts(
        self,
        pending: list[_Entry],
        call: Callable[[list[_Entry]], Awaitable[dict[str, EntryFailure]]],
    ) -> None:
        for attempt in range(1, self._max_attempts + 1):
            last = attempt == self._max_attempts
            try:
                async with self._calls:
                    failures = await call(pending)
            except Exception as exc:  # noqa: BLE001 -- whatever the cause, retry, then give up
                if last:
                    self._give_up_all(pending, describe_failure(exc))
                    pending.clear()
                    return
                self._log.warning(
                    "sqs.settle_retrying", error=describe_failure(exc), attempt=attempt
                )
            else:
                pending[:] = self._record(pending, failures, last=last)
                if not pending:
                    return
            await asyncio.sleep(0.1 * 2**attempt)

    def _record(
        self, entries: list[_Entry], failures: dict[str, EntryFailure], *, last: bool
    ) -> list[_Entry]:
        """Settle what a call did; returns the entries to try again."""
        retry = []
        deleted = 0
        for index, entry in enumerate(entries):
            failure = failures.get(str(index))
            if failure is None:
                deleted += entry.settlement is Settlement.DELETE
                self._settled(entry)
            elif failure.permanent or last:
                self._give_up(entry, f"{failure.code}: {failure.message}")
            else:
                retry.append(entry)
        if deleted:
            self._metrics.deleted.inc(deleted)  # once per call, not once per message
        return retry

    def _settled(self, entry: _Entry) -> None:
        lease = entry.lease
        if entry.settlement is Settlement.DELETE:
            self.counts["deleted"] += 1  # the metric is counted per call, in _send
            self._log.debug(
                "message.deleted", message_id=lease.message_id, receive_count=lease.receive_count
            )
        elif entry.settlement is Settlement.RETRY:
            self.counts["retried"] += 1
            self._metrics.retried.inc()
            self._log.info(
                "message.retry_scheduled",
                message_id=lease.message_id,
                receive_count=lease.receive_count,
                delay_seconds=entry.seconds,
            )
        else:
            self.counts["released"] += 1
            self._metrics.released[entry.reason].inc()
            self._log.info(
                "message.released",
                message_id=lease.message_id,
                receive_count=lease.receive_count,
                reason=entry.reason,
            )
        self._on_settled(lease)

    def _give_up_all(self, entries: list[_Entry], error: str) -> None:
        for entry in entries:
            self._give_up(entry, error)

    def _give_up(self, entry: _Entry, error: str) -> None:
        # SQS will hand the message out again when its visibility runs out: for a delete that is
        # a duplicate, for a visibility change only a different delay. Nothing is lost.
        self.counts["failed"] += 1
        self._metrics.settle_failures.labels(self._metrics.queue, entry.settlement.value).inc()
        self._log.warning(
            f"message.{entry.settlement.value}_failed",
            message_id=entry.lease.message_id,
            receive_count=entry.lease.receive_count,
            error=error,
        )
        self._on_settled(entry.lease)
