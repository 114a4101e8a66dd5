"""The benchmarks: the worker against the raw SQS ceiling, on a moto server on loopback.

``python -m bench`` (``make bench``) runs every scenario; ``--scenario A`` (repeatable) picks
some, ``--rounds N`` sets the rounds (3 by default), ``--quick`` runs fewer messages for a smoke
test. Each round of a scenario runs, one after the other and in alternating order, the worker
(``worker run`` with a handler from :mod:`bench.handlers`, launched by :mod:`bench.consumer`,
which installs the probe first) and the ceiling (:mod:`bench.ceiling`: bare
``ReceiveMessage(10)`` + ``DeleteMessageBatch`` loops, as many as the worker has pollers),
each in a process of its own, on a fresh queue (with a DLQ) of the same moto server, which also
runs in a process of its own (:mod:`bench.moto_server`, patched so that a receive does not
rescan the queue, ``--no-patch`` for stock moto; served with HTTP/1.1 keep-alive as real SQS
endpoints are, ``--werkzeug`` for moto's own connection-per-request server).

The queue is fed while it is consumed, by this process: a backlog of ``--backlog`` messages,
visible or in flight, is kept, with at least 100 visible (moto's receives still scan the queue,
so a deep backlog would slow the broker, not the consumer, and counting those in flight gives
both consumers the same broker load); scenario D publishes through SNS at a steady rate
instead. Bodies are SNS notification envelopes, as an SNS-subscribed queue receives them.

Every figure is the median and the min-max over the rounds, and a ratio to the ceiling of the
same round; rates and CPU are taken between 10% and 90% of the messages (:mod:`bench.probe`).
In F10 and F100 the Lambda handler runs in execution environments, the worker's child
processes: they append the ids they handle to a file that the worker's probe follows, and the
CPU per message is the worker process's plus its environments', each also shown apart.
Each run counts message ids: a message lost, seen twice, or left on the queue fails the run.
The table also gives the SQS requests each consumer sent per 1,000 messages (counted in the
consumer, :func:`bench.probe.count_requests`), by action, and what they would cost on SQS; the
peak RSS target is relative to the fixed stack's own peak (``python -m bench.floor --lean``),
measured once at the start of the run.
Each run's line also splits the broker's CPU per message by kind of call (``moto_ms_*``, from
:class:`bench.moto_server.CallCosts`), and what it spent outside any call (its HTTP server's
I/O loop), so that a difference in the broker's CPU can be traced to its cause.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from bench import brokers
from bench.brokers import Broker, free_port
from bench.bytecode import compile_worker
from bench.handlers import skewed_mean
from bench.probe import SHARED_IDS, process_cpu

if TYPE_CHECKING:
    from types_aiobotocore_sns import SNSClient
    from types_aiobotocore_sqs import SQSClient

ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
ACCOUNT = "123456789012"
WAIT_SECONDS = 2  # long polls of the worker and the ceiling: short, so that rounds end quickly


# --- scenarios ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One line of the issue's list: what the worker runs and how the queue is fed."""

    key: str
    title: str
    handler: str  # WORKER_HANDLER
    concurrency: int
    messages: int
    quick_messages: int
    worker_env: dict[str, str] = field(default_factory=dict)
    publish_rate: float | None = None  # messages/s through SNS (scenario D); else a backlog
    sleep: float | None = None  # handler duration (B)
    skewed: bool = False  # heavy-tailed handler durations (C)

    @property
    def has_handler(self) -> bool:
        """Whether its handler does something (sleeps) that a bare loop can be made to do."""
        return self.sleep is not None or self.skewed

    @property
    def in_environments(self) -> bool:
        """Whether the handler runs in Lambda execution environments, child processes."""
        return self.worker_env.get("WORKER_HANDLER_TYPE") == "lambda"

    @property
    def pollers(self) -> int:
        """The worker's default poller count for this scenario (the ceiling runs as many)."""
        batch = int(self.worker_env.get("WORKER_BATCH_SIZE", "10")) if self.in_environments else 1
        return max(1, min(10, self.concurrency, -(-self.concurrency * batch // 10)))


SCENARIOS = [
    Scenario("A", "no-op handler, concurrency 50", "bench.handlers:noop", 50, 20_000, 1500),
    Scenario("B", "I/O-bound handler (sleep 50 ms), concurrency 50", "bench.handlers:sleep",
             50, 15_000, 1500, sleep=0.05),
    Scenario("B10", "I/O-bound handler (sleep 50 ms), concurrency 10: the broker not the limit",
             "bench.handlers:sleep", 10, 3000, 1000, sleep=0.05),
    Scenario("C", "skewed latency (most ~20 ms, 1% ~2 s), concurrency 100",
             "bench.handlers:skewed", 100, 15_000, 1500, skewed=True),
    Scenario("D", "end-to-end latency, SNS publish at 40/s, concurrency 50",
             "bench.handlers:latency", 50, 1200, 300, publish_rate=40.0),
    Scenario("E", "memory over 100,000 messages, no-op handler, concurrency 50",
             "bench.handlers:noop", 50, 100_000, 10_000),
    Scenario("F10", "Lambda handler, batch size 10, concurrency 5",
             "bench.lambda_function:handler", 5, 6000, 1500,
             worker_env={"WORKER_HANDLER_TYPE": "lambda", "WORKER_BATCH_SIZE": "10"}),
    Scenario("F100", "Lambda handler, batch size 100, 1 s window, concurrency 5",
             "bench.lambda_function:handler", 5, 6000, 1500,
             worker_env={"WORKER_HANDLER_TYPE": "lambda", "WORKER_BATCH_SIZE": "100",
                         "WORKER_MAX_BATCHING_WINDOW": "1"}),
]  # fmt: skip


# --- the broker's CPU ---------------------------------------------------------------------------


class CpuSampler:
    """Samples a process's CPU time while a round runs, for its busy fraction in a window."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, float]] = []

    async def run(self) -> None:
        """Sample until cancelled."""
        while True:
            self.samples.append((time.time(), process_cpu(self.pid)))
            await asyncio.sleep(self.interval)

    def busy(self, start: float, end: float) -> float:
        """CPU seconds per second between ``start`` and ``end`` (the nearest samples)."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            return float("nan")
        (t0, c0), (t1, c1) = inside[0], inside[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else float("nan")


# --- queues and feeding ------------------------------------------------------------------------


def client_config() -> AioConfig:
    """The harness's own clients: enough connections for concurrent sends, and no retries.

    A retried SendMessageBatch whose first attempt reached the broker would put the messages on
    the queue twice, with new ids: the count of ids would be wrong. A failed send fails the round.
    """
    return AioConfig(max_pool_connections=32, retries={"mode": "standard", "total_max_attempts": 1})


@dataclass
class Queue:
    """A fresh queue (with a DLQ, maxReceiveCount 5) for one run, and its topic for D."""

    url: str
    dlq_url: str
    topic_arn: str | None = None


async def queue_arn(sqs: SQSClient, url: str) -> str:
    """A queue's ARN, as the broker names it (brokers differ in the account they use)."""
    response = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return response["Attributes"]["QueueArn"]


async def make_queue(sqs: SQSClient, sns: SNSClient, *, with_topic: bool) -> Queue:
    """Create the queue, its DLQ and (for D) a topic subscribed to it."""
    name = f"bench-{uuid.uuid4().hex[:10]}"
    dlq_url = (await sqs.create_queue(QueueName=f"{name}-dlq"))["QueueUrl"]
    redrive = json.dumps(
        {"deadLetterTargetArn": await queue_arn(sqs, dlq_url), "maxReceiveCount": 5}
    )
    url = (
        await sqs.create_queue(
            QueueName=name, Attributes={"VisibilityTimeout": "30", "RedrivePolicy": redrive}
        )
    )["QueueUrl"]
    queue = Queue(url, dlq_url)
    if with_topic:
        queue.topic_arn = (await sns.create_topic(Name=name))["TopicArn"]
        await sns.subscribe(
            TopicArn=queue.topic_arn, Protocol="sqs", Endpoint=await queue_arn(sqs, url)
        )
    return queue


# Sends in flight at once: enough that the backlog is topped up faster than any consumer drains
# it (a consumer that finds fewer than ten messages makes more receives per message).
_SENDS_AT_ONCE = 16
_SIGNATURE = "x" * 344  # the size of a real SNS signature (base64 of 256 bytes)


def envelope(index: int, topic: str) -> str:
    """An SNS notification envelope, as SNS delivers a message to a subscribed queue."""
    now = datetime.datetime.now(datetime.UTC)
    return json.dumps(
        {
            "Type": "Notification",
            "MessageId": str(uuid.uuid4()),
            "TopicArn": topic,
            "Message": json.dumps({"i": index, "t": time.time()}),
            "Timestamp": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
            "SignatureVersion": "1",
            "Signature": _SIGNATURE,
            "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0.pem",
            "UnsubscribeURL": f"https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={topic}:1",
        }
    )


async def queued(sqs: SQSClient, url: str) -> tuple[int, int]:
    """(visible, in flight) messages of the queue."""
    response = await sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )
    attributes = response["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )


# Fewest messages kept visible whatever is in flight: ten full receives' worth, so that a
# consumer holding many messages (a Lambda batch gathering over a window) never finds the
# queue empty.
_MIN_VISIBLE = 100


class Feeder:
    """Sends the round's messages, keeping about ``backlog`` of them in the queue."""

    def __init__(self, sqs: SQSClient, url: str, total: int, backlog: int) -> None:
        self._sqs = sqs
        self._url = url
        self.total = total
        self.backlog = backlog
        self.sent = 0
        self._topic = f"arn:aws:sns:{REGION}:{ACCOUNT}:bench"

    async def send(self, count: int) -> None:
        """Send ``count`` more messages (at most what is left), ten per call, several at once."""
        count = min(count, self.total - self.sent)
        batches = []
        while count > 0:
            size = min(10, count)
            first = self.sent
            self.sent += size
            count -= size
            batches.append(
                [
                    {"Id": str(i), "MessageBody": envelope(first + i, self._topic)}
                    for i in range(size)
                ]
            )
        for start in range(0, len(batches), _SENDS_AT_ONCE):
            await asyncio.gather(
                *(self._send_batch(e) for e in batches[start : start + _SENDS_AT_ONCE])
            )

    async def _send_batch(self, entries: list[dict[str, str]]) -> None:
        response = await self._sqs.send_message_batch(QueueUrl=self._url, Entries=entries)  # type: ignore[arg-type]
        if response.get("Failed"):
            raise RuntimeError(f"the broker refused messages: {response['Failed']}")

    async def keep_up(self) -> None:
        """Top the backlog up until every message is sent."""
        while self.sent < self.total:
            visible, in_flight = await queued(self._sqs, self._url)
            # The backlog counts messages in flight: moto's receive scans them too, so both
            # consumers give the broker the same work whatever they hold.
            missing = max(self.backlog - visible - in_flight, _MIN_VISIBLE - visible)
            if missing >= 10:
                await self.send(missing)
            else:
                await asyncio.sleep(0.02)


async def publish_steadily(sns: SNSClient, topic_arn: str, total: int, rate: float) -> None:
    """Publish ``total`` messages through SNS at ``rate`` per second, each stamped with its time."""
    tasks: set[asyncio.Task[Any]] = set()
    started = time.monotonic()
    for index in range(total):
        delay = started + index / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        body = json.dumps({"i": index, "t": time.time()})
        task = asyncio.create_task(sns.publish(TopicArn=topic_arn, Message=body))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)


# --- one run -----------------------------------------------------------------------------------


@dataclass
class Run:
    """What one consumer did in one round."""

    kind: str  # "worker", "ceiling" or "handler-loop" (the ceiling running the handler)
    ok: bool
    problems: list[str]
    figures: dict[str, float]
    rss_samples: list[tuple[float, int, int]] = field(default_factory=list)


# The consumers that are bench/ceiling.py: the bare loop, and the same loop running the scenario's
# handler (scenarios whose handler sleeps), against which the worker's CPU is also reported.
LOOPS = ("ceiling", "handler-loop")


# A scenario whose handler sleeps also reports the worker's CPU per message against the handler
# loop's: the worker's figure, with the handler loop's in the ceiling's column.
HANDLER_LOOP_CPU = "cpu_per_1000_against_handler_loop"


def consumer_command(kind: str, scenario: Scenario, profile: Path | None) -> list[str]:
    """The consumer's command line."""
    if kind in LOOPS:
        return [sys.executable, "-m", "bench.ceiling"]
    command = [sys.executable, "-m", "bench.consumer"]  # worker run, with the probe installed
    if profile is not None:
        out = profile / f"{scenario.key}-{uuid.uuid4().hex[:6]}.txt"
        spy = Path(sys.executable).with_name("py-spy")
        record = [str(spy) if spy.exists() else "py-spy", "record", "--gil", "--format", "raw"]
        command = [*record, "--rate", "200", "-o", str(out), "--", *command]
    return command


def consumer_env(
    kind: str, scenario: Scenario, *, endpoint: str, queue: Queue, total: int, result: Path
) -> dict[str, str]:
    """The consumer's environment: the machine's, less any WORKER_* setting, plus the round's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKER_", "BENCH_"))}
    env.setdefault("AWS_ACCESS_KEY_ID", "bench")
    env.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    env.update(BENCH_RESULT=str(result), BENCH_EXPECTED=str(total))
    if kind in LOOPS:
        env.update(
            BENCH_ENDPOINT=endpoint,
            BENCH_QUEUE_URL=queue.url,
            BENCH_POLLERS=str(scenario.pollers),
            BENCH_WAIT=str(WAIT_SECONDS),
            BENCH_LATENCY="1" if scenario.publish_rate else "0",
        )
        if kind == "handler-loop":
            env["BENCH_HANDLER"] = "skewed" if scenario.skewed else "sleep"
            if scenario.sleep is not None:
                env["BENCH_SLEEP"] = str(scenario.sleep)
        return env
    port = free_port()
    env.update(
        WORKER_QUEUE_URL=queue.url,
        WORKER_ENDPOINT_URL=endpoint,
        WORKER_REGION=REGION,
        WORKER_HANDLER=scenario.handler,
        WORKER_CONCURRENCY=str(scenario.concurrency),
        WORKER_WAIT_TIME_SECONDS=str(WAIT_SECONDS),
        WORKER_HTTP_PORT=str(port),
        WORKER_HTTP_HOST="127.0.0.1",
        WORKER_LOG_LEVEL="info",
        WORKER_LOG_FORMAT="json",
        **scenario.worker_env,
    )
    env["BENCH_HTTP_PORT"] = str(port)
    if scenario.in_environments:
        env[SHARED_IDS] = str(result.with_name(f"{result.stem}-environments.ids"))
    if scenario.sleep is not None:
        env["BENCH_SLEEP"] = str(scenario.sleep)
    return env


@dataclass
class Round:
    """Everything one run needs."""

    scenario: Scenario
    broker: Broker
    total: int
    backlog: int
    workdir: Path
    worker_path: str | None
    profile: Path | None
    floor_mb: float  # the fixed stack's peak RSS (bench.floor --lean), the RSS target's base


@contextlib.asynccontextmanager
async def clients(endpoint: str) -> AsyncIterator[tuple[SQSClient, SNSClient]]:
    """SQS and SNS clients of the harness."""
    session = get_session()
    common: dict[str, Any] = {
        "region_name": REGION,
        "endpoint_url": endpoint,
        "config": client_config(),
        "aws_access_key_id": "bench",
        "aws_secret_access_key": "bench",
    }
    async with (
        session.create_client("sqs", **common) as sqs,
        session.create_client("sns", **common) as sns,
    ):
        yield sqs, sns


async def run_once(kind: str, spec: Round) -> Run:
    """One consumer on a fresh queue: feed it, wait for it, read and check what it measured."""
    scenario = spec.scenario
    result = spec.workdir / f"{kind}-{uuid.uuid4().hex[:8]}.json"
    log_path = result.with_suffix(".log")
    async with clients(spec.broker.url) as (sqs, sns):
        queue = await make_queue(sqs, sns, with_topic=scenario.publish_rate is not None)
        feeder = Feeder(sqs, queue.url, spec.total, spec.backlog)
        moto = CpuSampler(spec.broker.pid)
        sampling = asyncio.create_task(moto.run())
        moto_before = process_cpu(spec.broker.pid)
        calls_before = await asyncio.to_thread(brokers.call_costs, spec.broker)
        if scenario.publish_rate is None:
            await feeder.send(spec.backlog)
        env = consumer_env(
            kind, scenario, endpoint=spec.broker.url, queue=queue, total=spec.total, result=result
        )
        if spec.worker_path and kind == "worker":
            env["PYTHONPATH"] = os.pathsep.join([spec.worker_path, str(ROOT)])
        with log_path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                *consumer_command(kind, scenario, spec.profile),
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=log,
            )
            feeding = asyncio.create_task(feed(scenario, feeder, sns, queue, spec.total))
            exited = asyncio.create_task(process.wait())
            await asyncio.wait(
                {feeding, exited}, timeout=120 + spec.total / 20, return_when="FIRST_EXCEPTION"
            )
            if not exited.done():  # the feeder failed, or the consumer never finished
                process.kill()
            await exited
            feeding.cancel()
            (feed_error,) = await asyncio.gather(feeding, return_exceptions=True)
        moto_cpu = process_cpu(spec.broker.pid) - moto_before
        after = await asyncio.to_thread(brokers.call_costs, spec.broker)
        calls = costs_between(calls_before, after)
        sampling.cancel()
        await asyncio.gather(sampling, return_exceptions=True)
        left = await leftovers(sqs, queue)
    if isinstance(feed_error, Exception):
        return Run(kind, False, [f"feeding the queue failed: {feed_error!r}"], {})
    run = judge(kind, spec, result, log_path, process.returncode, left, moto_cpu, moto)
    run.figures.update(broker_figures(calls, moto_cpu, spec.total))
    run.figures["floor_rss_mb"] = spec.floor_mb  # saved with the run, for --table
    return run


def costs_between(
    before: dict[str, list[float]], after: dict[str, list[float]]
) -> dict[str, float]:
    """CPU seconds moto spent per kind of call between two readings."""
    spent = {action: cpu - before.get(action, [0, 0.0])[1] for action, (_, cpu) in after.items()}
    return {action: cpu for action, cpu in spent.items() if cpu > 0}


# The calls whose broker CPU is reported on its own; the rest (the harness's GetQueueUrl, SNS
# publishes in D, ...) count in "other".
_BROKER_CALLS = ("ReceiveMessage", "DeleteMessageBatch", "SendMessageBatch", "GetQueueAttributes")


def broker_figures(calls: dict[str, float], moto_cpu: float, total: int) -> dict[str, float]:
    """moto's CPU per message by kind of call, and outside any call (its HTTP server's loop)."""
    if not calls:
        return {}
    figures = {
        f"moto_ms_{action}": calls.get(action, 0.0) / total * 1000 for action in _BROKER_CALLS
    }
    figures["moto_ms_other_calls"] = (
        sum(cpu for action, cpu in calls.items() if action not in _BROKER_CALLS) / total * 1000
    )
    figures["moto_ms_outside_calls"] = (moto_cpu - sum(calls.values())) / total * 1000
    return figures


async def feed(
    scenario: Scenario, feeder: Feeder, sns: SNSClient, queue: Queue, total: int
) -> None:
    """Feed the round: a steady SNS publish (D), or a backlog kept topped up."""
    if scenario.publish_rate is not None and queue.topic_arn is not None:
        await asyncio.sleep(3.0)  # let the consumer start: latency is measured from a warm one
        await publish_steadily(sns, queue.topic_arn, total, scenario.publish_rate)
    else:
        await feeder.keep_up()


async def leftovers(sqs: SQSClient, queue: Queue) -> int:
    """Messages still on the queue or in its DLQ after the run (there must be none)."""
    count = 0
    for url in (queue.url, queue.dlq_url):
        response = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
        attributes = response["Attributes"]
        count += sum(
            int(attributes.get(name, "0"))
            for name in (
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            )
        )
    return count


def judge(  # noqa: PLR0917 -- the pieces of one run, gathered by run_once
    kind: str,
    spec: Round,
    result: Path,
    log_path: Path,
    returncode: int | None,
    left: int,
    moto_cpu: float,
    moto: CpuSampler,
) -> Run:
    """Read the consumer's measurements and check its message ids."""
    problems = []
    if returncode != 0:
        problems.append(f"exit code {returncode}")
    if not result.exists():
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
        return Run(kind, False, [*problems, f"no result; log ends:\n{tail}"], {})
    data = json.loads(result.read_text(encoding="utf-8"))
    with Path(data["ids"]).open(encoding="ascii") as ids:
        data["unique"] = len({line for line in ids})
    total = spec.total
    if data["unique"] != total:
        problems.append(f"{total - data['unique']} of {total} messages never seen")
    if data["starts"] != data["unique"]:
        problems.append(f"{data['starts'] - data['unique']} duplicate deliveries")
    if left:
        problems.append(f"{left} messages left on the queue or its DLQ")
    if problems:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        problems.append("log ends:\n    " + "\n    ".join(lines))
    figures = figures_of(data, spec.total)
    if "window_start" in data["points"] and "window_end" in data["points"]:
        start, end = data["points"]["window_start"]["time"], data["points"]["window_end"]["time"]
        figures["moto_busy"] = moto.busy(start, end)
    figures["moto_cpu_ms_per_message"] = moto_cpu / total * 1000
    figures.update(call_figures(data))
    figures.update(request_figures(data, total))
    return Run(kind, not problems, problems, figures, [tuple(s) for s in data["rss_samples"]])


# SQS's price per million requests (standard queues, past the free tier; FIFO costs $0.50), and
# the fewest requests 1,000 messages can take: 100 full receives and 100 full delete batches.
PRICE_PER_MILLION_REQUESTS = 0.40
FLOOR_PER_1000 = 200
# The actions counted on their own; any other counts in "other".
ACTIONS = ("ReceiveMessage", "DeleteMessageBatch", "ChangeMessageVisibilityBatch",
           "GetQueueAttributes")  # fmt: skip


def request_figures(data: dict[str, Any], total: int) -> dict[str, float]:
    """SQS requests per 1,000 messages, by action, between 10% and 90% and over the whole run.

    Counted in the consumer (:func:`bench.probe.count_requests`); with what they would cost on
    SQS per million messages, and how far they are from the floor of 200.
    """
    figures: dict[str, float] = {}
    points = data["points"]
    whole = data.get("requests") or {}
    if whole:
        figures["requests_per_1000_run"] = sum(whole.values()) / total * 1000
    if "requests" not in points.get("window_start", {}) or "window_end" not in points:
        return figures
    start, end = points["window_start"]["requests"], points["window_end"]["requests"]
    count = round(total * 0.9) - round(total * 0.1)
    made = {action: end.get(action, 0) - start.get(action, 0) for action in end}
    per_1000 = sum(made.values()) / count * 1000
    figures["requests_per_1000"] = per_1000
    figures["requests_vs_floor"] = per_1000 / FLOOR_PER_1000
    figures["usd_per_million_messages"] = per_1000 * 1000 * PRICE_PER_MILLION_REQUESTS / 1e6
    for action in ACTIONS:
        figures[f"req_{action}"] = made.get(action, 0) / count * 1000
    figures["req_other"] = sum(n for a, n in made.items() if a not in ACTIONS) / count * 1000
    return figures


def call_figures(data: dict[str, Any]) -> dict[str, float]:
    """The mean time a receive that brought messages took, from a probe's result."""
    if data.get("receives_timed") and data.get("receive_seconds"):
        return {"receive_ms": data["receive_seconds"] / data["receives_timed"] * 1000}
    return {}


def figures_of(data: dict[str, Any], total: int) -> dict[str, float]:
    """Rates, CPU, memory and latency from a probe's result."""
    figures: dict[str, float] = {"peak_rss_mb": data["hwm_kb"] / 1024}
    figures.update(window_figures(data, total))
    figures.update(environment_figures(data))
    if data["latencies"]:
        latencies = sorted(data["latencies"])
        figures["latency_p50_ms"] = percentile(latencies, 0.50) * 1000
        figures["latency_p99_ms"] = percentile(latencies, 0.99) * 1000
    if data["mean_duration"] is not None:
        figures["mean_duration"] = data["mean_duration"]
    samples = data["rss_samples"]
    if samples:
        figures.update(rss_trend(samples, total))
    return figures


def window_figures(data: dict[str, Any], total: int) -> dict[str, float]:
    """Rate and CPU per 1,000 messages between 10% and 90% of the messages.

    The CPU is the consumer process's and its live children's (the Lambda environments, where
    the handler runs in them), and each apart where there are environments.
    """
    points = data["points"]
    if "window_start" not in points or "window_end" not in points:
        return {}
    start, end = points["window_start"], points["window_end"]
    count = round(total * 0.9) - round(total * 0.1)
    process = (end["cpu"] - start["cpu"]) / count * 1000
    children = environments_cpu(
        start["children_cpu"], end["children_cpu"], data.get("environments_started_cpu", {})
    )
    children = children / count * 1000
    figures = {
        "rate": count / (end["time"] - start["time"]),
        "cpu_per_1000": process + children,
        "cpu_per_1000_process": process,
    }
    if data.get("environments_kb"):
        figures["cpu_per_1000_environments"] = children
    return figures


def environments_cpu(
    start: dict[str, float], end: dict[str, float], started: dict[str, float]
) -> float:
    """CPU seconds the environments spent between the marks, their start-ups left out.

    Each environment alive at the end counts from the later of the window's start and the end
    of its own start-up (its first invocation): environments start on demand, and one started
    inside the window would otherwise add an interpreter's start and the function's imports to
    the steady state, as the worker's own start-up is kept out of it.
    """
    return sum(
        max(0.0, cpu - max(start.get(pid, 0.0), started.get(pid, 0.0))) for pid, cpu in end.items()
    )


def environment_figures(data: dict[str, Any]) -> dict[str, float]:
    """The Lambda environments: how many, their memory at rest, and their start-ups' CPU."""
    environments = data.get("environments_kb")
    if not environments:
        return {}
    figures = {
        "environments": len(environments),
        "environment_rss_mb": statistics.median(rss for rss, _ in environments) / 1024,
        "environment_peak_rss_mb": max(hwm for _, hwm in environments) / 1024,
    }
    started = data.get("environments_started_cpu")
    if started:
        figures["environment_start_cpu_ms"] = statistics.median(started.values()) * 1000
    points = data["points"]
    if "window_start" in points and "window_end" in points:
        before = points["window_start"]["children_cpu"]
        figures["environments_started_in_window"] = sum(
            pid not in before for pid in points["window_end"]["children_cpu"]
        )
    return figures


def percentile(ordered: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of the sorted values lie (nearest rank)."""
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


def rss_trend(samples: list[list[float]], total: int) -> dict[str, float]:
    """RSS after the first 10% of the messages, at the end, and the growth between."""
    early = [s[2] for s in samples if total * 0.1 <= s[1] <= total * 0.2]
    late = [s[2] for s in samples if s[1] >= total * 0.9]
    if not early or not late:
        return {}
    start, end = statistics.median(early) / 1024, statistics.median(late) / 1024
    return {"rss_early_mb": start, "rss_late_mb": end, "rss_growth_mb": end - start}


# --- rounds, figures and the table -------------------------------------------------------------


Target = Callable[[dict[str, float], dict[str, float]], float]  # (worker, ceiling) -> value


@dataclass
class Figure:
    """One line of the table: a figure, how it compares, and its target."""

    name: str
    key: str
    unit: str
    ratio: bool = True  # show worker / ceiling
    target: Target | None = None  # the value the verdict judges
    target_text: str = ""
    low: float = -math.inf  # the target is met when low <= value <= high
    high: float = math.inf
    parts: tuple[str, ...] = ()  # several figures in one cell, "a / b / c", instead of ``key``


def of_ceiling(key: str) -> Target:
    """The worker's figure as a multiple of the ceiling's."""
    return lambda w, c: w[key] / c[key]


# Peak RSS may exceed the fixed stack's own peak (python -m bench.floor --lean, measured in the
# same run) by this much.
RSS_ABOVE_FLOOR_MB = 3.0


def scenario_figures(scenario: Scenario) -> list[Figure]:
    """The figures a scenario reports, with the issue's targets."""
    key = scenario.key
    rss = Figure("peak RSS", "peak_rss_mb", "MB", high=RSS_ABOVE_FLOOR_MB,
                 target=lambda w, c: w["peak_rss_mb"] - w["floor_rss_mb"],
                 target_text=f"≤ floor + {RSS_ABOVE_FLOOR_MB:g} MB")  # fmt: skip
    cpu = Figure("CPU per message (steady state)", "cpu_per_1000", "ms")
    if key in {"A", "B", "C"}:
        cpu.target, cpu.target_text, cpu.high = of_ceiling("cpu_per_1000"), "≤ 1.0x ceiling", 1.0
    tail = [*request_rows(scenario), *broker_rows()]
    if key == "A":
        rate = Figure("throughput", "rate", "msg/s", target=of_ceiling("rate"),
                      target_text="≥ 1.0x ceiling", low=1.0)  # fmt: skip
        return [rate, cpu, rss, *tail]
    if key in {"B", "B10", "C"}:
        ideal = ideal_figure(scenario, 0.9 if key == "B10" else 0.95)
        extra = [rss] if key == "B" else []
        receive = Figure("ReceiveMessage round trip (mean)", "receive_ms", "ms")
        # The ceiling column holds the handler loop's figure (see run_scenario).
        handler_cpu = Figure("CPU per message against a bare loop running the same handler",
                             HANDLER_LOOP_CPU, "ms")  # fmt: skip
        return [ideal, cpu, handler_cpu, *extra, receive, *tail]
    if key == "D":
        p99 = Figure("p99 publish → start", "latency_p99_ms", "ms",
                     target=of_ceiling("latency_p99_ms"), target_text="≤ 1.5x ceiling",
                     high=1.5)  # fmt: skip
        return [Figure("p50 publish → start", "latency_p50_ms", "ms"), p99, *tail]
    if key == "E":
        growth = Figure("RSS growth 10%→end", "rss_growth_mb", "MB", ratio=False,
                        target=lambda w, c: w["rss_growth_mb"], target_text="flat (≤ 2 MB)",
                        high=2.0)  # fmt: skip
        return [
            Figure("throughput", "rate", "msg/s"),
            Figure("RSS after 10%", "rss_early_mb", "MB"),
            Figure("RSS at the end", "rss_late_mb", "MB"),
            growth,
            cpu,
            *tail,
        ]
    return [
        Figure("throughput", "rate", "msg/s"),
        cpu,
        Figure("CPU per message: worker process", "cpu_per_1000_process", "ms"),
        Figure("CPU per message: environments", "cpu_per_1000_environments", "ms"),
        Figure("peak RSS: worker process", "peak_rss_mb", "MB"),
        Figure("RSS at rest, each environment (median)", "environment_rss_mb", "MB", ratio=False),
        *tail,
    ]


def ideal_figure(scenario: Scenario, at_least: float) -> Figure:
    """Throughput as a fraction of the ideal, or of the ceiling where that is lower."""
    return Figure("throughput / ideal", "rate", "msg/s", target=of_ideal(scenario),
                  target_text=f"≥ {at_least:g} of min(ideal, ceiling)", low=at_least)  # fmt: skip


def request_rows(scenario: Scenario) -> list[Figure]:
    """SQS requests per 1,000 messages, by action, and what they would cost on SQS."""
    requests = Figure("SQS requests per 1,000 msgs", "requests_per_1000", "")
    if scenario.key in {"B", "C"}:
        requests.target, requests.high = of_ceiling("requests_per_1000"), 1.05
        requests.target_text = "≤ 1.05x ceiling"
    else:
        requests.target = lambda w, c: w["requests_per_1000"] / FLOOR_PER_1000
        requests.low, requests.high = 0.9, 1.1
        requests.target_text = f"within 10% of {FLOOR_PER_1000}"
    split = Figure("receive / delete / visibility / attributes / other per 1,000", "", "",
                   ratio=False, parts=(*(f"req_{a}" for a in ACTIONS), "req_other"))  # fmt: skip
    price = f"${PRICE_PER_MILLION_REQUESTS:.2f}/M requests"
    cost = Figure(f"$ per million msgs at {price}", "usd_per_million_messages", "")
    return [requests, split, cost]


def broker_rows() -> list[Figure]:
    """The broker's CPU per message and how busy it was (keys named when moto was the only one)."""
    return [
        Figure("broker CPU per message", "moto_cpu_ms_per_message", "ms"),
        Figure("broker busy (CPU s/s)", "moto_busy", "", ratio=False),
    ]


def ideal_rate(scenario: Scenario, worker: dict[str, float]) -> float:
    """Concurrency ÷ mean handler duration (the measured mean, for C)."""
    if scenario.skewed:
        mean = worker.get("mean_duration") or skewed_mean()
    else:
        mean = scenario.sleep or 0.0
    return scenario.concurrency / mean if mean else float("inf")


def of_ideal(scenario: Scenario) -> Callable[[dict[str, float], dict[str, float]], float]:
    """The worker's rate as a fraction of the ideal, or of the ceiling where that is lower."""

    def fraction(worker: dict[str, float], ceiling: dict[str, float]) -> float:
        return worker["rate"] / min(ideal_rate(scenario, worker), ceiling["rate"])

    return fraction


def spread(values: list[float], digits: int) -> str:
    """``median (min-max)``."""
    clean = [v for v in values if v == v]  # noqa: PLR0124 -- drops NaN
    if not clean:
        return "—"
    median = statistics.median(clean)
    if len(clean) == 1:
        return f"{median:.{digits}f}"
    return f"{median:.{digits}f} ({min(clean):.{digits}f}-{max(clean):.{digits}f})"


def digits_for(values: list[float]) -> int:
    """Enough decimals for the magnitude."""
    clean = [abs(v) for v in values if v == v]  # noqa: PLR0124 -- drops NaN
    largest = max(clean, default=0.0)
    if largest >= 100:
        return 0
    if largest >= 10:
        return 1
    if largest >= 1:
        return 2
    return 3


def table_rows(
    scenario: Scenario, pairs: list[tuple[Run, Run]]
) -> list[tuple[str, str, str, str, str, str]]:
    """(figure, worker, ceiling, ratio, target, verdict) for one scenario."""
    rows = []
    for figure in scenario_figures(scenario):
        if figure.parts:
            rows.append(parts_row(figure, pairs))
            continue
        workers = [w.figures.get(figure.key, float("nan")) for w, _ in pairs]
        ceilings = [c.figures.get(figure.key, float("nan")) for _, c in pairs]
        d = digits_for(workers + ceilings)
        ratio = ""
        if figure.ratio:
            ratio = spread(
                [w / c if c else float("nan") for w, c in zip(workers, ceilings, strict=True)], 2
            )
        unit = f" {figure.unit}" if figure.unit else ""
        rows.append((f"{figure.name}{unit}", spread(workers, d), spread(ceilings, d), ratio,
                     *judged(figure, pairs)))  # fmt: skip
    return rows


def parts_row(figure: Figure, pairs: list[tuple[Run, Run]]) -> tuple[str, str, str, str, str, str]:
    """A row of several figures in one cell each for the worker and the ceiling: their medians."""
    cells = [
        " / ".join(compact([run.figures.get(part, float("nan")) for run in runs])
                   for part in figure.parts)
        for runs in ([w for w, _ in pairs], [c for _, c in pairs])
    ]  # fmt: skip
    return figure.name, cells[0], cells[1], "", "", ""


def judged(figure: Figure, pairs: list[tuple[Run, Run]]) -> tuple[str, str]:
    """(target, verdict) of a figure: the median over the rounds against the target."""
    if figure.target is None:
        return "", ""
    values = []
    for w, c in pairs:
        with contextlib.suppress(KeyError, ZeroDivisionError):
            values.append(figure.target(w.figures, c.figures))
    if not values:
        return figure.target_text, ""
    met = figure.low <= statistics.median(values) <= figure.high
    return figure.target_text, f"{'met' if met else 'MISSED'} ({spread(values, 2)})"


def compact(values: list[float]) -> str:
    """The median, in few characters: ``100``, ``0.2``, ``0``."""
    clean = [v for v in values if v == v]  # noqa: PLR0124 -- drops NaN
    if not clean:
        return "—"
    median = statistics.median(clean)
    return f"{median:.0f}" if abs(median) >= 10 else f"{median:.2g}"


def render(results: dict[str, list[tuple[Run, Run]]]) -> str:
    """The table, as Markdown."""
    lines = [
        "| scenario | figure | worker | ceiling | worker ÷ ceiling | target | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for scenario in SCENARIOS:
        pairs = results.get(scenario.key)
        if not pairs:
            continue
        for index, row in enumerate(table_rows(scenario, pairs)):
            label = f"{scenario.key}: {scenario.title}" if index == 0 else ""
            lines.append("| " + " | ".join((label, *row)) + " |")
    return "\n".join(lines)


def machine() -> str:
    """Date, CPU, cores and Python, for the table's heading."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in (
            Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace").splitlines()
        ):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{datetime.date.today().isoformat()}, {model}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()} on {platform.system()} {platform.release()}"
    )


async def run_scenario(
    scenario: Scenario, args: argparse.Namespace, broker: Broker, workdir: Path, floor_mb: float
) -> list[tuple[Run, Run]]:
    """Every round of a scenario: worker and ceiling (and the handler loop where the handler
    sleeps), in an order that is reversed every other round."""
    total = args.messages or (scenario.quick_messages if args.quick else scenario.messages)
    spec = Round(scenario, broker, total, args.backlog, workdir, args.worker_path, args.profile,
                 floor_mb)  # fmt: skip
    pairs = []
    for index in range(args.rounds):
        kinds: tuple[str, ...] = ("ceiling", "worker")
        if scenario.has_handler:
            kinds += ("handler-loop",)
        order = kinds if index % 2 == 0 else kinds[::-1]
        runs = {kind: await run_once(kind, spec) for kind in order}
        for run in runs.values():
            state = "ok" if run.ok else "FAILED: " + "; ".join(run.problems)
            shown = ", ".join(f"{k}={v:.4g}" for k, v in sorted(run.figures.items()))
            print(f"  {scenario.key} round {index + 1} {run.kind:<7} {state}  {shown}", flush=True)
        if "handler-loop" in runs:  # one figure, read against the handler loop's
            worker = runs["worker"].figures
            worker[HANDLER_LOOP_CPU] = worker.get("cpu_per_1000", float("nan"))
            runs["ceiling"].figures[HANDLER_LOOP_CPU] = runs["handler-loop"].figures.get(
                "cpu_per_1000", float("nan")
            )
        pairs.append((runs["worker"], runs["ceiling"]))
    return pairs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    keys = [s.key for s in SCENARIOS]
    parser.add_argument(
        "--scenario",
        action="append",
        choices=keys,
        help="default: all (F10 and F100 count their Lambda execution environments' CPU with "
        "the worker's; python -m bench.environments measures an environment's own cost)",
    )
    parser.add_argument("--rounds", type=int, help="rounds per scenario (default 3; 1 if --quick)")
    parser.add_argument("--quick", action="store_true", help="fewer messages: a smoke test")
    parser.add_argument("--backlog", type=int, default=300, help="messages kept queued (300)")
    parser.add_argument(
        "--broker",
        choices=brokers.NAMES,
        default="moto",
        help="moto (patched, the default: the broker is the limit) or fauxqs (a fast emulator: "
        "the consumer is the limit; installed under .tools/ on first use, needs npm)",
    )
    parser.add_argument("--no-patch", action="store_true", help="stock moto (slow receives)")
    parser.add_argument(
        "--werkzeug",
        action="store_true",
        help="moto's own HTTP server, which closes the connection after every request",
    )
    parser.add_argument("--worker-path", help="import the worker from here (compare versions)")
    parser.add_argument("--profile", type=Path, help="py-spy the worker into this directory")
    parser.add_argument("--json", type=Path, help="also write every run's figures here")
    parser.add_argument("--messages", type=int, help="messages per run (instead of the default)")
    parser.add_argument(
        "--table",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="run nothing: print the table of runs saved with --json (a scenario in a later "
        "file replaces the same scenario in an earlier one)",
    )
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    return args


async def main_async(
    args: argparse.Namespace,
) -> tuple[dict[str, list[tuple[Run, Run]]], dict[str, float]]:
    """Measure the memory floor, start the broker, run the scenarios; every run, and the floor."""
    chosen = [s for s in SCENARIOS if not args.scenario or s.key in args.scenario]
    chosen.sort(key=lambda s: s.messages)  # the long one (E) last: the others report sooner
    # Once, before the broker starts: the peak RSS targets are relative to it.
    lean = await asyncio.to_thread(floor, "--lean")
    results: dict[str, list[tuple[Run, Run]]] = {}
    with (
        brokers.start(args.broker, patch=not args.no_patch, keep_alive=not args.werkzeug) as broker,
        tempfile.TemporaryDirectory(prefix="bench-") as tmp,
    ):
        for scenario in chosen:
            print(f"{scenario.key}: {scenario.title}", flush=True)
            results[scenario.key] = await run_scenario(
                scenario, args, broker, Path(tmp), lean["after_request_mb"]
            )
    return results, lean


def floor(*flags: str) -> dict[str, float]:
    """The fixed stack's own peak RSS after each step (:mod:`bench.floor`), in a fresh process."""
    command = [sys.executable, "-m", "bench.floor", *flags]
    done = subprocess.run(  # noqa: S603 -- our own interpreter and module
        command, cwd=ROOT, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def memory_floor(lean: dict[str, float]) -> str:
    """The floor (``lean``, measured at the start) and with botocore's whole endpoint table."""
    stock = floor()
    return (
        "The fixed stack alone (python -m bench.floor: aiobotocore, structlog, prometheus-client "
        "and pydantic-settings imported, one SQS client, one request) peaks at "
        f"{lean['after_request_mb']:.1f} MB with the worker's lean endpoint table (the base of "
        "the peak RSS targets), "
        f"{stock['after_request_mb']:.1f} MB with botocore's whole one "
        f"({lean['imports_mb']:.1f} MB after the imports)."
    )


def saved_runs(paths: list[Path]) -> dict[str, list[tuple[Run, Run]]]:
    """Runs saved with ``--json``, merged by scenario in the order of the files."""
    results: dict[str, list[tuple[Run, Run]]] = {}
    for path in paths:
        saved = json.loads(path.read_text(encoding="utf-8"))
        for key, pairs in saved.items():
            results[key] = [(Run(**worker), Run(**ceiling)) for worker, ceiling in pairs]
    return results


def main(argv: list[str] | None = None) -> int:
    """Run, print the table; exit 1 if any run lost, duplicated or left a message."""
    args = parse_args(argv)
    if args.table:
        print(render(saved_runs(args.table)))
        return 0
    started = time.monotonic()
    compile_worker(args.worker_path)  # read from .pyc files, as deployed
    results, lean = asyncio.run(main_async(args))
    print()
    if args.broker == "fauxqs":
        moto = f"fauxqs {brokers.FAUXQS_VERSION}"
    else:
        moto = "moto " + ("stock" if args.no_patch else "patched (bench/moto_server.py)")
        moto += (
            ", werkzeug (a connection per request)" if args.werkzeug else ", waitress (keep-alive)"
        )
    print(
        f"{machine()}; {moto}, backlog {args.backlog}, {args.rounds} round(s), "
        f"{time.monotonic() - started:.0f} s"
    )
    print()
    print(render(results))
    print()
    print(memory_floor(lean))
    failed = [run for pairs in results.values() for pair in pairs for run in pair if not run.ok]
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {key: [[vars(w), vars(c)] for w, c in pairs] for key, pairs in results.items()},
                indent=1,
            ),
            encoding="utf-8",
        )
    if failed:
        print(f"\n{len(failed)} run(s) failed the id count: see above", file=sys.stderr)
        return 1
    return 0
