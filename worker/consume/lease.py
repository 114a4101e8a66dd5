"""Leases on received messages, and the one keeper that extends them all.

A message is leased from the moment it is received until it is settled (deleted, or its
visibility changed). While the lease is held, the keeper extends the message's visibility before
it expires, batching every lease that falls due at about the same time into
``ChangeMessageVisibilityBatch`` calls, so a handler that outlives the queue's visibility timeout
is not handed to a second consumer. Extension stops at the processing budget and never goes past
SQS's 12-hour limit on a message's total visibility.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import structlog

from worker.config import SQS_MAX_VISIBILITY_SECONDS
from worker.consume.sqs import MAX_BATCH, EntryFailure, Queue, describe_failure
from worker.handlers.calls import CANCEL_GRACE_SECONDS
from worker.metrics import Metrics

if TYPE_CHECKING:
    from types_aiobotocore_sqs.type_defs import MessageTypeDef

log = structlog.get_logger("worker.consume.lease")

# SQS counts the 12 hours from the receive; stay clear of the edge by a minute.
_HARD_LIMIT_SECONDS = SQS_MAX_VISIBILITY_SECONDS - 60
_RETRY_AFTER_ERROR_SECONDS = 1.0
# How long past its processing budget a message still in hand is extended: a coroutine cancelled
# at its deadline has a grace to unwind before it counts as still running and is extended again,
# and a short visibility timeout must not run out in between (a second more, for a loaded loop).
# A settled message is never extended.
_PAST_DEADLINE_SECONDS = CANCEL_GRACE_SECONDS + 1.0


class Lease:
    """One received message, while it is ours to settle."""

    __slots__ = (
        "deadline",
        "extending",
        "hard_limit",
        "lost",
        "message_id",
        "raw",
        "receipt_handle",
        "receive_count",
        "received_at",
        "settling",
        "visible_at",
    )

    def __init__(self, raw: MessageTypeDef, received_at: float, visibility_timeout: int) -> None:
        self.raw = raw
        self.message_id: str = raw.get("MessageId", "")
        self.receipt_handle: str = raw.get("ReceiptHandle", "")
        self.receive_count = int((raw.get("Attributes") or {}).get("ApproximateReceiveCount", "1"))
        self.received_at = received_at
        self.visible_at = received_at + visibility_timeout  # when SQS would hand it out again
        self.hard_limit = received_at + _HARD_LIMIT_SECONDS
        self.deadline: float | None = None  # end of the processing budget, once the handler starts
        self.settling = False  # handed to the settler: no more extensions
        self.extending: asyncio.Task[None] | None = None  # its extension call in flight
        self.lost = False  # SQS no longer knows this receipt handle

    def __repr__(self) -> str:
        return f"Lease({self.message_id!r}, receive_count={self.receive_count})"


class LeaseKeeper:
    """Holds every lease in flight and extends their visibility in batches before it expires."""

    def __init__(
        self,
        queue: Queue,
        *,
        visibility_timeout: int,
        metrics: Metrics,
        queue_name: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._queue = queue
        self._metrics = metrics
        self._log = log.bind(queue=queue_name)
        self.visibility_timeout = visibility_timeout
        # Extend when half the timeout is left (at most a minute before expiry): time enough for
        # a retried call, and rare enough to cost little.
        self.lead = min(visibility_timeout / 2, 60.0)
        self._clock = clock
        self._leases: set[Lease] = set()
        self._wake = asyncio.Event()
        self._next_wake = math.inf
        self._retry_at = 0.0
        self._calls: set[asyncio.Task[None]] = set()
        self.extended = 0
        self.extension_failures = 0

    @property
    def in_flight(self) -> int:
        """Messages received and not yet settled."""
        return len(self._leases)

    def take(self, raw: MessageTypeDef, received_at: float) -> Lease:
        """Start a lease on a message just received."""
        lease = Lease(raw, received_at, self.visibility_timeout)
        self._leases.add(lease)
        if lease.visible_at - self.lead < self._next_wake:
            self._wake.set()
        return lease

    def keep_past_budget(self, leases: Sequence[Lease]) -> None:
        """Extend ``leases`` again, past their processing budget, until they are settled.

        For a handler that would not stop when its budget ran out: its messages must not be
        handed out again while it runs.
        """
        for lease in leases:
            lease.deadline = None
        self._wake.set()

    def forget(self, lease: Lease) -> None:
        """The message is settled: stop tracking it."""
        self._leases.discard(lease)

    async def run(self) -> None:
        """Extend leases as they fall due, until cancelled."""
        try:
            while True:
                now = self._clock()
                if now >= self._retry_at:
                    due = [lease for lease in self._leases if self._is_due(lease, now)]
                    if due:
                        self._start_extending(due)
                self._next_wake = self._next_due()
                self._wake.clear()
                timeout = self._next_wake - self._clock()
                if timeout > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            self._wake.wait(), None if math.isinf(timeout) else timeout
                        )
        finally:
            for call in self._calls:
                call.cancel()

    def _start_extending(self, leases: Sequence[Lease]) -> None:
        """Extend ``leases`` in a task of their own.

        A call can take long (the SDK's retries, a read timeout of a long poll's length); the
        leases falling due meanwhile must not wait for it, or they expire and are handed out
        again. Leases in flight are not due again until their call ends.
        """
        call = asyncio.get_running_loop().create_task(self._extend(leases))
        for lease in leases:
            lease.extending = call
        self._calls.add(call)
        call.add_done_callback(self._calls.discard)

    def _extendable(self, lease: Lease, now: float) -> bool:
        if lease.settling or lease.lost or lease.extending is not None:
            return False
        # SQS extends by whole seconds: in its last second a lease cannot be extended at all.
        if lease.hard_limit - now < 1:
            return False
        return lease.deadline is None or now < lease.deadline + _PAST_DEADLINE_SECONDS

    def _is_due(self, lease: Lease, now: float) -> bool:
        # Leases due within half a lead are taken along, so that they share calls.
        return self._extendable(lease, now) and lease.visible_at - now <= self.lead * 1.5

    def _next_due(self) -> float:
        now = self._clock()
        candidates = [lease.visible_at for lease in self._leases if self._extendable(lease, now)]
        if not candidates:
            return math.inf
        return max(min(candidates) - self.lead, self._retry_at)

    async def _extend(self, leases: Sequence[Lease]) -> None:
        batches = [leases[start : start + MAX_BATCH] for start in range(0, len(leases), MAX_BATCH)]
        try:
            results = await asyncio.gather(*(self._extend_batch(batch) for batch in batches))
            if not all(results):
                self._retry_at = self._clock() + _RETRY_AFTER_ERROR_SECONDS
        finally:
            for lease in leases:
                lease.extending = None
            self._wake.set()  # they count again: reschedule

    async def _extend_batch(self, leases: Sequence[Lease]) -> bool:
        started = self._clock()
        changes: dict[str, tuple[str, int]] = {}
        for index, lease in enumerate(leases):
            seconds = min(self.visibility_timeout, int(lease.hard_limit - started))
            if seconds >= 1:
                changes[str(index)] = (lease.receipt_handle, seconds)
        if not changes:
            return True
        try:
            failures = await self._queue.change_visibility_batch(changes)
        except Exception as exc:  # noqa: BLE001 -- any failure to reach SQS is retried shortly
            self._log.warning(
                "sqs.extend_failed", error=describe_failure(exc), messages=len(changes)
            )
            self.extension_failures += len(changes)
            self._metrics.extension_failures.inc(len(changes))
            return False
        for key, (_, seconds) in changes.items():
            lease = leases[int(key)]
            failure = failures.get(key)
            if failure is None:
                lease.visible_at = started + seconds
                self.extended += 1
                self._metrics.extensions.inc()
                self._log.debug(
                    "message.extended",
                    message_id=lease.message_id,
                    receive_count=lease.receive_count,
                    seconds=seconds,
                )
            else:
                self._record_failure(lease, failure)
        # An entry SQS failed on its side is retried shortly, like a failed call.
        return all(failure.permanent for failure in failures.values())

    def _record_failure(self, lease: Lease, failure: EntryFailure) -> None:
        self.extension_failures += 1
        self._metrics.extension_failures.inc()
        if failure.permanent:
            # The receipt handle is no longer valid: the message was deleted, or its visibility
            # ran out and SQS handed it to someone else. Nothing more can be done for it here.
            lease.lost = True
        self._log.warning(
            "message.extension_failed",
            message_id=lease.message_id,
            receive_count=lease.receive_count,
            code=failure.code,
            error=failure.message,
            gave_up=lease.lost,
        )
