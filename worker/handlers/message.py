"""The message a ``message`` handler receives, read from an SQS message and its SNS envelope.

``Message.body`` is what the producer published, whether the SNS subscription uses raw message
delivery or wraps the payload in a notification envelope. Anything that cannot be read (a broken
envelope, an attribute that does not decode) raises :class:`~worker.errors.MalformedMessageError`,
which fails the message like any other error so that it ends in the DLQ instead of being lost.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from worker.config import EnvelopeMode
from worker.errors import MalformedMessageError

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_NOTIFICATION_TYPE = re.compile(r'"Type"\s*:\s*"Notification"')
_NOT_NOTIFICATIONS = frozenset({"SubscriptionConfirmation", "UnsubscribeConfirmation"})
_ATTRIBUTE_TYPES = frozenset({"String", "Number", "Binary"})  # SQS allows custom suffixes
_SNS_ATTRIBUTE_TYPES = frozenset({"String", "String.Array", "Number", "Binary"})


@dataclass(frozen=True, slots=True)
class MessageAttribute:
    """One message attribute. ``value`` is text for String and Number types, bytes for Binary."""

    data_type: str
    value: str | bytes


@dataclass(frozen=True, slots=True)
class SnsNotification:
    """The fields of the SNS notification envelope that carried the message."""

    topic_arn: str
    message_id: str
    subject: str | None
    timestamp: datetime
    message_attributes: Mapping[str, MessageAttribute]


class Message:
    """One SQS message, as a handler sees it."""

    __slots__ = (
        "_json",
        "attributes",
        "body",
        "md5_of_body",
        "message_attributes",
        "message_id",
        "queue_url",
        "raw_body",
        "receipt_handle",
        "sns",
    )

    def __init__(
        self,
        *,
        message_id: str,
        receipt_handle: str,
        body: str,
        raw_body: str,
        queue_url: str,
        md5_of_body: str = "",
        attributes: Mapping[str, str] = _EMPTY,
        message_attributes: Mapping[str, MessageAttribute] = _EMPTY,
        sns: SnsNotification | None = None,
    ) -> None:
        self.message_id = message_id
        self.receipt_handle = receipt_handle
        self.body = body
        self.raw_body = raw_body
        self.queue_url = queue_url
        self.md5_of_body = md5_of_body
        self.attributes = attributes
        self.message_attributes = message_attributes
        self.sns = sns
        self._json: Any = _UNSET

    def json(self) -> Any:
        """The body decoded as JSON; raises :class:`MalformedMessageError` if it is not JSON."""
        if self._json is _UNSET:
            try:
                self._json = json.loads(self.body)
            # ValueError, not only JSONDecodeError: an integer past Python's 4,300-digit limit
            # raises the plain kind.
            except (ValueError, RecursionError) as exc:
                raise MalformedMessageError(f"message body is not JSON: {exc}") from None
        return self._json

    @property
    def receive_count(self) -> int:
        """How many times SQS has handed this message out, this time included."""
        return int(self.attributes.get("ApproximateReceiveCount", "1"))

    @property
    def sent_at(self) -> datetime | None:
        """When the message was sent to the queue (for SNS deliveries: when SNS delivered it)."""
        stamp = self.attributes.get("SentTimestamp")
        return None if stamp is None else datetime.fromtimestamp(int(stamp) / 1000, tz=UTC)

    @property
    def group_id(self) -> str | None:
        """The MessageGroupId on FIFO queues."""
        return self.attributes.get("MessageGroupId")

    @property
    def published_attributes(self) -> Mapping[str, MessageAttribute]:
        """The attributes the producer published, however they travelled.

        With an SNS envelope they are inside it; with raw message delivery (or a producer that
        sends to SQS directly) they are the SQS message attributes.
        """
        return self.sns.message_attributes if self.sns is not None else self.message_attributes

    def __repr__(self) -> str:
        return f"Message(id={self.message_id!r}, receive_count={self.receive_count})"


_UNSET: Any = object()


def parse_message(raw: Mapping[str, Any], *, queue_url: str, envelope: EnvelopeMode) -> Message:
    """Read a message from a ``ReceiveMessage`` entry; raises :class:`MalformedMessageError`."""
    raw_body = raw.get("Body", "")
    sns = None
    body = raw_body
    parsed = _envelope_of(raw_body, envelope)
    if parsed is not None:
        sns, body = _read_notification(parsed)
    return Message(
        message_id=raw["MessageId"],
        receipt_handle=raw["ReceiptHandle"],
        body=body,
        raw_body=raw_body,
        queue_url=queue_url,
        md5_of_body=raw.get("MD5OfBody", ""),
        attributes=raw.get("Attributes") or _EMPTY,
        message_attributes=_read_sqs_attributes(raw.get("MessageAttributes")),
        sns=sns,
    )


def published_body(raw_body: str, envelope: EnvelopeMode) -> str:
    """What the producer published: ``raw_body`` with any SNS envelope unwrapped.

    ``Message.body`` without the rest of the message, for what looks at payloads before a
    handler does (``WORKER_FILTER_CRITERIA`` with a ``message`` handler). Raises
    :class:`MalformedMessageError` where :func:`parse_message` would for the envelope.
    """
    document = _envelope_of(raw_body, envelope)
    return raw_body if document is None else _text_field(document, "Message")


def _looks_like_notification(body: str) -> bool:
    # Cheap tests first: most bodies are not envelopes and must not pay for a JSON parse. Either
    # marker is enough, so that an envelope truncated before one of them is still recognised
    # (and failed as malformed) rather than handed over as a payload.
    if body[:1] != "{":
        return False
    if '"TopicArn"' in body:
        return True
    return '"Notification"' in body and _NOTIFICATION_TYPE.search(body) is not None


def _envelope_of(body: str, mode: EnvelopeMode) -> dict[str, Any] | None:
    if mode is EnvelopeMode.RAW:
        return None
    if mode is EnvelopeMode.AUTO and not _looks_like_notification(body.lstrip()):
        return None
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise MalformedMessageError(f"SNS envelope is not valid JSON: {exc}") from None
    kind = document.get("Type") if isinstance(document, dict) else None
    # SNS always sends TopicArn: without it, a JSON object with a Type field (a common name) is
    # a payload of its own, unless SNS envelopes were asked for.
    if mode is EnvelopeMode.AUTO and not (isinstance(document, dict) and "TopicArn" in document):
        return None
    if kind == "Notification":
        return document  # type: ignore[no-any-return]  # a dict, checked above
    if isinstance(kind, str) and kind in _NOT_NOTIFICATIONS:
        raise MalformedMessageError(
            f"SNS {kind} is not a notification; confirm or remove the subscription"
        )
    if mode is EnvelopeMode.SNS:
        raise MalformedMessageError("body is not an SNS notification envelope")
    return None


def _text_field(document: Mapping[str, Any], name: str) -> str:
    value = document.get(name)
    if not isinstance(value, str):
        raise MalformedMessageError(f"SNS envelope field {name} is missing or not a string")
    return value


def _read_notification(document: Mapping[str, Any]) -> tuple[SnsNotification, str]:
    body = _text_field(document, "Message")
    stamp = _text_field(document, "Timestamp")
    try:
        timestamp = datetime.fromisoformat(stamp)
    except ValueError:
        # Named, not quoted: the envelope is the body, and bodies stay out of logs.
        raise MalformedMessageError("SNS envelope Timestamp is not an ISO 8601 date") from None
    subject = document.get("Subject")
    if subject is not None and not isinstance(subject, str):
        raise MalformedMessageError("SNS envelope field Subject is not a string")
    notification = SnsNotification(
        topic_arn=_text_field(document, "TopicArn"),
        message_id=_text_field(document, "MessageId"),
        subject=subject,
        timestamp=timestamp,
        message_attributes=_read_sns_attributes(document.get("MessageAttributes")),
    )
    return notification, body


def _read_sns_attributes(attributes: Any) -> Mapping[str, MessageAttribute]:
    if attributes is None:
        return _EMPTY
    if not isinstance(attributes, dict):
        raise MalformedMessageError("SNS envelope MessageAttributes is not an object")
    result: dict[str, MessageAttribute] = {}
    for name, attribute in attributes.items():
        if not isinstance(attribute, dict):
            raise MalformedMessageError(f"SNS message attribute {name!r} is not an object")
        kind, value = attribute.get("Type"), attribute.get("Value")
        if not isinstance(kind, str) or kind not in _SNS_ATTRIBUTE_TYPES:
            raise MalformedMessageError(
                f"SNS message attribute {name!r} has a Type that is not "
                + ", ".join(sorted(_SNS_ATTRIBUTE_TYPES))
            )
        if not isinstance(value, str):
            raise MalformedMessageError(f"SNS message attribute {name!r} has no text value")
        result[name] = MessageAttribute(
            kind, _decode_binary(name, value) if kind == "Binary" else value
        )
    return MappingProxyType(result)


def _decode_binary(name: str, value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedMessageError(f"SNS message attribute {name!r} is not base64") from None


def _read_sqs_attributes(attributes: Any) -> Mapping[str, MessageAttribute]:
    if not attributes:
        return _EMPTY
    result: dict[str, MessageAttribute] = {}
    for name, attribute in attributes.items():
        kind = attribute.get("DataType")
        if not isinstance(kind, str) or kind.split(".", 1)[0] not in _ATTRIBUTE_TYPES:
            raise MalformedMessageError(f"message attribute {name!r} has type {kind!r}")
        value = (
            attribute.get("BinaryValue")
            if kind.startswith("Binary")
            else attribute.get("StringValue")
        )
        if not isinstance(value, str | bytes):
            raise MalformedMessageError(f"message attribute {name!r} has no {kind} value")
        result[name] = MessageAttribute(kind, value)
    return MappingProxyType(result)
