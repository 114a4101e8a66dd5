"""``worker.testing`` builds what the worker would hand a handler, in SQS's and Lambda's shapes."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from tests.support import Queues
from worker import MalformedMessageError, MessageAttribute
from worker.config import EnvelopeMode
from worker.consume.sqs import open_sqs
from worker.handlers.message import parse_message
from worker.lambda_.event import sqs_record
from worker.testing import QUEUE_ARN, TOPIC_ARN, lambda_context, message, sqs_event, sqs_message


class TestMessage:
    """``message()`` is what a ``message`` handler gets, read by the worker's own parser."""

    def test_a_body_that_is_not_text_is_json(self) -> None:
        got = message({"order_id": "o-1", "amount": 5})
        assert got.json() == {"order_id": "o-1", "amount": 5}
        assert got.sns is None
        assert got.raw_body == got.body

    def test_a_body_that_is_not_json_fails_as_the_worker_would(self) -> None:
        with pytest.raises(MalformedMessageError):
            message("not JSON").json()

    def test_system_attributes(self) -> None:
        sent = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        got = message("x", receive_count=3, group_id="g", sent_at=sent, message_id="m-1")
        assert (got.message_id, got.receive_count, got.group_id) == ("m-1", 3, "g")
        assert got.sent_at == sent

    def test_attributes_by_type(self) -> None:
        got = message("x", attributes={"source": "shop", "priority": 5, "blob": b"\x00\xff"})
        assert dict(got.message_attributes) == {
            "source": MessageAttribute("String", "shop"),
            "priority": MessageAttribute("Number", "5"),
            "blob": MessageAttribute("Binary", b"\x00\xff"),
        }

    def test_through_an_sns_envelope(self) -> None:
        got = message(
            {"n": 1}, sns=True, subject="s", attributes={"source": "shop", "blob": b"\x01"}
        )
        assert got.json() == {"n": 1}
        assert got.sns is not None
        assert (got.sns.topic_arn, got.sns.subject) == (TOPIC_ARN, "s")
        assert json.loads(got.raw_body)["Type"] == "Notification"
        assert dict(got.published_attributes) == {
            "source": MessageAttribute("String", "shop"),
            "blob": MessageAttribute("Binary", b"\x01"),
        }
        assert not got.message_attributes  # they travel inside the envelope

    def test_a_bool_attribute_is_refused(self) -> None:
        with pytest.raises(TypeError, match="not a bool"):
            message("x", attributes={"flag": True})


class TestSqsMessage:
    """``sqs_message()`` has the shape of what SQS returns."""

    async def test_the_same_fields_as_a_real_receive(self, queues: Queues) -> None:
        async with open_sqs(queues.settings()) as sqs:
            await sqs.send_message(
                QueueUrl=queues.queue_url,
                MessageBody="real",
                MessageAttributes={"source": {"DataType": "String", "StringValue": "shop"}},
            )
            real = (
                await sqs.receive_message(
                    QueueUrl=queues.queue_url,
                    WaitTimeSeconds=1,
                    MessageSystemAttributeNames=["All"],
                    MessageAttributeNames=["All"],
                )
            )["Messages"][0]
        built = sqs_message("built", attributes={"source": "shop"})
        shared = {"MessageId", "ReceiptHandle", "MD5OfBody", "Body", "Attributes"}
        assert shared <= set(real) & set(built)
        assert set(built["Attributes"]) <= set(real["Attributes"])
        assert built["MessageAttributes"] == {
            "source": {k: v for k, v in real["MessageAttributes"]["source"].items() if v != []}
        }

    def test_parses_like_a_received_message(self) -> None:
        raw = sqs_message({"n": 1}, sns=True)
        parsed = parse_message(raw, queue_url="q", envelope=EnvelopeMode.SNS)
        assert parsed.json() == {"n": 1}


class TestSqsEvent:
    """``sqs_event()`` is the event Lambda builds, by the builder the Lambda adapter uses."""

    def test_one_record_per_body(self) -> None:
        event = sqs_event({"n": 1}, "two", group_id="g")
        first, second = event["Records"]
        assert json.loads(first["body"]) == {"n": 1}
        assert second["body"] == "two"
        assert first["eventSource"] == "aws:sqs"
        assert first["eventSourceARN"] == QUEUE_ARN
        assert first["awsRegion"] == "us-east-1"
        assert first["attributes"]["MessageGroupId"] == "g"
        assert first["messageId"] != second["messageId"]

    def test_the_same_record_as_the_lambda_adapter_builds(self) -> None:
        raw = sqs_message("x", attributes={"blob": b"\x00", "n": 1.5})
        (record,) = sqs_event("x", attributes={"blob": b"\x00", "n": 1.5})["Records"]
        expected = sqs_record(raw, queue_arn=QUEUE_ARN, region="us-east-1")
        assert set(record) == set(expected)
        assert record["messageAttributes"] == {
            "blob": {
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": "Binary",
                "binaryValue": base64.b64encode(b"\x00").decode(),
            },
            "n": {
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": "Number",
                "stringValue": "1.5",
            },
        }

    def test_with_sns_the_body_is_the_envelope(self) -> None:
        (record,) = sqs_event({"n": 1}, sns=True)["Records"]
        envelope = json.loads(record["body"])
        assert envelope["TopicArn"] == TOPIC_ARN
        assert json.loads(envelope["Message"]) == {"n": 1}


class TestLambdaContext:
    """``lambda_context()`` looks like the Python runtime's context."""

    def test_fields(self) -> None:
        context = lambda_context(function_name="orders", timeout_seconds=30)
        assert context.function_name == "orders"
        assert context.invoked_function_arn.endswith(":function:orders")
        assert context.memory_limit_in_mb == "128"
        assert 0 < context.get_remaining_time_in_millis() <= 30_000
