"""``worker provision`` run again on what it made: existing resources are brought in line.

Each test provisions a fresh topic, queue and DLQ (``make_queues``), changes the wish, provisions
again against the moto server, and checks both the resources and what the summary says.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.support import REGION, Queues, drain, make_queues, publish
from worker.config import Settings
from worker.consume.sqs import open_sns, open_sqs
from worker.errors import ConfigurationError
from worker.ops.provision import Provisioned, provision

ONLY_ORDERS = json.dumps({"kind": ["order"]})


def again(queues: Queues, **wish: Any) -> Settings:
    """The settings ``make_queues`` provisioned with, changed by ``wish``."""
    values: dict[str, Any] = {
        "endpoint_url": queues.endpoint_url,
        "region": REGION,
        "queue_name": queues.queue_name,
        "max_receive_count": queues.max_receive_count,
        **wish,
    }
    return Settings(**values)


def verdict(result: Provisioned, what: str) -> tuple[str, str]:
    """(verdict, name) of one step of the summary."""
    ((said, name),) = [(v, n) for w, n, v in result.steps if w == what]
    return said, name


async def queue_attributes(queues: Queues) -> dict[str, str]:
    async with open_sqs(again(queues)) as sqs:
        response = await sqs.get_queue_attributes(QueueUrl=queues.queue_url, AttributeNames=["All"])
    return {str(name): value for name, value in response["Attributes"].items()}


async def subscription_attributes(queues: Queues, result: Provisioned) -> dict[str, str]:
    async with open_sns(again(queues)) as sns:
        response = await sns.get_subscription_attributes(SubscriptionArn=result.subscription_arn)
    return dict(response["Attributes"])


class TestFilterPolicy:
    """The subscription's filter policy is what this run asks for, none included."""

    async def test_running_again_without_one_removes_it(self, queues: Queues) -> None:
        await provision(again(queues, filter_policy=ONLY_ORDERS))
        await publish(queues, '{"n": "filtered out"}')
        assert await drain(queues, queues.queue_url, expect=1, timeout=2) == []

        result = await provision(again(queues))

        # The point of it: a message the old policy would drop is delivered.
        await publish(queues, '{"n": "delivered"}')
        delivered = await drain(queues, queues.queue_url, expect=1, timeout=3)
        assert [json.loads(json.loads(m["Body"])["Message"]) for m in delivered] == [
            {"n": "delivered"}
        ]
        assert verdict(result, "subscription")[0] == "updated"
        assert verdict(result, "subscription")[1].endswith("(filter policy removed)")
        attributes = await subscription_attributes(queues, result)
        assert json.loads(attributes.get("FilterPolicy") or "{}") == {}

    async def test_a_different_one_replaces_it(self, queues: Queues) -> None:
        first = await provision(again(queues, filter_policy=ONLY_ORDERS))
        assert verdict(first, "subscription")[1].endswith("(filter policy set)")
        refunds = json.dumps({"kind": ["refund"]})
        result = await provision(again(queues, filter_policy=refunds))
        assert verdict(result, "subscription")[1].endswith("(filter policy replaced)")
        attributes = await subscription_attributes(queues, result)
        assert json.loads(attributes["FilterPolicy"]) == {"kind": ["refund"]}

    async def test_the_same_one_is_unchanged(self, queues: Queues) -> None:
        await provision(again(queues, filter_policy=ONLY_ORDERS))
        # Differently spaced, the same policy.
        result = await provision(again(queues, filter_policy='{"kind":["order"]}'))
        assert verdict(result, "subscription")[0] == "unchanged"

    async def test_raw_delivery_is_brought_in_line_and_said(self, queues: Queues) -> None:
        result = await provision(again(queues, raw_message_delivery=True))
        said, name = verdict(result, "subscription")
        assert (said, name.endswith("(raw delivery on)")) == ("updated", True)
        assert (await subscription_attributes(queues, result))["RawMessageDelivery"] == "true"


