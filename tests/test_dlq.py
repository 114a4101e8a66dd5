"""DLQ operations against a moto server: see what failed, bring it back, lose nothing."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.session import get_session
from aiobotocore.stub import AioStubber

from tests.support import (
    REGION,
    Queues,
    depth,
    drain,
    eventually,
    make_queues,
    publish,
    running_worker,
)
from worker import Message, dlq
from worker.config import Settings
from worker.filtering import FilterCriteria
from worker.provision import provision
from worker.sqs import open_sqs

ROOT = Path(__file__).resolve().parent.parent
STUBBED = {"aws_access_key_id": "stub", "aws_secret_access_key": "stub"}


def stubbed_sqs() -> Any:
    """An SQS client for botocore's Stubber: no endpoint is ever called."""
    return get_session().create_client(
        "sqs",
        region_name=REGION,
        aws_access_key_id="stub",
        aws_secret_access_key="stub",  # noqa: S106 -- never sent anywhere
    )


async def seed(queues: Queues, *bodies: str, **extra: Any) -> None:
    """Put messages straight into the DLQ, as if SQS had moved them there."""
    async with open_sqs(queues.settings()) as sqs:
        for body in bodies:
            await sqs.send_message(QueueUrl=queues.dlq_url, MessageBody=body, **extra)


def bodies_of(messages: list[Any]) -> Counter[str]:
    return Counter(message["Body"] for message in messages)


