"""FIFO queues: a group's messages one at a time and in order, groups in parallel."""

from __future__ import annotations

import asyncio
import json
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.brokers import Flaw
from tests.support import REGION, eventually, running_worker
from tests.test_process import _spawn
from worker import Message
from worker.config import HandlerType, Settings
from worker.consume.sqs import open_sns, open_sqs
from worker.consume.worker import serve
from worker.errors import StartupError
from worker.ops.provision import Provisioned, provision
from worker.ops.publish import resolve_topic_arn


async def fifo_queues(endpoint: str, **extra: Any) -> tuple[Settings, Provisioned]:
    """A FIFO topic, queue and DLQ, made by ``worker provision --fifo``."""
    base = Settings(endpoint_url=endpoint, region=REGION, http_port=0, wait_time_seconds=1)
    made = await provision(
        base.model_copy(update={"queue_name": f"f-{uuid.uuid4().hex[:10]}", "fifo": True, **extra})
    )
    settings = base.model_copy(
        update={
            "queue_url": made.queue_url,
            "backoff_base_seconds": 0.1,
            "backoff_max_seconds": 0.1,
            "settle_flush_seconds": 0.02,
            "shutdown_timeout": 5.0,
            # One poller: moto's receive takes no lock, so two concurrent receives can hand out
            # two messages of one group at once (each copies the set of groups in flight before
            # the other marks its message), which SQS never does. The order tests would then
            # test moto; the worker's per-group order in one process is what they test.
            "pollers": 1,
        }
    )
    return settings, made


async def publish_groups(settings: Settings, topic_arn: str, groups: dict[str, int]) -> None:
    """Publish ``count`` numbered messages per group, in order, through the FIFO topic."""
    async with open_sns(settings) as sns:
        for number in range(max(groups.values())):
            for group, count in groups.items():
                if number < count:
                    body = json.dumps({"group": group, "n": number})
                    await sns.publish(
                        TopicArn=topic_arn,
                        Message=body,
                        MessageGroupId=group,
                        MessageDeduplicationId=f"{group}-{number}",
                    )


class Journal:
    """Records, per group, the order handlers started and ended, and the overlap between them."""

    def __init__(self) -> None:
        self.handled: dict[str, list[int]] = {}
        self.active: dict[str, int] = {}
        self.overlap_within_group = False
        self.most_groups_at_once = 0

    def enter(self, message: Message) -> tuple[str, int]:
        item = message.json()
        group, number = item["group"], item["n"]
        if self.active.get(group):
            self.overlap_within_group = True
        self.active[group] = self.active.get(group, 0) + 1
        running = sum(1 for n in self.active.values() if n)
        self.most_groups_at_once = max(self.most_groups_at_once, running)
        return group, number

    def handler(self, seconds: float) -> Callable[[Message], Awaitable[None]]:
        """A handler that records each message it handles, each taking ``seconds``."""

        async def handle(message: Message) -> None:
            group, number = self.enter(message)
            await asyncio.sleep(seconds)
            self.leave(group, number, handled=True)

        return handle

    def leave(self, group: str, number: int, *, handled: bool) -> None:
        self.active[group] -= 1
        if handled:
            self.handled.setdefault(group, []).append(number)


