"""``worker publish``: the producer side, publishing events to the topic in batches.

Batches of at most ten events and 256 KiB, the most SNS's PublishBatch takes. A publish that
partly fails says which events were published and which were not, so that only those are sent
again.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import botocore.exceptions

from worker.config import Settings
from worker.consume.sqs import describe_failure, error_code, open_sns
from worker.errors import ConfigurationError, StartupError
from worker.ops.batches import split_batches

if TYPE_CHECKING:
    from types_aiobotocore_sns import SNSClient


@dataclass(frozen=True, slots=True)
class Event:
    """One message to publish."""

    body: str
    attributes: dict[str, dict[str, Any]] | None = None
    subject: str | None = None
    group_id: str | None = None
    deduplication_id: str | None = None


def parse_attribute(text: str) -> tuple[str, dict[str, Any]]:
    """``NAME=VALUE`` (a String) or ``NAME:TYPE=VALUE`` (String, Number, or base64 Binary)."""
    key, sep, value = text.partition("=")
    name, _, kind = key.partition(":")
    kind = kind or "String"
    if not sep or not name:
        raise ConfigurationError([f"--attribute {text!r}: expected NAME=VALUE or NAME:TYPE=VALUE"])
    if kind == "Binary":
        try:
            return name, {"DataType": kind, "BinaryValue": base64.b64decode(value, validate=True)}
        except binascii.Error:
            raise ConfigurationError([f"--attribute {name}: Binary values are base64"]) from None
    if kind not in {"String", "Number"}:
        raise ConfigurationError([f"--attribute {name}: type must be String, Number or Binary"])
    return name, {"DataType": kind, "StringValue": value}


def read_lines(lines: Iterable[str]) -> list[str]:
    """Message bodies from JSON-lines input: one per non-empty line, sent as written."""
    return [line.rstrip("\r\n") for line in lines if line.strip()]


async def resolve_topic_arn(sns: SNSClient, settings: Settings) -> str:
    """The topic's ARN, from ``WORKER_TOPIC_ARN`` or by finding ``WORKER_TOPIC_NAME``."""
    if settings.topic_arn:
        return settings.topic_arn
    name = settings.fifo_named(settings.topic_name or settings.queue_name)
    if not name:
        raise ConfigurationError(["WORKER_TOPIC_ARN or WORKER_TOPIC_NAME (--topic): required"])
    paginator = sns.get_paginator("list_topics")
    async for page in paginator.paginate():
        for topic in page.get("Topics", []):
            if topic["TopicArn"].rsplit(":", 1)[-1] == name:
                return topic["TopicArn"]
    hint = (
        "" if name.endswith(".fifo") else "; a FIFO topic's name ends in .fifo (WORKER_FIFO=true)"
    )
    raise StartupError(f"topic {name!r} does not exist (run worker provision{hint})")


SNS_MAX_BATCH_BYTES = 262_144  # SNS: the messages of one PublishBatch request, 256 KiB in all


def event_bytes(event: Event) -> int:
    """What SNS counts of an event against a batch's size: the message, its attributes and
    (to be safe) its subject."""
    size = len(event.body.encode()) + len((event.subject or "").encode())
    for name, attribute in (event.attributes or {}).items():
        value = attribute.get("StringValue", attribute.get("BinaryValue", b""))
        encoded = value.encode() if isinstance(value, str) else bytes(value)
        size += len(name.encode()) + len(attribute.get("DataType", "").encode()) + len(encoded)
    return size


def _entry(position: int, event: Event) -> dict[str, Any]:
    entry: dict[str, Any] = {"Id": str(position), "Message": event.body}
    if event.attributes:
        entry["MessageAttributes"] = event.attributes
    if event.subject:
        entry["Subject"] = event.subject
    if event.group_id:
        entry["MessageGroupId"] = event.group_id
    if event.deduplication_id:
        entry["MessageDeduplicationId"] = event.deduplication_id
    return entry


