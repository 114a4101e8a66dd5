"""Native redrive (SQS's own StartMessageMoveTask) from the command line, on the broker.

moto does not implement move tasks, so these run on LocalStack only (``make test-localstack``).
The logic they reach is also covered, with botocore's Stubber, by ``TestNativeStopAndSummary``
in test_dlq.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.session import get_session

from tests.brokers import Flaw
from tests.support import REGION, eventually

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.broker_flaw(Flaw.MOTO_NO_MOVE_TASKS)


@dataclass(frozen=True)
class Pair:
    """A queue and its DLQ on the broker."""

    endpoint: str
    queue_url: str
    dlq_url: str


def _sqs(endpoint: str) -> Any:
    session: Any = get_session()
    return session.create_client("sqs", region_name=REGION, endpoint_url=endpoint)


async def _visible(endpoint: str, url: str) -> int:
    async with _sqs(endpoint) as sqs:
        response = await sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
        )
    return int(response["Attributes"]["ApproximateNumberOfMessages"])


@pytest.fixture
async def pair(broker_endpoint: str) -> AsyncIterator[Pair]:
    name = f"n-{uuid.uuid4().hex[:10]}"
    async with _sqs(broker_endpoint) as sqs:
        dlq_url = (await sqs.create_queue(QueueName=f"{name}-dlq"))["QueueUrl"]
        attributes = await sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])
        redrive = {
            "deadLetterTargetArn": attributes["Attributes"]["QueueArn"],
            "maxReceiveCount": 3,
        }
        queue_url = (
            await sqs.create_queue(
                QueueName=name, Attributes={"RedrivePolicy": json.dumps(redrive)}
            )
        )["QueueUrl"]
    yield Pair(broker_endpoint, queue_url, dlq_url)
    async with _sqs(broker_endpoint) as sqs:
        for url in (queue_url, dlq_url):
            await sqs.delete_queue(QueueUrl=url)


async def _start(pair: Pair, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker",
        *args,
        "--endpoint-url",
        pair.endpoint,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "AWS_REGION": REGION},
    )


async def _finish(process: asyncio.subprocess.Process, timeout: float) -> tuple[int, str]:
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"still running after {timeout} s") from None
    assert process.returncode is not None
    return process.returncode, out.decode()


class TestNativeRedrive:
    """Ctrl-C stops following the move task at once and says how to cancel it."""

    async def test_first_ctrl_c_names_the_task_and_exits_130(self, pair: Pair) -> None:
        async with _sqs(pair.endpoint) as sqs:
            for n in range(20):
                await sqs.send_message(QueueUrl=pair.dlq_url, MessageBody=f"m{n}")
        # --to: these messages were sent to the DLQ by hand, so they have no source to go back to.
        redrive = await _start(
            pair, "dlq", "redrive", "--queue", pair.queue_url, "--to", pair.queue_url, "--rate", "1"
        )

        async def moving() -> bool:
            return await _visible(pair.endpoint, pair.queue_url) >= 1

        await eventually(moving, timeout=20)
        redrive.send_signal(signal.SIGINT)
        code, out = await _finish(redrive, 3)  # the task moves one a second: it is not done
        assert code == 130
        match = re.search(
            r"stopped following SQS move task (\S+) \(\d+ messages moved so far\)", out
        )
        assert match, out
        handle = match.group(1)
        assert f"cancel it with `worker dlq moves --cancel {handle}`" in out

        cancel = await _start(pair, "dlq", "moves", "--queue", pair.queue_url, "--cancel", handle)
        code, out = await _finish(cancel, 30)
        assert code == 0
        assert out.startswith(f"cancelled {handle} after ")

        async def all_twenty_somewhere() -> bool:
            return (
                await _visible(pair.endpoint, pair.queue_url)
                + await _visible(pair.endpoint, pair.dlq_url)
                == 20
            )

        await eventually(all_twenty_somewhere, timeout=10)

    async def test_a_task_that_moves_nothing_says_it_completed(self, pair: Pair) -> None:
        redrive = await _start(
            pair, "dlq", "redrive", "--queue", pair.queue_url, "--to", pair.queue_url
        )
        code, out = await _finish(redrive, 30)
        assert code == 0
        assert re.fullmatch(r"SQS move task \S+ completed: moved 0 messages\n", out), out
