"""``worker publish``: the producer side, publishing events to the topic in batches of ten."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from worker.config import Settings
from worker.consume.sqs import MAX_BATCH, describe_failure, open_sns
from worker.errors import ConfigurationError, StartupError

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


def _entry(index: int, event: Event) -> dict[str, Any]:
    entry: dict[str, Any] = {"Id": str(index), "Message": event.body}
    if event.attributes:
        entry["MessageAttributes"] = event.attributes
    if event.subject:
        entry["Subject"] = event.subject
    if event.group_id:
        entry["MessageGroupId"] = event.group_id
    if event.deduplication_id:
        entry["MessageDeduplicationId"] = event.deduplication_id
    return entry


async def publish_events(sns: SNSClient, topic_arn: str, events: Sequence[Event]) -> list[str]:
    """Publish in batches of ten; returns the SNS message ids. Raises on any refused entry."""
    ids: list[str] = []
    for start in range(0, len(events), MAX_BATCH):
        batch = events[start : start + MAX_BATCH]
        response = await sns.publish_batch(
            TopicArn=topic_arn,
            PublishBatchRequestEntries=[_entry(i, e) for i, e in enumerate(batch)],  # type: ignore[misc]
        )
        failed = response.get("Failed", [])
        if failed:
            first = failed[0]
            raise StartupError(
                f"{len(failed)} of {len(batch)} events refused: {first.get('Code')}: "
                f"{first.get('Message')}"
            )
        ids.extend(entry["MessageId"] for entry in response.get("Successful", []))
    return ids


async def publish(settings: Settings, events: Sequence[Event]) -> list[str]:
    """Publish ``events`` to the configured topic; raises :class:`StartupError` on failure."""
    try:
        async with open_sns(settings) as sns:
            topic_arn = await resolve_topic_arn(sns, settings)
            return await publish_events(sns, topic_arn, events)
    except (ConfigurationError, StartupError):
        raise
    except Exception as exc:  # noqa: BLE001 -- one line for the operator, not a traceback
        raise StartupError(f"publishing failed: {describe_failure(exc)}") from None
