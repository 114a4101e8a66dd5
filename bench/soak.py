"""The soak: many messages through worker processes under faults, kills and restarts.

It starts its own moto server and a fault-injecting proxy (tests/faults.py) in front of it, a
topic → queue → DLQ, and worker subprocesses (``python -m worker run``, the handler
``tests.fault_handlers:record``) that reach SQS through the proxy. A producer publishes
``--messages`` messages through SNS, keeping the backlog under ``--backlog`` (moto slows down as
its queue grows); about 1% are poison (they must end in the DLQ) and 2% fail once. Throughout the
run the proxy injects one kind of fault after another (server errors, throttling, resets, dropped
responses, latency, a stalled receive, a short total outage), and one worker is killed with
SIGKILL and restarted ``--kills`` times while another runs from start to end, so that its memory
can be compared between its start and its end.

At the end the ledger (tests/invariant.py) drains the queue and the DLQ and the figures are
printed: published, handled, in the DLQ, lost (must be 0), duplicates and what explains them,
faults injected by kind, and each worker process's resident memory. The exit code is 0 when
nothing was lost. Not part of ``make test``: ``python -m bench.soak [--messages 100000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.bytecode import compile_worker
from tests.faults import Fault, FaultProxy, Rule
from tests.invariant import Ledger, Verdict
from tests.support import REGION, Queues, make_queues
from worker.config import Settings
from worker.consume.sqs import open_sqs

ROOT = Path(__file__).resolve().parent.parent
WARM_UP = 1000  # messages a worker handles before its "start" memory is taken


@dataclass
class WorkerRun:
    """One worker process: its pid, how it ended, and its memory over time."""

    slot: str
    proc: subprocess.Popen[bytes]
    started: float
    ended: str = ""
    rss: list[tuple[int, int]] = field(default_factory=list)  # (messages handled, RSS bytes)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def sample(self, handled: int) -> None:
        """Record the process's resident memory now."""
        rss = resident_bytes(self.pid)
        if rss is not None:
            self.rss.append((handled, rss))

    def memory_at_start(self) -> tuple[int, int] | None:
        """The first sample after the warm-up (or the first of all, for a short-lived one)."""
        warm = [s for s in self.rss if s[0] >= WARM_UP]
        return warm[0] if warm else (self.rss[0] if self.rss else None)


