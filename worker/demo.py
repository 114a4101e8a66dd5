"""``worker demo``: the whole path on the embedded local broker, in about fifteen seconds.

It provisions a topic, a queue (4 s visibility timeout, maxReceiveCount 3) and its DLQ, publishes
order events through SNS (ordinary ones, a slow one that outlives the visibility timeout, a flaky
one that fails once, a poison one and one that is not JSON), runs the worker with the example
handler until the queue is idle, and shows what happened to each event. It exits 1 if anything
did not happen as it should. The broker is the embedded local one (moto, :mod:`worker.local`)
unless ``WORKER_ENDPOINT_URL`` names another; the summary says which it ran on.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, TextIO

from worker.config import EnvelopeMode, Settings
from worker.examples.orders import handle
from worker.local import embedded_broker
from worker.message import Message, parse_message
from worker.provision import provision
from worker.publish import Event, publish
from worker.sqs import open_sqs
from worker.worker import Report, serve

VISIBILITY_SECONDS = 4
MAX_RECEIVES = 3


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
    Sample("not-json", "this is not JSON", "malformed body", True),
]


class Ledger:
    """Counts each event's deliveries and remembers how the last one ended."""

    def __init__(self) -> None:
        self.deliveries: Counter[str] = Counter()
        self.outcome: dict[str, str] = {}

    def wrap(
        self, handler: Callable[[Message], Awaitable[None]]
    ) -> Callable[[Message], Awaitable[None]]:
        """The handler, recording as it goes."""

        async def recorded(message: Message) -> None:
            label = label_of(message.body)
            self.deliveries[label] += 1
            try:
                await handler(message)
            except Exception as exc:
                self.outcome[label] = type(exc).__name__
                raise
            self.outcome[label] = "processed"

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
    """Print what became of each event; returns whether everything went as it should.

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
    out.write("\nEverything as expected.\n" if all_ok else "\nSomething did not go as expected.\n")
    return all_ok


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
        await publish(config, [Event(body=s.body) for s in SAMPLES])
        out.write(f"published {len(SAMPLES)} events to {made.topic_arn}\n\n")
        out.flush()
        ledger = Ledger()
        report = await serve(config, handler=ledger.wrap(handle))
        in_dlq = await dead_letters(config, made.dlq_url)
        return 0 if summarise(report, ledger, in_dlq, out, broker=broker) else 1
    return 1  # pragma: no cover -- ExitStack does not swallow exceptions
