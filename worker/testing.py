"""Messages and SQS events for your handlers' unit tests, built the way the worker builds them.

A test should hand the handler what it will really get. These helpers build the entry SQS
returns from ``ReceiveMessage`` (through an SNS envelope or not), then read it with the worker's
own code: :func:`message` parses it as the worker does for a ``message`` handler, and
:func:`sqs_event` turns it into the event Lambda's event source mapping would build. No AWS call
is made and nothing needs to run::

    from worker.testing import lambda_context, message, sqs_event

    async def test_an_order_is_charged():
        await handle(message({"order_id": "o-1", "amount": 5}))

    def test_a_bad_record_is_reported():
        event = sqs_event({"order_id": "o-1", "amount": 5}, "not JSON")
        failed = event["Records"][1]["messageId"]
        response = lambda_handler(event, lambda_context())
        assert response == {"batchItemFailures": [{"itemIdentifier": failed}]}

A body that is not a ``str`` is encoded as JSON.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from worker.config import EnvelopeMode
from worker.handlers.message import Message, parse_message
from worker.lambda_.event import LambdaContext
from worker.lambda_.event import sqs_event as _event
from worker.lambda_.event import sqs_record as _record

__all__ = ["AttributeValue", "lambda_context", "message", "sqs_event", "sqs_message"]

REGION = "us-east-1"
ACCOUNT = "123456789012"
QUEUE_NAME = "test-queue"
QUEUE_URL = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{QUEUE_NAME}"
QUEUE_ARN = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{QUEUE_NAME}"
TOPIC_ARN = f"arn:aws:sns:{REGION}:{ACCOUNT}:test-topic"

# str: a String attribute; int or float: a Number; bytes: a Binary.
AttributeValue = str | int | float | bytes


def _text(body: Any) -> str:
    return body if isinstance(body, str) else json.dumps(body)


def _attribute_type(name: str, value: AttributeValue) -> str:
    if isinstance(value, bool):  # a bool is an int: refuse it rather than send "True"
        raise TypeError(f"attribute {name!r}: give a str, a number or bytes, not a bool")
    if isinstance(value, bytes):
        return "Binary"
    if isinstance(value, int | float):
        return "Number"
    if isinstance(value, str):
        return "String"
    raise TypeError(f"attribute {name!r}: give a str, a number or bytes")


def _sqs_attributes(attributes: Mapping[str, AttributeValue]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = {}
    for name, value in attributes.items():
        kind = _attribute_type(name, value)
        key = "BinaryValue" if kind == "Binary" else "StringValue"
        result[name] = {"DataType": kind, key: value if kind == "Binary" else str(value)}
    return result


def _sns_attributes(attributes: Mapping[str, AttributeValue]) -> dict[str, dict[str, str]]:
    result: dict[str, dict[str, str]] = {}
    for name, value in attributes.items():
        kind = _attribute_type(name, value)
        text = base64.b64encode(value).decode() if isinstance(value, bytes) else str(value)
        result[name] = {"Type": kind, "Value": text}
    return result


def _envelope(
    body: str,
    attributes: Mapping[str, AttributeValue],
    topic_arn: str,
    subject: str | None,
    sent_at: datetime,
) -> str:
    """The notification SNS wraps a message in when the subscription is not raw."""
    document: dict[str, Any] = {
        "Type": "Notification",
        "MessageId": str(uuid.uuid4()),
        "TopicArn": topic_arn,
        "Message": body,
        "Timestamp": sent_at.astimezone(UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "SignatureVersion": "1",
        "Signature": "",
        "SigningCertURL": "",
        "UnsubscribeURL": "",
    }
    if subject is not None:
        document["Subject"] = subject
    if attributes:
        document["MessageAttributes"] = _sns_attributes(attributes)
    return json.dumps(document)


def sqs_message(
    body: Any,
    *,
    message_id: str | None = None,
    receive_count: int = 1,
    group_id: str | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
    sns: bool = False,
    topic_arn: str = TOPIC_ARN,
    subject: str | None = None,
    sent_at: datetime | None = None,
) -> dict[str, Any]:
    """The entry ``ReceiveMessage`` returns for ``body``, for code that reads SQS's own shape.

    ``sns=True`` wraps the body in the envelope SNS adds when the subscription is not raw, with
    ``attributes`` inside it, as they travel; otherwise they are SQS message attributes.
    ``receive_count`` is ``ApproximateReceiveCount``: more than 1 makes a retry.
    """
    sent = sent_at or datetime.now(tz=UTC)
    text = _text(body)
    raw_body = _envelope(text, attributes or {}, topic_arn, subject, sent) if sns else text
    system = {
        "ApproximateReceiveCount": str(receive_count),
        "SentTimestamp": str(int(sent.timestamp() * 1000)),
        "ApproximateFirstReceiveTimestamp": str(int(time.time() * 1000)),
        "SenderId": "AIDAIENQZJOLO23YVJ4VO",
    }
    if group_id is not None:
        system["MessageGroupId"] = group_id
        system["SequenceNumber"] = str(time.time_ns())
        system["MessageDeduplicationId"] = hashlib.sha256(raw_body.encode()).hexdigest()
    entry: dict[str, Any] = {
        "MessageId": message_id or str(uuid.uuid4()),
        "ReceiptHandle": base64.b64encode(uuid.uuid4().bytes * 4).decode(),
        "MD5OfBody": hashlib.md5(raw_body.encode(), usedforsecurity=False).hexdigest(),
        "Body": raw_body,
        "Attributes": system,
    }
    if attributes and not sns:
        entry["MessageAttributes"] = _sqs_attributes(attributes)
    return entry


def message(
    body: Any,
    *,
    message_id: str | None = None,
    receive_count: int = 1,
    group_id: str | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
    sns: bool = False,
    topic_arn: str = TOPIC_ARN,
    subject: str | None = None,
    sent_at: datetime | None = None,
    queue_url: str = QUEUE_URL,
) -> Message:
    """The :class:`~worker.Message` a ``message`` handler gets for ``body``.

    Read by the worker's own parser, so ``message.body`` is the payload with or without
    ``sns=True``, ``json()`` raises :class:`~worker.MalformedMessageError` on a body that is
    not JSON, and ``published_attributes`` are ``attributes`` however they travelled.
    """
    raw = sqs_message(
        body,
        message_id=message_id,
        receive_count=receive_count,
        group_id=group_id,
        attributes=attributes,
        sns=sns,
        topic_arn=topic_arn,
        subject=subject,
        sent_at=sent_at,
    )
    return parse_message(raw, queue_url=queue_url, envelope=EnvelopeMode.AUTO)


def sqs_event(
    *bodies: Any,
    group_id: str | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
    sns: bool = False,
    topic_arn: str = TOPIC_ARN,
    queue_arn: str = QUEUE_ARN,
) -> dict[str, Any]:
    """The event Lambda hands a function subscribed to the queue: one record per body.

    Record fields are Lambda's (``messageId``, ``body``, ``messageAttributes``,
    ``eventSourceARN``...); with ``sns=True`` each body is the SNS envelope, as on Lambda.
    """
    region = queue_arn.split(":")[3]
    return _event(
        _record(
            sqs_message(
                body, group_id=group_id, attributes=attributes, sns=sns, topic_arn=topic_arn
            ),
            queue_arn=queue_arn,
            region=region,
        )
        for body in bodies
    )


def lambda_context(
    *,
    function_name: str = "test-function",
    timeout_seconds: float = 900.0,
    memory_limit_in_mb: int = 128,
    region: str = REGION,
) -> LambdaContext:
    """A context like the Python runtime's; ``get_remaining_time_in_millis()`` counts down
    ``timeout_seconds`` from now."""
    return LambdaContext(
        function_name=function_name,
        invoked_function_arn=f"arn:aws:lambda:{region}:{ACCOUNT}:function:{function_name}",
        memory_limit_in_mb=memory_limit_in_mb,
        deadline=time.monotonic() + timeout_seconds,
    )
