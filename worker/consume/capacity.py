"""Free slots for messages in hand, which pollers take before they ask SQS for messages.

A poller asks for no more messages than it holds slots for. There are as many slots as handler
calls may run at once, plus the few that :mod:`worker.consume.prefetch` adds so that a finishing
handler
finds its next message already received (``extend``); nothing else waits in a local buffer while
its visibility clock runs. A slot comes back when the handler that used it has really stopped
running (an abandoned, timed-out thread keeps its slot).

When the pool is busy, slots come back one or two at a time, and a poller that took them at once
would ask SQS for one or two messages: a receive of one costs the client, the broker and the
bill as much as a receive of ten. So ``acquire`` can *fill*: the caller at the head of the line,
finding fewer slots free than it wants while handlers are running, keeps its place for a short
bounded time and collects the slots that come back, up to what it wants. It waits only while
slots are in use (so only while some will come back), and never past its bound — unless the
caller says it can be ``patient``: while messages received ahead wait for a handler slot, every
slot that comes back is taken by one of them, no handler idles, and a partial receive would buy
nothing but a request; the bound then runs from the moment that stops being so.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable


class Capacity:
    """A counting semaphore whose ``acquire`` takes as many slots as are free, up to a limit.

    Waiters are served first come, first served: while anyone waits, a newcomer queues behind
    them instead of taking a slot released for the waiter at the head.
    """

    def __init__(self, limit: int) -> None:
        self.base = limit
        self.limit = limit
        self._free = limit
        self._owed = 0  # slots in use beyond a lowered limit: kept back when released
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._filling: asyncio.Future[None] | None = None  # set while the head collects slots

    @property
    def in_use(self) -> int:
        """Slots taken."""
        return self.limit + self._owed - self._free

    def _must_wait(self) -> bool:
        return (
            self._free <= 0
            or self._filling is not None
            or any(not waiter.cancelled() for waiter in self._waiters)
        )

    async def acquire(
        self,
        most: int,
        *,
        fill_within: float = 0.0,
        patient: Callable[[], bool] | None = None,
    ) -> int:
        """Wait until a slot is free, then take up to ``most`` of the free ones.

        With ``fill_within`` (seconds) the caller, once at the head with a slot free, waits up
        to that long for ``most`` to be free while others are in use; slots released meanwhile
        are kept for it. While ``patient()`` is true the wait does not count against that bound.
        """
        if self._must_wait():
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                while True:
                    await waiter
                    # Our turn, unless another caller is still collecting (it was woken before
                    # us and filled first): then wait at the head for what it leaves.
                    if self._free > 0 and self._filling is None:
                        break
                    self._waiters.remove(waiter)  # spent: a line of spent futures would grow
                    waiter = asyncio.get_running_loop().create_future()
                    self._waiters.appendleft(waiter)  # keep our place at the head
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_next()  # it was our turn: hand the wake-up on
                raise
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        if fill_within > 0:
            await self._fill(min(most, self.limit), fill_within, patient)
        # Nobody takes slots while the head collects them, so at least one is still free.
        taken = min(most, self._free)
        self._free -= taken
        if self._free > 0:
            self._wake_next()
        return taken

    async def _fill(self, wanted: int, seconds: float, patient: Callable[[], bool] | None) -> None:
        """Hold the head of the line until ``wanted`` slots are free, or ``seconds`` pass
        without ``patient()``."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + seconds
        try:
            while self._free < wanted and self.in_use > 0:
                if patient is not None and patient():
                    deadline = time.monotonic() + seconds
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._filling = loop.create_future()
                timer = loop.call_later(remaining, _settle, self._filling)
                try:
                    await self._filling
                finally:
                    timer.cancel()
        except asyncio.CancelledError:
            self._filling = None
            if self._free > 0:
                self._wake_next()  # what was collected is the next waiter's
            raise
        finally:
            self._filling = None

    def extend(self, extra: int) -> None:
        """Set how many slots there are beyond the base limit (see :mod:`worker.consume.prefetch`).

        Raising it frees slots at once. Lowering it takes back free slots, unless the head of the
        line is collecting them (it was promised at least one); what cannot be taken back now is
        owed, and paid from the next releases: slots in use are never taken from their users.
        """
        limit = self.base + max(0, extra)
        change, self.limit = limit - self.limit, limit
        if change > 0:
            forgiven = min(change, self._owed)
            self._owed -= forgiven
            self._add_free(change - forgiven)
        elif change < 0:
            self._owed -= change
            if self._filling is None:
                paid = min(self._owed, self._free)
                self._owed -= paid
                self._free -= paid

    def release(self, count: int = 1) -> None:
        """Give back ``count`` slots."""
        if count <= 0:
            return
        if count > self.in_use:
            raise RuntimeError("released more slots than were taken")
        paid = min(self._owed, count)
        self._owed -= paid
        self._add_free(count - paid)

    def _add_free(self, count: int) -> None:
        if count > 0:
            self._free += count
            self._wake_next()

    def _wake_next(self) -> None:
        if self._filling is not None:
            _settle(self._filling)  # the head is collecting: released slots are its own
            return
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
                return


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
