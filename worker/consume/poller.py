"""Pollers: long-poll SQS for as many messages as there are slots for, and hand them over.

Several pollers run at once so that one slow receive does not leave the pool idle. Each takes
free slots first, then asks SQS for at most that many messages (or batches); the slots include a
few beyond the concurrency limit, sized from the measured receive round trip and completion rate
(:mod:`worker.consume.prefetch`), so that a slot freed by a finishing handler finds a message
waiting.
While handlers are finishing a poller waits up to ``WORKER_RECEIVE_FILL_SECONDS`` for enough
slots to ask for ten (see :mod:`worker.consume.capacity`). Errors talking to SQS never end a
poller: it backs off with jitter and tries again.

With a batching window (``WORKER_MAX_BATCHING_WINDOW``, Lambda handlers), a poller takes one slot
and gathers a batch over several receives: it is handed over when it is full, when the window
(opened by its first message) closes, or when the next message would take it past Lambda's 6 MB
payload limit. Messages are leased as they arrive, so their visibility is extended while they
wait for the batch to close.

While the queue is empty only one poller keeps long-polling it; the others wait for the first
receive that brings messages (:class:`Lookout`).

On shutdown a poller waiting for slots, for the lookout's news or backing off stops at once. A
poller whose receive is open, or that is gathering a batch, lets the receive finish (at most
``WaitTimeSeconds``) instead of cutting it short, because SQS may already have taken messages for
it; what it holds is then released at once (visibility 0) rather than stranded invisible for a
whole visibility timeout.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from typing import TYPE_CHECKING

import structlog

from worker.consume.capacity import Capacity
from worker.consume.lease import Lease
from worker.consume.prefetch import Prefetch
from worker.consume.runner import Runner
from worker.consume.sqs import MAX_BATCH, Queue, describe_failure, error_code

if TYPE_CHECKING:
    from types_aiobotocore_sqs.type_defs import MessageTypeDef

log = structlog.get_logger("worker.consume.poller")

_BACKOFF_BASE_SECONDS = 0.5
_BACKOFF_CAP_SECONDS = 20.0
# Lambda's invocation payload limit. A record's size is estimated as its body and message
# attributes plus a fixed allowance for the rest (ids, receipt handle, system attributes, JSON
# punctuation).
PAYLOAD_LIMIT_BYTES = 6 * 1024 * 1024
_RECORD_ALLOWANCE_BYTES = 1024


def record_size(lease: Lease) -> int:
    """An upper estimate of a message's share of a Lambda event (JSON, UTF-8)."""
    size = _json_size(lease.raw.get("Body", "")) + _RECORD_ALLOWANCE_BYTES
    for name, attribute in (lease.raw.get("MessageAttributes") or {}).items():
        # Name, type and value, binary values base64-encoded as in the event, and the
        # punctuation and field names around them.
        size += 96 + _json_size(name) + _json_size(str(attribute.get("DataType", "")))
        size += _json_size(attribute.get("StringValue", ""))
        size += -(-len(attribute.get("BinaryValue", b"")) // 3) * 4
    return size


def _json_size(text: str) -> int:
    """Bytes of ``text`` as a JSON string: quotes, backslashes and control characters escaped."""
    return len(json.dumps(text, ensure_ascii=False).encode())


class Lookout:
    """While the queue is empty, one poller long-polls it and the others wait for its news.

    A long poll of an empty queue comes back empty after ``WaitTimeSeconds``, and each is a
    request, billed and throttled like any other: five pollers of an idle replica would make 900
    an hour where one tells as much. So a poller whose receive came back empty waits instead of
    asking again, as long as another poller is still receiving; the first receive that brings
    messages wakes them all, and they ask again at once. The last poller receiving never waits,
    so a message arriving is taken as soon as with every poller receiving, and the others join
    within a receive's round trip: a burst costs at most that, a steady flow nothing (a long
    poll returns when a message arrives, so busy pollers never come back empty).
    """

    def __init__(self) -> None:
        self._receiving = 0  # pollers that are not waiting for news
        self._waiting = 0
        self._news = asyncio.Event()

    def join(self) -> None:
        """A poller starts receiving."""
        self._receiving += 1

    def brought(self) -> None:
        """A receive brought messages: wake the pollers waiting for news."""
        if self._waiting:
            self._news.set()
            self._news = asyncio.Event()

    async def came_back_empty(self) -> None:
        """A receive came back empty: wait for news, unless no other poller is receiving."""
        if self._receiving <= 1:
            return
        news = self._news
        self._receiving -= 1
        self._waiting += 1
        try:
            await news.wait()
        finally:
            self._waiting -= 1
            self._receiving += 1


class Poller:
    """One long-polling loop."""

    def __init__(
        self,
        queue: Queue,
        *,
        capacity: Capacity,
        runner: Runner,
        wait_seconds: int,
        visibility_timeout: int | None,
        batching_window: float = 0.0,
        fill_seconds: float = 0.0,
        carry: list[Lease] | None = None,
        prefetch: Prefetch | None = None,
        lookout: Lookout | None = None,
    ) -> None:
        self._queue = queue
        self._capacity = capacity
        self._runner = runner
        self._wait_seconds = wait_seconds
        self._visibility_timeout = visibility_timeout
        self._window = batching_window
        self._fill_seconds = fill_seconds
        self._prefetch = prefetch
        self._lookout = Lookout() if lookout is None else lookout
        self._lookout.join()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._idle = False  # waiting for slots or news, or backing off: safe to cancel
        # When the receive now open returns at the latest (``time.monotonic``); None: none open.
        self.receive_ends: float | None = None
        # Gathered beyond the payload limit: the start of the next batch, whichever poller gets
        # the next slot. Shared by all pollers, so that it never waits behind an empty gather.
        self._carry: list[Lease] = [] if carry is None else carry
        self.consecutive_errors = 0

    def start(self) -> asyncio.Task[None]:
        """Run the loop in a task."""
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self._task

    def stop(self) -> None:
        """Receive no more; stop now unless a receive is open or a batch is being gathered."""
        self._stopping = True
        if self._task is not None and self._idle:
            self._task.cancel()

    async def _run(self) -> None:
        try:
            while not self._stopping:
                slots = await self._wait_for_slots()
                if self._window > 0:
                    batch = await self._gather()
                    # An empty gather gives its slot back before waiting: a poller holding one
                    # while it waits for news would keep the others from receiving at all.
                    self._hand_over(batch or [], slots)
                    if batch is None:
                        await self._back_off()
                    elif not batch:
                        await self._wait_for_news()
                    continue
                messages = await self._receive(self._runner.messages_for(slots))
                if messages is None:
                    self._capacity.release(slots)
                    await self._back_off()
                    continue
                self._hand_over(self._runner.lease(messages), slots)
                if not messages:
                    await self._wait_for_news()
        finally:
            if self._carry:
                self._runner.give_back(self._carry)
                self._carry.clear()

    def _hand_over(self, leases: list[Lease], slots: int) -> None:
        """Start handlers on ``leases``; if that fails, give them back before the error ends us.

        Reaching the except is a bug: the poller dies of it (liveness fails, the traceback says
        where), but the messages it holds are released, not extended until SQS's 12 hours end.
        """
        try:
            self._runner.start(leases, slots)
        except BaseException:
            self._runner.give_back(leases)
            raise

    async def _wait_for_slots(self) -> int:
        self._idle = True
        try:
            return await self._capacity.acquire(
                self._runner.slots_per_receive,
                fill_within=self._fill_seconds,
                patient=self._runner.has_waiting,
            )
        finally:
            self._idle = False

    async def _wait_for_news(self) -> None:
        if self._stopping:
            return
        self._idle = True
        try:
            await self._lookout.came_back_empty()
        finally:
            self._idle = False

    async def _receive(self, count: int, wait: int | None = None) -> list[MessageTypeDef] | None:
        """One receive; ``None`` when it failed (logged, to be backed off by the caller)."""
        asked = time.monotonic()
        seconds = self._wait_seconds if wait is None else wait
        self.receive_ends = asked + seconds
        try:
            messages = await self._queue.receive(count, seconds, self._visibility_timeout)
        except Exception as exc:  # noqa: BLE001 -- SQS unreachable or refusing: back off
            self._log_failure(exc)
            return None
        finally:
            self.receive_ends = None
        self.consecutive_errors = 0
        if messages:
            self._lookout.brought()
            if self._prefetch is not None:
                self._prefetch.received(time.monotonic() - asked)
        return list(messages)

    async def _gather(self) -> list[Lease] | None:
        """A batch: full, its window closed, or at the payload limit; empty when a receive came
        back empty before the batch had a message, ``None`` when one failed then."""
        batch: list[Lease] = []
        try:
            return await self._gather_into(batch)
        except BaseException:
            # Cut short past the shutdown's grace period, or by a bug: what it holds is released,
            # not left invisible for a whole visibility timeout or extended for ever.
            self._runner.give_back(batch)
            raise

    async def _gather_into(self, batch: list[Lease]) -> list[Lease] | None:
        size = self._take_carried(batch)
        if self._carry:
            return batch  # what was carried fills a batch by itself
        closes = time.monotonic() + self._window if batch else None
        limit = self._runner.batch_size
        while len(batch) < limit and not self._stopping:
            wait = self._wait_seconds
            if closes is not None:
                remaining = closes - time.monotonic()
                if remaining <= 0:
                    break
                wait = min(wait, math.ceil(remaining))
            messages = await self._receive(min(MAX_BATCH, limit - len(batch)), wait)
            if messages is None:
                # Hand over what is gathered (the next batch backs off), or back off now.
                return batch or None
            if not messages and not batch:
                return batch
            leases = self._runner.lease(messages)
            if leases and closes is None:
                closes = time.monotonic() + self._window  # opened by its first message
            size = self._add(batch, size, leases)
            if self._carry:
                break
        return batch

    def _add(self, batch: list[Lease], size: int, leases: list[Lease]) -> int:
        """Add ``leases`` to ``batch`` (of ``size`` bytes) in order; returns its new size.

        What would take the batch past the payload limit is carried to the next batch, and so
        is everything after it, so that the order holds.
        """
        for lease in leases:
            grown = size + record_size(lease)
            if batch and (grown > PAYLOAD_LIMIT_BYTES or self._carry):
                self._carry.append(lease)
                continue
            batch.append(lease)
            size = grown
        return size

    def _take_carried(self, batch: list[Lease]) -> int:
        """Start ``batch`` from what was carried over, in order: one batch at most; its size.

        The carry is shared, and another poller may add a whole receive to it while one batch
        is handed over, so it can hold more than a batch, by count or by size.
        """
        size = 0
        while self._carry and len(batch) < self._runner.batch_size:
            grown = size + record_size(self._carry[0])
            if batch and grown > PAYLOAD_LIMIT_BYTES:
                break
            batch.append(self._carry.pop(0))
            size = grown
        return size

    def _log_failure(self, exc: Exception) -> None:
        self.consecutive_errors += 1
        log.warning(
            "sqs.receive_failed",
            error=describe_failure(exc),
            code=error_code(exc),
            consecutive_errors=self.consecutive_errors,
        )

    async def _back_off(self) -> None:
        if self._stopping:
            return  # a receive that failed after the stop: nothing to wait for
        step = min(
            _BACKOFF_CAP_SECONDS, _BACKOFF_BASE_SECONDS * 2 ** min(self.consecutive_errors, 10)
        )
        delay = step / 2 + random.uniform(0, step / 2)  # noqa: S311 -- jitter, not cryptography
        self._idle = True
        try:
            await asyncio.sleep(delay)
        finally:
            self._idle = False
