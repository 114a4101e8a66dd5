"""``worker provision``: the topic, the queue, its DLQ, the subscription and the queue policy.

Idempotent: what exists is checked and brought in line (RedrivePolicy, queue policy, subscription
attributes), what is missing is created, and every step says which it was.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import botocore.exceptions

from worker.config import Settings
from worker.errors import ConfigurationError, StartupError
from worker.sqs import DEFAULT_VISIBILITY_SECONDS, describe_failure, error_code, open_sns, open_sqs

if TYPE_CHECKING:
    from types_aiobotocore_sns import SNSClient
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.literals import QueueAttributeNameType

_DLQ_RETENTION_SECONDS = 1_209_600  # 14 days, the most SQS keeps a message: time to look at it
_MISSING_QUEUE = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}


@dataclass
class Provisioned:
    """What ``provision`` made or found."""

    topic_arn: str = ""
    queue_url: str = ""
    queue_arn: str = ""
    dlq_url: str = ""
    dlq_arn: str = ""
    subscription_arn: str = ""
    steps: list[tuple[str, str, str]] = field(default_factory=list)  # (what, name, verdict)

    def say(self, what: str, name: str, verdict: str) -> None:
        """Record one step for the summary."""
        self.steps.append((what, name, verdict))

    def lines(self) -> list[str]:
        """The summary, one aligned line per step."""
        width = max((len(what) for what, _, _ in self.steps), default=0)
        return [f"{what:<{width}}  {verdict:<8}  {name}" for what, name, verdict in self.steps]


def names(settings: Settings) -> tuple[str, str, str]:
    """The queue, DLQ and topic names, the last two derived from the first unless set."""
    queue = settings.queue_name or (settings.queue_url or "").rstrip("/").rsplit("/", 1)[-1]
    if not queue:
        raise ConfigurationError(["WORKER_QUEUE_NAME (--queue): required to provision"])
    fifo = settings.fifo or queue.endswith(".fifo")
    stem = queue.removesuffix(".fifo")
    suffix = ".fifo" if fifo else ""
    dlq = settings.dlq_name or f"{stem}-dlq{suffix}"
    topic = settings.topic_name or f"{stem}{suffix}"
    names = (f"{stem}{suffix}", dlq, topic)
    if fifo and not all(name.endswith(".fifo") for name in names):
        raise ConfigurationError(
            ["a FIFO queue's DLQ and topic must be FIFO too (names end in .fifo)"]
        )
    return names


def topic_only_policy(queue_arn: str, topic_arn: str) -> str:
    """A queue policy that lets only ``topic_arn`` send to the queue."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "AllowOnlyTheTopic",
                    "Effect": "Allow",
                    "Principal": {"Service": "sns.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": queue_arn,
                    "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
                }
            ],
        },
        sort_keys=True,
    )


async def _existing_queue_url(sqs: SQSClient, name: str) -> str | None:
    try:
        return (await sqs.get_queue_url(QueueName=name))["QueueUrl"]
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) in _MISSING_QUEUE:
            return None
        raise


async def _queue_arn(sqs: SQSClient, url: str) -> str:
    attributes = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return attributes["Attributes"]["QueueArn"]


def _fifo_attributes(name: str, settings: Settings) -> dict[QueueAttributeNameType, str]:
    if not name.endswith(".fifo"):
        return {}
    attributes: dict[QueueAttributeNameType, str] = {"FifoQueue": "true"}
    if settings.content_based_deduplication:
        attributes["ContentBasedDeduplication"] = "true"
    return attributes


async def _ensure_dlq(sqs: SQSClient, settings: Settings, name: str, result: Provisioned) -> None:
    url = await _existing_queue_url(sqs, name)
    attributes: dict[QueueAttributeNameType, str] = {
        "MessageRetentionPeriod": str(_DLQ_RETENTION_SECONDS),
        **_fifo_attributes(name, settings),
    }
    if url is None:
        url = (await sqs.create_queue(QueueName=name, Attributes=attributes))["QueueUrl"]
        result.say("dlq", url, "created")
    else:
        result.say("dlq", url, "found")
    result.dlq_url, result.dlq_arn = url, await _queue_arn(sqs, url)


