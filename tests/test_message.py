"""Reading a message: raw bodies, SNS envelopes, attributes, and every way they can be malformed."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from worker.config import EnvelopeMode
from worker.errors import MalformedMessageError
from worker.handlers.message import Message, MessageAttribute, parse_message

QUEUE_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/orders"
TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:orders"
SNS_MESSAGE_ID = "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324"
DROP = object()  # a notification() value that removes the field


def sqs_entry(
    body: str,
    *,
    attributes: dict[str, str] | None = None,
    message_attributes: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A ``ReceiveMessage`` entry as botocore returns it."""
    entry: dict[str, Any] = {
        "MessageId": "3f1c8a54-5d2e-4c0a-9a83-2b1f8e6e4b11",
        "ReceiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a",
        "MD5OfBody": "d41d8cd98f00b204e9800998ecf8427e",
        "Body": body,
    }
    if attributes is not None:
        entry["Attributes"] = attributes
    if message_attributes is not None:
        entry["MessageAttributes"] = message_attributes
    return entry


def notification(**changes: object) -> dict[str, Any]:
    """An SNS notification envelope as SNS writes it to SQS; ``DROP`` removes a field."""
    document: dict[str, Any] = {
        "Type": "Notification",
        "MessageId": SNS_MESSAGE_ID,
        "TopicArn": TOPIC_ARN,
        "Subject": "order created",
        "Message": '{"order": 1}',
        "Timestamp": "2024-05-01T12:00:00.000Z",
        "SignatureVersion": "1",
        "Signature": "EXAMPLE==",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000.pem",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
        "MessageAttributes": {"kind": {"Type": "String", "Value": "created"}},
    }
    for name, value in changes.items():
        if value is DROP:
            del document[name]
        else:
            document[name] = value
    return document


def parse(raw: dict[str, Any], envelope: EnvelopeMode = EnvelopeMode.AUTO) -> Message:
    """``parse_message`` on the test queue."""
    return parse_message(raw, queue_url=QUEUE_URL, envelope=envelope)


class TestRawBody:
    """A body that is not an SNS envelope reaches the handler as it was sent."""

    def test_text_body_passes_through(self) -> None:
        message = parse(sqs_entry("hello, world"))
        assert message.body == "hello, world"
        assert message.raw_body == "hello, world"
        assert message.sns is None

    def test_fields_come_from_the_entry(self) -> None:
        raw = sqs_entry('{"order": 1}')
        message = parse(raw)
        assert message.message_id == raw["MessageId"]
        assert message.receipt_handle == raw["ReceiptHandle"]
        assert message.md5_of_body == raw["MD5OfBody"]
        assert message.queue_url == QUEUE_URL

    def test_missing_body_is_empty(self) -> None:
        raw = sqs_entry("")
        del raw["Body"]
        message = parse(raw)
        assert message.body == ""
        assert message.sns is None

    def test_repr_names_id_and_receive_count(self) -> None:
        raw = sqs_entry("x", attributes={"ApproximateReceiveCount": "2"})
        assert repr(parse(raw)) == f"Message(id={raw['MessageId']!r}, receive_count=2)"


