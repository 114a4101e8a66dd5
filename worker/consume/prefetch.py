"""Receive-ahead: how many messages to hold beyond the free handler slots, so that none idle.

A slot freed by a finishing handler would stay idle for a whole receive round trip if pollers
asked only for free slots: with 50 ms handlers and a 20 ms receive, that is more than a quarter
of the pool's time. So the pollers may hold a few messages more than there are slots, received
while the handlers finish, which start the moment a slot frees
(:class:`worker.consume.runner.Runner`
keeps them in order until then; their visibility is kept like any other message's).

How many is measured, not configured. Each completion costs its slot one receive cycle (the
fill a poller waits for ten slots, ``WORKER_RECEIVE_FILL_SECONDS``, plus the receive's round
trip) unless a message is already waiting, so the pool idles ``completions per second x cycle``
slots' worth of time. Where that is at least 1% of the pool, the pollers hold enough messages
for one cycle of completions, in whole receives (up to ten messages each), up to
``WORKER_PREFETCH``; where it is less, none. Nor any where the handlers hold less than half the
pool on average: near-instant handlers leave their slots at once, and the slots are held by the
receives in flight, so there is nothing to refill. Short handlers get a buffer that keeps the pool
busy; handlers that run longer than about a hundred cycles (4 s at a 20 ms round trip) get
none, so no message is held back from the other replicas while a long job runs; an idle queue
lets it fall to nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from worker.consume.capacity import Capacity
from worker.consume.sqs import MAX_BATCH

# Time constant of the completion rate's moving average, seconds: long enough to smooth the
# bursts of a pool whose messages arrive ten at a time, short enough to follow a change of load.
_RATE_SECONDS = 2.0
# Weight of the latest round trip in its moving average.
_ROUND_TRIP_WEIGHT = 0.2
# Below this share of the pool's time idle between a completion and the next start, receiving
# ahead is not worth holding messages back from other consumers.
_WORTH_IT = 0.01
# Receiving ahead helps only where handlers, not receives in flight, hold most of the slots: a
# pool of near-instant handlers is never short of a message, and extra ones would only be held.
_HANDLERS_HOLD = 0.5


class Prefetch:
    """Sizes the slots beyond the concurrency limit from what the worker measures."""

    def __init__(
        self,
        capacity: Capacity,
        most: int,
        *,
        fill_seconds: float = 0.0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._capacity = capacity
        self.most = most
        self._fill_seconds = fill_seconds
        # Messages one receive brings when the pool is busy: up to ten, and no more than slots.
        self._receive_size = max(1, min(MAX_BATCH, capacity.base))
        self._now = now
        self.rate = 0.0  # handler completions per second, moving average
        # Handler calls running on average, moving average: the seconds the calls that ended
        # ran, per second (Little's law), so a time average whatever the moment it is read.
        self.running = 0.0
        self._ran = 0.0
        self.round_trip = 0.0  # seconds per receive that brought messages, moving average
        self._completed = 0
        self._since = self._now()
        self.ahead = 0

    def completed(self, seconds: float, count: int = 1) -> None:
        """``count`` handler calls (slots' worth) finished, having held their slots ``seconds``."""
        self._completed += count
        self._ran += seconds * count

    def received(self, round_trip: float) -> None:
        """A receive that brought messages took ``round_trip`` seconds: update the allowance."""
        if self.most <= 0:
            return
        if self.round_trip == 0.0:
            self.round_trip = round_trip
        else:
            self.round_trip += _ROUND_TRIP_WEIGHT * (round_trip - self.round_trip)
        self._update_rate()
        per_cycle = self.rate * (self._fill_seconds + self.round_trip)
        base = self._capacity.base
        if self.running < _HANDLERS_HOLD * base or per_cycle < _WORTH_IT * base:
            self.ahead = 0
        else:
            receives = math.ceil(per_cycle / self._receive_size)
            self.ahead = min(self.most, receives * self._receive_size)
        self._capacity.extend(self.ahead)

    def _update_rate(self) -> None:
        now = self._now()
        elapsed = now - self._since
        if elapsed <= 0:
            return
        weight = 1.0 - math.exp(-elapsed / _RATE_SECONDS)
        self.rate += weight * (self._completed / elapsed - self.rate)
        self.running += weight * (self._ran / elapsed - self.running)
        self._completed = 0
        self._ran = 0.0
        self._since = now
