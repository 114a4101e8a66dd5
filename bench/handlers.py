"""The handlers the worker runs in the benchmarks, each reporting to a :class:`~bench.probe.Probe`.

The worker runs as it does in production, ``worker run``, with
``WORKER_HANDLER=bench.handlers:<name>``, launched by :mod:`bench.consumer`, which installs the
probe these handlers report to (importing this module creates none) and stops the worker once
every expected message is done. The Lambda function of scenarios F10 and F100 is
:mod:`bench.lambda_function`.
"""

from __future__ import annotations

import asyncio
import math
import os
import random

from bench.probe import installed
from worker import Message

SKEW_TAIL_FRACTION = 0.01  # scenario C: 1% of the messages take about 2 s
SKEW_TAIL_SECONDS = (1.5, 2.5)
SKEW_MEDIAN_SECONDS = 0.02  # the others: lognormal around 20 ms
SKEW_SIGMA = 0.5


def skewed_duration(draw: random.Random) -> float:
    """One handler duration of scenario C: most about 20 ms, 1% about 2 s."""
    if draw.random() < SKEW_TAIL_FRACTION:
        return draw.uniform(*SKEW_TAIL_SECONDS)
    return SKEW_MEDIAN_SECONDS * math.exp(draw.gauss(0.0, SKEW_SIGMA))


def skewed_mean() -> float:
    """The distribution's mean, for the ideal throughput."""
    tail = sum(SKEW_TAIL_SECONDS) / 2
    body = SKEW_MEDIAN_SECONDS * math.exp(SKEW_SIGMA**2 / 2)
    return SKEW_TAIL_FRACTION * tail + (1 - SKEW_TAIL_FRACTION) * body


_sleep = float(os.environ.get("BENCH_SLEEP", "0.05"))
_draw = random.Random(int(os.environ.get("BENCH_SEED", "1")))


async def noop(message: Message) -> None:
    """Scenario A and E: nothing at all."""
    probe = installed()
    probe.start(message.message_id)
    probe.done()


async def sleep(message: Message) -> None:
    """Scenario B: I/O-bound, ``BENCH_SLEEP`` seconds."""
    probe = installed()
    probe.start(message.message_id)
    await asyncio.sleep(_sleep)
    probe.done(duration=_sleep)


async def skewed(message: Message) -> None:
    """Scenario C: heavy-tailed durations."""
    probe = installed()
    duration = skewed_duration(_draw)
    probe.start(message.message_id)
    await asyncio.sleep(duration)
    probe.done(duration=duration)


async def latency(message: Message) -> None:
    """Scenario D: the payload carries its publish time."""
    probe = installed()
    probe.start(message.message_id, published_at=float(message.json()["t"]))
    probe.done()