class TestOrder:
    """Messages of one group are handled one at a time, in order, while groups run in parallel."""

    async def test_groups_in_order_and_in_parallel(self, broker_endpoint: str) -> None:
        settings, made = await fifo_queues(broker_endpoint)
        journal = Journal()
        groups = {"a": 6, "b": 6, "c": 6}
        await publish_groups(settings, made.topic_arn, groups)
        async with running_worker(
            settings.model_copy(update={"concurrency": 6}), journal.handler(0.05)
        ):
            await eventually(lambda: sum(map(len, journal.handled.values())) == 18, timeout=60)
        assert journal.handled == {group: list(range(6)) for group in groups}
        assert not journal.overlap_within_group
        assert journal.most_groups_at_once > 1

    async def test_a_failure_holds_its_group_back_and_keeps_order(
        self, broker_endpoint: str
    ) -> None:
        settings, made = await fifo_queues(broker_endpoint)
        journal = Journal()
        failed_once: set[int] = set()

        async def handler(message: Message) -> None:
            group, number = journal.enter(message)
            if group == "a" and number == 2 and number not in failed_once:
                failed_once.add(number)
                journal.leave(group, number, handled=False)
                raise RuntimeError("transient")
            journal.leave(group, number, handled=True)

        await publish_groups(settings, made.topic_arn, {"a": 5, "b": 3})
        async with running_worker(settings, handler) as running:
            await eventually(lambda: sum(map(len, journal.handled.values())) == 8, timeout=60)
            await eventually(lambda: running.worker.keeper.in_flight == 0)
        assert journal.handled == {"a": [0, 1, 2, 3, 4], "b": [0, 1, 2]}  # each once, in order
        assert running.report.failures == {"handler_error": 1}

    @pytest.mark.broker_flaw(Flaw.LOCALSTACK_FIFO_REVISIBLE_UNLOCKS_GROUP)
    async def test_a_message_the_filter_cannot_read_holds_its_group_back(
        self, broker_endpoint: str
    ) -> None:
        # It fails as malformed before any handler call: the next of its group must wait too.
        settings, made = await fifo_queues(broker_endpoint)
        criteria = {"Filters": [{"Pattern": json.dumps({"body": {"n": [{"exists": True}]}})}]}
        settings = settings.model_copy(
            update={
                "filter_criteria": json.dumps(criteria),
                "backoff_base_seconds": 30,
                "backoff_max_seconds": 30,
            }
        )
        handled: list[str] = []

        async def handler(message: Message) -> None:
            handled.append(message.body)

        async with open_sqs(settings) as sqs:
            for number, body in enumerate(['{"TopicArn": "arn:x", "Messa', '{"n": 2}']):
                await sqs.send_message(
                    QueueUrl=made.queue_url,
                    MessageBody=body,  # the first, a broken SNS envelope
                    MessageGroupId="g",
                    MessageDeduplicationId=str(number),
                )
        async with running_worker(settings, handler) as running:
            await eventually(lambda: running.worker.report().failures == {"malformed": 1})
            await eventually(lambda: running.worker.keeper.in_flight == 0)
            await asyncio.sleep(1)  # what held the second back has long been sent
            assert handled == []  # it waits behind the first's retry, 30 s away

    @pytest.mark.broker_flaw(Flaw.LOCALSTACK_FIFO_REVISIBLE_UNLOCKS_GROUP)
    async def test_a_handler_thread_past_its_budget_holds_its_group_until_it_ends(
        self, broker_endpoint: str
    ) -> None:
        # The thread cannot be stopped: nothing later in its group may run beside it.
        settings, made = await fifo_queues(broker_endpoint)
        release = threading.Event()
        handled: list[tuple[int, int]] = []  # (n, receive count)

        def handler(message: Message) -> None:
            number = message.json()["n"]
            handled.append((number, message.receive_count))
            if number == 0 and message.receive_count == 1:
                release.wait(30)  # past its 1 s budget: abandoned, its thread still running

        await publish_groups(settings, made.topic_arn, {"a": 3})
        settings = settings.model_copy(update={"max_processing_seconds": 1, "concurrency": 2})
        async with running_worker(settings, handler) as running:
            try:
                await eventually(lambda: running.worker.report().failures == {"timeout": 1})
                await asyncio.sleep(2)  # the retry's 0.1 s backoff is long over
                assert handled == [(0, 1)]  # the group waits for the thread
                assert running.worker.runner.running == 1  # which keeps its slot
            finally:
                release.set()
            # Then the group is retried from its head, in order.
            await eventually(lambda: [n for n, _ in handled] == [0, 0, 1, 2], timeout=20)
            await eventually(lambda: running.worker.keeper.in_flight == 0)
        assert handled[1] == (0, 2)
        assert running.report.failures == {"timeout": 1}


