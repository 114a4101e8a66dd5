"""Free handler slots, which pollers take before they ask SQS for messages.

A poller asks for no more messages than it holds slots for, so a received message starts at once
and never waits in a local buffer while its visibility clock runs. A slot comes back when the
handler that used it has really stopped running (an abandoned, timed-out thread keeps its slot).
"""

from __future__ import annotations

import asyncio
from collections import deque


class Capacity:
    """A counting semaphore whose ``acquire`` takes as many slots as are free, up to a limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._free = limit
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def in_use(self) -> int:
        """Slots taken."""
        return self.limit - self._free

    async def acquire(self, most: int) -> int:
        """Wait until a slot is free, then take up to ``most`` of the free ones."""
        while self._free <= 0:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
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
        self._free += count
        if self._free > self.limit:
            raise RuntimeError("released more slots than were taken")
        self._wake_next()

    def _wake_next(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
