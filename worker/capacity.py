"""Free handler slots, which pollers take before they ask SQS for messages.

A poller asks for no more messages than it holds slots for, so a received message starts at once
and never waits in a local buffer while its visibility clock runs. A slot comes back when the
handler that used it has really stopped running (an abandoned, timed-out thread keeps its slot).
"""

from __future__ import annotations

import asyncio
from collections import deque


class Capacity:
    """A counting semaphore whose ``acquire`` takes as many slots as are free, up to a limit.

    Waiters are served first come, first served: while anyone waits, a newcomer queues behind
    them instead of taking a slot released for the waiter at the head.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._free = limit
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def in_use(self) -> int:
        """Slots taken."""
        return self.limit - self._free

    def _must_wait(self) -> bool:
        return self._free <= 0 or any(not waiter.cancelled() for waiter in self._waiters)

    async def acquire(self, most: int) -> int:
        """Wait until a slot is free, then take up to ``most`` of the free ones."""
        if self._must_wait():
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                while True:
                    await waiter
                    if self._free > 0:
                        break
                    waiter = asyncio.get_running_loop().create_future()
                    self._waiters.appendleft(waiter)  # keep our place at the head
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_next()  # it was our turn: hand the wake-up on
                raise
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        taken = min(most, self._free)
        self._free -= taken
        if self._free > 0:
            self._wake_next()
        return taken

    def release(self, count: int = 1) -> None:
        """Give back ``count`` slots."""
        if count <= 0:
            return
        if self._free + count > self.limit:
            raise RuntimeError("released more slots than were taken")
        self._free += count
        self._wake_next()

    def _wake_next(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
                return
