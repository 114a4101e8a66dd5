"""Property-based tests (hypothesis) of what reads untrusted input: for any input, envelope
parsing and the Lambda event builder either succeed or raise the documented error type."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from worker.config import EnvelopeMode
from worker.errors import InvalidLambdaResponseError, MalformedMessageError
from worker.handlers.message import Message, MessageAttribute, parse_message
from worker.lambda_.event import failed_message_ids, sqs_record

QUEUE_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/orders"
QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:orders"
TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:orders"

# Modest, so that the suite stays fast; no example database left in the work tree.
PROPERTIES = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

LAMBDA_RECORD_KEYS = {
    "messageId",
    "receiptHandle",
    "body",
    "attributes",
    "messageAttributes",
    "md5OfBody",
    "eventSource",
    "eventSourceARN",
    "awsRegion",
}

# -- strategies ----------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)

# What an SNS envelope's fields hold: usually the right type, sometimes anything.
sns_attribute = st.fixed_dictionaries(
    {},
    optional={
        "Type": st.sampled_from(["String", "String.Array", "Number", "Binary"]) | json_values,
        "Value": st.text(max_size=20)
        | st.binary(max_size=20).map(lambda raw: base64.b64encode(raw).decode())
        | json_values,
    },
)
envelopes = st.fixed_dictionaries(
    {"Type": st.just("Notification") | st.sampled_from(["SubscriptionConfirmation", "Other"])},
    optional={
        "MessageId": st.uuids().map(str) | json_values,
        "TopicArn": st.just(TOPIC_ARN) | json_values,
        "Message": st.text(max_size=40) | json_values,
        "Timestamp": st.just("2026-11-29T00:00:00.000Z") | st.text(max_size=30) | json_values,
        "Subject": st.none() | st.text(max_size=20) | json_values,
        "MessageAttributes": st.dictionaries(st.text(max_size=8), sns_attribute, max_size=4)
        | json_values,
    },
)


def _mangled(document: dict[str, Any], cut: int, insert: str) -> str:
    text = json.dumps(document)
    cut %= len(text) + 1
    return text[:cut] + insert + text[cut:]


bodies = (
    st.text()
    | json_values.map(json.dumps)
    | envelopes.map(json.dumps)
    # Envelopes truncated or with something spliced in, as a broken producer writes them.
    | st.builds(_mangled, envelopes, st.integers(min_value=0), st.text(max_size=5))
)

sqs_attribute = st.one_of(
    st.fixed_dictionaries(
        {
            "DataType": st.sampled_from(["String", "Number", "String.custom", "Number.float"]),
            "StringValue": st.text(max_size=20),
        }
    ),
    st.fixed_dictionaries(
        {
            "DataType": st.sampled_from(["Binary", "Binary.jpeg"]),
            "BinaryValue": st.binary(max_size=20),
        }
    ),
    # Shapes SQS would not send, should a proxy or a test double ever do so.
    st.fixed_dictionaries(
        {"DataType": st.text(max_size=10)},
        optional={"StringValue": st.text(max_size=5), "BinaryValue": st.binary(max_size=5)},
    ),
)
system_attributes = st.dictionaries(
    st.sampled_from(
        [
            "ApproximateReceiveCount",
            "SentTimestamp",
            "SenderId",
            "ApproximateFirstReceiveTimestamp",
            "MessageGroupId",
        ]
    ),
    st.integers(min_value=0, max_value=2**40).map(str) | st.text(max_size=10),
)
received = st.fixed_dictionaries(
    {
        "MessageId": st.uuids().map(str),
        "ReceiptHandle": st.text(min_size=1, max_size=40),
        "Body": bodies,
    },
    optional={
        "MD5OfBody": st.text(max_size=32),
        "Attributes": system_attributes,
        "MessageAttributes": st.dictionaries(st.text(max_size=10), sqs_attribute, max_size=4),
        "MD5OfMessageAttributes": st.text(max_size=32),
    },
)

# Anything a Lambda handler might return, JSON or not.
responses = st.one_of(
    json_values,
    st.builds(object),
    st.sets(st.integers(), max_size=3),
    st.fixed_dictionaries(
        {
            "batchItemFailures": st.none()
            | st.lists(
                st.fixed_dictionaries({}, optional={"itemIdentifier": json_values})
                | st.fixed_dictionaries({"itemIdentifier": st.sampled_from(["m-1", "m-2"])})
                | json_values,
                max_size=4,
            ).map(lambda entries: entries if len(entries) % 2 else tuple(entries))
            | json_values
        }
    ),
)


def parse(raw: dict[str, Any], mode: EnvelopeMode) -> Message:
    return parse_message(raw, queue_url=QUEUE_URL, envelope=mode)


# -- the properties ------------------------------------------------------------------------------


class TestParseMessage:
    """Any body, any attributes shaped like botocore's: a Message or MalformedMessageError."""

    @PROPERTIES
    @given(raw=received, mode=st.sampled_from(EnvelopeMode))
    @example(
        raw={"MessageId": "m", "ReceiptHandle": "r", "Body": "[" * 100_000},
        mode=EnvelopeMode.SNS,
    )
    def test_a_message_or_the_documented_error(
        self, raw: dict[str, Any], mode: EnvelopeMode
    ) -> None:
        try:
            message = parse(raw, mode)
        except MalformedMessageError:
            return
        assert message.raw_body == raw["Body"]
        assert isinstance(message.body, str)
        assert message.message_id == raw["MessageId"]
        if message.sns is None:
            assert message.body == raw["Body"]
        else:
            assert mode is not EnvelopeMode.RAW
            assert message.published_attributes is message.sns.message_attributes
        for attribute in message.message_attributes.values():
            assert isinstance(attribute, MessageAttribute)
            assert isinstance(attribute.value, bytes) == attribute.data_type.startswith("Binary")

    @PROPERTIES
    @given(raw=received)
    def test_raw_mode_never_reads_the_body(self, raw: dict[str, Any]) -> None:
        try:
            message = parse(raw, EnvelopeMode.RAW)
        except MalformedMessageError:
            # Only the SQS attributes can be malformed when the body is left alone.
            parse({**raw, "MessageAttributes": {}}, EnvelopeMode.RAW)
            return
        assert message.sns is None
        assert message.body == raw["Body"]

    @PROPERTIES
    @given(body=bodies)
    def test_json_decodes_or_raises_the_documented_error(self, body: str) -> None:
        message = parse({"MessageId": "m", "ReceiptHandle": "r", "Body": body}, EnvelopeMode.RAW)
        try:
            decoded = message.json()
        except MalformedMessageError:
            return
        assert message.json() is decoded  # cached

    @pytest.mark.parametrize("where", ["envelope", "json"])
    def test_an_integer_past_the_digit_limit_is_malformed(self, where: str) -> None:
        huge = "7" * 5000
        if where == "envelope":
            body = json.dumps({"Type": "Notification", "TopicArn": TOPIC_ARN})[:-1]
            with pytest.raises(MalformedMessageError):
                parse(
                    {"MessageId": "m", "ReceiptHandle": "r", "Body": f'{body}, "n": {huge}}}'},
                    EnvelopeMode.AUTO,
                )
        else:
            message = parse(
                {"MessageId": "m", "ReceiptHandle": "r", "Body": huge}, EnvelopeMode.RAW
            )
            with pytest.raises(MalformedMessageError):
                message.json()