async def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run ``python -m worker ARGS``; (exit code, stdout, stderr)."""
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
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


class TestInspect:
    """Poison messages reach the DLQ; stats and peek show them and leave them in place."""

    async def test_poison_messages_in_stats_and_peek(self, queues: Queues) -> None:
        async def rejects(message: Message) -> None:
            raise ValueError("cannot process")

        await publish(
            queues,
            *(json.dumps({"order_id": f"o-{n}", "amount": "bad"}) for n in range(4)),
            MessageAttributes={"source": {"DataType": "String", "StringValue": "shop"}},
        )
        await publish(queues, "not json at all")

        async def five_in_dlq() -> bool:
            return (await depth(queues, queues.dlq_url))[0] == 5

        async with running_worker(queues.settings(), rejects):
            await eventually(five_in_dlq, timeout=30)

        code, out, _ = await cli(
            "dlq",
            "stats",
            "--queue",
            queues.queue_url,
            "--endpoint-url",
            queues.endpoint_url,
            "--json",
        )
        assert code == 0
        document = json.loads(out)
        assert document["max_receive_count"] == 3
        source, dead = document["queues"]
        assert (source["role"], source["visible"]) == ("source", 0)
        assert (dead["role"], dead["visible"]) == ("dlq", 5)
        assert dead["oldest_age_seconds"] > 0

        code, out, _ = await cli(
            "dlq",
            "peek",
            "--queue",
            queues.queue_url,
            "--endpoint-url",
            queues.endpoint_url,
            "--json",
        )
        assert code == 0
        peeked = json.loads(out)
        shapes = {g["shape"]: g["count"] for g in peeked["groups"]}
        assert shapes == {"{amount: str, order_id: str}": 4, "text": 1}
        order = next(g for g in peeked["groups"] if g["count"] == 4)["messages"][0]
        assert order["attributes"] == {"source": "shop"}
        assert order["topic_arn"] == queues.topic_arn
        assert json.loads(order["body"])["amount"] == "bad"  # the payload, envelope unwrapped

        code, out, _ = await cli(
            "dlq", "peek", "--queue", queues.queue_url, "--endpoint-url", queues.endpoint_url
        )
        assert code == 0
        assert "    4 x {amount: str, order_id: str}" in out
        assert "    1 x text" in out
        assert await depth(queues, queues.dlq_url) == (5, 0)  # nothing consumed


class TestRedrive:
    """Message by message: sent first, deleted after; filters, limits, rates and dry runs."""

    async def test_redrive_returns_each_once_with_attributes_and_the_worker_processes_them(
        self, queues: Queues
    ) -> None:
        attributes = {
            "kind": {"DataType": "String", "StringValue": "order"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
        }
        sent = [f"m{n}" for n in range(12)]
        await seed(queues, *sent, MessageAttributes=attributes)
        plan = dlq.RedrivePlan(manual=True)
        result = await dlq.run_redrive(queues.settings(), plan)
        assert (result.moved, result.failed, result.delete_failed) == (12, 0, 0)
        assert await depth(queues, queues.dlq_url) == (0, 0)

        handled: list[Message] = []

        async def handler(message: Message) -> None:
            handled.append(message)

        async with running_worker(queues.settings(sns_envelope="raw"), handler):
            await eventually(lambda: len(handled) == 12)
            await asyncio.sleep(0.5)
        assert Counter(m.body for m in handled) == Counter(sent)  # each exactly once
        for message in handled:
            assert message.message_attributes["kind"].value == "order"
            assert message.message_attributes["blob"].value == b"\x00\x01"

    async def test_native_fallback_when_the_endpoint_lacks_move_tasks(self, queues: Queues) -> None:
        await seed(queues, "a", "b")
        result = await dlq.run_redrive(queues.settings(), dlq.RedrivePlan())
        assert result.native_task is None  # moto answers 500: moved message by message
        assert result.moved == 2

    async def test_filter_moves_only_what_matches(self, queues: Queues) -> None:
        await seed(queues, *(json.dumps({"type": "order", "n": n}) for n in range(3)))
        await seed(queues, *(json.dumps({"type": "refund", "n": n}) for n in range(2)))
        criteria = FilterCriteria.from_pattern('{"body": {"type": ["order"]}}')
        result = await dlq.run_redrive(
            queues.settings(), dlq.RedrivePlan(criteria=criteria, hold_seconds=30)
        )
        assert (result.moved, result.skipped) == (3, 2)
        moved = await drain(queues, queues.queue_url, expect=3)
        assert sorted(json.loads(m["Body"])["type"] for m in moved) == ["order"] * 3
        assert await depth(queues, queues.dlq_url) == (2, 0)  # given back at once

    async def test_max_and_rate(self, queues: Queues) -> None:
        await seed(queues, *(f"m{n}" for n in range(8)))
        started = time.monotonic()
        result = await dlq.run_redrive(
            queues.settings(), dlq.RedrivePlan(max_messages=5, rate=4.0, manual=True)
        )
        elapsed = time.monotonic() - started
        assert result.moved == 5
        assert elapsed >= 0.9  # five at four a second: the last waits a second after the first
        assert await depth(queues, queues.dlq_url) == (3, 0)
        assert await depth(queues, queues.queue_url) == (5, 0)

    async def test_dry_run_moves_nothing(self, queues: Queues) -> None:
        await seed(queues, *(json.dumps({"n": n}) for n in range(4)), "plain")
        result = await dlq.run_redrive(queues.settings(), dlq.RedrivePlan(dry_run=True))
        assert (result.matched, result.moved) == (5, 0)
        assert result.shapes == Counter({"{n: number}": 4, "text": 1})
        assert await depth(queues, queues.dlq_url) == (5, 0)
        assert await depth(queues, queues.queue_url) == (0, 0)

    async def test_redrive_to_another_queue(self, queues: Queues) -> None:
        other = await make_queues(queues.endpoint_url)
        await seed(queues, "x")
        result = await dlq.run_redrive(
            queues.settings(), dlq.RedrivePlan(destination=other.queue_url, manual=True)
        )
        assert result.moved == 1
        assert bodies_of(await drain(other, other.queue_url, expect=1)) == Counter({"x": 1})

    async def test_interrupted_redrive_loses_nothing(self, queues: Queues, tmp_path: Path) -> None:
        sent = [f"m{n:02d}" for n in range(12)]
        await seed(queues, *sent)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "worker",
            "dlq",
            "redrive",
            "--queue",
            queues.queue_url,
            "--endpoint-url",
            queues.endpoint_url,
            "--rate",
            "3",
            "--hold",
            "2",
            "--manual",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            cwd=ROOT,
            env={**os.environ, "AWS_REGION": REGION},
        )

        async def some_moved() -> bool:
            return (await depth(queues, queues.queue_url))[0] >= 3

        await eventually(some_moved, timeout=30)
        process.send_signal(signal.SIGKILL)  # no chance to clean up
        await process.wait()
        await asyncio.sleep(2.5)  # what it held comes back when its hold runs out
        in_source = bodies_of(await drain(queues, queues.queue_url, expect=len(sent), timeout=5))
        in_dlq = bodies_of(await drain(queues, queues.dlq_url, expect=len(sent), timeout=5))
        everywhere = in_source + in_dlq
        assert set(everywhere) == set(sent)  # nothing lost
        duplicated = [body for body, n in everywhere.items() if n > 1]
        assert len(duplicated) <= 3  # only a batch in hand between send and delete

    async def test_interrupt_with_sigint_stops_cleanly(self, queues: Queues) -> None:
        await seed(queues, *(f"m{n:02d}" for n in range(10)))
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "worker",
            "dlq",
            "redrive",
            "--queue",
            queues.queue_url,
            "--endpoint-url",
            queues.endpoint_url,
            "--rate",
            "2",
            "--manual",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, "AWS_REGION": REGION},
        )

        async def some_moved() -> bool:
            return (await depth(queues, queues.queue_url))[0] >= 2

        await eventually(some_moved, timeout=30)
        process.send_signal(signal.SIGINT)
        out, _ = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 130
        assert "stopped before the end; nothing in hand was lost" in out.decode()
        source, dead = await depth(queues, queues.queue_url), await depth(queues, queues.dlq_url)
        assert source[0] + dead[0] == 10  # every message is visible in exactly one queue
        assert source[1] == dead[1] == 0  # and none is left held


class TestFifo:
    """A FIFO DLQ's messages go back in order, with their group, under a new dedup id."""

    async def test_fifo_redrive_keeps_group_order(self, moto_endpoint: str) -> None:
        base = Settings(endpoint_url=moto_endpoint, region=REGION)
        name = f"f-{uuid.uuid4().hex[:10]}"
        made = await provision(base.model_copy(update={"queue_name": f"{name}.fifo"}))
        async with open_sqs(base) as sqs:
            for group, items in {"g1": ["a1", "a2", "a3"], "g2": ["b1", "b2"]}.items():
                for item in items:
                    await sqs.send_message(
                        QueueUrl=made.dlq_url,
                        MessageBody=item,
                        MessageGroupId=group,
                        MessageDeduplicationId=item,
                    )
        settings = base.model_copy(update={"queue_url": made.queue_url})
        result = await dlq.run_redrive(settings, dlq.RedrivePlan(manual=True))
        assert result.moved == 5
        received: dict[str, list[str]] = {}
        async with open_sqs(settings) as sqs:
            for _ in range(10):
                response = await sqs.receive_message(
                    QueueUrl=made.queue_url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=1,
                    MessageSystemAttributeNames=["All"],
                )
                for message in response.get("Messages", []):
                    group = message["Attributes"]["MessageGroupId"]
                    received.setdefault(group, []).append(message["Body"])
                    await sqs.delete_message(
                        QueueUrl=made.queue_url, ReceiptHandle=message["ReceiptHandle"]
                    )
                if sum(map(len, received.values())) == 5:
                    break
        assert received == {"g1": ["a1", "a2", "a3"], "g2": ["b1", "b2"]}


