"""The local broker (worker/ops/local.py) behaves as SQS does where stock moto does not.

These run on the embedded broker itself, in this process, as ``worker demo`` and local runs do.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import REGION, eventually, make_queues, publish, running_worker
from tests.test_fifo import Journal, fifo_queues, publish_groups
from worker import Message
from worker.config import Settings
from worker.consume.sqs import open_sqs
from worker.ops.local import embedded_broker


@pytest.fixture(scope="module")
def local_endpoint() -> Iterator[str]:
    """The embedded local broker, started as ``worker demo`` starts it."""
    with embedded_broker() as url:
        yield url


def _client_settings(endpoint: str) -> Settings:
    return Settings(endpoint_url=endpoint, region=REGION)


async def _fifo_queue(endpoint: str) -> str:
    async with open_sqs(_client_settings(endpoint)) as sqs:
        response = await sqs.create_queue(
            QueueName=f"l-{uuid.uuid4().hex[:10]}.fifo",
            Attributes={"FifoQueue": "true", "VisibilityTimeout": "30"},
        )
    return response["QueueUrl"]


class TestFifoLongPoll:
    """A FIFO long poll serves a group as soon as it unlocks, not when the poll ends."""

    @pytest.mark.parametrize("unlock", ["delete", "visibility 0"])
    async def test_an_open_poll_gets_the_group_when_it_unlocks(
        self, local_endpoint: str, unlock: str
    ) -> None:
        url = await _fifo_queue(local_endpoint)
        async with open_sqs(_client_settings(local_endpoint)) as sqs:
            for body in ("first", "second"):
                await sqs.send_message(
                    QueueUrl=url, MessageBody=body, MessageGroupId="g", MessageDeduplicationId=body
                )
            held = (await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1))["Messages"][0]
            assert held["Body"] == "first"
            poll = asyncio.create_task(
                sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=20)
            )
            await asyncio.sleep(0.5)
            assert not poll.done()  # the group is locked: the poll waits
            if unlock == "delete":
                await sqs.delete_message(QueueUrl=url, ReceiptHandle=held["ReceiptHandle"])
            else:
                await sqs.change_message_visibility(
                    QueueUrl=url, ReceiptHandle=held["ReceiptHandle"], VisibilityTimeout=0
                )
            # Well before the poll's 20 s: the unlock woke it.
            received = (await asyncio.wait_for(poll, 10))["Messages"]
        assert [m["Body"] for m in received] == ["second" if unlock == "delete" else "first"]

    async def test_a_drain_with_20_s_polls_handles_every_message(self, local_endpoint: str) -> None:
        settings, made = await fifo_queues(local_endpoint)
        # The defaults a user runs with: 20 s long polls, pollers sized from the concurrency.
        settings = settings.model_copy(
            update={"wait_time_seconds": 20, "concurrency": 6, "pollers": None}
        )
        journal = Journal()
        groups = {"a": 8, "b": 8, "c": 8}
        await publish_groups(settings, made.topic_arn, groups)
        async with running_worker(settings, journal.handler(0.01)) as running:
            # 8 messages a group, one at a time: waiting out a 20 s poll even once would miss this.
            await eventually(lambda: sum(map(len, journal.handled.values())) == 24, timeout=15)
            running.worker.stop("drained")
            # Open polls end when a message comes (the worker gives it back) instead of in 20 s.
            async with open_sqs(settings) as sqs:
                await sqs.send_message(
                    QueueUrl=made.queue_url,
                    MessageBody='{"group": "wake", "n": 0}',
                    MessageGroupId="wake",
                    MessageDeduplicationId="wake",
                )
        assert journal.handled == {group: list(range(8)) for group in groups}
        assert not journal.overlap_within_group


class TestAtomicReceives:
    """Concurrent receives never hand one message to two receivers."""

    async def test_no_message_is_received_twice(self, local_endpoint: str) -> None:
        async with open_sqs(_client_settings(local_endpoint)) as sqs:
            url = (await sqs.create_queue(QueueName=f"l-{uuid.uuid4().hex[:10]}"))["QueueUrl"]
            for first in range(0, 60, 10):
                await sqs.send_message_batch(
                    QueueUrl=url,
                    Entries=[
                        {"Id": str(n), "MessageBody": f"m{n}"} for n in range(first, first + 10)
                    ],
                )
            received: list[str] = []

            async def receiver() -> None:
                while len(received) < 60:
                    response: Any = await sqs.receive_message(
                        QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1
                    )
                    received.extend(m["Body"] for m in response.get("Messages", []))

            await asyncio.wait_for(asyncio.gather(*(receiver() for _ in range(8))), 30)
        assert Counter(received) == Counter(f"m{n}" for n in range(60))


class TestBinaryAttributesThroughRawDelivery:
    """SNS's raw delivery of a Binary attribute reaches the queue as SQS holds it: bytes."""

    async def test_the_message_and_those_beside_it_are_delivered(self, local_endpoint: str) -> None:
        # Stock moto fails every receive that returns such a message (HTTP 500): it and the
        # messages received with it were never delivered, and the worker saw empty receives.
        queues = await make_queues(local_endpoint, raw_message_delivery=True)
        await publish(
            queues,
            '{"p": "bin"}',
            MessageAttributes={"blob": {"DataType": "Binary", "BinaryValue": b"\x00\xffhi"}},
        )
        await publish(queues, '{"p": "plain"}')
        handled: list[Message] = []

        async def handle(message: Message) -> None:
            handled.append(message)

        async with running_worker(queues.settings(), handle):
            await eventually(lambda: len(handled) == 2, timeout=20)
        by_body = {message.body: message for message in handled}
        assert set(by_body) == {'{"p": "bin"}', '{"p": "plain"}'}
        blob = by_body['{"p": "bin"}'].message_attributes["blob"]
        assert (blob.data_type, blob.value) == ("Binary", b"\x00\xffhi")