class TestSnsEnvelope:
    """An SNS notification envelope is unwrapped: the body is what the producer published."""

    def test_body_is_the_published_message(self) -> None:
        raw_body = json.dumps(notification())
        message = parse(sqs_entry(raw_body))
        assert message.body == '{"order": 1}'
        assert message.raw_body == raw_body
        assert message.json() == {"order": 1}

    def test_notification_fields(self) -> None:
        message = parse(sqs_entry(json.dumps(notification())))
        assert message.sns is not None
        assert message.sns.topic_arn == TOPIC_ARN
        assert message.sns.message_id == SNS_MESSAGE_ID
        assert message.sns.subject == "order created"
        assert message.sns.timestamp == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

    def test_leading_whitespace_is_still_an_envelope(self) -> None:
        message = parse(sqs_entry("\n  " + json.dumps(notification())))
        assert message.sns is not None
        assert message.body == '{"order": 1}'

    @pytest.mark.parametrize("subject", [DROP, None], ids=["absent", "null"])
    def test_subject_is_optional(self, subject: object) -> None:
        message = parse(sqs_entry(json.dumps(notification(Subject=subject))))
        assert message.sns is not None
        assert message.sns.subject is None

    def test_without_message_attributes(self) -> None:
        message = parse(sqs_entry(json.dumps(notification(MessageAttributes=DROP))))
        assert message.sns is not None
        assert dict(message.sns.message_attributes) == {}
        assert dict(message.published_attributes) == {}

    def test_sns_message_attributes(self) -> None:
        attributes = {
            "kind": {"Type": "String", "Value": "created"},
            "tags": {"Type": "String.Array", "Value": '["a", "b"]'},
            "amount": {"Type": "Number", "Value": "42.5"},
            "thumbnail": {"Type": "Binary", "Value": base64.b64encode(b"\x00\xffpng").decode()},
        }
        message = parse(sqs_entry(json.dumps(notification(MessageAttributes=attributes))))
        assert message.sns is not None
        assert dict(message.sns.message_attributes) == {
            "kind": MessageAttribute("String", "created"),
            "tags": MessageAttribute("String.Array", '["a", "b"]'),
            "amount": MessageAttribute("Number", "42.5"),
            "thumbnail": MessageAttribute("Binary", b"\x00\xffpng"),
        }

    def test_message_attributes_are_read_only(self) -> None:
        message = parse(sqs_entry(json.dumps(notification())))
        assert message.sns is not None
        with pytest.raises(TypeError):
            message.sns.message_attributes["kind"] = MessageAttribute("String", "x")  # type: ignore[index]


class TestPublishedAttributes:
    """``published_attributes`` are the producer's, whether SNS or SQS carried them."""

    def test_sns_attributes_win_when_enveloped(self) -> None:
        raw = sqs_entry(
            json.dumps(notification()),
            message_attributes={"sqs_only": {"DataType": "String", "StringValue": "sqs"}},
        )
        message = parse(raw)
        assert dict(message.published_attributes) == {"kind": MessageAttribute("String", "created")}
        assert dict(message.message_attributes) == {"sqs_only": MessageAttribute("String", "sqs")}

    def test_sqs_attributes_without_envelope(self) -> None:
        raw = sqs_entry(
            '{"order": 1}',
            message_attributes={"kind": {"DataType": "String", "StringValue": "created"}},
        )
        message = parse(raw)
        assert dict(message.published_attributes) == {"kind": MessageAttribute("String", "created")}


class TestSqsAttributes:
    """SQS message attributes keep their data type; Binary values stay bytes."""

    def test_each_data_type(self) -> None:
        raw = sqs_entry(
            "x",
            message_attributes={
                "kind": {"DataType": "String", "StringValue": "created"},
                "amount": {"DataType": "Number", "StringValue": "7"},
                "count": {"DataType": "Number.int", "StringValue": "3"},
                "blob": {"DataType": "Binary", "BinaryValue": b"\x01\x02"},
                "image": {"DataType": "Binary.png", "BinaryValue": b"\x89PNG"},
            },
        )
        assert dict(parse(raw).message_attributes) == {
            "kind": MessageAttribute("String", "created"),
            "amount": MessageAttribute("Number", "7"),
            "count": MessageAttribute("Number.int", "3"),
            "blob": MessageAttribute("Binary", b"\x01\x02"),
            "image": MessageAttribute("Binary.png", b"\x89PNG"),
        }

    @pytest.mark.parametrize("attributes", [None, {}], ids=["absent", "empty"])
    def test_no_attributes(self, attributes: dict[str, dict[str, Any]] | None) -> None:
        message = parse(sqs_entry("x", message_attributes=attributes))
        assert dict(message.message_attributes) == {}