@dataclass
class Published:
    """What a publish did: the message ids, in the events' order, and the events that were not
    published, by their position (1 for the first) with the reason."""

    message_ids: list[str] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        """For ``--json``."""
        return {
            "message_ids": self.message_ids,
            "failed": [{"event": position, "error": why} for position, why in self.failed],
        }


# What SNS answers to every request alike, whatever it holds: the publish stops at the first.
_REFUSING_EVERY_REQUEST = frozenset(
    {
        "NotFound",
        "AuthorizationError",
        "AccessDenied",
        "AccessDeniedException",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "UnrecognizedClientException",
    }
)
# Failures of a request that reached SNS and got no answer.
_SENT_UNANSWERED = (
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ConnectionClosedError,
)


class _RequestFailed(Exception):
    """A PublishBatch request failed as a whole, after the SDK's retries."""


async def _publish_batch(
    sns: SNSClient, topic_arn: str, batch: list[tuple[int, Event]], published: Published
) -> bool:
    """Publish one batch into ``published``; whether every event of it was published."""
    try:
        response = await sns.publish_batch(
            TopicArn=topic_arn,
            PublishBatchRequestEntries=[_entry(p, e) for p, e in batch],  # type: ignore[misc]
        )
    except botocore.exceptions.ClientError as exc:  # refused: nothing of it was published
        if error_code(exc) in _REFUSING_EVERY_REQUEST:
            raise _RequestFailed(describe_failure(exc)) from exc
        # Refused for what it holds (a message too large by itself, say): only these events.
        published.failed.extend((position, describe_failure(exc)) for position, _ in batch)
        return False
    except _SENT_UNANSWERED as exc:
        # No answer to a request that went out: SNS may have published it all the same.
        raise _RequestFailed(f"{describe_failure(exc)}; it may have been published") from exc
    except Exception as exc:  # never sent (SNS out of reach, no credentials)
        raise _RequestFailed(describe_failure(exc)) from exc
    ids = {int(entry["Id"]): entry["MessageId"] for entry in response.get("Successful", [])}
    published.message_ids.extend(ids[position] for position, _ in batch if position in ids)
    failed = response.get("Failed", [])
    published.failed.extend(
        (int(entry["Id"]), f"{entry.get('Code')}: {entry.get('Message')}") for entry in failed
    )
    return not failed


async def publish_events(sns: SNSClient, topic_arn: str, events: Sequence[Event]) -> Published:
    """Publish ``events`` in batches SNS accepts; what was published and what was not.

    After a batch that failed, the rest are published all the same, except on a FIFO topic
    (events with a group id), where they would overtake the failed ones: those are reported as
    not published.
    """
    published = Published()
    batches = split_batches(
        list(enumerate(events, start=1)), lambda item: event_bytes(item[1]), SNS_MAX_BATCH_BYTES
    )
    in_order = any(event.group_id for event in events)
    for index, batch in enumerate(batches):
        stopped = None
        try:
            complete = await _publish_batch(sns, topic_arn, batch, published)
        except _RequestFailed as failed:
            # After the SDK's retries: the topic is gone, access is denied, SNS is out of
            # reach. The next requests would fail alike, one line per event each: not sent.
            published.failed.extend((position, str(failed)) for position, _ in batch)
            stopped = "not sent: an earlier request failed"
        else:
            if not complete and in_order:
                stopped = "not sent: an earlier event of this FIFO publish failed"
        if stopped is not None:
            rest = (position for later in batches[index + 1 :] for position, _ in later)
            published.failed.extend((position, stopped) for position in rest)
            break
    published.failed.sort()
    return published


async def publish(settings: Settings, events: Sequence[Event]) -> Published:
    """Publish ``events`` to the configured topic; raises :class:`StartupError` when the topic
    cannot be found (what the publish itself refused is in the result)."""
    try:
        async with open_sns(settings) as sns:
            topic_arn = await resolve_topic_arn(sns, settings)
            return await publish_events(sns, topic_arn, events)
    except (ConfigurationError, StartupError):
        raise
    except Exception as exc:  # noqa: BLE001 -- one line for the operator, not a traceback
        raise StartupError(f"publishing failed: {describe_failure(exc)}") from None
