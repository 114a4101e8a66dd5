"""The Lambda side: the SQS event record, the context object, and the batch response rules."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from worker.errors import InvalidLambdaResponseError
from worker.lambda_.env import FunctionIdentity
from worker.lambda_.event import LambdaContext, failed_message_ids, sqs_event, sqs_record

QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:orders"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:orders"
REGION = "us-east-1"
BATCH = ["id-1", "id-2", "id-3"]


def receive_entry(body: str = '{"order": 1}', **extra: Any) -> dict[str, Any]:
    """A ``ReceiveMessage`` entry as botocore returns it."""
    return {
        "MessageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
        "ReceiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a",
        "MD5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
        "Body": body,
        "Attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1545082649183",
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": "1545082649185",
        },
        **extra,
    }


def context(deadline: float | None = None, **overrides: Any) -> LambdaContext:
    """A context for the ``orders`` function, ten seconds from its deadline unless told."""
    values: dict[str, Any] = {
        "function_name": "orders",
        "invoked_function_arn": FUNCTION_ARN,
        "memory_limit_in_mb": 512,
        "deadline": time.monotonic() + 10 if deadline is None else deadline,
        **overrides,
    }
    return LambdaContext(**values)


class TestSqsRecord:
    """A record has exactly the keys, casing and encodings of Lambda's SQS event source."""

    def test_record_without_attributes(self) -> None:
        raw = receive_entry()
        assert sqs_record(raw, queue_arn=QUEUE_ARN, region=REGION) == {
            "messageId": raw["MessageId"],
            "receiptHandle": raw["ReceiptHandle"],
            "body": '{"order": 1}',
            "attributes": {
                "ApproximateReceiveCount": "1",
                "SentTimestamp": "1545082649183",
                "SenderId": "AIDAIENQZJOLO23YVJ4VO",
                "ApproximateFirstReceiveTimestamp": "1545082649185",
            },
            "messageAttributes": {},
            "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
            "eventSource": "aws:sqs",
            "eventSourceARN": QUEUE_ARN,
            "awsRegion": REGION,
        }

    def test_message_attributes(self) -> None:
        raw = receive_entry(
            MessageAttributes={
                "kind": {"DataType": "String", "StringValue": "created"},
                "amount": {"DataType": "Number", "StringValue": "42"},
                "blob": {"DataType": "Binary", "BinaryValue": b"\x00\xffpng"},
            },
            MD5OfMessageAttributes="5ee1ef0e6ab4e3d3bfe24a3b0e0b6d23",
        )
        record = sqs_record(raw, queue_arn=QUEUE_ARN, region=REGION)
        assert record["messageAttributes"] == {
            "kind": {
                "stringValue": "created",
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": "String",
            },
            "amount": {
                "stringValue": "42",
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": "Number",
            },
            "blob": {
                "binaryValue": "AP9wbmc=",
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": "Binary",
            },
        }
        assert record["md5OfMessageAttributes"] == "5ee1ef0e6ab4e3d3bfe24a3b0e0b6d23"

    def test_md5_of_message_attributes_only_when_present(self) -> None:
        record = sqs_record(receive_entry(), queue_arn=QUEUE_ARN, region=REGION)
        assert "md5OfMessageAttributes" not in record

    def test_event_is_json_serialisable(self) -> None:
        raw = receive_entry(
            MessageAttributes={"blob": {"DataType": "Binary", "BinaryValue": b"\x01"}}
        )
        event = sqs_event([sqs_record(raw, queue_arn=QUEUE_ARN, region=REGION)])
        assert json.loads(json.dumps(event)) == event

    def test_sns_envelope_stays_in_the_body(self) -> None:
        envelope = json.dumps(
            {
                "Type": "Notification",
                "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
                "TopicArn": "arn:aws:sns:us-east-1:123456789012:orders",
                "Message": '{"order": 1}',
                "Timestamp": "2024-05-01T12:00:00.000Z",
            }
        )
        record = sqs_record(receive_entry(envelope), queue_arn=QUEUE_ARN, region=REGION)
        assert record["body"] == envelope

    def test_attributes_are_a_copy(self) -> None:
        raw = receive_entry()
        record = sqs_record(raw, queue_arn=QUEUE_ARN, region=REGION)
        record["attributes"]["ApproximateReceiveCount"] = "99"
        assert raw["Attributes"]["ApproximateReceiveCount"] == "1"

    def test_missing_optional_fields(self) -> None:
        raw = {"MessageId": "m", "ReceiptHandle": "r"}
        record = sqs_record(raw, queue_arn=QUEUE_ARN, region=REGION)
        assert record["body"] == ""
        assert record["attributes"] == {}
        assert record["messageAttributes"] == {}
        assert record["md5OfBody"] == ""

    def test_event_wraps_records(self) -> None:
        records = [
            sqs_record(receive_entry(str(n)), queue_arn=QUEUE_ARN, region=REGION) for n in range(3)
        ]
        event = sqs_event(iter(records))
        assert list(event) == ["Records"]
        assert [record["body"] for record in event["Records"]] == ["0", "1", "2"]