def resident_bytes(pid: int) -> int | None:
    """VmRSS of a live process, from /proc."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None


def start_moto(*, stock: bool) -> tuple[subprocess.Popen[bytes], str]:
    """A moto server in its own process on a free loopback port.

    By default the benchmarks' launcher (:mod:`bench.moto_server`), whose patch makes moto's
    receives and deletes thread-safe: stock moto can drop a message that is sent while another
    is deleted, which the ledger would count as lost although the worker did nothing wrong.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(  # noqa: S603 -- our own interpreter
        [
            sys.executable,
            "-m",
            "bench.moto_server",
            "-H",
            "127.0.0.1",
            "-p",
            str(port),
            *(["--no-patch"] if stock else []),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):  # noqa: S310 -- loopback
                return server, url
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("the moto server did not start")


# One phase after another: a kind of fault for a while, then a quiet spell.
PHASES: list[tuple[str, tuple[Rule, ...]]] = [
    ("http_500", (Rule.on(Fault.HTTP_500, probability=0.05),)),
    ("throttle", (Rule.on(Fault.THROTTLE, probability=0.05),)),
    ("reset", (Rule.on(Fault.RESET, probability=0.03),)),
    ("latency", (Rule.on(Fault.LATENCY, probability=0.2, seconds=0.2),)),
    ("http_503", (Rule.on(Fault.HTTP_503, probability=0.05),)),
    ("drop_response", (Rule.on(Fault.DROP_RESPONSE, probability=0.02),)),
    ("stall", (Rule.on(Fault.STALL, "ReceiveMessage", count=1, seconds=60),)),
    ("outage", (Rule.on(Fault.RESET),)),
]


class Soak:
    """The whole run."""

    def __init__(self, args: argparse.Namespace, queues: Queues, proxy: FaultProxy) -> None:
        self.args = args
        self.queues = queues
        self.endpoint = queues.endpoint_url
        self.proxy = proxy
        self.markers = Path(tempfile.mkdtemp(prefix="soak-"))
        self.ledger = Ledger(markers=self.markers)
        self.random = random.Random(args.seed)
        self.runs: list[WorkerRun] = []
        self.live: dict[str, WorkerRun] = {}
        self.poison: set[str] = set()
        self.phases_run: list[str] = []
        self.started = time.monotonic()
        self.failed = False  # the invariant broke: keep the logs and markers

    # -- workers -------------------------------------------------------------------------------

    def spawn(self, slot: str) -> WorkerRun:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("WORKER_") and key != "PYTHONPATH"
        }
        env.update(
            PYTHONPATH=str(ROOT),
            AWS_REGION=REGION,
            TEST_MARKERS=str(self.markers),
            TEST_SLEEP="0.005",
            TEST_SLEEP_JITTER="0.02",
            WORKER_QUEUE_URL=self.queues.queue_url,
            WORKER_ENDPOINT_URL=self.proxy.url,
            WORKER_HANDLER="tests.fault_handlers:record",
            WORKER_CONCURRENCY=str(self.args.concurrency),
            WORKER_WAIT_TIME_SECONDS="2",
            WORKER_BACKOFF_BASE_SECONDS="0.5",
            WORKER_BACKOFF_MAX_SECONDS="2",
            WORKER_SHUTDOWN_TIMEOUT="10",
            WORKER_HTTP_PORT="0",
            WORKER_LOG_FORMAT="json",
            WORKER_LOG_LEVEL="warning",
        )
        log = (self.markers / f"worker-{slot}-{len(self.runs)}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker", "run"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            cwd=ROOT,
        )
        log.close()
        run = WorkerRun(slot, proc, time.monotonic())
        self.runs.append(run)
        self.live[slot] = run
        return run

    def handled_by(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for path in (self.markers / "ledger").glob("handled.*"):
            with path.open("rb") as lines:
                counts[int(path.suffix[1:])] = sum(1 for _ in lines)
        return counts

    def sample_memory(self) -> None:
        counts = self.handled_by()
        for run in self.live.values():
            run.sample(counts.get(run.pid, 0))

    async def killer(self) -> None:
        """Kill the ``b`` worker at evenly spaced points of the run, and restart it."""
        for kill in range(1, self.args.kills + 1):
            target = self.args.messages * kill // (self.args.kills + 1)
            # The count lives in other processes' marker files: nothing to wait on but time.
            while sum(self.handled_by().values()) < target:  # noqa: ASYNC110
                await asyncio.sleep(2)
            victim = self.live["b"]
            self.sample_memory()
            victim.proc.kill()
            victim.proc.wait()
            victim.ended = "SIGKILL"
            self.progress(f"killed worker b (pid {victim.pid}) with SIGKILL")
            await asyncio.sleep(1)
            self.spawn("b")

    async def memory(self) -> None:
        while True:
            self.sample_memory()
            await asyncio.sleep(5)

    # -- load and faults -----------------------------------------------------------------------

    async def producer(self) -> None:
        """Publish through SNS, ten at a time, keeping the backlog under ``--backlog``."""
        settings = Settings(endpoint_url=self.endpoint, region=REGION)
        published = 0
        async with open_sqs(settings) as sqs:
            while published < self.args.messages:
                visible = int(
                    (
                        await sqs.get_queue_attributes(
                            QueueUrl=self.queues.queue_url,
                            AttributeNames=["ApproximateNumberOfMessages"],
                        )
                    )["Attributes"]["ApproximateNumberOfMessages"]
                )
                room = min(self.args.backlog - visible, self.args.messages - published)
                if room < 10 and published + room < self.args.messages:
                    await asyncio.sleep(0.2)
                    continue
                bodies = []
                for _ in range(room):
                    roll = self.random.random()
                    kind = "poison" if roll < 0.01 else "flaky" if roll < 0.03 else "ok"
                    ledger_id = self.ledger.new_id()
                    if kind == "poison":
                        self.poison.add(ledger_id)
                    bodies.append(self.ledger.body(ledger_id, kind=kind))
                await self.ledger.publish_bodies(self.queues, bodies, via="sns")
                published += len(bodies)

    async def faults(self) -> None:
        """One kind of fault after another, ``--fault-seconds`` on and as long off."""
        on = self.args.fault_seconds
        while True:
            for name, rules in PHASES:
                await asyncio.sleep(on)
                fresh = tuple(dataclasses.replace(rule) for rule in rules)  # counts from 0
                self.phases_run.append(name)
                # A total outage is kept short: the pollers' backoff grows to 20 s.
                with self.proxy.inject(*fresh):
                    await asyncio.sleep(min(on, 5.0) if name == "outage" else on)

    def progress(self, note: str = "") -> None:
        handled = sum(self.handled_by().values())
        elapsed = time.monotonic() - self.started
        faults = sum(self.proxy.injected.values())
        print(
            f"[{elapsed:7.0f} s] published {len(self.ledger.published_ids):>7} "
            f"handler calls {handled:>7} ({handled / max(elapsed, 1):5.1f}/s) faults {faults:>6}"
            + (f"  {note}" if note else ""),
            file=sys.stderr,
            flush=True,
        )

    async def reporter(self) -> None:
        while True:
            await asyncio.sleep(30)
            self.progress()

    # -- the run -------------------------------------------------------------------------------

    async def run(self) -> Verdict:
        for slot in ("a", "b"):
            self.spawn(slot)
        helpers = [
            asyncio.create_task(self.killer()),
            asyncio.create_task(self.faults()),
            asyncio.create_task(self.memory()),
            asyncio.create_task(self.reporter()),
        ]
        try:
            await self.producer()
            self.progress("all published")
            await self.until_settled()
        finally:
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            self.proxy.clear()
        self.sample_memory()
        for run in self.live.values():
            run.proc.send_signal(signal.SIGTERM)
        for run in self.live.values():
            code = run.proc.wait(timeout=60)
            run.ended = f"SIGTERM, exit {code}"
        self.progress("workers stopped; draining the queue and the DLQ")
        return await self.ledger.inspect(self.queues, settle_timeout=60)

    async def until_settled(self) -> None:
        """Wait until the source queue is empty (everything deleted or dead) for a while."""
        settings = Settings(endpoint_url=self.endpoint, region=REGION)
        quiet = 0
        async with open_sqs(settings) as sqs:
            while quiet < 3:
                await asyncio.sleep(2)
                attributes = (
                    await sqs.get_queue_attributes(
                        QueueUrl=self.queues.queue_url,
                        AttributeNames=[
                            "ApproximateNumberOfMessages",
                            "ApproximateNumberOfMessagesNotVisible",
                            "ApproximateNumberOfMessagesDelayed",
                        ],
                    )
                )["Attributes"]
                quiet = quiet + 1 if not any(int(v) for v in attributes.values()) else 0

    # -- the figures ---------------------------------------------------------------------------

    def lost_detail(self, verdict: Verdict) -> str:
        """Whether lost messages ever reached a worker (from the handlers' started markers)."""
        if not verdict.lost:
            return ""
        started = set().union(*(self.ledger.started_by(run.pid) for run in self.runs))
        reached = verdict.lost & started
        return (
            f" ({len(reached)} taken up by a worker, {len(verdict.lost) - reached.__len__()} "
            f"never received by any worker: {', '.join(sorted(verdict.lost)[:5])})"
        )

    def report(self, verdict: Verdict) -> list[str]:
        figures = verdict.figures()
        duplicates = set(verdict.duplicates)
        struck = self.ledger.by_receipt(self.proxy.struck_receipts)
        killed = set().union(
            *(self.ledger.started_by(run.pid) for run in self.runs if run.ended == "SIGKILL")
        )
        elapsed = time.monotonic() - self.started
        dead_poison = len(verdict.in_dlq & self.poison)
        lines = [
            f"soak: {self.args.messages} messages, {len(self.runs)} worker processes "
            f"({self.args.kills} killed with SIGKILL and restarted), "
            f"concurrency {self.args.concurrency} each, in {elapsed:.0f} s "
            f"({figures['published'] / elapsed:.1f} messages/s)",
            f"published            {figures['published']}",
            f"handled              {figures['handled']}",
            f"in DLQ               {figures['in_dlq']} "
            f"({dead_poison} poison of {len(self.poison)}, "
            f"{figures['in_dlq'] - dead_poison} others out of receives)",
            f"lost                 {figures['lost']}" + self.lost_detail(verdict),
            f"left in the queue    {figures['left_in_queue']}",
            f"duplicates           {figures['duplicates']} messages handled more than once "
            f"({figures['extra_deliveries']} extra deliveries): "
            f"{len(duplicates & killed)} in hand of a killed worker, "
            f"{len((duplicates & struck) - killed)} in flight when a fault struck, "
            f"{len(duplicates - killed - struck)} otherwise (concurrent receives)",
            "faults injected      "
            + ", ".join(f"{k.value} {v}" for k, v in sorted(self.proxy.injected.items())),
            f"fault phases         {len(self.phases_run)}",
            "worker memory (RSS)  handled; at start (after "
            f"{WARM_UP} messages) → at end; how it ended",
        ]
        counts = self.handled_by()
        for run in self.runs:
            first = run.memory_at_start()
            last = run.rss[-1] if run.rss else None
            memory = (
                f"{first[1] / 2**20:6.1f} MiB → {last[1] / 2**20:6.1f} MiB "
                f"(at {first[0]} → {last[0]} messages)"
                if first and last
                else "not sampled"
            )
            lines.append(
                f"  worker {run.slot} pid {run.pid:<7} {counts.get(run.pid, 0):>7} handled; "
                f"{memory}; {run.ended}"
            )
        longest = max(self.runs, key=lambda run: len(run.rss))
        lines.append(
            f"  worker {longest.slot} pid {longest.pid}, RSS by messages handled: {curve(longest)}"
        )
        problems = verdict.problems()
        lines.append("invariant            " + ("holds" if not problems else "; ".join(problems)))
        return lines


def curve(run: WorkerRun, points: int = 11) -> str:
    """The worker's RSS at evenly spaced counts of messages handled: flat, or growing."""
    if not run.rss:
        return "not sampled"
    most = run.rss[-1][0]
    shown = []
    for index in range(points):
        mark = WARM_UP + (most - WARM_UP) * index // (points - 1)
        handled, rss = next((s for s in run.rss if s[0] >= mark), run.rss[-1])
        shown.append(f"{handled / 1000:.0f}k {rss / 2**20:.1f}")
    return ", ".join(shown) + " MiB"


@contextlib.contextmanager
def environment(*, stock_moto: bool) -> Iterator[tuple[str, FaultProxy]]:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "soak")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "soak")
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    server, endpoint = start_moto(stock=stock_moto)
    try:
        with FaultProxy(endpoint, seed=1) as proxy:
            yield endpoint, proxy
    finally:
        server.terminate()
        server.wait(timeout=30)


