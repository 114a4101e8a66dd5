"""``worker provision``: the topic, the queue, its DLQ, the subscription and the queue policy.

Idempotent: what exists is checked and brought in line (RedrivePolicy, a visibility timeout that
was asked for, the queue policy's statement for the topic, raw delivery and filter policy of the
subscription), what is missing is created, and every step says which it was and what it changed
— ``unchanged`` where nothing was. A dry run reads the same and changes nothing: each step says
what it would do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import botocore.exceptions

from worker.config import Settings
from worker.consume.sqs import (
    DEFAULT_VISIBILITY_SECONDS,
    describe_failure,
    error_code,
    open_sns,
    open_sqs,
)
from worker.errors import ConfigurationError, StartupError
from worker.ops import queue_policy
from worker.ops.queue_policy import topic_only_policy

if TYPE_CHECKING:
    from types_aiobotocore_sns import SNSClient
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.literals import QueueAttributeNameType

_DLQ_RETENTION_SECONDS = 1_209_600  # 14 days, the most SQS keeps a message: time to look at it
_MISSING_QUEUE = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}


UNCHANGED = "unchanged"
_WOULD = {"created": "would create", "updated": "would update", "set": "would set"}


@dataclass
class Provisioned:
    """What ``provision`` made or found; in a dry run, what it would make (ARNs of what does not
    exist yet are empty)."""

    topic_arn: str = ""
    queue_url: str = ""
    queue_arn: str = ""
    dlq_url: str = ""
    dlq_arn: str = ""
    subscription_arn: str = ""
    dry_run: bool = False
    steps: list[tuple[str, str, str]] = field(default_factory=list)  # (what, name, verdict)

    def say(self, what: str, name: str, verdict: str) -> None:
        """Record one step for the summary: created, updated, set or unchanged."""
        if self.dry_run:
            verdict = _WOULD.get(verdict, verdict)
        self.steps.append((what, name, verdict))

    def checked(self, what: str, name: str, changes: list[str]) -> None:
        """Record a step on something that existed: unchanged, or updated, and how."""
        if changes:
            self.say(what, f"{name} ({', '.join(changes)})", "updated")
        else:
            self.say(what, name, UNCHANGED)

    @property
    def changed(self) -> bool:
        """Whether any step changed something (in a dry run: would have)."""
        return any(verdict != UNCHANGED for _, _, verdict in self.steps)

    def lines(self) -> list[str]:
        """The summary, one aligned line per step, and a last line that says it in one word."""
        width = max((len(what) for what, _, _ in self.steps), default=0)
        verdicts = max((len(verdict) for _, _, verdict in self.steps), default=0)
        lines = [
            f"{what:<{width}}  {verdict:<{verdicts}}  {name}" for what, name, verdict in self.steps
        ]
        if not self.changed:
            lines.append("unchanged: everything was already as asked")
        elif self.dry_run:
            lines.append("dry run: nothing was changed")
        return lines

    def as_json(self) -> dict[str, object]:
        """For ``--json``: the resources and every step."""
        return {
            "changed": self.changed,
            "dry_run": self.dry_run,
            "topic_arn": self.topic_arn,
            "queue_url": self.queue_url,
            "queue_arn": self.queue_arn,
            "dlq_url": self.dlq_url,
            "dlq_arn": self.dlq_arn,
            "subscription_arn": self.subscription_arn,
            "steps": [
                {"what": what, "name": name, "verdict": verdict}
                for what, name, verdict in self.steps
            ],
        }


_TOPIC_ARN = "WORKER_TOPIC_ARN (--topic)"


def _topic_arn_parts(arn: str) -> tuple[str, str, str]:
    """The (region, account, name) of an SNS topic's ARN; a problem line if it is none."""
    parts = arn.split(":")
    if (
        len(parts) != 6 or parts[2] != "sns" or not all(parts[3:])
    ):  # arn:aws:sns:REGION:ACCOUNT:NAME
        raise ConfigurationError([f"{_TOPIC_ARN}: {arn!r} is not an SNS topic ARN"])
    return parts[3], parts[4], parts[5]


