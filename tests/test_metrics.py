"""Metrics through a message's life, and the health endpoints, against a moto server."""

from __future__ import annotations

import asyncio
import json
import platform
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

from prometheus_client import CollectorRegistry, Histogram
from structlog.testing import capture_logs

from tests.support import Queues, drain, eventually, make_queues, publish, running_worker, send
from worker import Message, NonRetryableError, __version__
from worker.consume.sqs import open_sqs
from worker.metrics import _DURATION_BUCKETS, Metrics


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """A sample's value, 0 when it has not been recorded."""
    return registry.get_sample_value(name, labels) or 0.0


def get(port: int, path: str) -> tuple[int, str, str]:
    """(status, content type, body) of a GET on the worker's status server."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


async def succeed(message: Message) -> None:
    """A handler that always succeeds."""


class TestLifecycle:
    """Each step of a message's life moves its metric."""

    async def test_success(self, queues: Queues) -> None:
        registry = CollectorRegistry()
        q = queues.queue_name
        await publish(queues, "a", "b", "c")
        async with running_worker(queues.settings(), succeed, registry) as running:
            await eventually(lambda: value(registry, "worker_messages_deleted_total", queue=q) == 3)
            assert value(registry, "worker_messages_in_flight", queue=q) == 0
            assert value(registry, "worker_concurrency_limit", queue=q) == 10
            assert value(registry, "worker_pollers_running", queue=q) == len(running.worker.pollers)
        assert value(registry, "worker_messages_received_total", queue=q) == 3
        assert value(registry, "worker_messages_succeeded_total", queue=q) == 3
        assert (
            value(registry, "worker_handler_duration_seconds_count", queue=q, outcome="success")
            == 3
        )
        assert value(registry, "worker_message_age_seconds_count", queue=q) == 3
        assert value(registry, "worker_message_receive_count_bucket", queue=q, le="1.0") == 3
        assert (
            value(
                registry,
                "worker_sqs_requests_total",
                queue=q,
                operation="ReceiveMessage",
                result="success",
            )
            >= 1
        )
        assert (
            value(
                registry,
                "worker_sqs_requests_total",
                queue=q,
                operation="DeleteMessageBatch",
                result="success",
            )
            >= 1
        )
        assert (
            value(
                registry,
                "worker_sqs_request_duration_seconds_count",
                queue=q,
                operation="ReceiveMessage",
            )
            >= 1
        )
        build = {
            "version": __version__,
            "python": platform.python_version(),
            "implementation": sys.implementation.name,
        }
        assert value(registry, "worker_build_info", **build) == 1
        assert value(registry, "process_resident_memory_bytes") > 0

    async def test_failures_retries_and_the_dlq(self, queues: Queues) -> None:
        registry = CollectorRegistry()
        q = queues.queue_name

        async def fails(message: Message) -> None:
            raise RuntimeError("boom")

        await publish(queues, "poison")
        settings = queues.settings(depth_interval_seconds=0.5)
        async with running_worker(settings, fails, registry):
            await eventually(
                lambda: (
                    value(
                        registry,
                        "worker_queue_messages",
                        queue=f"{q}-dlq",
                        role="dlq",
                        state="visible",
                    )
                    == 1
                )
            )
        assert value(registry, "worker_messages_failed_total", queue=q, reason="handler_error") == 3
        assert value(registry, "worker_messages_retried_total", queue=q) == 3
        assert value(registry, "worker_messages_deleted_total", queue=q) == 0
        buckets = [
            value(registry, "worker_message_receive_count_bucket", queue=q, le=le)
            for le in ("1.0", "2.0", "3.0")
        ]
        assert buckets == [1, 2, 3]  # one receive each time: the retries show
        assert (
            value(
                registry, "worker_handler_duration_seconds_count", queue=q, outcome="handler_error"
            )
            == 3
        )
        assert (
            value(registry, "worker_queue_messages", queue=q, role="source", state="visible") == 0
        )

    async def test_depth_says_when_it_was_last_read(self, queues: Queues) -> None:
        registry = CollectorRegistry()
        q, dlq = queues.queue_name, f"{queues.queue_name}-dlq"

        def read_at(queue: str, role: str) -> float:
            return value(
                registry, "worker_queue_depth_last_read_timestamp_seconds", queue=queue, role=role
            )

        await send(queues, "waiting")
        # No periodic reads: the test reads the depth itself, so that nothing races it.
        settings = queues.settings(depth_interval_seconds=0)
        async with running_worker(settings, succeed, registry) as running:
            before = time.time()
            await running.worker.depth.refresh()
            first = read_at(dlq, "dlq")
            assert first >= before
            assert read_at(q, "source") >= before
            async with open_sqs(queues.settings()) as sqs:
                await sqs.delete_queue(QueueUrl=queues.dlq_url)
            again = time.time()
            with capture_logs() as logs:
                await running.worker.depth.refresh()
            assert [e["queue"] for e in logs if e["event"] == "sqs.depth_failed"] == [dlq]
            # The DLQ's gauges keep their last values; their read time says how old they are.
            assert read_at(dlq, "dlq") == first
            assert read_at(q, "source") >= again

    async def test_timeout_non_retryable_and_malformed(self, queues: Queues) -> None:
        registry = CollectorRegistry()
        q = queues.queue_name

        async def handler(message: Message) -> None:
            if message.body == "slow" and message.receive_count == 1:
                await asyncio.sleep(30)
            if message.body == "reject":
                raise NonRetryableError("no")
            if message.body == "not json":
                message.json()

        await send(queues, "slow", "reject", "not json")
        settings = queues.settings(max_processing_seconds=1)
        async with running_worker(settings, handler, registry):
            await drain(queues, queues.dlq_url, expect=2, timeout=30)
            await eventually(
                lambda: value(registry, "worker_messages_succeeded_total", queue=q) == 1
            )
        assert value(registry, "worker_messages_failed_total", queue=q, reason="timeout") == 1
        assert value(registry, "worker_messages_failed_total", queue=q, reason="non_retryable") == 3
        assert value(registry, "worker_messages_failed_total", queue=q, reason="malformed") == 3
        assert (
            value(registry, "worker_messages_released_total", queue=q, reason="non_retryable") == 3
        )
        assert (
            value(registry, "worker_handler_duration_seconds_count", queue=q, outcome="timeout")
            == 1
        )

    async def test_release_on_shutdown(self, queues: Queues) -> None:
        registry = CollectorRegistry()
        q = queues.queue_name
        started = asyncio.Event()

        async def hangs(message: Message) -> None:
            started.set()
            await asyncio.sleep(60)

        await send(queues, "long")
        async with running_worker(queues.settings(shutdown_timeout=0.5), hangs, registry):
            await asyncio.wait_for(started.wait(), 15)
            assert value(registry, "worker_handlers_running", queue=q) == 1
            assert value(registry, "worker_messages_in_flight", queue=q) == 1
        assert value(registry, "worker_messages_released_total", queue=q, reason="shutdown") == 1
        assert value(registry, "worker_handlers_running", queue=q) == 0

    async def test_visibility_extensions(self, broker_endpoint: str) -> None:
        queues = await make_queues(broker_endpoint, visibility_timeout=2)
        registry = CollectorRegistry()
        q = queues.queue_name

        async def slow(message: Message) -> None:
            await asyncio.sleep(3)

        await send(queues, "slow")
        async with running_worker(queues.settings(), slow, registry):
            await eventually(lambda: value(registry, "worker_messages_deleted_total", queue=q) == 1)
        assert value(registry, "worker_visibility_extensions_total", queue=q) >= 1
        assert value(registry, "worker_visibility_extension_failures_total", queue=q) == 0
        assert (
            value(
                registry,
                "worker_sqs_requests_total",
                queue=q,
                operation="ChangeMessageVisibilityBatch",
                result="success",
            )
            >= 1
        )

    async def test_sqs_errors_are_counted_and_do_not_fail_liveness(self, queues: Queues) -> None:
        registry = CollectorRegistry()
        q = queues.queue_name
        async with running_worker(queues.settings(), succeed, registry) as running:
            async with open_sqs(queues.settings()) as sqs:
                await sqs.delete_queue(QueueUrl=queues.queue_url)
            await eventually(
                lambda: any(
                    sample.labels.get("result") not in (None, "success")
                    for metric in registry.collect()
                    if metric.name == "worker_sqs_requests"
                    for sample in metric.samples
                ),
                timeout=20,
            )
            assert running.worker.http_port is not None
            status, _, body = await asyncio.to_thread(get, running.worker.http_port, "/healthz")
            assert status == 200, body
        errors = [
            sample
            for metric in registry.collect()
            if metric.name == "worker_sqs_requests"
            for sample in metric.samples
            if sample.labels["operation"] == "ReceiveMessage"
            and sample.labels["result"] != "success"
            and sample.name.endswith("_total")
        ]
        assert errors
        assert errors[0].labels["queue"] == q