class TestShutdown:
    """Stopping mid-group releases the group's unstarted messages; they come back in order."""

    async def test_group_resumes_in_order_after_a_stop(self, broker_endpoint: str) -> None:
        settings, made = await fifo_queues(broker_endpoint)
        order: list[int] = []

        async def slow(message: Message) -> None:
            await asyncio.sleep(0.3)
            order.append(message.json()["n"])

        await publish_groups(settings, made.topic_arn, {"a": 6})
        async with running_worker(settings, slow) as first:
            await eventually(lambda: len(order) >= 2)
        assert first.report.released >= 1  # what was in hand and not started went back
        async with running_worker(settings, slow):
            await eventually(lambda: len(order) == 6, timeout=30)
        assert order == [0, 1, 2, 3, 4, 5]


class TestLambdaFifo:
    """For a Lambda handler, a batch item failure fails the records after it in its group."""

    async def test_batch_item_failure_fails_the_rest_of_its_group(
        self, broker_endpoint: str
    ) -> None:
        settings, made = await fifo_queues(broker_endpoint)
        seen: list[list[tuple[str, int]]] = []
        failed: set[int] = set()

        def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
            records = [(json.loads(json.loads(r["body"])["Message"]), r) for r in event["Records"]]
            seen.append([(item["group"], item["n"]) for item, _ in records])
            failures = []
            for item, record in records:
                if item["group"] == "a" and item["n"] == 1 and 1 not in failed:
                    failed.add(1)
                    # Report only this one: the worker must fail the later "a" records itself.
                    failures.append({"itemIdentifier": record["messageId"]})
            return {"batchItemFailures": failures}

        await publish_groups(settings, made.topic_arn, {"a": 4, "b": 2})
        lambda_settings = settings.model_copy(
            update={"handler_type": HandlerType.LAMBDA, "batch_size": 10}
        )
        async with running_worker(lambda_settings, lambda_handler) as running:

            def all_done() -> bool:
                done = [pair for batch in seen for pair in batch]
                return sum(1 for pair in done if pair[0] == "a") >= 4 + 3 - 1

            await eventually(all_done, timeout=60)
            await eventually(lambda: running.worker.keeper.in_flight == 0)
        handled_a = [n for batch in seen for g, n in batch if g == "a"]
        # First pass 0,1,2,3 (1 fails, 2 and 3 are held back), then 1,2,3 again, in order.
        assert handled_a[:4] == [0, 1, 2, 3]
        assert handled_a[4:] == [1, 2, 3]
        assert running.report.released == 2  # records 2 and 3, held for order
        assert running.report.deleted == 6