def names(settings: Settings) -> tuple[str, str, str]:
    """The queue, DLQ and topic names, the last two derived from the first unless set (the
    topic by name, or by ARN: the ARN wins, as it does for ``worker publish``)."""
    queue = settings.queue_name or (settings.queue_url or "").rstrip("/").rsplit("/", 1)[-1]
    if not queue:
        raise ConfigurationError(["WORKER_QUEUE_NAME (--queue): required to provision"])
    fifo = settings.fifo or queue.endswith(".fifo")
    stem = queue.removesuffix(".fifo")
    suffix = ".fifo" if fifo else ""
    dlq = settings.dlq_name or f"{stem}-dlq{suffix}"
    topic = settings.topic_name or f"{stem}{suffix}"
    if settings.topic_arn:
        topic = _topic_arn_parts(settings.topic_arn)[2]
    names = (f"{stem}{suffix}", dlq, topic)
    if fifo and not all(name.endswith(".fifo") for name in names):
        raise ConfigurationError(
            ["a FIFO queue's DLQ and topic must be FIFO too (names end in .fifo)"]
        )
    return names


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


_DEDUPLICATION = "content_based_deduplication"


def _dedup_asked(settings: Settings, name: str) -> bool:
    """Whether content-based deduplication is to be brought in line on FIFO ``name``: when it is
    asked for, on or off. Left alone otherwise, as turning it off under publishers that send no
    deduplication id would get their messages refused."""
    return name.endswith(".fifo") and _DEDUPLICATION in settings.model_fields_set


def _dedup_change(settings: Settings, current: str | None) -> tuple[str, str] | None:
    """The ContentBasedDeduplication value to set and what it does, or ``None`` if in line."""
    wanted = settings.content_based_deduplication
    if (current or "false").lower() == str(wanted).lower():
        return None
    return str(wanted).lower(), f"content-based deduplication {'on' if wanted else 'off'}"


async def _bring_queue_dedup_in_line(
    sqs: SQSClient, settings: Settings, name: str, url: str, *, dry_run: bool
) -> list[str]:
    """Set ContentBasedDeduplication on an existing FIFO queue where asked; what changed."""
    if not _dedup_asked(settings, name):
        return []
    response = await sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ContentBasedDeduplication"]
    )
    change = _dedup_change(
        settings, response.get("Attributes", {}).get("ContentBasedDeduplication")
    )
    if change is None:
        return []
    if not dry_run:
        await sqs.set_queue_attributes(
            QueueUrl=url, Attributes={"ContentBasedDeduplication": change[0]}
        )
    return [change[1]]


async def _ensure_dlq(sqs: SQSClient, settings: Settings, name: str, result: Provisioned) -> None:
    url = await _existing_queue_url(sqs, name)
    attributes: dict[QueueAttributeNameType, str] = {
        "MessageRetentionPeriod": str(_DLQ_RETENTION_SECONDS),
        **_fifo_attributes(name, settings),
    }
    if url is None:
        if result.dry_run:
            result.say("dlq", name, "created")
            return
        url = (await sqs.create_queue(QueueName=name, Attributes=attributes))["QueueUrl"]
        result.say("dlq", url, "created")
    else:
        notes = await _bring_queue_dedup_in_line(sqs, settings, name, url, dry_run=result.dry_run)
        result.checked("dlq", url, notes)
    result.dlq_url, result.dlq_arn = url, await _queue_arn(sqs, url)


def _topic_within_reach(arn: str, region: str, dlq_arn: str) -> None:
    """Refuse a topic ARN of another region or account.

    Provisioning creates a missing topic by its name, which makes it in the caller's own account
    and region: a topic elsewhere would be a new one here, not the one asked for. Subscribing a
    queue to another account's topic needs that account's topic policy, which is not ours to set.
    ``dlq_arn`` names the caller's account (empty in a dry run before the DLQ exists).
    """
    topic_region, topic_account, _ = _topic_arn_parts(arn)
    account = dlq_arn.split(":")[4] if dlq_arn else topic_account
    for where, theirs, ours in (
        ("region", topic_region, region),
        ("account", topic_account, account),
    ):
        if theirs != ours:
            raise ConfigurationError(
                [
                    f"{_TOPIC_ARN}: {arn} is not in this {where} ({ours}); provision makes and "
                    "subscribes to topics in its own account and region: subscribe the queue to "
                    "a topic elsewhere from that topic's account"
                ]
            )