class TestEndpoints:
    """/metrics, /healthz and /readyz, and nothing else."""

    async def test_endpoints(self, queues: Queues) -> None:
        async with running_worker(queues.settings(), succeed) as running:
            port = running.worker.http_port
            assert port is not None
            status, kind, body = await asyncio.to_thread(get, port, "/metrics")
            assert status == 200
            assert kind.startswith("text/plain")
            assert f'worker_concurrency_limit{{queue="{queues.queue_name}"}} 10.0' in body
            status, kind, body = await asyncio.to_thread(get, port, "/healthz")
            assert (status, kind) == (200, "application/json")
            assert json.loads(body)["status"] == "ok"
            status, _, body = await asyncio.to_thread(get, port, "/readyz")
            assert status == 200
            assert (await asyncio.to_thread(get, port, "/admin"))[0] == 404
            assert (await asyncio.to_thread(get, port, "/metrics/../healthz"))[0] == 404

    async def test_readiness_fails_while_draining(self, queues: Queues) -> None:
        started = asyncio.Event()

        async def slow(message: Message) -> None:
            started.set()
            await asyncio.sleep(2)

        await send(queues, "x")
        async with running_worker(queues.settings(), slow) as running:
            await asyncio.wait_for(started.wait(), 15)
            port = running.worker.http_port
            assert port is not None
            running.worker.stop("test")
            status, _, body = await asyncio.to_thread(get, port, "/readyz")
            assert status == 503
            assert json.loads(body)["problems"] == ["draining"]
            assert (await asyncio.to_thread(get, port, "/healthz"))[0] == 200

    async def test_blocked_event_loop_fails_liveness(self, queues: Queues) -> None:
        seen: list[tuple[int, str]] = []
        stop = threading.Event()

        def probe(port: int) -> None:
            while not stop.is_set():
                status, _, body = get(port, "/healthz")
                seen.append((status, body))
                time.sleep(0.2)

        async def blocks_the_loop(message: Message) -> None:
            time.sleep(4)  # noqa: ASYNC251 -- the very mistake liveness must catch

        settings = queues.settings(liveness_threshold_seconds=2)  # the least allowed
        async with running_worker(settings, blocks_the_loop) as running:
            assert running.worker.http_port is not None
            prober = threading.Thread(target=probe, args=(running.worker.http_port,))
            prober.start()
            await send(queues, "x")
            await eventually(lambda: any(status == 503 for status, _ in seen), timeout=20)
            await eventually(lambda: seen[-1][0] == 200, timeout=20)  # and it recovers
            stop.set()
            await asyncio.to_thread(prober.join)
        failing = next(json.loads(body) for status, body in seen if status == 503)
        assert failing["problems"][0].startswith("event loop blocked for")

    async def test_event_loop_lag_is_scraped_while_the_loop_is_blocked(
        self, queues: Queues
    ) -> None:
        lag_line = re.compile(r"^worker_event_loop_lag_seconds\{[^}]*\} (\S+)$", re.MULTILINE)
        blocking = threading.Event()
        stop = threading.Event()
        seen: list[tuple[bool, float]] = []  # (scraped during the block, lag)

        def scrape(port: int) -> None:
            while not stop.is_set():
                during = blocking.is_set()
                match = lag_line.search(get(port, "/metrics")[2])
                if match is not None:
                    seen.append((during and blocking.is_set(), float(match.group(1))))
                time.sleep(0.2)

        async def blocks_the_loop(message: Message) -> None:
            blocking.set()
            time.sleep(4)  # noqa: ASYNC251 -- the very mistake the lag gauge must show
            blocking.clear()

        async with running_worker(queues.settings(), blocks_the_loop) as running:
            assert running.worker.http_port is not None
            scraper = threading.Thread(target=scrape, args=(running.worker.http_port,))
            scraper.start()
            await send(queues, "x")
            try:
                # Its heartbeat cannot run while the loop is blocked, yet the scrape sees it late.
                await eventually(
                    lambda: any(during and lag >= 1 for during, lag in seen), timeout=30
                )
                # Once the loop turns again, the lag is gone.
                await eventually(lambda: not seen[-1][0] and seen[-1][1] < 1, timeout=20)
            finally:
                stop.set()
                await asyncio.to_thread(scraper.join)