class TestLambdaContext:
    """The context has the Python runtime's attribute names and types."""

    def test_attributes(self) -> None:
        ctx = context()
        assert ctx.function_name == "orders"
        assert ctx.function_version == "$LATEST"
        assert ctx.invoked_function_arn == FUNCTION_ARN
        assert ctx.memory_limit_in_mb == "512"
        assert ctx.log_group_name == "/aws/lambda/orders"
        assert ctx.log_stream_name == "worker"
        # As the runtime's: an identity whose ids are None outside Cognito, no client context.
        assert ctx.identity.cognito_identity_id is None
        assert ctx.identity.cognito_identity_pool_id is None
        assert ctx.client_context is None

    def test_log_writes_to_standard_output(self, capsys: pytest.CaptureFixture[str]) -> None:
        context().log("order 7 handled\n")
        assert capsys.readouterr().out == "order 7 handled\n"

    def test_explicit_names(self) -> None:
        ctx = context(function_version="7", log_group_name="/custom", log_stream_name="pod-1")
        assert ctx.function_version == "7"
        assert ctx.log_group_name == "/custom"
        assert ctx.log_stream_name == "pod-1"

    def test_memory_limit_concatenates_like_the_runtime(self) -> None:
        assert "memory: " + context().memory_limit_in_mb + " MB" == "memory: 512 MB"

    def test_request_id_is_a_uuid_unique_per_context(self) -> None:
        ids = {context().aws_request_id for _ in range(100)}
        assert len(ids) == 100
        for request_id in ids:
            assert str(uuid.UUID(request_id)) == request_id

    def test_remaining_time_starts_at_the_budget(self) -> None:
        remaining = context(deadline=time.monotonic() + 10).get_remaining_time_in_millis()
        assert 9_000 < remaining <= 10_000

    def test_remaining_time_counts_down(self) -> None:
        ctx = context(deadline=time.monotonic() + 10)
        first = ctx.get_remaining_time_in_millis()
        time.sleep(0.02)
        second = ctx.get_remaining_time_in_millis()
        assert second <= first - 20

    def test_remaining_time_is_zero_after_the_deadline(self) -> None:
        assert context(deadline=time.monotonic() - 5).get_remaining_time_in_millis() == 0

    def test_remaining_time_is_an_int(self) -> None:
        assert type(context().get_remaining_time_in_millis()) is int

    def test_repr(self) -> None:
        ctx = context()
        assert repr(ctx) == (
            f"LambdaContext(function_name='orders', aws_request_id={ctx.aws_request_id!r})"
        )


