"""Idle cost: the SQS requests a worker makes per hour with nothing to do, and what a fleet pays.

``python -m bench.idle [--seconds S] [--broker moto|fauxqs]`` runs the worker as deployed
(``worker run``, launched by :mod:`bench.consumer` with ``bench.handlers:noop``) on an empty
queue for ``S`` seconds (120 by default), at the default settings (concurrency 10: one poller)
and at the benchmarks' concurrency of 50 (five pollers), both at once on queues of their own,
and counts every request each sends (:func:`bench.probe.count_requests`) from 10 s after its
start, when start-up is over. It prints, per configuration, requests per hour per replica by
action, the least the settings allow (one receive per ``WORKER_WAIT_TIME_SECONDS``: one poller
keeps watch while the queue is empty, whatever their number; and two depth reads, the queue's
and its DLQ's, per ``WORKER_DEPTH_INTERVAL_SECONDS``), and the requests and dollars per month of
1, 10 and 50 idle replicas at SQS's price.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import brokers
from bench.bytecode import compile_worker
from bench.run import PRICE_PER_MILLION_REQUESTS, clients, make_queue

ROOT = Path(__file__).resolve().parent.parent
SETTLE_SECONDS = 10.0  # start-up and the first receives: not idle yet
HOURS_PER_MONTH = 730
WAIT_SECONDS = 20  # WORKER_WAIT_TIME_SECONDS's default
DEPTH_SECONDS = 30  # WORKER_DEPTH_INTERVAL_SECONDS's default
CONFIGURATIONS = {"default (concurrency 10, 1 poller)": 10, "concurrency 50 (5 pollers)": 50}


async def idle_worker(
    broker: brokers.Broker, concurrency: int, seconds: float, workdir: Path
) -> dict[str, Any]:
    """Run one worker on an empty queue for ``seconds``; what it sent, per hour."""
    async with clients(broker.url) as (sqs, sns):
        queue = await make_queue(sqs, sns, with_topic=False)
    result = workdir / f"idle-{concurrency}.json"
    env = brokers.one_message_worker_env(
        broker, queue.url, result, WORKER_CONCURRENCY=str(concurrency)
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.consumer", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    await asyncio.sleep(seconds)
    process.send_signal(signal.SIGTERM)
    await process.wait()
    data = json.loads(result.read_text(encoding="utf-8"))
    samples = data["request_samples"]
    start = next(s for s in samples if s[0] - samples[0][0] >= SETTLE_SECONDS)
    end = samples[-1]
    per_hour = (end[1] - start[1]) / (end[0] - start[0]) * 3600
    floor = 3600 / WAIT_SECONDS + 2 * 3600 / DEPTH_SECONDS
    return {
        "requests_per_hour": round(per_hour),
        "floor_per_hour": round(floor),
        "by_action_whole_run": data["requests"],
        "fleet_per_month": {
            replicas: {
                "requests": round(per_hour * HOURS_PER_MONTH * replicas),
                "usd": round(
                    per_hour * HOURS_PER_MONTH * replicas * PRICE_PER_MILLION_REQUESTS / 1e6, 2
                ),
            }
            for replicas in (1, 10, 50)
        },
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    """Every configuration at once, on one broker."""
    with brokers.start(args.broker) as broker, tempfile.TemporaryDirectory() as tmp:
        results = await asyncio.gather(
            *(
                idle_worker(broker, concurrency, args.seconds, Path(tmp))
                for concurrency in CONFIGURATIONS.values()
            )
        )
    return dict(zip(CONFIGURATIONS, results, strict=True))


def main(argv: list[str] | None = None) -> None:
    """Print the figures as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.idle", description=__doc__)
    parser.add_argument("--seconds", type=float, default=120.0, help="how long each runs (120)")
    parser.add_argument("--broker", choices=brokers.NAMES, default="moto")
    args = parser.parse_args(argv)
    compile_worker()  # run from .pyc files, as deployed
    print(json.dumps(asyncio.run(main_async(args)), indent=1))


if __name__ == "__main__":
    main()