class TestJson:
    """``json()`` decodes the body once, and a body that is not JSON is malformed."""

    def test_decodes_the_body(self) -> None:
        message = parse(sqs_entry('{"order": 1, "items": [1, 2]}'))
        assert message.json() == {"order": 1, "items": [1, 2]}

    def test_result_is_cached(self) -> None:
        message = parse(sqs_entry('{"order": 1}'))
        first = message.json()
        assert message.json() is first

    def test_json_null_is_cached_too(self) -> None:
        message = parse(sqs_entry("null"))
        assert message.json() is None
        assert message.json() is None

    def test_not_json(self) -> None:
        message = parse(sqs_entry("hello, world"))
        with pytest.raises(MalformedMessageError, match="message body is not JSON"):
            message.json()

    def test_not_json_raises_every_time(self) -> None:
        message = parse(sqs_entry("{broken"))
        for _ in range(2):
            with pytest.raises(MalformedMessageError, match="not JSON"):
                message.json()

    def test_deeply_nested_body(self) -> None:
        depth = 100_000
        message = parse(sqs_entry("[" * depth + "]" * depth))
        with pytest.raises(MalformedMessageError, match="message body is not JSON"):
            message.json()


class TestSystemAttributes:
    """Receive count, sent time and group id come from the SQS system attributes."""

    def test_receive_count(self) -> None:
        message = parse(sqs_entry("x", attributes={"ApproximateReceiveCount": "3"}))
        assert message.receive_count == 3

    def test_receive_count_defaults_to_one(self) -> None:
        assert parse(sqs_entry("x")).receive_count == 1

    def test_sent_at(self) -> None:
        message = parse(sqs_entry("x", attributes={"SentTimestamp": "1714564800250"}))
        assert message.sent_at == datetime(2024, 5, 1, 12, 0, 0, 250_000, tzinfo=UTC)

    def test_sent_at_absent(self) -> None:
        assert parse(sqs_entry("x")).sent_at is None

    def test_group_id(self) -> None:
        message = parse(sqs_entry("x", attributes={"MessageGroupId": "customer-7"}))
        assert message.group_id == "customer-7"

    def test_group_id_absent(self) -> None:
        assert parse(sqs_entry("x")).group_id is None


class TestEnvelopeModes:
    """``auto`` unwraps only real notifications, ``sns`` requires them, ``raw`` never unwraps."""

    @pytest.mark.parametrize(
        "body",
        [
            pytest.param('{"Type": "OrderCreated", "TopicArn": "orders"}', id="other-type"),
            pytest.param('{"Type": "OrderCreated", "Message": "x"}', id="no-topic-arn"),
            pytest.param('{"TopicArn": "orders", "Message": "x"}', id="no-type"),
            pytest.param('[{"Type": "Notification", "TopicArn": "orders"}]', id="json-list"),
            pytest.param("Type TopicArn Notification", id="text"),
            # A payload of its own with a Type field: SNS always sends TopicArn.
            pytest.param('{"Type": "Notification", "userId": 42}', id="payload-typed-notification"),
            pytest.param(
                '{"Type": "Notification", "Message": {"TopicArn": "nested"}}', id="nested-topic-arn"
            ),
            pytest.param('{"Type": "SubscriptionConfirmation", "step": 2}', id="payload-typed-sub"),
        ],
    )
    def test_auto_passes_other_bodies_through(self, body: str) -> None:
        message = parse(sqs_entry(body), EnvelopeMode.AUTO)
        assert message.body == body
        assert message.sns is None

    def test_auto_passes_through_a_body_whose_type_is_an_object(self) -> None:
        body = '{"Type": {"code": "order"}, "TopicArn": "orders"}'
        message = parse(sqs_entry(body), EnvelopeMode.AUTO)
        assert message.body == body
        assert message.sns is None

    def test_auto_unwraps_a_notification(self) -> None:
        message = parse(sqs_entry(json.dumps(notification())), EnvelopeMode.AUTO)
        assert message.sns is not None
        assert message.body == '{"order": 1}'

    def test_sns_unwraps_a_notification(self) -> None:
        message = parse(sqs_entry(json.dumps(notification())), EnvelopeMode.SNS)
        assert message.sns is not None
        assert message.body == '{"order": 1}'

    @pytest.mark.parametrize(
        "body",
        [
            pytest.param('{"order": 1}', id="json-object"),
            pytest.param('{"Type": "OrderCreated", "TopicArn": "orders"}', id="other-type"),
            pytest.param("[1, 2]", id="json-list"),
        ],
    )
    def test_sns_rejects_a_json_body_that_is_not_a_notification(self, body: str) -> None:
        with pytest.raises(MalformedMessageError, match="not an SNS notification envelope"):
            parse(sqs_entry(body), EnvelopeMode.SNS)

    def test_sns_rejects_a_text_body(self) -> None:
        with pytest.raises(MalformedMessageError, match="SNS envelope is not valid JSON"):
            parse(sqs_entry("hello, world"), EnvelopeMode.SNS)

    def test_sns_rejects_a_body_whose_type_is_a_list(self) -> None:
        with pytest.raises(MalformedMessageError, match="not an SNS notification envelope"):
            parse(sqs_entry('{"Type": ["Notification"], "TopicArn": "orders"}'), EnvelopeMode.SNS)

    def test_raw_leaves_an_envelope_alone(self) -> None:
        raw_body = json.dumps(notification())
        message = parse(sqs_entry(raw_body), EnvelopeMode.RAW)
        assert message.body == raw_body
        assert message.sns is None
        assert message.json()["TopicArn"] == TOPIC_ARN

    def test_raw_does_not_read_a_broken_envelope(self) -> None:
        body = '{"Type": "Notification", "TopicArn": "orders", "Message": '
        message = parse(sqs_entry(body), EnvelopeMode.RAW)
        assert message.body == body

    def test_raw_passes_a_subscription_confirmation_through(self) -> None:
        body = json.dumps(notification(Type="SubscriptionConfirmation"))
        assert parse(sqs_entry(body), EnvelopeMode.RAW).body == body


