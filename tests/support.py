"""Helpers shared by the tests: queues on the broker, and running a worker in-process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from prometheus_client import CollectorRegistry

from tests.brokers import free_port, stop, wait_until_answering
from worker.config import Settings
from worker.consume.lease import Lease
from worker.consume.runner import Runner
from worker.consume.sqs import open_sns, open_sqs
from worker.consume.worker import Report, Worker, serve
from worker.handlers.adapters import Handler
from worker.ops.provision import provision

if TYPE_CHECKING:
    from types_aiobotocore_sqs.type_defs import MessageTypeDef

REGION = "us-east-1"
ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def moto_server_process(
    env: Mapping[str, str] | None = None, *, atomic: bool = False
) -> Iterator[str]:
    """A moto server in its own process (so that it does not share the tests' GIL); its URL.

    ``atomic``: the worker's local broker (``python -m worker.ops.local``), whose receives and
    deletes run one at a time per queue, so that no message is handed to two pollers at once, as
    SQS guarantees and stock moto does not.
    """
    port = free_port()
    module = "worker.ops.local" if atomic else "moto.server"
    server = subprocess.Popen(  # noqa: S603 -- our own interpreter and arguments
        [sys.executable, "-m", module, "-H", "127.0.0.1", "-p", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(f"{url}/moto-api/", server, "the moto server")
        yield url
    finally:
        stop(server)


async def run_cli(*args: str, env: Mapping[str, str] | None = None) -> tuple[int, str, str]:
    """Run ``python -m worker ARGS``; (exit code, stdout, stderr). Killed if it hangs."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "AWS_REGION": REGION, **(env or {})},
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), 60)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"worker {' '.join(args)} still running after 60 s") from None
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@dataclass(frozen=True)
class Queues:
    """A topic, its subscribed queue and the queue's DLQ, made for one test."""

    endpoint_url: str
    topic_arn: str
    queue_url: str
    queue_arn: str
    dlq_url: str
    max_receive_count: int
    visibility_timeout: int

    @property
    def queue_name(self) -> str:
        """The queue's name."""
        return self.queue_url.rsplit("/", 1)[-1]

    @property
    def account_id(self) -> str:
        """The account the broker made the queues in (each emulator has its own)."""
        return self.queue_arn.split(":")[4]

    def settings(self, **overrides: Any) -> Settings:
        """Worker settings for this queue, quick to shut down; ``overrides`` win."""
        values: dict[str, Any] = {
            "queue_url": self.queue_url,
            "endpoint_url": self.endpoint_url,
            "region": REGION,
            "wait_time_seconds": 1,
            # Retries come back at once (a 0 s visibility), unless a test says otherwise.
            "backoff_base_seconds": 0.1,
            "backoff_max_seconds": 0.1,
            "shutdown_timeout": 5.0,
            "settle_flush_seconds": 0.02,
            "http_port": 0,  # any free port: tests never collide on 8080
            **overrides,
        }
        return Settings(**values)


async def make_queues(
    endpoint_url: str,
    *,
    max_receive_count: int = 3,
    visibility_timeout: int = 30,
    raw_message_delivery: bool = False,
) -> Queues:
    """Provision a fresh topic, queue and DLQ with ``worker provision``'s own code."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    settings = Settings(
        endpoint_url=endpoint_url,
        region=REGION,
        queue_name=name,
        max_receive_count=max_receive_count,
        visibility_timeout=visibility_timeout,
        raw_message_delivery=raw_message_delivery,
    )
    made = await provision(settings)
    return Queues(
        endpoint_url=endpoint_url,
        topic_arn=made.topic_arn,
        queue_url=made.queue_url,
        queue_arn=made.queue_arn,
        dlq_url=made.dlq_url,
        max_receive_count=max_receive_count,
        visibility_timeout=visibility_timeout,
    )


def _client_settings(queues: Queues) -> Settings:
    return Settings(endpoint_url=queues.endpoint_url, region=REGION)


async def publish(queues: Queues, *bodies: str, **extra: Any) -> list[str]:
    """Publish each body to the topic; returns the SNS message ids."""
    async with open_sns(_client_settings(queues)) as sns:
        return [
            (await sns.publish(TopicArn=queues.topic_arn, Message=body, **extra))["MessageId"]
            for body in bodies
        ]


async def send(queues: Queues, *bodies: str, **extra: Any) -> list[str]:
    """Send each body straight to the queue (no SNS); returns the SQS message ids."""
    async with open_sqs(_client_settings(queues)) as sqs:
        return [
            (await sqs.send_message(QueueUrl=queues.queue_url, MessageBody=body, **extra))[
                "MessageId"
            ]
            for body in bodies
        ]


async def depth(queues: Queues, url: str) -> tuple[int, int]:
    """(visible, in flight) messages of a queue, as SQS reports them."""
    async with open_sqs(_client_settings(queues)) as sqs:
        attributes = (
            await sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )
        )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )


async def drain(
    queues: Queues, url: str, *, expect: int, timeout: float = 10.0
) -> list[MessageTypeDef]:
    """Receive (and delete) messages from ``url`` until ``expect`` have come or time runs out."""
    found: list[MessageTypeDef] = []
    deadline = time.monotonic() + timeout
    async with open_sqs(_client_settings(queues)) as sqs:
        while len(found) < expect and time.monotonic() < deadline:
            response = await sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=1,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            for message in response.get("Messages", []):
                found.append(message)
                await sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return found


async def eventually(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool],
    *,
    timeout: float = 15.0,
    interval: float = 0.1,
) -> None:
    """Wait until ``check()`` is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


@dataclass
class Running:
    """A worker running in this process, and (after it stopped) its report."""

    worker: Worker
    task: asyncio.Task[Report]
    report: Report = field(default_factory=Report)


@contextlib.asynccontextmanager
async def running_worker(
    settings: Settings, handler: Handler | None = None, registry: CollectorRegistry | None = None
) -> AsyncIterator[Running]:
    """Run ``serve`` in a task; stop it gracefully on exit and keep its report."""
    started: asyncio.Future[Worker] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve(settings, handler=handler, registry=registry, on_started=started.set_result)
    )
    either: set[asyncio.Future[Any]] = {started, task}
    done, _ = await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    if task in done and not started.done():
        task.result()  # raises what stopped it from starting
    running = Running(worker=started.result(), task=task)
    try:
        yield running
    finally:
        running.worker.stop("test finished")
        running.report = await asyncio.wait_for(task, timeout=60)


POLLER_BUG = "a bug between receiving and starting handlers"


def break_pollers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every poller die of a bug as soon as it has received messages.

    Pollers catch every error talking to SQS, so only a bug ends one; this stands in for it.
    """

    def defective(runner: Runner, leases: list[Lease], slots: int) -> None:
        raise RuntimeError(POLLER_BUG)

    monkeypatch.setattr(Runner, "start", defective)
