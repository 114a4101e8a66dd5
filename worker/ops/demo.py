"""``worker demo``: the whole path on the embedded local broker, in about half a minute.

It provisions a topic, a queue (4 s visibility timeout, maxReceiveCount 3) and its DLQ, publishes
order events through SNS (ordinary ones, a slow one that outlives the visibility timeout, a flaky
one that fails once, one that meets a payment outage, a poison one and one that is not JSON),
runs the worker with the example handler until the queue is idle, and shows what happened to
each event. Then the DLQ's two ways back: once the outage is over, a redrive of the orders it
failed, and a separate reprocessing function run over what is left; and the first run's metrics.
It exits 1 if anything did not happen as it should. The broker is the embedded local one (moto,
:mod:`worker.ops.local`) unless ``WORKER_ENDPOINT_URL`` names another; the summary says which it ran
on.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, TextIO

from prometheus_client import CollectorRegistry, generate_latest

from worker.config import EnvelopeMode, Settings
from worker.consume.sqs import open_sqs
from worker.consume.worker import Report, serve
from worker.errors import StartupError
from worker.examples.orders import handle, reprocess
from worker.handlers.filtering import FilterCriteria
from worker.handlers.message import Message, parse_message
from worker.ops.dlq import RedrivePlan, run_redrive, stats
from worker.ops.local import embedded_broker
from worker.ops.provision import Provisioned, provision
from worker.ops.publish import Event, publish

VISIBILITY_SECONDS = 4
MAX_RECEIVES = 3
# The redrive's and the reprocessing's runs handle a message or two: a short idle exit.
LATER_IDLE_SECONDS = 2.0
# Orders whose amount is a number: what failed for a passing reason, not for its content.
REDRIVE_FILTER = '{"body": {"amount": [{"numeric": [">", 0]}]}}'
REPROCESS = "worker.examples.orders:reprocess"
SHOWN_METRICS = (
    "worker_messages_received_total",
    "worker_messages_succeeded_total",
    "worker_messages_failed_total",
    "worker_messages_deleted_total",
    "worker_messages_retried_total",
    "worker_visibility_extensions_total",
)


@dataclass(frozen=True)
class Sample:
    """One event the demo publishes, and what must become of it."""

    label: str
    body: str
    note: str
    expect_dlq: bool = False


def _order(order_id: int, amount: Any = 25, **extra: Any) -> str:
    return json.dumps({"order_id": f"order-{order_id}", "amount": amount, **extra})


SAMPLES = [
    *(Sample(f"order-{n}", _order(n, 10 + n), "") for n in range(1001, 1009)),
    Sample(
        "order-1100",
        _order(1100, 99, slow_seconds=6),
        f"slow: runs 6 s, the visibility timeout is {VISIBILITY_SECONDS} s",
    ),
    Sample("order-1200", _order(1200, 45, fail_first_attempts=1), "flaky: fails once"),
    Sample("order-1300", _order(1300, "lots"), "poison: amount is not a number", True),
    Sample("order-1400", _order(1400, 60), "outage: the payment service is down", True),
    Sample("not-json", "this is not JSON", "malformed body", True),
]
OUTAGE = frozenset({"order-1400"})  # whose payments fail until the outage is over


class Ledger:
    """Counts each event's deliveries, remembers how the last one ended, plays the outage."""

    def __init__(self, outage: frozenset[str] = OUTAGE) -> None:
        self.deliveries: Counter[str] = Counter()
        self.outcome: dict[str, str] = {}
        self.archived: dict[str, str] = {}
        self.outage = set(outage)

    def wrap(
        self, handler: Callable[[Message], Awaitable[None]]
    ) -> Callable[[Message], Awaitable[None]]:
        """The handler, recording as it goes."""

        async def recorded(message: Message) -> None:
            label = label_of(message.body)
            self.deliveries[label] += 1
            try:
                self._pay(label)
                await handler(message)
            except Exception as exc:
                self.outcome[label] = type(exc).__name__
                raise
            self.outcome[label] = "processed"

        return recorded

    def _pay(self, label: str) -> None:
        if label in self.outage:
            raise ConnectionError("payment service unavailable (simulated outage)")

    def wrap_reprocessing(
        self, function: Callable[[Message], Awaitable[dict[str, str | None]]]
    ) -> Callable[[Message], Awaitable[dict[str, str | None]]]:
        """The DLQ's reprocessing function, recording why each message was archived."""

        async def recorded(message: Message) -> dict[str, str | None]:
            archive = await function(message)
            self.archived[label_of(message.body)] = str(archive["reason"])
            return archive

        return recorded