class TestFailedMessageIds:
    """ReportBatchItemFailures: which records failed, or whether the whole batch did."""

    @pytest.mark.parametrize(
        "response",
        [
            pytest.param(None, id="none"),
            pytest.param({}, id="empty-object"),
            pytest.param({"batchItemFailures": None}, id="null-failures"),
            pytest.param({"batchItemFailures": []}, id="empty-failures"),
            pytest.param({"statusCode": 200}, id="status-code-only"),
        ],
    )
    def test_success(self, response: Any) -> None:
        assert failed_message_ids(response, BATCH, report_batch_item_failures=True) == set()

    @pytest.mark.parametrize(
        ("response", "failed"),
        [
            pytest.param({"batchItemFailures": [{"itemIdentifier": "id-2"}]}, {"id-2"}, id="one"),
            pytest.param(
                {"batchItemFailures": [{"itemIdentifier": "id-1"}, {"itemIdentifier": "id-3"}]},
                {"id-1", "id-3"},
                id="two",
            ),
            pytest.param(
                {"batchItemFailures": [{"itemIdentifier": "id-1"}, {"itemIdentifier": "id-1"}]},
                {"id-1"},
                id="repeated",
            ),
            pytest.param(
                {"batchItemFailures": [{"itemIdentifier": i} for i in BATCH]},
                set(BATCH),
                id="all",
            ),
            pytest.param(
                {"batchItemFailures": [{"itemIdentifier": "id-2", "reason": "x"}]},
                {"id-2"},
                id="extra-keys",
            ),
        ],
    )
    def test_partial_failure(self, response: Any, failed: set[str]) -> None:
        assert failed_message_ids(response, BATCH, report_batch_item_failures=True) == failed

    @pytest.mark.parametrize(
        ("response", "match"),
        [
            pytest.param("ok", "response is a str, not an object", id="string"),
            pytest.param("", "response is a str, not an object", id="empty-string"),
            pytest.param([{"itemIdentifier": "id-1"}], "response is a list", id="list"),
            pytest.param(200, "response is a int", id="number"),
            pytest.param(True, "response is a bool", id="bool"),
            pytest.param({"batchItemFailures": "id-1"}, "not a list", id="failures-string"),
            pytest.param(
                {"batchItemFailures": {"itemIdentifier": "id-1"}},
                "not a list",
                id="failures-object",
            ),
            pytest.param(
                {"batchItemFailures": ["id-1"]}, "has no itemIdentifier", id="entry-string"
            ),
            pytest.param({"batchItemFailures": [None]}, "has no itemIdentifier", id="entry-null"),
            pytest.param({"batchItemFailures": [{}]}, "has no itemIdentifier", id="id-missing"),
            pytest.param(
                {"batchItemFailures": [{"itemIdentifier": None}]},
                "has no itemIdentifier",
                id="id-null",
            ),
            pytest.param(
                {"batchItemFailures": [{"itemIdentifier": ""}]},
                "has no itemIdentifier",
                id="id-empty",
            ),
            pytest.param(
                {"batchItemFailures": [{"itemIdentifier": 1}]},
                "has no itemIdentifier",
                id="id-number",
            ),
            pytest.param(
                {"batchItemFailures": [{"ItemIdentifier": "id-1"}]},
                "has no itemIdentifier",
                id="id-wrong-key-case",
            ),
            pytest.param(
                {"batchItemFailures": [{"itemIdentifier": "id-9"}]},
                "'id-9', which is not in the batch",
                id="id-not-in-batch",
            ),
            pytest.param(
                {"batchItemFailures": [{"itemIdentifier": "id-1"}, {"itemIdentifier": "id-9"}]},
                "'id-9', which is not in the batch",
                id="one-id-not-in-batch",
            ),
        ],
    )
    def test_whole_batch_fails(self, response: Any, match: str) -> None:
        with pytest.raises(InvalidLambdaResponseError, match=match):
            failed_message_ids(response, BATCH, report_batch_item_failures=True)

    @pytest.mark.parametrize(
        "response",
        [
            pytest.param({"batchItemFailures": [{"itemIdentifier": "id-1"}]}, id="valid"),
            pytest.param("ok", id="string"),
            pytest.param({"batchItemFailures": [{"itemIdentifier": "id-9"}]}, id="unknown-id"),
        ],
    )
    def test_ignored_without_report_batch_item_failures(self, response: Any) -> None:
        assert failed_message_ids(response, BATCH, report_batch_item_failures=False) == set()


class TestFunctionIdentity:
    """The ARN a handler believes it was invoked by is in its queue's partition."""

    @pytest.mark.parametrize(
        ("partition", "region"),
        [("aws", "us-east-1"), ("aws-cn", "cn-north-1"), ("aws-us-gov", "us-gov-west-1")],
    )
    def test_function_arn(self, partition: str, region: str) -> None:
        identity = FunctionIdentity(
            function_name="orders",
            memory_limit_in_mb=512,
            region=region,
            account="123456789012",
            partition=partition,
        )
        assert identity.function_arn == (
            f"arn:{partition}:lambda:{region}:123456789012:function:orders"
        )
