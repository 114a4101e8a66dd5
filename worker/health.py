"""Liveness and readiness, decided from the worker's own state.

Liveness fails only for what a restart cures: an event loop blocked beyond a threshold, pollers
that died, or every handler slot held by a handler past its budget. It does not fail because SQS is
unreachable — pollers back off and recover by themselves, and a restart would not bring SQS back.
Readiness says the queue was reached and the worker is not draining.

The HTTP server reads this from its own thread, so a blocked event loop is reported rather than
merely timing out; the fields are plain values written by the loop and read whole.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Verdict:
    """An answer to a probe: whether it passes, and why not."""

    ok: bool
    problems: tuple[str, ...] = ()
    details: dict[str, float | int | str] = field(default_factory=dict)


class Health:
    """What the probes are answered from."""

    def __init__(
        self,
        *,
        loop_block_threshold: float,
        beat_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.loop_block_threshold = loop_block_threshold
        self.beat_interval = beat_interval
        self._clock = clock
        self.last_beat = clock()
        self.queue_reached = False
        self.starting = "queue not reached yet"  # what readiness waits for, until queue_reached
        self.draining = False
        self.pollers_expected = 0
        self.pollers_running = 0
        self.slots = 0
        self.abandoned: Callable[[], int] = lambda: 0

    def beat(self) -> None:
        """The event loop is turning."""
        self.last_beat = self._clock()

    def loop_lag(self) -> float:
        """Seconds the event loop is behind now: the time since the last beat beyond its interval.

        Read at scrape time, from the server's thread, like liveness: a value the loop recorded
        itself could not change while the loop is blocked, and would be overwritten by the beat
        that ends the block, so a blocked loop would never be seen late.
        """
        return max(0.0, self._clock() - self.last_beat - self.beat_interval)

    def liveness(self) -> Verdict:
        """Whether the process should be restarted (not ok) or left alone (ok)."""
        problems = []
        silent = self._clock() - self.last_beat
        if silent > self.loop_block_threshold:
            problems.append(f"event loop blocked for {silent:.0f} s")
        if self.pollers_running < self.pollers_expected and not self.draining:
            problems.append(
                f"{self.pollers_expected - self.pollers_running} of {self.pollers_expected} "
                "pollers died"
            )
        abandoned = self.abandoned()
        if self.slots and abandoned >= self.slots:
            problems.append(f"all {self.slots} handler slots held by handlers past their budget")
        return Verdict(
            not problems,
            tuple(problems),
            {"seconds_since_heartbeat": round(silent, 3), "pollers": self.pollers_running},
        )

    def readiness(self) -> Verdict:
        """Whether the worker is consuming."""
        problems = []
        if not self.queue_reached:
            problems.append(self.starting)
        if self.draining:
            problems.append("draining")
        return Verdict(not problems, tuple(problems))


async def heartbeat(health: Health) -> None:
    """Beat every ``health.beat_interval`` seconds, until cancelled."""
    while True:
        await asyncio.sleep(health.beat_interval)
        health.beat()