def label_of(body: str) -> str:
    """The sample an event body belongs to."""
    try:
        return str(json.loads(body)["order_id"])
    except (ValueError, KeyError, TypeError):
        return "not-json"


def demo_settings(settings: Settings, endpoint_url: str) -> Settings:
    """The user's settings with the demo's queue, timings and handler."""
    return settings.model_copy(
        update={
            "endpoint_url": endpoint_url,
            "region": settings.region or "us-east-1",
            "queue_url": None,
            "queue_name": "demo-orders",
            "topic_name": "demo-orders",
            "dlq_name": "demo-orders-dlq",
            "max_receive_count": MAX_RECEIVES,
            "visibility_timeout": VISIBILITY_SECONDS,
            "handler": "worker.examples.orders:handle",
            "concurrency": 8,
            "wait_time_seconds": 1,
            "backoff_base_seconds": 1.0,
            "backoff_max_seconds": 2.0,
            "exit_when_idle": 5.0,
            "shutdown_timeout": 10.0,
            "http_port": 0,  # the demo must not depend on 8080 being free
        }
    )


async def dead_letters(settings: Settings, dlq_url: str) -> list[str]:
    """The labels of what is in the DLQ, read without consuming it."""
    labels: list[str] = []
    async with open_sqs(settings) as sqs:
        for _ in range(5):
            response = await sqs.receive_message(
                QueueUrl=dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=30
            )
            for raw in response.get("Messages", []):
                message = parse_message(raw, queue_url=dlq_url, envelope=EnvelopeMode.AUTO)
                labels.append(label_of(message.body))
                await sqs.change_message_visibility(
                    QueueUrl=dlq_url, ReceiptHandle=raw["ReceiptHandle"], VisibilityTimeout=0
                )
            if len(labels) >= sum(s.expect_dlq for s in SAMPLES):
                break
    return labels


def _verdict(sample: Sample, ledger: Ledger, in_dlq: set[str]) -> tuple[str, bool]:
    deliveries = ledger.deliveries[sample.label]
    outcome = ledger.outcome.get(sample.label, "never delivered")
    if sample.expect_dlq:
        ok = sample.label in in_dlq and deliveries == MAX_RECEIVES
        return f"{outcome} {deliveries} times, then moved to the DLQ", ok
    if outcome != "processed":
        return outcome, False
    retries = deliveries - 1
    return ("processed" if not retries else f"processed after {retries} retry"), (
        sample.label not in in_dlq and retries == ("flaky" in sample.note)
    )


EMBEDDED = "on the embedded local broker (moto)"


def summarise(
    report: Report, ledger: Ledger, in_dlq: list[str], out: TextIO, *, broker: str = EMBEDDED
) -> bool:
    """Print what became of each event in the first run; whether all went as it should.

    ``broker`` says where it ran: :data:`EMBEDDED`, or "at" the endpoint it was given.
    """
    out.write(
        f"\nSNS topic → SQS queue (visibility {VISIBILITY_SECONDS} s, maxReceiveCount "
        f"{MAX_RECEIVES}) → DLQ, {broker}\n\n"
        f"{'event':<12} {'deliveries':>10}  {'result':<52} note\n"
    )
    all_ok = True
    for sample in SAMPLES:
        verdict, ok = _verdict(sample, ledger, set(in_dlq))
        all_ok &= ok
        mark = "" if ok else "   <-- unexpected"
        out.write(
            f"{sample.label:<12} {ledger.deliveries[sample.label]:>10}  {verdict:<52} "
            f"{sample.note}{mark}\n"
        )
    reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(report.failures.items()))
    out.write(
        f"\nworker: {report.received} deliveries, {report.succeeded} succeeded, "
        f"{report.failed} failed ({reasons}); {report.deleted} deleted, {report.retried} "
        f"retried with backoff, visibility extended {report.extended} times\n"
        f"DLQ: {len(in_dlq)} messages ({', '.join(sorted(in_dlq))})\n"
        f"stopped: {report.stop_reason}\n"
    )
    return all_ok


