"""Network and broker faults between the worker and SQS, injected by a proxy (tests/faults.py).

Whatever the fault, the worker keeps running, retries with backoff, says so in its metrics and
logs, stays live while SQS is unreachable, recovers by itself when the fault ends, and loses
nothing: the ledger's invariant (tests/invariant.py) is checked at the end of every scenario.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import pytest
import structlog
from prometheus_client import CollectorRegistry
from structlog.testing import LogCapture

from tests.faults import Fault, FaultProxy, Rule
from tests.invariant import Ledger
from tests.support import REGION, Queues, depth, eventually, make_queues, running_worker
from worker import Message
from worker.config import Settings
from worker.consume.outcome import FailureReason
from worker.consume.sqs import open_sns, open_sqs
from worker.consume.worker import Worker
from worker.errors import StartupError
from worker.handlers.adapters import Handler


@pytest.fixture
def proxy(broker_endpoint: str) -> Iterator[FaultProxy]:
    """A fault proxy in front of the session's broker, with no fault to begin with."""
    with FaultProxy(broker_endpoint, seed=7) as started:
        yield started


@pytest.fixture
def logs() -> LogCapture:
    """Every structured log event, with its bound context (message id, queue)."""
    capture = LogCapture()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            capture,
        ]
    )
    return capture


def events(logs: LogCapture, name: str) -> list[MutableMapping[str, Any]]:
    """The captured events called ``name``."""
    return [entry for entry in logs.entries if entry["event"] == name]