async def _ensure_topic(sns: SNSClient, settings: Settings, name: str, result: Provisioned) -> None:
    existing: set[str] = set()
    paginator = sns.get_paginator("list_topics")
    async for page in paginator.paginate():
        existing.update(topic["TopicArn"] for topic in page.get("Topics", []))
    attributes = {"FifoTopic": "true"} if name.endswith(".fifo") else {}
    if attributes and settings.content_based_deduplication:
        attributes["ContentBasedDeduplication"] = "true"
    arn = (await sns.create_topic(Name=name, Attributes=attributes))["TopicArn"]
    result.topic_arn = arn
    result.say("topic", arn, "found" if arn in existing else "created")


async def _ensure_queue(sqs: SQSClient, settings: Settings, name: str, result: Provisioned) -> None:
    redrive = json.dumps(
        {"deadLetterTargetArn": result.dlq_arn, "maxReceiveCount": settings.max_receive_count}
    )
    url = await _existing_queue_url(sqs, name)
    if url is None:
        attributes: dict[QueueAttributeNameType, str] = {
            "VisibilityTimeout": str(settings.visibility_timeout or DEFAULT_VISIBILITY_SECONDS),
            "ReceiveMessageWaitTimeSeconds": "20",
            "RedrivePolicy": redrive,
            "SqsManagedSseEnabled": "true",
            **_fifo_attributes(name, settings),
        }
        url = (await sqs.create_queue(QueueName=name, Attributes=attributes))["QueueUrl"]
        result.say("queue", url, "created")
    else:
        current = (
            await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])
        ).get("Attributes", {})
        if json.loads(current.get("RedrivePolicy") or "{}") == json.loads(redrive):
            result.say("queue", url, "found")
        else:
            await sqs.set_queue_attributes(QueueUrl=url, Attributes={"RedrivePolicy": redrive})
            result.say("queue", url, "updated")
    result.queue_url, result.queue_arn = url, await _queue_arn(sqs, url)
    result.say(
        "redrive",
        f"to {result.dlq_arn.rsplit(':', 1)[-1]} after {settings.max_receive_count} receives",
        "set",
    )
    await sqs.set_queue_attributes(
        QueueUrl=url, Attributes={"Policy": topic_only_policy(result.queue_arn, result.topic_arn)}
    )
    result.say("policy", f"only {result.topic_arn} may send", "set")


async def _ensure_subscription(sns: SNSClient, settings: Settings, result: Provisioned) -> None:
    wanted = {"RawMessageDelivery": "true" if settings.raw_message_delivery else "false"}
    if settings.filter_policy:
        wanted["FilterPolicy"] = settings.filter_policy
    paginator = sns.get_paginator("list_subscriptions_by_topic")
    async for page in paginator.paginate(TopicArn=result.topic_arn):
        for subscription in page.get("Subscriptions", []):
            if (
                subscription.get("Protocol") == "sqs"
                and subscription.get("Endpoint") == result.queue_arn
            ):
                arn = subscription["SubscriptionArn"]
                for name, value in wanted.items():
                    await sns.set_subscription_attributes(
                        SubscriptionArn=arn, AttributeName=name, AttributeValue=value
                    )
                result.subscription_arn = arn
                result.say("subscription", arn, "found")
                return
    response = await sns.subscribe(
        TopicArn=result.topic_arn,
        Protocol="sqs",
        Endpoint=result.queue_arn,
        Attributes=wanted,
        ReturnSubscriptionArn=True,
    )
    result.subscription_arn = response["SubscriptionArn"]
    delivery = "raw delivery" if settings.raw_message_delivery else "SNS envelope"
    result.say("subscription", f"{result.subscription_arn} ({delivery})", "created")


async def provision(settings: Settings) -> Provisioned:
    """Create or check everything the worker expects; raises :class:`StartupError`."""
    queue, dlq, topic = names(settings)
    result = Provisioned()
    try:
        async with open_sqs(settings) as sqs, open_sns(settings) as sns:
            await _ensure_dlq(sqs, settings, dlq, result)
            await _ensure_topic(sns, settings, topic, result)
            await _ensure_queue(sqs, settings, queue, result)
            await _ensure_subscription(sns, settings, result)
    except (ConfigurationError, StartupError):
        raise
    except Exception as exc:  # noqa: BLE001 -- one line for the operator, not a traceback
        raise StartupError(f"provisioning failed: {describe_failure(exc)}") from None
    return result
