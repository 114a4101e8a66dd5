"""Start-up: from process start to the first message handled, and where the time goes.

``python -m bench.startup [--runs N] [--broker moto|fauxqs]`` starts the broker, then N times
puts one message on a fresh queue and starts the worker as deployed (``worker run``, launched
by :mod:`bench.consumer` with ``bench.handlers:noop``, which stops the worker once it has the
message). It reports, as the median and min-max over the runs:

- ``to_first_message_s``: wall time from spawning the process to the handler's start;
- ``cpu_to_first_message_s``: the CPU the process had spent by then (user + system);
- ``python_s``: the interpreter alone (``python -c pass``), which no change of ours removes;

and, from a process of its own per run (``--phases``), where the worker's part goes: the imports
``worker run`` needs, the settings, creating the SQS client, the first call (reading the
queue's attributes) and the first receive. Figures of one run of one machine: the broker is
warm (started before the first run), as it is for a replica that KEDA scales from zero.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import brokers
from bench.bytecode import compile_worker

ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"


async def fresh_queue(broker: brokers.Broker, *, message: str | None) -> str:
    """A new queue's URL, holding ``message`` if given."""
    # Not imported at the top: the --phases process times the worker's imports, not the harness's.
    from bench.run import clients, make_queue  # noqa: PLC0415

    async with clients(broker.url) as (sqs, sns):
        queue = await make_queue(sqs, sns, with_topic=False)
        if message is not None:
            await sqs.send_message(QueueUrl=queue.url, MessageBody=message)
    return queue.url


async def one_run(broker: brokers.Broker, workdir: Path, index: int) -> dict[str, float]:
    """One worker start on a queue holding one message."""
    queue_url = await fresh_queue(broker, message=json.dumps({"i": index}))
    result = workdir / f"start-{index}.json"
    env = brokers.one_message_worker_env(broker, queue_url, result)
    spawned = time.time()
    command = [sys.executable, "-m", "bench.consumer"]  # worker run, with the probe installed
    done = await asyncio.to_thread(
        subprocess.run, command, cwd=ROOT, env=env, capture_output=True, check=False
    )
    if not result.exists():
        raise SystemExit(f"the worker reported nothing:\n{done.stderr.decode()[-2000:]}")
    data = json.loads(result.read_text(encoding="utf-8"))
    return {
        "to_first_message_s": data["first_start"] - spawned,
        "cpu_to_first_message_s": data["first_start_cpu"],
    }


def python_alone() -> float:
    """Seconds for the interpreter to start and exit, doing nothing."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - started


def phases(endpoint: str, queue_url: str) -> dict[str, float]:
    """Where ``worker run`` spends its start-up, in this process (a fresh one)."""
    marks: dict[str, float] = {}
    clock = time.perf_counter
    started = clock()
    from worker.config import load_settings  # noqa: PLC0415
    from worker.consume.sqs import open_sqs  # noqa: PLC0415 -- what is timed
    from worker.consume.worker import connect  # noqa: PLC0415
    from worker.ops import cli  # noqa: F401, PLC0415 -- the command line, which `run` imports

    marks["imports_s"] = clock() - started
    os.environ.update(
        WORKER_QUEUE_URL=queue_url, WORKER_ENDPOINT_URL=endpoint, WORKER_REGION=REGION
    )
    started = clock()
    settings = load_settings()
    marks["settings_s"] = clock() - started

    async def calls() -> None:
        started = clock()
        async with open_sqs(settings) as client:
            marks["client_s"] = clock() - started
            started = clock()
            await connect(settings, client)
            marks["first_call_s"] = clock() - started
            started = clock()
            await client.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1)  # one waits
            marks["first_receive_s"] = clock() - started

    asyncio.run(calls())
    marks["cpu_s"] = sum(os.times()[:2])
    return marks


async def phases_run(broker: brokers.Broker) -> dict[str, float]:
    """:func:`phases` in a fresh process, on a fresh queue."""
    queue_url = await fresh_queue(broker, message="{}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKER_", "BENCH_"))}
    env.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")  # noqa: S106
    command = [sys.executable, "-m", "bench.startup", "--phases", broker.url, queue_url]
    done = await asyncio.to_thread(
        subprocess.run, command, cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def summary(runs: list[dict[str, float]]) -> dict[str, str]:
    """Median (min-max) of each figure."""
    shown = {}
    for key in runs[0]:
        values = [run[key] for run in runs]
        shown[key] = f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"
    return shown


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    """Every run, on one warm broker."""
    with brokers.start(args.broker) as broker, tempfile.TemporaryDirectory() as tmp:
        ends = [await one_run(broker, Path(tmp), index) for index in range(args.runs)]
        parts = [await phases_run(broker) for _ in range(args.runs)]
    alone = [{"python_s": python_alone()} for _ in range(args.runs)]
    return {"end_to_end": summary(ends), "python": summary(alone), "phases": summary(parts)}


def main(argv: list[str] | None = None) -> None:
    """Print the figures as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="starts to measure (5)")
    parser.add_argument("--broker", choices=brokers.NAMES, default="moto")
    parser.add_argument(
        "--phases", nargs=2, metavar=("ENDPOINT", "QUEUE_URL"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.phases:
        print(json.dumps(phases(*args.phases)))
        return
    compile_worker()  # start from .pyc files, as a deployed worker does
    print(json.dumps(asyncio.run(main_async(args)), indent=1))


if __name__ == "__main__":
    main()