class TestProvisionAndPublish:
    """``provision --fifo`` makes FIFO resources; ``publish`` takes group and dedup ids."""

    async def test_fifo_resources(self, broker_endpoint: str) -> None:
        settings, made = await fifo_queues(broker_endpoint, content_based_deduplication=True)
        assert made.queue_url.endswith(".fifo")
        assert made.dlq_url.endswith("-dlq.fifo")
        assert made.topic_arn.endswith(".fifo")
        async with open_sqs(settings) as sqs:
            attributes = (
                await sqs.get_queue_attributes(QueueUrl=made.queue_url, AttributeNames=["All"])
            )["Attributes"]
        assert attributes["FifoQueue"] == "true"
        assert attributes["ContentBasedDeduplication"] == "true"

    async def test_the_names_provision_made_are_found_by_the_other_commands(
        self, broker_endpoint: str
    ) -> None:
        # `WORKER_QUEUE_NAME=orders worker provision --fifo` makes orders.fifo: with WORKER_FIFO
        # set, the other commands find it by the same name.
        name = f"f-{uuid.uuid4().hex[:10]}"
        base = Settings(endpoint_url=broker_endpoint, region=REGION, queue_name=name)
        made = await provision(base.model_copy(update={"fifo": True}))
        fifo = base.model_copy(update={"fifo": True})
        assert fifo.queue == f"{name}.fifo"
        async with open_sns(fifo) as sns:
            assert await resolve_topic_arn(sns, fifo) == made.topic_arn
        async with open_sns(base) as sns:  # without WORKER_FIFO: not found, and said why
            with pytest.raises(StartupError, match=r"a FIFO topic's name ends in \.fifo"):
                await resolve_topic_arn(sns, base)

    async def test_publish_with_group_and_dedup_ids(self, broker_endpoint: str) -> None:
        settings, made = await fifo_queues(broker_endpoint)
        stamp = str(time.monotonic_ns())
        with tempfile.TemporaryDirectory() as tmp:
            async with _spawn(
                Path(tmp),
                (
                    "publish",
                    "--topic",
                    made.topic_arn,
                    "--group-id",
                    "orders-7",
                    "--dedup-id",
                    stamp,
                    "--endpoint-url",
                    broker_endpoint,
                    "first",
                    "second",
                ),
                {},
                stdin=None,
            ) as publisher:
                assert await publisher.exit_code() == 0
        async with open_sqs(settings) as sqs:
            response = await sqs.receive_message(
                QueueUrl=made.queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=1,
                MessageSystemAttributeNames=["All"],
            )
        messages = response.get("Messages", [])
        assert [json.loads(m["Body"])["Message"] for m in messages] == ["first", "second"]
        assert {m["Attributes"]["MessageGroupId"] for m in messages} == {"orders-7"}
        assert [m["Attributes"]["MessageDeduplicationId"] for m in messages] == [
            f"{stamp}-1",
            f"{stamp}-2",
        ]


class TestIdleExit:
    """``--exit-when-idle`` does not end a drain while SQS still counts visible messages."""

    @pytest.mark.broker_flaw(Flaw.LOCALSTACK_FIFO_REVISIBLE_UNLOCKS_GROUP)
    async def test_a_group_held_behind_a_retry_is_waited_for(self, moto_endpoint: str) -> None:
        settings, made = await fifo_queues(moto_endpoint)
        handled: list[int] = []
        failed: set[int] = set()

        async def handler(message: Message) -> None:
            number = message.json()["n"]
            if number == 0 and not failed:
                failed.add(number)
                raise RuntimeError("transient")
            handled.append(number)

        await publish_groups(settings, made.topic_arn, {"a": 3})
        # The head's retry waits 1.5-3 s; the rest of its group stays visible and cannot be
        # received meanwhile: a quiet second that is not an empty queue.
        report = await serve(
            settings.model_copy(
                update={
                    "exit_when_idle": 1.0,
                    "backoff_base_seconds": 3.0,
                    "backoff_max_seconds": 3.0,
                }
            ),
            handler=handler,
        )
        assert handled == [0, 1, 2]
        assert report.stop_reason == "idle for 1s"

    async def test_three_groups_at_the_default_wait_are_drained(self, moto_endpoint: str) -> None:
        settings, made = await fifo_queues(moto_endpoint)
        groups = {"a": 8, "b": 8, "c": 8}
        handled: list[tuple[str, int]] = []

        async def handler(message: Message) -> None:
            item = message.json()
            await asyncio.sleep(0.2)
            handled.append((item["group"], item["n"]))

        await publish_groups(settings, made.topic_arn, groups)
        # The default 20 s long poll outlasted the idle time: the worker stopped with 18 of the
        # 24 messages visible, waiting out a receive that moto did not end when groups unlocked.
        report = await serve(
            settings.model_copy(
                update={"concurrency": 6, "exit_when_idle": 2.0, "wait_time_seconds": 20}
            ),
            handler=handler,
        )
        assert sorted(handled) == sorted(
            (g, n) for g, count in groups.items() for n in range(count)
        )
        assert report.stop_reason == "idle for 2s"
        async with open_sqs(settings) as sqs:
            attributes = (
                await sqs.get_queue_attributes(
                    QueueUrl=made.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
                )
            )["Attributes"]
        assert attributes["ApproximateNumberOfMessages"] == "0"
