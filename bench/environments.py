"""What a Lambda execution environment costs: the Runtime API round trip, and memory at rest.

``python -m bench.environments [--invocations N]`` starts the worker's own environment pool on
a no-op Python function (a module of two lines, under awslambdaric) and times
invocations carrying SQS events of 10 and 100 records, the batch sizes of scenarios F10 and
F100, one environment at a time, with no broker involved. It prints, for each batch size, the
wall time per invocation and the CPU it took in the worker's process and in the environment,
and each environment's resident memory at rest (after it initialised, and after the
invocations). Figures of one run, from one machine: compare them with each other.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from bench.probe import memory_kb, process_cpu
from worker.config import HandlerType, LogFormat, LogLevel, Settings
from worker.lambda_.env import FunctionIdentity
from worker.lambda_.environments import (
    EnvironmentMetrics,
    EnvironmentPool,
    environment_spec,
)
from worker.lambda_.event import sqs_event, sqs_record
from worker.lambda_.logs import LineForwarder, OutputFormat
from worker.logs import configure_logging


def event_of(records: int) -> bytes:
    """An SQS event of ``records`` 200-byte bodies, as the worker builds it."""
    raw = [
        {
            "MessageId": f"m-{n:08d}",
            "ReceiptHandle": "r" * 200,
            "Body": json.dumps({"order_id": n, "padding": "x" * 160}),
            "Attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1700000000000"},
            "MD5OfBody": "0" * 32,
        }
        for n in range(records)
    ]
    arn = "arn:aws:sqs:us-east-1:123456789012:bench"
    event = sqs_event(sqs_record(m, queue_arn=arn, region="us-east-1") for m in raw)
    return json.dumps(event).encode()


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc."""
    return memory_kb(pid)[0] / 1024


async def measure(invocations: int) -> None:
    """Time ``invocations`` no-op invocations per batch size on one warm environment."""
    root = Path(tempfile.mkdtemp(prefix="bench-env-"))
    (root / "noop.py").write_text(
        'def handler(event, context):\n    return {"batchItemFailures": []}\n'
    )
    configure_logging(LogLevel.WARNING, LogFormat.JSON)
    settings = Settings(handler_type=HandlerType.LAMBDA, handler="noop.handler", handler_path=root)
    identity = FunctionIdentity("bench", 1024, "us-east-1", "123456789012")
    devnull = Path(os.devnull).open("wb")  # noqa: SIM115, ASYNC230 -- once, for the whole run
    pool = EnvironmentPool(
        environment_spec(settings, identity),
        size=1,
        metrics=EnvironmentMetrics(CollectorRegistry(), queue="bench"),
        forwarder=LineForwarder(OutputFormat.TEXT, devnull),
    )
    started = time.monotonic()
    error = await pool.warm_up(30)
    if error is not None:
        raise SystemExit(f"the function did not initialise: {error}")
    cold = time.monotonic() - started
    pid = pool.environment_pids()[0]
    print(f"cold start (spawn to first next): {cold * 1000:.0f} ms")
    print(f"environment RSS at rest after init: {rss_mb(pid):.1f} MB")
    for records in (10, 100):
        event = event_of(records)
        for _ in range(20):  # warm the path
            await pool.invoke(event, time.monotonic() + 30)
        worker_cpu = resource.getrusage(resource.RUSAGE_SELF)
        env_cpu = process_cpu(pid)
        begin = time.perf_counter()
        for _ in range(invocations):
            await pool.invoke(event, time.monotonic() + 30)
        wall = (time.perf_counter() - begin) / invocations
        after = resource.getrusage(resource.RUSAGE_SELF)
        worker_used = (after.ru_utime + after.ru_stime) - (
            worker_cpu.ru_utime + worker_cpu.ru_stime
        )
        env_used = process_cpu(pid) - env_cpu
        print(
            f"batch {records:>3}: {wall * 1000:.2f} ms per invocation "
            f"(event {len(event) / 1024:.0f} KiB); CPU per invocation: "
            f"worker {worker_used / invocations * 1000:.2f} ms, "
            f"environment {env_used / invocations * 1000:.2f} ms"
        )
    print(f"environment RSS at rest after the invocations: {rss_mb(pid):.1f} MB")
    await pool.close()


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments and run the measurement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invocations", type=int, default=500)
    args = parser.parse_args(argv)
    asyncio.run(measure(args.invocations))


if __name__ == "__main__":
    main(sys.argv[1:])