class TestNativeMoveTasks:
    """On AWS, an unfiltered redrive is SQS's own move task (checked with botocore's Stubber)."""

    async def test_start_list_and_cancel(self) -> None:
        async with stubbed_sqs() as client:
            dlq_arn = "arn:aws:sqs:us-east-1:123456789012:orders-dlq"
            destination = "arn:aws:sqs:us-east-1:123456789012:orders-replay"
            with AioStubber(client) as stubber:
                stubber.add_response(
                    "start_message_move_task",
                    {"TaskHandle": "task-1"},
                    {
                        "SourceArn": dlq_arn,
                        "DestinationArn": destination,
                        "MaxNumberOfMessagesPerSecond": 50,
                    },
                )
                stubber.add_response(
                    "list_message_move_tasks",
                    {
                        "Results": [
                            {
                                "TaskHandle": "task-1",
                                "Status": "COMPLETED",
                                "SourceArn": dlq_arn,
                                "ApproximateNumberOfMessagesMoved": 7,
                                "ApproximateNumberOfMessagesToMove": 7,
                            }
                        ]
                    },
                    {"SourceArn": dlq_arn, "MaxResults": 10},
                )
                stubber.add_response(
                    "cancel_message_move_task",
                    {"ApproximateNumberOfMessagesMoved": 3},
                    {"TaskHandle": "task-2"},
                )
                handle = await dlq.start_move_task(
                    client, dlq_arn=dlq_arn, destination_arn=destination, rate=50.0
                )
                seen: list[tuple[int, int | None]] = []
                task = await dlq.wait_for_move_task(
                    client,
                    dlq_arn,
                    handle,
                    progress=lambda result, left: seen.append((result.moved, left)),
                )
                moved = await dlq.cancel_move_task(client, "task-2")
                stubber.assert_no_pending_responses()
        assert handle == "task-1"
        assert task["Status"] == "COMPLETED"
        assert seen == [(7, 0)]
        assert moved == 3

    async def test_unsupported_endpoint_is_recognised(self) -> None:
        async with stubbed_sqs() as client:
            with AioStubber(client) as stubber:
                stubber.add_client_error(
                    "start_message_move_task",
                    service_error_code="InternalFailure",
                    http_status_code=500,
                )
                with pytest.raises(dlq.MoveTasksUnsupportedError):
                    await dlq.start_move_task(
                        client, dlq_arn="arn:aws:sqs:us-east-1:1:d", destination_arn=None, rate=None
                    )