class TestQueueAttributes:
    """The visibility timeout asked for, and the RedrivePolicy, are set on an existing queue."""

    async def test_a_new_visibility_timeout_is_set(self, queues: Queues) -> None:
        assert queues.visibility_timeout == 30
        result = await provision(again(queues, visibility_timeout=120))
        said, name = verdict(result, "queue")
        assert said == "updated"
        assert name == f"{queues.queue_url} (visibility timeout 30 s → 120 s)"
        assert (await queue_attributes(queues))["VisibilityTimeout"] == "120"

    async def test_a_tuned_timeout_is_kept_when_none_is_asked_for(self, queues: Queues) -> None:
        async with open_sqs(again(queues)) as sqs:
            await sqs.set_queue_attributes(
                QueueUrl=queues.queue_url, Attributes={"VisibilityTimeout": "300"}
            )
        result = await provision(again(queues))
        assert verdict(result, "queue") == ("unchanged", queues.queue_url)
        assert (await queue_attributes(queues))["VisibilityTimeout"] == "300"

    async def test_max_receive_count_and_timeout_together(self, queues: Queues) -> None:
        result = await provision(again(queues, max_receive_count=7, visibility_timeout=45))
        said, name = verdict(result, "queue")
        assert said == "updated"
        assert name.endswith("(maxReceiveCount 3 → 7, visibility timeout 30 s → 45 s)")
        attributes = await queue_attributes(queues)
        assert json.loads(attributes["RedrivePolicy"])["maxReceiveCount"] == 7
        assert attributes["VisibilityTimeout"] == "45"

    async def test_what_is_already_in_line_is_unchanged(self, queues: Queues) -> None:
        result = await provision(again(queues, visibility_timeout=30))
        assert {what: said for what, _, said in result.steps} == dict.fromkeys(
            ("dlq", "topic", "queue", "redrive", "policy", "subscription"), "unchanged"
        )
        assert not result.changed
        assert result.lines()[-1] == "unchanged: everything was already as asked"


class TestDryRun:
    """``--dry-run`` says what provisioning would do, and does none of it."""

    async def test_nothing_exists_yet(self, moto_endpoint: str) -> None:
        name = f"dry-{uuid.uuid4().hex[:10]}"
        settings = Settings(endpoint_url=moto_endpoint, region=REGION, queue_name=name)
        result = await provision(settings, dry_run=True)
        assert [(what, said) for what, _, said in result.steps] == [
            ("dlq", "would create"),
            ("topic", "would create"),
            ("queue", "would create"),
            ("redrive", "would set"),
            ("policy", "would set"),
            ("subscription", "would create"),
        ]
        assert result.lines()[-1] == "dry run: nothing was changed"
        async with open_sqs(settings) as sqs:
            urls = (await sqs.list_queues(QueueNamePrefix=name)).get("QueueUrls", [])
        assert urls == []

    async def test_changes_are_said_and_not_made(self, queues: Queues) -> None:
        result = await provision(
            again(queues, max_receive_count=7, raw_message_delivery=True), dry_run=True
        )
        said, name = verdict(result, "queue")
        assert (said, name) == ("would update", f"{queues.queue_url} (maxReceiveCount 3 → 7)")
        assert verdict(result, "redrive")[0] == "would set"
        assert verdict(result, "policy")[0] == "unchanged"
        assert verdict(result, "subscription")[0] == "would update"
        assert json.loads((await queue_attributes(queues))["RedrivePolicy"])["maxReceiveCount"] == 3
        assert (await subscription_attributes(queues, result)).get("RawMessageDelivery") != "true"

    async def test_in_line_is_unchanged(self, queues: Queues) -> None:
        result = await provision(again(queues), dry_run=True)
        assert not result.changed
        assert result.lines()[-1] == "unchanged: everything was already as asked"


