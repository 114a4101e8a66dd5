"""The handlers the worker runs in the benchmarks, each reporting to a :class:`~bench.probe.Probe`.

The worker runs as it does in production, ``python -m worker run``, with
``WORKER_HANDLER=bench.handlers:<name>``; the harness sets ``BENCH_RESULT`` (where the probe
writes its JSON), ``BENCH_EXPECTED`` (how many distinct messages the round sends) and the
scenario's parameters. When every expected message is done the handler sends the worker SIGTERM,
so that it stops as it would in a pod: gracefully, flushing its deletes.
"""

from __future__ import annotations

import asyncio
import atexit
import math
import os
import random
import signal
import urllib.request
from pathlib import Path
from typing import Any

from bench.probe import Probe, count_requests
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


def receive_timing() -> dict[str, float]:
    """Time in the worker's receives, and their count, from its /metrics (``BENCH_HTTP_PORT``)."""
    port = os.environ.get("BENCH_HTTP_PORT")
    if not port:
        return {}
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    timing: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("worker_sqs_request_duration_seconds_") and (
            'operation="ReceiveMessage"' in line
        ):
            name, value = line.split("{", 1)[0], float(line.rsplit(" ", 1)[1])
            if name.endswith("_sum"):
                timing["receive_seconds"] = value
            elif name.endswith("_count"):
                timing["receives_timed"] = value
    return timing


def _stop() -> None:
    if _probe is not None:
        # The receives timed are all of them: none is empty before the end.
        _probe.extra.update(receive_timing())
    os.kill(os.getpid(), signal.SIGTERM)


def _make_probe() -> Probe | None:
    result = os.environ.get("BENCH_RESULT")
    if not result:
        return None
    made = Probe(int(os.environ["BENCH_EXPECTED"]), Path(result), _stop)
    count_requests(made)
    atexit.register(made.write, kind="worker")
    return made


_probe = _make_probe()
_sleep = float(os.environ.get("BENCH_SLEEP", "0.05"))
_draw = random.Random(int(os.environ.get("BENCH_SEED", "1")))


def _the_probe() -> Probe:
    if _probe is None:
        raise RuntimeError("BENCH_RESULT and BENCH_EXPECTED are not set")
    return _probe


async def noop(message: Message) -> None:
    """Scenario A and E: nothing at all."""
    probe = _the_probe()
    probe.start(message.message_id)
    probe.done()


async def sleep(message: Message) -> None:
    """Scenario B: I/O-bound, ``BENCH_SLEEP`` seconds."""
    probe = _the_probe()
    probe.start(message.message_id)
    await asyncio.sleep(_sleep)
    probe.done(duration=_sleep)


async def skewed(message: Message) -> None:
    """Scenario C: heavy-tailed durations."""
    probe = _the_probe()
    duration = skewed_duration(_draw)
    probe.start(message.message_id)
    await asyncio.sleep(duration)
    probe.done(duration=duration)


async def latency(message: Message) -> None:
    """Scenario D: the payload carries its publish time."""
    probe = _the_probe()
    probe.start(message.message_id, published_at=float(message.json()["t"]))
    probe.done()


def lambda_noop(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Scenario F: a Lambda handler that does nothing with its records."""
    probe = _the_probe()
    records = event["Records"]
    for record in records:
        probe.start(record["messageId"])
    probe.done(len(records))
    return {"batchItemFailures": []}