class TestPurgeAndReprocess:
    """Purge asks for --yes; a worker runs against a DLQ to reprocess it."""

    async def test_purge_needs_yes(self, queues: Queues) -> None:
        await seed(queues, "a", "b")
        common = ("--queue", queues.queue_url, "--endpoint-url", queues.endpoint_url)
        code, _, err = await cli("dlq", "purge", *common)
        assert code == 2
        assert err.strip().endswith(
            f"refusing to delete the 2 messages of {queues.queue_name}-dlq without --yes"
        )
        assert await depth(queues, queues.dlq_url) == (2, 0)
        code, out, _ = await cli("dlq", "purge", "--yes", *common)
        assert code == 0
        assert out.strip() == f"purged {queues.queue_name}-dlq (2 messages)"
        assert await depth(queues, queues.dlq_url) == (0, 0)

    async def test_worker_reprocesses_a_dlq_and_exits_when_idle(
        self, queues: Queues, tmp_path: Path
    ) -> None:
        await seed(queues, "r1", "r2", "r3")
        code, _, err = await cli(
            "run",
            "--queue",
            queues.dlq_url,
            "--endpoint-url",
            queues.endpoint_url,
            "--handler",
            "tests.handlers:slow",
            "--exit-when-idle",
            "1",
            env={
                "TEST_SLEEP": "0",
                "TEST_MARKERS": str(tmp_path),
                "WORKER_WAIT_TIME_SECONDS": "1",
                "WORKER_HTTP_PORT": "0",
                "WORKER_LOG_FORMAT": "json",
            },
        )
        assert code == 0, err
        events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        reprocessing = next(e for e in events if e["event"] == "worker.reprocessing_dlq")
        assert reprocessing["dlq_of"] == [queues.queue_name]
        stopped = next(e for e in events if e["event"] == "worker.stopped")
        assert stopped["deleted"] == 3
        assert await depth(queues, queues.dlq_url) == (0, 0)

    async def test_moves_on_an_endpoint_without_them(self, queues: Queues) -> None:
        code, _, err = await cli(
            "dlq", "moves", "--queue", queues.queue_url, "--endpoint-url", queues.endpoint_url
        )
        assert code == 1
        assert err.strip() == "worker: this endpoint has no message move tasks (HTTP 500)"
