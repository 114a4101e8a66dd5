"""A real Prometheus scrapes a worker processing real messages, and sees what happened.

Prometheus comes from Debian's ``prometheus`` package, which ``make test`` installs. It does not
start by itself here: the test starts it on a loopback port with a temporary data directory and
stops it. A missing binary fails the test rather than skipping it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tests.support import Queues, eventually, make_queues, publish, running_worker
from worker import Message

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Prometheus:
    """A Prometheus server scraping one target every second."""

    def __init__(self, binary: str, tmp_path: Path, target_port: int) -> None:
        self.port = _free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n"
            "  scrape_interval: 1s\n"
            "  evaluation_interval: 1s\n"
            "scrape_configs:\n"
            "  - job_name: sqs-worker\n"
            "    static_configs:\n"
            f"      - targets: ['127.0.0.1:{target_port}']\n",
            encoding="utf-8",
        )
        self._log = (tmp_path / "prometheus.log").open("wb")
        self.process = subprocess.Popen(  # noqa: S603 -- the Debian binary, our arguments
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def query(self, expression: str) -> list[dict[str, object]]:
        """An instant query's result vector."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expression}
        )
        with urllib.request.urlopen(url, timeout=5) as response:
            document = json.load(response)
        assert document["status"] == "success", document
        result: list[dict[str, object]] = document["data"]["result"]
        return result

    def scalar(self, expression: str) -> float | None:
        """The value of a query that yields one sample, or None while it yields none."""
        try:
            result = self.query(expression)
        except OSError:
            return None  # not listening yet
        if not result:
            return None
        sample = result[0]["value"]
        assert isinstance(sample, list)
        return float(sample[1])

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)
        self._log.close()


@pytest.fixture
def prometheus_binary() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("the prometheus binary is missing: `make test` installs Debian's prometheus")
    return binary


class TestScrapedByPrometheus:
    """The processed count and the DLQ depth reach Prometheus as they happened."""

    async def test_prometheus_sees_processing_and_the_dlq(
        self, broker_endpoint: str, prometheus_binary: str, tmp_path: Path
    ) -> None:
        queues: Queues = await make_queues(broker_endpoint, max_receive_count=2)

        async def handler(message: Message) -> None:
            if message.body == "poison":
                raise ValueError("cannot process")

        await publish(queues, *(f"order-{n}" for n in range(7)), "poison")
        registry = CollectorRegistry()
        settings = queues.settings(depth_interval_seconds=1)
        async with running_worker(settings, handler, registry) as running:
            assert running.worker.http_port is not None
            prometheus = await asyncio.to_thread(
                Prometheus, prometheus_binary, tmp_path, running.worker.http_port
            )
            try:
                q = queues.queue_name

                def processed() -> bool:
                    got = prometheus.scalar(f'sum(worker_messages_succeeded_total{{queue="{q}"}})')
                    return got == 7

                def dead_lettered() -> bool:
                    got = prometheus.scalar(
                        f'max(worker_queue_messages{{queue="{q}-dlq",role="dlq",state="visible"}})'
                    )
                    return got == 1

                await eventually(lambda: asyncio.to_thread(processed), timeout=60, interval=0.5)
                await eventually(lambda: asyncio.to_thread(dead_lettered), timeout=60, interval=0.5)
                up = await asyncio.to_thread(prometheus.scalar, 'up{job="sqs-worker"}')
                failed = await asyncio.to_thread(
                    prometheus.scalar,
                    f'sum(worker_messages_failed_total{{queue="{q}",reason="handler_error"}})',
                )
            finally:
                await asyncio.to_thread(prometheus.stop)
        assert up == 1
        assert failed == 2  # the poison message, once per receive, until SQS moved it