class TestLambdaEvent:
    """Any botocore-shaped message makes a record with Lambda's keys; any handler response is a
    set of failed ids from the batch, or InvalidLambdaResponseError."""

    @PROPERTIES
    @given(raw=received)
    def test_a_record_with_lambdas_keys(self, raw: dict[str, Any]) -> None:
        record = sqs_record(raw, queue_arn=QUEUE_ARN, region="us-east-1")
        expected = LAMBDA_RECORD_KEYS | (
            {"md5OfMessageAttributes"} if "MD5OfMessageAttributes" in raw else set()
        )
        assert set(record) == expected
        assert record["body"] == raw["Body"]
        assert record["eventSource"] == "aws:sqs"
        assert set(record["messageAttributes"]) == set(raw.get("MessageAttributes") or {})
        for name, attribute in record["messageAttributes"].items():
            original = raw["MessageAttributes"][name]
            if "BinaryValue" in original:
                assert base64.b64decode(attribute["binaryValue"]) == original["BinaryValue"]
        json.dumps(record)  # what a Lambda handler gets is JSON, as on Lambda

    @PROPERTIES
    @given(response=responses, report=st.booleans())
    def test_failed_ids_or_the_documented_error(self, response: Any, report: bool) -> None:
        batch = ["m-1", "m-2", "m-3"]
        try:
            failed = failed_message_ids(response, batch, report_batch_item_failures=report)
        except InvalidLambdaResponseError:
            assert report  # without ReportBatchItemFailures the response is ignored
            return
        assert isinstance(failed, set)
        assert failed <= set(batch)
        if not report:
            assert failed == set()