async def redrive_after_the_outage(config: Settings, ledger: Ledger, out: TextIO) -> bool:
    """The outage is over: move the orders it failed back to the queue, and handle them."""
    ledger.outage.clear()
    out.write(
        "\nThe payment service is back: the orders it failed go back to the queue.\n"
        f"$ worker dlq redrive --filter '{REDRIVE_FILTER}'\n"
    )
    out.flush()
    plan = RedrivePlan(criteria=FilterCriteria.from_pattern(REDRIVE_FILTER), hold_seconds=30)
    moved = await run_redrive(config, plan)
    out.write(
        f"moved {moved.moved} of {moved.seen} messages; {moved.skipped} did not match the filter "
        "and stay in the DLQ\n"
    )
    before = ledger.deliveries["order-1400"]
    report = await serve(
        config.model_copy(update={"exit_when_idle": LATER_IDLE_SECONDS}),
        handler=ledger.wrap(handle),
    )
    redelivered = ledger.deliveries["order-1400"] - before
    outcome = ledger.outcome.get("order-1400")
    out.write(f"worker run: order-1400 {outcome} ({redelivered} delivery)\n")
    return (moved.moved, moved.skipped, redelivered, outcome, report.failed) == (
        1,
        2,
        1,
        "processed",
        0,
    )


async def reprocess_the_dlq(
    config: Settings, made: Provisioned, ledger: Ledger, out: TextIO
) -> bool:
    """A separate function over what is left in the DLQ, as a scheduled job would run it."""
    dlq_name = made.dlq_url.rsplit("/", 1)[-1]
    out.write(
        "\nWhat is left in the DLQ cannot be processed: a separate function archives it.\n"
        f"$ worker run --queue {dlq_name} --handler {REPROCESS} "
        f"--exit-when-idle {LATER_IDLE_SECONDS:g}\n"
    )
    out.flush()
    reprocessing = config.model_copy(
        update={
            "queue_url": made.dlq_url,
            "queue_name": None,
            "handler": REPROCESS,
            "exit_when_idle": LATER_IDLE_SECONDS,
        }
    )
    report = await serve(reprocessing, handler=ledger.wrap_reprocessing(reprocess))
    for label, reason in sorted(ledger.archived.items()):
        out.write(f"{label:<12} archived: {reason}\n")
    _, (source, dead) = await stats(config, sample=0)  # worker dlq stats
    left = dead.visible + dead.in_flight + source.visible + source.in_flight
    out.write(f"queue and DLQ: {left} messages\n")
    return (
        left == 0 and report.succeeded == 2 and set(ledger.archived) == {"order-1300", "not-json"}
    )


def show_metrics(registry: CollectorRegistry, out: TextIO) -> None:
    """Some of the first run's metrics, as its ``/metrics`` endpoint served them."""
    out.write("\nThe first run's metrics, as its /metrics endpoint served them (a few):\n")
    for line in generate_latest(registry).decode().splitlines():
        if line.split("{", 1)[0] in SHOWN_METRICS:
            out.write(f"{line}\n")


async def run_demo(settings: Settings, out: TextIO) -> int:
    """Run the demo; returns the exit code."""
    with ExitStack() as stack:
        if settings.endpoint_url:
            endpoint, broker = settings.endpoint_url, f"at {settings.endpoint_url}"
        else:
            endpoint, broker = stack.enter_context(embedded_broker()), EMBEDDED
        config = demo_settings(settings, endpoint)
        made = await provision(config)
        out.write("\n".join(made.lines()) + "\n")
        published = await publish(config, [Event(body=s.body) for s in SAMPLES])
        if published.failed:
            position, why = published.failed[0]
            raise StartupError(f"publishing failed: event {position}: {why}")
        out.write(f"published {len(SAMPLES)} events to {made.topic_arn}\n\n")
        out.flush()
        ledger = Ledger()
        registry = CollectorRegistry()
        report = await serve(config, handler=ledger.wrap(handle), registry=registry)
        in_dlq = await dead_letters(config, made.dlq_url)
        all_ok = summarise(report, ledger, in_dlq, out, broker=broker)
        all_ok &= await redrive_after_the_outage(config, ledger, out)
        all_ok &= await reprocess_the_dlq(config, made, ledger, out)
        show_metrics(registry, out)
        out.write(
            "\nEverything as expected.\n" if all_ok else "\nSomething did not go as expected.\n"
        )
        return 0 if all_ok else 1
    return 1  # pragma: no cover -- ExitStack does not swallow exceptions