async def main(args: argparse.Namespace) -> int:
    with environment(stock_moto=args.stock_moto) as (endpoint, proxy):
        queues = await make_queues(
            endpoint, visibility_timeout=10, max_receive_count=args.max_receive_count
        )
        soak = Soak(args, queues, proxy)
        try:
            verdict = await soak.run()
            soak.failed = bool(verdict.problems())
            for line in soak.report(verdict):
                print(line, flush=True)
            if args.memory_log is not None:
                samples = {f"{run.slot} {run.pid}": run.rss for run in soak.runs}
                args.memory_log.write_text(json.dumps(samples), encoding="utf-8")
            return 1 if soak.failed else 0
        finally:
            for run in soak.runs:
                if run.proc.poll() is None:
                    run.proc.kill()
                    run.proc.wait()
            if args.keep or soak.failed:
                print(f"worker logs and marker files kept in {soak.markers}", file=sys.stderr)
            else:
                shutil.rmtree(soak.markers, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n\n", 1)[0]
    )
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--kills", type=int, default=5, help="SIGKILLs of worker b (default 5)")
    parser.add_argument("--concurrency", type=int, default=10, help="per worker (default 10)")
    parser.add_argument("--backlog", type=int, default=300, help="most messages queued at once")
    parser.add_argument("--max-receive-count", type=int, default=5)
    parser.add_argument("--fault-seconds", type=float, default=10.0, help="per fault phase")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--memory-log", type=Path, help="write every RSS sample here (JSON, per worker process)"
    )
    parser.add_argument(
        "--stock-moto", action="store_true", help="unpatched moto (it can lose a message)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep worker logs and markers (kept on failure)"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    compile_worker()  # run from .pyc files, as deployed
    sys.exit(asyncio.run(main(parse_args())))