async def _ensure_topic(sns: SNSClient, settings: Settings, name: str, result: Provisioned) -> None:
    if settings.topic_arn:
        _topic_within_reach(settings.topic_arn, sns.meta.region_name, result.dlq_arn)
    existing: set[str] = set()
    paginator = sns.get_paginator("list_topics")
    async for page in paginator.paginate():
        existing.update(topic["TopicArn"] for topic in page.get("Topics", []))
    found = next((arn for arn in existing if arn.rsplit(":", 1)[-1] == name), None)
    if found is not None:
        result.topic_arn = found
        notes = await _bring_topic_dedup_in_line(sns, settings, name, found, dry_run=result.dry_run)
        result.checked("topic", found, notes)
        return
    if result.dry_run:
        result.say("topic", name, "created")
        return
    attributes = {"FifoTopic": "true"} if name.endswith(".fifo") else {}
    if attributes and settings.content_based_deduplication:
        attributes["ContentBasedDeduplication"] = "true"
    result.topic_arn = (await sns.create_topic(Name=name, Attributes=attributes))["TopicArn"]
    result.say("topic", result.topic_arn, "created")


async def _bring_topic_dedup_in_line(
    sns: SNSClient, settings: Settings, name: str, arn: str, *, dry_run: bool
) -> list[str]:
    """Set ContentBasedDeduplication on an existing FIFO topic where asked; what changed.

    Set rather than passed to CreateTopic, which SNS refuses for an existing topic whose
    attributes differ."""
    if not _dedup_asked(settings, name):
        return []
    current = (await sns.get_topic_attributes(TopicArn=arn)).get("Attributes", {})
    change = _dedup_change(settings, current.get("ContentBasedDeduplication"))
    if change is None:
        return []
    if not dry_run:
        await sns.set_topic_attributes(
            TopicArn=arn, AttributeName="ContentBasedDeduplication", AttributeValue=change[0]
        )
    return [change[1]]


def _redrive_changes(current: str | None, dlq_arn: str, max_receive_count: int) -> list[str]:
    """What differs between the queue's RedrivePolicy and the wanted one, in words.

    Compared field by field, not as JSON text: SQS may give ``maxReceiveCount`` back as a
    string, which is the same policy and must not be reported as a change.
    """
    if not current:
        return [f"redrive policy added (maxReceiveCount {max_receive_count})"]
    policy = json.loads(current)
    notes = []
    if policy.get("deadLetterTargetArn") != dlq_arn:
        old = str(policy.get("deadLetterTargetArn", "none")).rsplit(":", 1)[-1]
        notes.append(f"DLQ {old} → {dlq_arn.rsplit(':', 1)[-1]}")
    if str(policy.get("maxReceiveCount")) != str(max_receive_count):
        notes.append(f"maxReceiveCount {policy.get('maxReceiveCount')} → {max_receive_count}")
    return notes


def _queue_changes(
    settings: Settings, name: str, current: dict[str, str], dlq_arn: str
) -> tuple[dict[QueueAttributeNameType, str], list[str]]:
    """What to set on an existing queue, and what that changes, in words.

    The visibility timeout is changed only when one is asked for: the 30 s used at creation is
    SQS's default, not a choice to impose on a queue whose operators tuned it. Encryption and the
    receive wait are left alone, as a queue may be encrypted with its own KMS key and the worker
    sets its own wait on every receive.
    """
    changes: dict[QueueAttributeNameType, str] = {}
    notes = _redrive_changes(current.get("RedrivePolicy"), dlq_arn, settings.max_receive_count)
    if notes:
        changes["RedrivePolicy"] = json.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": settings.max_receive_count}
        )
    wanted_visibility = settings.visibility_timeout
    if wanted_visibility is not None and current.get("VisibilityTimeout") != str(wanted_visibility):
        changes["VisibilityTimeout"] = str(wanted_visibility)
        notes.append(
            f"visibility timeout {current.get('VisibilityTimeout', '?')} s → {wanted_visibility} s"
        )
    change = _dedup_change(settings, current.get("ContentBasedDeduplication"))
    if _dedup_asked(settings, name) and change is not None:
        changes["ContentBasedDeduplication"] = change[0]
        notes.append(change[1])
    return changes, notes