class TestHealthcheckCommand:
    """``worker healthcheck`` turns /healthz into an exit code for container health checks."""

    async def test_exit_codes(self, queues: Queues) -> None:
        def check(url: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(  # noqa: S603 -- our own interpreter
                [sys.executable, "-m", "worker", "healthcheck", "--url", url, "--timeout", "2"],
                capture_output=True,
                text=True,
                check=False,
            )

        async with running_worker(queues.settings(), succeed) as running:
            url = f"http://127.0.0.1:{running.worker.http_port}/healthz"
            passing = await asyncio.to_thread(check, url)
        assert passing.returncode == 0
        assert json.loads(passing.stdout)["status"] == "ok"
        refused = await asyncio.to_thread(check, url)  # the worker is gone
        assert refused.returncode == 1
        assert refused.stderr.startswith("worker: healthcheck: cannot reach")


class TestLoopHistograms:
    """The lock-free histograms expose what prometheus-client's Histogram would."""

    def test_the_same_samples_as_the_librarys_histogram(self) -> None:
        observed = [0.0, 0.005, 0.0051, 0.3, 1, 7.5, 899.9, 900, 5000, float("inf")]
        ours_registry, theirs_registry = CollectorRegistry(), CollectorRegistry()
        ours = Metrics(ours_registry, queue="q")
        theirs = Histogram(
            "worker_handler_duration_seconds",
            "d",
            ["queue", "outcome"],
            buckets=_DURATION_BUCKETS,
            registry=theirs_registry,
        ).labels("q", "success")
        for value in observed:
            ours.duration_for("success").observe(value)
            theirs.observe(value)

        def samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
            return {
                (sample.name, sample.labels.get("le", "")): sample.value
                for family in registry.collect()
                if family.name == "worker_handler_duration_seconds"
                for sample in family.samples
                if not sample.name.endswith("_created")
            }

        assert samples(ours_registry) == samples(theirs_registry)