class TestTopicByArn:
    """A topic given by ARN (``--topic arn:...``) is the one the queue is subscribed to."""

    async def test_an_existing_topic_is_subscribed_to(self, queues: Queues) -> None:
        name = f"by-arn-{uuid.uuid4().hex[:10]}"
        result = await provision(again(queues, queue_name=name, topic_arn=queues.topic_arn))
        assert result.topic_arn == queues.topic_arn
        assert verdict(result, "topic") == ("unchanged", queues.topic_arn)
        await publish(queues, '{"n": 1}')
        assert len(await drain(queues, result.queue_url, expect=1)) == 1

    async def test_a_missing_topic_of_this_account_and_region_is_created(
        self, queues: Queues
    ) -> None:
        arn = queues.topic_arn.rsplit(":", 1)[0] + f":new-{uuid.uuid4().hex[:10]}"
        result = await provision(again(queues, topic_arn=arn))
        assert result.topic_arn == arn
        assert verdict(result, "topic") == ("created", arn)
        assert result.subscription_arn.startswith(f"{arn}:")

    @pytest.mark.parametrize("where", ["region", "account"])
    async def test_a_topic_elsewhere_is_refused(self, queues: Queues, where: str) -> None:
        parts = queues.topic_arn.split(":")
        parts[3 if where == "region" else 4] = "eu-west-3" if where == "region" else "999999999999"
        with pytest.raises(ConfigurationError) as refused:
            await provision(again(queues, topic_arn=":".join(parts)))
        (problem,) = refused.value.problems
        assert problem.startswith("WORKER_TOPIC_ARN (--topic): ")
        assert f"not in this {where}" in problem

    async def test_a_topic_of_another_region_is_refused_before_anything_is_made(
        self, queues: Queues
    ) -> None:
        parts = queues.topic_arn.split(":")
        parts[3] = "eu-west-3"
        name = f"p-{uuid.uuid4().hex[:10]}"
        settings = Settings(
            endpoint_url=queues.endpoint_url,
            region=REGION,
            queue_name=name,
            topic_arn=":".join(parts),
        )
        with pytest.raises(ConfigurationError):
            await provision(settings)
        async with open_sqs(settings) as sqs:
            listed = await sqs.list_queues(QueueNamePrefix=name)
        assert listed.get("QueueUrls", []) == []  # no DLQ left behind


BUCKET_STATEMENT = {
    "Sid": "AllowTheBucket",
    "Effect": "Allow",
    "Principal": {"Service": "s3.amazonaws.com"},
    "Action": "sqs:SendMessage",
}


async def policy_statements(queues: Queues) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = json.loads((await queue_attributes(queues))["Policy"])[
        "Statement"
    ]
    return statements


async def add_statement(queues: Queues, statement: dict[str, Any]) -> None:
    """Add a statement to the queue's policy, as an operator or another tool would."""
    policy = json.loads((await queue_attributes(queues))["Policy"])
    policy["Statement"].append(statement)
    async with open_sqs(again(queues)) as sqs:
        await sqs.set_queue_attributes(
            QueueUrl=queues.queue_url, Attributes={"Policy": json.dumps(policy)}
        )


def topics_admitted(statements: list[dict[str, Any]]) -> set[str]:
    return {
        s["Condition"]["ArnEquals"]["aws:SourceArn"]
        for s in statements
        if s["Principal"] == {"Service": "sns.amazonaws.com"}
    }