async def _create_queue(sqs: SQSClient, settings: Settings, name: str, result: Provisioned) -> None:
    redrive = json.dumps(
        {"deadLetterTargetArn": result.dlq_arn, "maxReceiveCount": settings.max_receive_count}
    )
    attributes: dict[QueueAttributeNameType, str] = {
        "VisibilityTimeout": str(settings.visibility_timeout or DEFAULT_VISIBILITY_SECONDS),
        "ReceiveMessageWaitTimeSeconds": "20",
        "RedrivePolicy": redrive,
        "SqsManagedSseEnabled": "true",
        **_fifo_attributes(name, settings),
    }
    if result.dry_run:
        result.say("queue", name, "created")
        return
    url = (await sqs.create_queue(QueueName=name, Attributes=attributes))["QueueUrl"]
    result.queue_url, result.queue_arn = url, await _queue_arn(sqs, url)
    result.say("queue", url, "created")
    await sqs.set_queue_attributes(
        QueueUrl=url, Attributes={"Policy": topic_only_policy(result.queue_arn, result.topic_arn)}
    )


async def _subscribed(sns: SNSClient, topic_arn: str, queue_arn: str) -> bool:
    """Whether the queue is subscribed to ``topic_arn``; yes when that cannot be read, so that
    the topic's statement is kept (only a topic that is gone, or not subscribed, loses it)."""
    try:
        paginator = sns.get_paginator("list_subscriptions_by_topic")
        async for page in paginator.paginate(TopicArn=topic_arn):
            for subscription in page.get("Subscriptions", []):
                if subscription.get("Endpoint") == queue_arn:
                    return True
    except botocore.exceptions.ClientError as exc:
        return error_code(exc) != "NotFound"
    return False


async def _policy_change(
    sns: SNSClient, current: str | None, result: Provisioned
) -> tuple[str | None, list[str]]:
    """The queue policy to set (``None``: in line) and what changes, keeping others' statements."""
    if not result.topic_arn:  # a dry run: the topic does not exist yet
        return None, ["statement added"]
    subscribed = [
        topic
        for topic in queue_policy.earlier_topics(current, result.topic_arn)
        if await _subscribed(sns, topic, result.queue_arn)
    ]
    return queue_policy.merged(current, result.queue_arn, result.topic_arn, subscribed)


async def _ensure_queue(
    clients: tuple[SQSClient, SNSClient],
    settings: Settings,
    names: tuple[str, str, str],
    result: Provisioned,
) -> None:
    sqs, sns = clients
    name, dlq, topic = names
    redrive = f"to {dlq} after {settings.max_receive_count} receives"
    policy = f"{result.topic_arn or topic} may send"
    url = await _existing_queue_url(sqs, name)
    if url is None:
        await _create_queue(sqs, settings, name, result)
        result.say("redrive", redrive, "set")
        result.say("policy", policy, "set")
        return
    wanted: list[QueueAttributeNameType] = ["QueueArn", "RedrivePolicy", "VisibilityTimeout"]
    wanted += ["Policy", "ContentBasedDeduplication"] if name.endswith(".fifo") else ["Policy"]
    response = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=wanted)
    current = {str(key): value for key, value in response.get("Attributes", {}).items()}
    result.queue_url, result.queue_arn = url, current["QueueArn"]
    changes, notes = _queue_changes(settings, name, current, result.dlq_arn)
    wanted_policy, policy_notes = await _policy_change(sns, current.get("Policy"), result)
    if wanted_policy is not None:
        changes["Policy"] = wanted_policy
    if changes and not result.dry_run:
        await sqs.set_queue_attributes(QueueUrl=url, Attributes=changes)
    result.checked("queue", url, notes)
    result.say("redrive", redrive, "set" if "RedrivePolicy" in changes else UNCHANGED)
    if policy_notes:
        result.say("policy", f"{policy} ({', '.join(policy_notes)})", "set")
    else:
        result.say("policy", policy, UNCHANGED)