class TestMalformedEnvelope:
    """A body that claims to be an SNS envelope but cannot be read is malformed."""

    @pytest.mark.parametrize(
        "body",
        [
            pytest.param(
                '{"Type": "Notification", "TopicArn": "orders", "Message": ', id="truncated"
            ),
            pytest.param(
                '{"Type": "Notification", "TopicArn": "orders" "Message": "x"}',
                id="missing-comma",
            ),
            pytest.param('{"Type": "Notification", "TopicArn": "orders",}', id="trailing-comma"),
            pytest.param(
                '{"Type": "Notification", "TopicArn": "orders", "Message": '
                + "[" * 100_000
                + "]" * 100_000
                + "}",
                id="deeply-nested",
            ),
        ],
    )
    def test_invalid_json(self, body: str) -> None:
        with pytest.raises(MalformedMessageError, match="SNS envelope is not valid JSON"):
            parse(sqs_entry(body))

    @pytest.mark.parametrize(
        ("changes", "match"),
        [
            pytest.param(
                {"Message": 42}, "field Message is missing or not a string", id="message-number"
            ),
            pytest.param(
                {"Message": {"order": 1}},
                "field Message is missing or not a string",
                id="message-object",
            ),
            pytest.param(
                {"Message": None}, "field Message is missing or not a string", id="message-null"
            ),
            pytest.param(
                {"Message": DROP}, "field Message is missing or not a string", id="message-missing"
            ),
            pytest.param(
                {"MessageId": DROP},
                "field MessageId is missing or not a string",
                id="message-id-missing",
            ),
            pytest.param(
                {"Timestamp": DROP},
                "field Timestamp is missing or not a string",
                id="timestamp-missing",
            ),
            pytest.param(
                {"Timestamp": "yesterday"},
                "Timestamp is not an ISO 8601 date",
                id="timestamp-not-a-date",
            ),
            pytest.param({"Subject": 7}, "field Subject is not a string", id="subject-number"),
            pytest.param(
                {"MessageAttributes": [{"Type": "String"}]},
                "MessageAttributes is not an object",
                id="attributes-list",
            ),
            pytest.param(
                {"MessageAttributes": "kind=created"},
                "MessageAttributes is not an object",
                id="attributes-string",
            ),
            pytest.param(
                {"MessageAttributes": {"kind": "created"}},
                "attribute 'kind' is not an object",
                id="attribute-not-object",
            ),
            pytest.param(
                {"MessageAttributes": {"kind": {"Type": "Integer", "Value": "1"}}},
                "attribute 'kind' has a Type that is not Binary, Number, String, String.Array",
                id="attribute-unknown-type",
            ),
            pytest.param(
                {"MessageAttributes": {"kind": {"Value": "created"}}},
                "attribute 'kind' has a Type that is not Binary",
                id="attribute-no-type",
            ),
            pytest.param(
                {"MessageAttributes": {"amount": {"Type": "Number", "Value": 42}}},
                "attribute 'amount' has no text value",
                id="attribute-value-number",
            ),
            pytest.param(
                {"MessageAttributes": {"kind": {"Type": "String"}}},
                "attribute 'kind' has no text value",
                id="attribute-value-missing",
            ),
            pytest.param(
                {"MessageAttributes": {"blob": {"Type": "Binary", "Value": "not base64!"}}},
                "attribute 'blob' is not base64",
                id="attribute-binary-not-base64",
            ),
            pytest.param(
                {"MessageAttributes": {"blob": {"Type": "Binary", "Value": "AAE"}}},
                "attribute 'blob' is not base64",
                id="attribute-binary-bad-padding",
            ),
        ],
    )
    def test_bad_field(self, changes: dict[str, object], match: str) -> None:
        with pytest.raises(MalformedMessageError, match=match):
            parse(sqs_entry(json.dumps(notification(**changes))))

    def test_topic_arn_missing_in_sns_mode(self) -> None:
        # In auto mode a body without "TopicArn" is not taken for an envelope at all.
        body = json.dumps(notification(TopicArn=DROP))
        with pytest.raises(
            MalformedMessageError, match="field TopicArn is missing or not a string"
        ):
            parse(sqs_entry(body), EnvelopeMode.SNS)

    def test_topic_arn_not_a_string(self) -> None:
        body = json.dumps(notification(TopicArn=None))
        with pytest.raises(
            MalformedMessageError, match="field TopicArn is missing or not a string"
        ):
            parse(sqs_entry(body))

    @pytest.mark.parametrize("kind", ["SubscriptionConfirmation", "UnsubscribeConfirmation"])
    @pytest.mark.parametrize("mode", [EnvelopeMode.AUTO, EnvelopeMode.SNS])
    def test_confirmation_is_not_a_notification(self, kind: str, mode: EnvelopeMode) -> None:
        body = json.dumps(notification(Type=kind, SubscribeURL="https://sns.example/confirm"))
        with pytest.raises(MalformedMessageError, match=f"SNS {kind} is not a notification"):
            parse(sqs_entry(body), mode)


class TestMalformedSqsAttributes:
    """An SQS message attribute that cannot be read is malformed."""

    @pytest.mark.parametrize(
        ("attribute", "match"),
        [
            pytest.param(
                {"DataType": "Boolean", "StringValue": "true"},
                "attribute 'a' has type 'Boolean'",
                id="unknown-data-type",
            ),
            pytest.param({"StringValue": "x"}, "attribute 'a' has type None", id="no-data-type"),
            pytest.param(
                {"DataType": "String"}, "attribute 'a' has no String value", id="string-no-value"
            ),
            pytest.param(
                {"DataType": "Number"}, "attribute 'a' has no Number value", id="number-no-value"
            ),
            pytest.param(
                {"DataType": "Binary", "StringValue": "x"},
                "attribute 'a' has no Binary value",
                id="binary-no-value",
            ),
        ],
    )
    def test_bad_attribute(self, attribute: dict[str, Any], match: str) -> None:
        with pytest.raises(MalformedMessageError, match=match):
            parse(sqs_entry("x", message_attributes={"a": attribute}))