class TestQueuePolicy:
    """The queue policy gets provisioning's statement for the topic; others' statements stay."""

    async def test_another_statement_is_kept(self, queues: Queues) -> None:
        other = {**BUCKET_STATEMENT, "Resource": queues.queue_arn}
        await add_statement(queues, other)
        result = await provision(again(queues))
        assert verdict(result, "policy")[0] == "unchanged"
        assert other in await policy_statements(queues)

    async def test_a_new_topic_is_added_beside_one_still_subscribed(
        self, queues: Queues, broker_endpoint: str
    ) -> None:
        other = {**BUCKET_STATEMENT, "Resource": queues.queue_arn}
        await add_statement(queues, other)
        second = await make_queues(broker_endpoint)
        result = await provision(again(queues, topic_arn=second.topic_arn))
        said, name = verdict(result, "policy")
        assert (said, name) == ("set", f"{second.topic_arn} may send (statement added)")
        statements = await policy_statements(queues)
        assert other in statements
        assert topics_admitted(statements) == {queues.topic_arn, second.topic_arn}
        assert len({s["Sid"] for s in statements}) == len(statements) == 3
        assert verdict(await provision(again(queues, topic_arn=second.topic_arn)), "policy") == (
            "unchanged",
            f"{second.topic_arn} may send",
        )

    async def test_a_topic_no_longer_subscribed_loses_its_statement(
        self, queues: Queues, broker_endpoint: str
    ) -> None:
        other = {**BUCKET_STATEMENT, "Resource": queues.queue_arn}
        await add_statement(queues, other)
        first = await provision(again(queues))
        async with open_sns(again(queues)) as sns:
            await sns.unsubscribe(SubscriptionArn=first.subscription_arn)
        second = await make_queues(broker_endpoint)
        result = await provision(again(queues, topic_arn=second.topic_arn))
        old = queues.topic_arn.rsplit(":", 1)[-1]
        assert verdict(result, "policy")[1] == (
            f"{second.topic_arn} may send (statement added, statement for {old} removed: the "
            "queue is not subscribed to it)"
        )
        statements = await policy_statements(queues)
        assert other in statements
        assert topics_admitted(statements) == {second.topic_arn}


def fifo_settings(broker_endpoint: str, name: str, **wish: Any) -> Settings:
    return Settings(endpoint_url=broker_endpoint, region=REGION, queue_name=name, fifo=True, **wish)


async def deduplication(settings: Settings, made: Provisioned) -> tuple[str, str, str]:
    """ContentBasedDeduplication of the queue, the DLQ and the topic."""
    async with open_sqs(settings) as sqs, open_sns(settings) as sns:
        queues = [
            (
                await sqs.get_queue_attributes(
                    QueueUrl=url, AttributeNames=["ContentBasedDeduplication"]
                )
            )["Attributes"]["ContentBasedDeduplication"]
            for url in (made.queue_url, made.dlq_url)
        ]
        topic = (await sns.get_topic_attributes(TopicArn=made.topic_arn))["Attributes"]
    return queues[0], queues[1], topic["ContentBasedDeduplication"]


class TestContentBasedDeduplication:
    """``--content-based-deduplication`` is brought in line on an existing FIFO queue, DLQ and
    topic; without it (or ``WORKER_CONTENT_BASED_DEDUPLICATION``) theirs is left alone."""

    async def test_asked_for_on_existing_ones_it_is_set_and_said(
        self, broker_endpoint: str
    ) -> None:
        name = f"dedup-{uuid.uuid4().hex[:10]}"
        made = await provision(fifo_settings(broker_endpoint, name))
        wish = fifo_settings(broker_endpoint, name, content_based_deduplication=True)

        planned = await provision(wish, dry_run=True)
        assert await deduplication(wish, made) == ("false", "false", "false")
        result = await provision(wish)

        for what in ("queue", "dlq", "topic"):
            assert verdict(planned, what)[0] == "would update"
            said, step = verdict(result, what)
            assert (said, step.endswith("(content-based deduplication on)")) == ("updated", True)
        assert await deduplication(wish, made) == ("true", "true", "true")
        rerun = await provision(wish)
        # Not `not changed`: moto drops a queue's Policy on any SetQueueAttributes without one,
        # so the policy step sets it again, which SQS would not need.
        assert [verdict(rerun, what)[0] for what in ("queue", "dlq", "topic")] == ["unchanged"] * 3

    async def test_not_asked_for_it_is_left_as_it_is(self, broker_endpoint: str) -> None:
        name = f"dedup-{uuid.uuid4().hex[:10]}"
        wish = fifo_settings(broker_endpoint, name, content_based_deduplication=True)
        made = await provision(wish)
        result = await provision(fifo_settings(broker_endpoint, name))
        assert not result.changed
        assert await deduplication(wish, made) == ("true", "true", "true")