def _filter_policy_change(current: str | None, wanted: str | None) -> tuple[str, str] | None:
    """The FilterPolicy value to set and what it does, or ``None`` when it is already in place.

    No filter policy is set as ``{}``, which is how SNS is told to drop one (an attribute cannot
    be unset): a subscription left with an old policy would go on discarding the messages that
    do not match it, and nothing would say so.
    """
    have = json.loads(current) if current else {}
    want = json.loads(wanted) if wanted else {}
    if have == want:
        return None
    if not want:
        return "{}", "filter policy removed"
    return str(wanted), "filter policy replaced" if have else "filter policy set"


async def _bring_subscription_in_line(
    sns: SNSClient, settings: Settings, arn: str, *, dry_run: bool
) -> list[str]:
    """Set what differs on an existing subscription; returns what changed, in words."""
    current = (await sns.get_subscription_attributes(SubscriptionArn=arn)).get("Attributes", {})
    changes: list[tuple[str, str, str]] = []  # (attribute, value, note)
    raw = "true" if settings.raw_message_delivery else "false"
    if current.get("RawMessageDelivery", "false").lower() != raw:
        note = "raw delivery on" if settings.raw_message_delivery else "raw delivery off"
        changes.append(("RawMessageDelivery", raw, note))
    change = _filter_policy_change(current.get("FilterPolicy"), settings.filter_policy)
    if change is not None:
        changes.append(("FilterPolicy", *change))
    for attribute, value, _ in [] if dry_run else changes:
        await sns.set_subscription_attributes(
            SubscriptionArn=arn, AttributeName=attribute, AttributeValue=value
        )
    return [note for _, _, note in changes]


async def _ensure_subscription(sns: SNSClient, settings: Settings, result: Provisioned) -> None:
    if not (result.topic_arn and result.queue_arn):  # a dry run: one of them does not exist yet
        result.say("subscription", f"{result.topic_arn or 'the topic'} → the queue", "created")
        return
    paginator = sns.get_paginator("list_subscriptions_by_topic")
    async for page in paginator.paginate(TopicArn=result.topic_arn):
        for subscription in page.get("Subscriptions", []):
            if (
                subscription.get("Protocol") == "sqs"
                and subscription.get("Endpoint") == result.queue_arn
            ):
                arn = subscription["SubscriptionArn"]
                result.subscription_arn = arn
                notes = await _bring_subscription_in_line(
                    sns, settings, arn, dry_run=result.dry_run
                )
                result.checked("subscription", arn, notes)
                return
    wanted = {"RawMessageDelivery": "true" if settings.raw_message_delivery else "false"}
    if settings.filter_policy:
        wanted["FilterPolicy"] = settings.filter_policy
    delivery = "raw delivery" if settings.raw_message_delivery else "SNS envelope"
    if result.dry_run:
        result.say("subscription", f"{result.topic_arn} → the queue ({delivery})", "created")
        return
    response = await sns.subscribe(
        TopicArn=result.topic_arn,
        Protocol="sqs",
        Endpoint=result.queue_arn,
        Attributes=wanted,
        ReturnSubscriptionArn=True,
    )
    result.subscription_arn = response["SubscriptionArn"]
    result.say("subscription", f"{result.subscription_arn} ({delivery})", "created")


async def provision(settings: Settings, *, dry_run: bool = False) -> Provisioned:
    """Create or check everything the worker expects (with ``dry_run``, only check: each step
    says what it would do); raises :class:`StartupError`."""
    queue, dlq, topic = names(settings)
    result = Provisioned(dry_run=dry_run)
    try:
        async with open_sqs(settings) as sqs, open_sns(settings) as sns:
            if settings.topic_arn:  # its region now, before anything is made; its account later
                _topic_within_reach(settings.topic_arn, sns.meta.region_name, "")
            await _ensure_dlq(sqs, settings, dlq, result)
            await _ensure_topic(sns, settings, topic, result)
            await _ensure_queue((sqs, sns), settings, (queue, dlq, topic), result)
            await _ensure_subscription(sns, settings, result)
    except (ConfigurationError, StartupError):
        raise
    except Exception as exc:  # noqa: BLE001 -- one line for the operator, not a traceback
        raise StartupError(f"provisioning failed: {describe_failure(exc)}") from None
    return result