def sqs_errors(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    """``worker_sqs_requests_total`` for results other than success, by (operation, result)."""
    return {
        (sample.labels["operation"], sample.labels["result"]): sample.value
        for metric in registry.collect()
        if metric.name == "worker_sqs_requests"
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels["result"] != "success"
    }


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """A sample's value, 0 when it has not been recorded."""
    return registry.get_sample_value(name, labels) or 0.0


def probe(worker: Worker, path: str = "/healthz") -> tuple[int, dict[str, Any]]:
    """(status, document) of the worker's health endpoint."""
    url = f"http://127.0.0.1:{worker.http_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@asynccontextmanager
async def worker_behind(
    proxy: FaultProxy,
    queues: Queues,
    handler: Handler,
    registry: CollectorRegistry,
    **settings: Any,
) -> AsyncIterator[Worker]:
    """A worker in this process whose SQS calls all go through ``proxy``.

    Faults are cleared before it stops, so that its shutdown flushes its deletes.
    """
    options: dict[str, Any] = {"endpoint_url": proxy.url, "concurrency": 8, **settings}
    async with running_worker(queues.settings(**options), handler, registry) as running:
        try:
            yield running.worker
        finally:
            proxy.clear()


async def dlq_visible(queues: Queues, count: int) -> bool:
    """Whether the DLQ holds ``count`` visible messages."""
    return (await depth(queues, queues.dlq_url))[0] == count


def struck(ledger: Ledger, proxy: FaultProxy) -> set[str]:
    """Ledger ids of messages in flight when a fault struck: the duplicates a fault allows."""
    return ledger.by_receipt(proxy.struck_receipts)


class TestProxy:
    """The proxy itself: it forwards, faults only what its rules pick, and counts what it did."""

    async def test_rules_pick_by_operation_count_and_service(
        self, proxy: FaultProxy, queues: Queues
    ) -> None:
        settings = Settings(endpoint_url=proxy.url, region=REGION)
        with proxy.inject(Rule.on(Fault.HTTP_500, "GetQueueAttributes", count=2)):
            async with open_sqs(settings) as sqs:
                # Two faults, then the third attempt goes through: botocore retried twice.
                response = await sqs.get_queue_attributes(QueueUrl=queues.queue_url)
                assert response["ResponseMetadata"]["RetryAttempts"] == 2
                # Another operation is not picked.
                listed = await sqs.list_queues()
                assert listed["ResponseMetadata"]["RetryAttempts"] == 0
        # SQS rules leave SNS alone.
        with proxy.inject(Rule.on(Fault.RESET)):
            async with open_sns(settings) as sns:
                await sns.publish(TopicArn=queues.topic_arn, Message="through")
        assert proxy.injected == {Fault.HTTP_500: 2}
        assert proxy.forwarded["GetQueueAttributes"] == 1
        assert proxy.forwarded["Publish"] == 1


class TestStartupChecks:
    """A check that fails at start-up says that it failed, not what it would have found."""

    async def test_a_failed_dead_letter_source_check_says_so(self, proxy: FaultProxy) -> None:
        settings = Settings(endpoint_url=proxy.url, region=REGION, http_port=0)
        async with open_sqs(settings) as sqs:
            url = (await sqs.create_queue(QueueName=f"no-dlq-{uuid.uuid4().hex[:10]}"))["QueueUrl"]
        name = url.rsplit("/", 1)[-1]
        denied = Rule.on(Fault.ACCESS_DENIED, "ListDeadLetterSourceQueues")
        with proxy.inject(denied), pytest.raises(StartupError) as raised:
            async with running_worker(
                settings.model_copy(
                    update={"queue_url": url, "handler": "worker.examples.orders:handle"}
                )
            ):
                pass
        assert str(raised.value) == (
            f"queue {name} has no RedrivePolicy, and whether it is another queue's DLQ could "
            "not be checked: ListDeadLetterSourceQueues failed (AccessDenied: not authorized "
            "(injected)); allow sqs:ListDeadLetterSourceQueues to reprocess a DLQ, add a DLQ "
            "(worker provision) or set WORKER_ALLOW_NO_DLQ=true"
        )
        assert denied.injected == 1


@pytest.mark.slow
class TestErrorsOfEveryKind:
    """Server errors, throttling, resets, dropped responses and latency on every kind of call:
    retried, counted and logged; the worker stays live, recovers, and loses nothing."""

    async def test_each_kind_is_retried_counted_logged_and_loses_nothing(
        self, broker_endpoint: str, proxy: FaultProxy, logs: LogCapture
    ) -> None:
        # A failed retry leaves its message invisible for the visibility timeout: keep it short.
        queues = await make_queues(broker_endpoint, visibility_timeout=5, max_receive_count=5)
        ledger = Ledger()
        registry = CollectorRegistry()
        await ledger.publish(queues, 30)
        await ledger.publish(queues, 5, kind="flaky")
        poison = set(await ledger.publish(queues, 3, kind="poison"))

        async def handler(message: Message) -> None:
            kind = message.json().get("kind")
            if kind == "poison" or (kind == "flaky" and message.receive_count == 1):
                raise RuntimeError(kind)
            await ledger.record(message)

        # One kind of fault on each operation the worker makes, on every call, until the worker
        # has reported a failed call (botocore makes five attempts) ...
        targeted = {
            ("ReceiveMessage", "InternalFailure"): Rule.on(Fault.HTTP_500, "ReceiveMessage"),
            ("DeleteMessageBatch", "RequestThrottled"): Rule.on(
                Fault.THROTTLE, "DeleteMessageBatch"
            ),
            ("ChangeMessageVisibilityBatch", "ServiceUnavailable"): Rule.on(
                Fault.HTTP_503, "ChangeMessageVisibilityBatch"
            ),
            ("GetQueueAttributes", "EndpointConnectionError"): Rule.on(
                Fault.RESET, "GetQueueAttributes"
            ),
        }
        # ... and a few percent of every call, at random, for the rest of the run.
        background = (
            *(
                Rule.on(fault, probability=0.03)
                for fault in (Fault.HTTP_500, Fault.HTTP_503, Fault.THROTTLE, Fault.RESET)
            ),
            # Not on receives: SQS would count a receive that no handler saw, and the poison
            # would reach the DLQ with fewer failures than the count below (dropped receives
            # have a test of their own).
            Rule.on(
                Fault.DROP_RESPONSE,
                "DeleteMessageBatch",
                "ChangeMessageVisibilityBatch",
                "GetQueueAttributes",
                probability=0.03,
            ),
            Rule.on(Fault.LATENCY, probability=0.05, seconds=0.3),
        )
        # ... and one of each of the kinds nothing above targets, on the depth reads (every
        # second), so that every kind is met however few calls the dice get to see.
        certain = (
            Rule.on(Fault.DROP_RESPONSE, "GetQueueAttributes", count=1),
            Rule.on(Fault.LATENCY, "GetQueueAttributes", count=1, seconds=0.3),
        )

        async def until_reported(key: tuple[str, str], rule: Rule) -> None:
            await eventually(lambda: sqs_errors(registry).get(key, 0) >= 1, timeout=60)
            proxy.remove(rule)

        # The queue depth is read every second, so that GetQueueAttributes meets its fault.
        async with worker_behind(
            proxy, queues, handler, registry, depth_interval_seconds=1
        ) as worker:
            # Once started: a worker that cannot read its queue at start-up exits.
            proxy.add(*targeted.values(), *background, *certain)
            await asyncio.gather(*(until_reported(k, r) for k, r in targeted.items()))
            await eventually(lambda: len(ledger.handled_counts()) == 35, timeout=60)
            await eventually(lambda: all(rule.spent for rule in certain), timeout=30)
            status, document = await asyncio.to_thread(probe, worker)
            assert status == 200, document
            proxy.clear()
            await ledger.publish(queues, 10)  # after the faults: business as usual
            await eventually(lambda: len(ledger.handled_counts()) == 45, timeout=30)
            # The poison has failed its five receives (backoffs and failed visibility changes
            # included) and been moved.
            await eventually(lambda: dlq_visible(queues, len(poison)), timeout=90, interval=0.5)
            await eventually(lambda: worker.keeper.in_flight == 0, timeout=30)
        assert worker.runner.failures[FailureReason.HANDLER_ERROR] >= 3 * 5 + 5
        verdict = await ledger.inspect(
            queues, settle_timeout=15, allowed_duplicates=struck(ledger, proxy)
        )
        verdict.check()
        assert verdict.in_dlq == poison
        retries = sample(
            registry,
            "worker_sqs_request_retries_total",
            queue=queues.queue_name,
            operation="ReceiveMessage",
        )
        assert retries >= 4
        assert events(logs, "sqs.receive_failed")[0]["code"] == "InternalFailure"
        retrying = [e["error"] for e in events(logs, "sqs.settle_retrying")]
        assert any(error.startswith("RequestThrottled") for error in retrying)
        assert any(error.startswith("ServiceUnavailable") for error in retrying)
        assert events(logs, "sqs.depth_failed")
        # Every transient kind (a denial is not one: TestStartupChecks has it).
        assert set(proxy.injected) == set(Fault) - {Fault.STALL, Fault.ACCESS_DENIED}


class TestAppliedButUnanswered:
    """A request SQS applied whose response never came back: the worker cannot tell."""

    async def test_dropped_receive_responses_come_back_after_the_visibility_timeout(
        self, broker_endpoint: str, proxy: FaultProxy
    ) -> None:
        queues = await make_queues(broker_endpoint, visibility_timeout=3, max_receive_count=5)
        ledger = Ledger()
        first_seen: dict[str, int] = {}

        async def handler(message: Message) -> None:
            await ledger.record(message)
            first_seen.setdefault(message.body, message.receive_count)

        registry = CollectorRegistry()
        await ledger.publish(queues, 20)
        # SQS hands out messages, the worker never hears of them.
        proxy.add(Rule.on(Fault.DROP_RESPONSE, "ReceiveMessage", count=2))
        async with worker_behind(proxy, queues, handler, registry):
            await eventually(lambda: len(ledger.handled_counts()) == 20, timeout=30)
        verdict = (await ledger.inspect(queues, settle_timeout=10, allowed_duplicates=())).check()
        assert verdict.duplicates == {}  # the worker never had them, so handled them once
        # Those receives happened: their messages came back with a higher receive count.
        assert any(count > 1 for count in first_seen.values())
        assert proxy.injected == {Fault.DROP_RESPONSE: 2}


@pytest.mark.slow
class TestFailedDeletes:
    """A delete call that fails: applied (response dropped) or not (connection reset)."""

    @pytest.mark.parametrize("fault", [Fault.DROP_RESPONSE, Fault.RESET], ids=str)
    async def test_only_unapplied_deletes_duplicate_and_only_their_messages(
        self, broker_endpoint: str, proxy: FaultProxy, logs: LogCapture, fault: Fault
    ) -> None:
        # A visibility timeout far shorter than botocore's five attempts with backoff.
        queues = await make_queues(broker_endpoint, visibility_timeout=2, max_receive_count=20)
        ledger = Ledger()
        registry = CollectorRegistry()
        await ledger.publish(queues, 10)
        failing = Rule.on(fault, "DeleteMessageBatch")
        proxy.add(failing)
        async with worker_behind(proxy, queues, ledger.record, registry) as worker:
            # Until a whole call has failed (botocore makes five attempts).
            await eventually(
                lambda: (
                    sqs_errors(registry).get(("DeleteMessageBatch", "EndpointConnectionError"))
                    is not None
                ),
                timeout=60,
            )
            if fault is Fault.RESET:
                # Unapplied: their messages come back after the visibility timeout and are
                # handled again. Let deletes through only then, or a retry could still win the
                # race against the timeout (LocalStack serves messages up to 1 s late).
                await eventually(
                    lambda: any(count > 1 for count in ledger.handled_counts().values()),
                    timeout=30,
                )
            proxy.remove(failing)
            await eventually(lambda: len(ledger.handled_counts()) == 10, timeout=30)
            await eventually(lambda: worker.keeper.in_flight == 0, timeout=30)
            await asyncio.sleep(2.5)  # past the visibility timeout: whatever comes back, has
            await eventually(lambda: worker.keeper.in_flight == 0, timeout=30)
        in_flight = struck(ledger, proxy)
        verdict = (
            await ledger.inspect(queues, settle_timeout=10, allowed_duplicates=in_flight)
        ).check()
        assert in_flight  # the failed call named messages
        if fault is Fault.DROP_RESPONSE:
            # SQS deleted them on the first attempt, so they never came back, although the
            # worker only learnt of it on its next attempt.
            assert verdict.duplicates == {}
        else:
            # Never deleted: they came back and were handled again, and only they were.
            assert verdict.duplicates
            assert set(verdict.duplicates) <= in_flight
        assert verdict.in_dlq == set()
        assert events(logs, "sqs.settle_retrying")


@pytest.mark.slow
class TestUnreachable:
    """SQS unreachable for a while: pollers back off, liveness holds, the worker recovers."""

    async def test_outage_keeps_the_worker_live_and_it_recovers(
        self, proxy: FaultProxy, queues: Queues, logs: LogCapture
    ) -> None:
        ledger = Ledger()
        registry = CollectorRegistry()
        async with worker_behind(proxy, queues, ledger.record, registry) as worker:
            await ledger.publish(queues, 10)
            await eventually(lambda: len(ledger.handled_counts()) == 10)
            proxy.add(Rule.on(Fault.RESET))  # every SQS call: connection reset
            await eventually(
                lambda: len(events(logs, "sqs.receive_failed")) >= 2, timeout=40, interval=0.2
            )
            await ledger.publish(queues, 10)  # published during the outage
            for _ in range(3):
                status, document = await asyncio.to_thread(probe, worker)
                assert status == 200, document
                await asyncio.sleep(0.5)
            assert (await asyncio.to_thread(probe, worker, "/readyz"))[0] == 200
            proxy.clear()
            # The poller's backoff is capped at 20 s: it is back within that.
            await eventually(lambda: len(ledger.handled_counts()) == 20, timeout=40)
        verdict = (await ledger.inspect(queues, settle_timeout=10, allowed_duplicates=())).check()
        assert verdict.figures()["handled"] == 20
        failures = [e["consecutive_errors"] for e in events(logs, "sqs.receive_failed")]
        assert failures[:2] == [1, 2]  # counted up while it lasted, logged each time
        errors = sqs_errors(registry)
        assert errors[("ReceiveMessage", "EndpointConnectionError")] >= 2

    async def test_stalled_calls_time_out_and_are_retried(
        self, proxy: FaultProxy, queues: Queues
    ) -> None:
        ledger = Ledger()
        registry = CollectorRegistry()
        await ledger.publish(queues, 10)
        # Neither answered nor refused: the client's read timeout (the long poll + 15 s) ends
        # the stall, and botocore's retry goes through.
        proxy.add(Rule.on(Fault.STALL, "ReceiveMessage", count=1, seconds=60))
        async with worker_behind(proxy, queues, ledger.record, registry) as worker:
            await asyncio.sleep(2)
            # A stalled call is no reason to restart.
            assert (await asyncio.to_thread(probe, worker))[0] == 200
            await eventually(lambda: len(ledger.handled_counts()) == 10, timeout=40)
            await eventually(lambda: worker.keeper.in_flight == 0, timeout=40)
        verdict = (await ledger.inspect(queues, settle_timeout=10, allowed_duplicates=())).check()
        assert verdict.duplicates == {}
        q, operation = queues.queue_name, "ReceiveMessage"
        assert (
            sample(registry, "worker_sqs_request_retries_total", queue=q, operation=operation) == 1
        )
        # The call that stalled took longer than the read timeout, its retry included.
        assert sample(
            registry,
            "worker_sqs_request_duration_seconds_bucket",
            queue=q,
            operation=operation,
            le="10.0",
        ) < sample(
            registry, "worker_sqs_request_duration_seconds_count", queue=q, operation=operation
        )
        assert proxy.injected == {Fault.STALL: 1}


class TestShutdownWithSqsUnreachable:
    """SIGTERM while SQS refuses connections, or accepts them and never answers: the stop keeps
    its deadline; what could not be sent comes back by visibility timeout (duplicates, no loss)."""

    @pytest.mark.parametrize("outage", ["refused", "silent"])
    async def test_the_stop_keeps_its_deadline(
        self, moto_endpoint: str, proxy: FaultProxy, logs: LogCapture, outage: str
    ) -> None:
        queues = await make_queues(moto_endpoint, visibility_timeout=2)
        ledger = Ledger()
        started = asyncio.Event()

        async def handler(message: Message) -> None:
            started.set()
            await asyncio.sleep(1)
            await ledger.record(message)

        await ledger.publish(queues, 2, via="sqs")
        settings = queues.settings(endpoint_url=proxy.url, concurrency=2, pollers=1)
        # Leaving the block stops the worker and fails the test if the stop outlasts 60 s; it
        # used to take 40 s with connections refused, and more than 400 s with silence.
        async with running_worker(settings, handler) as running:
            await eventually(lambda: running.worker.runner.running == 2)
            if outage == "refused":
                proxy.stop()
            else:
                proxy.add(Rule.on(Fault.STALL, seconds=3600))
        assert running.report.deleted == 0
        assert running.report.settle_failures == 2
        unsent = {entry["error"] for entry in events(logs, "message.delete_failed")}
        assert unsent == {"not sent before the shutdown's deadline"}
        # Handled, but not deleted: both come back to the next worker, to be handled again.
        async with running_worker(queues.settings(), ledger.record) as successor:
            await eventually(lambda: successor.worker.runner.counts["succeeded"] == 2)
        verdict = (
            await ledger.inspect(queues, settle_timeout=5, allowed_duplicates=ledger.published_ids)
        ).check()
        assert verdict.duplicates == dict.fromkeys(ledger.published_ids, 2)
