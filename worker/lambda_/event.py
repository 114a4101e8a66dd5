"""What an unmodified Lambda handler expects: the SQS event, the context, and the response rules.

The event is built exactly as Lambda's SQS event source mapping builds it (camel-cased record
fields, system attributes as strings, binary attributes base64-encoded, the body untouched: an SNS
envelope stays in ``body`` for the function to read, as on Lambda). The response is interpreted
with ReportBatchItemFailures semantics, including the cases Lambda treats as a failed batch.
"""

from __future__ import annotations

import base64
import json
import sys
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from worker.config import BatchItemFailures
from worker.errors import InvalidLambdaResponseError


def sqs_record(raw: Mapping[str, Any], *, queue_arn: str, region: str) -> dict[str, Any]:
    """One ``Records`` entry, from a ``ReceiveMessage`` entry."""
    record: dict[str, Any] = {
        "messageId": raw["MessageId"],
        "receiptHandle": raw["ReceiptHandle"],
        "body": raw.get("Body", ""),
        "attributes": dict(raw.get("Attributes") or {}),
        "messageAttributes": {
            name: _lambda_attribute(attribute)
            for name, attribute in (raw.get("MessageAttributes") or {}).items()
        },
        "md5OfBody": raw.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }
    if "MD5OfMessageAttributes" in raw:
        record["md5OfMessageAttributes"] = raw["MD5OfMessageAttributes"]
    return record


def sqs_event(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The event passed to the handler."""
    return {"Records": list(records)}


def _lambda_attribute(attribute: Mapping[str, Any]) -> dict[str, Any]:
    converted: dict[str, Any] = {
        "stringListValues": [],
        "binaryListValues": [],
        "dataType": attribute.get("DataType", "String"),
    }
    if "StringValue" in attribute:
        converted["stringValue"] = attribute["StringValue"]
    if "BinaryValue" in attribute:
        converted["binaryValue"] = base64.b64encode(attribute["BinaryValue"]).decode("ascii")
    return converted


class CognitoIdentity:
    """``context.identity`` of the Python runtime: both ids are ``None`` outside Cognito."""

    __slots__ = ("cognito_identity_id", "cognito_identity_pool_id")

    def __init__(self) -> None:
        self.cognito_identity_id: str | None = None
        self.cognito_identity_pool_id: str | None = None

    def __repr__(self) -> str:
        return "CognitoIdentity(cognito_identity_id=None, cognito_identity_pool_id=None)"


class LambdaContext:
    """The context object of the Python Lambda runtime, with the same attribute names and types.

    ``memory_limit_in_mb`` is a string, as in the real runtime, because functions concatenate it.
    ``get_remaining_time_in_millis`` counts down the worker's processing budget.
    """

    def __init__(
        self,
        *,
        function_name: str,
        invoked_function_arn: str,
        memory_limit_in_mb: int,
        deadline: float,
        function_version: str = "$LATEST",
        log_group_name: str | None = None,
        log_stream_name: str = "worker",
    ) -> None:
        self.function_name = function_name
        self.function_version = function_version
        self.invoked_function_arn = invoked_function_arn
        self.memory_limit_in_mb = str(memory_limit_in_mb)
        self.aws_request_id = str(uuid.uuid4())  # one per invocation, as on Lambda
        self.log_group_name = log_group_name or f"/aws/lambda/{function_name}"
        self.log_stream_name = log_stream_name
        self.identity = CognitoIdentity()  # the runtime's, empty outside Cognito-signed calls
        self.client_context: Any = None
        self.tenant_id: str | None = None
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the worker gives up on this invocation."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))

    def log(self, msg: object) -> None:
        """Write ``msg`` to standard output, as the runtime does without a log sink."""
        sys.stdout.write(str(msg))

    def __repr__(self) -> str:
        return (
            f"LambdaContext(function_name={self.function_name!r}, "
            f"aws_request_id={self.aws_request_id!r})"
        )


def failed_message_ids(
    response: Any,
    message_ids: Sequence[str],
    *,
    report_batch_item_failures: BatchItemFailures | bool,
) -> set[str]:
    """The ids of the records that failed, by Lambda's rules for an SQS batch response.

    Success: ``None``, a response without ``batchItemFailures``, or with it empty or null.
    Failure of the whole batch (:class:`InvalidLambdaResponseError`): a response that is not a
    JSON object, ``batchItemFailures`` that is not a list, or an entry whose ``itemIdentifier`` is
    missing, null, empty, or not the id of a record in the batch. Without
    ReportBatchItemFailures Lambda ignores the response, and so does this. With ``auto``, only a
    response that carries ``batchItemFailures`` is read by those rules; any other is success,
    so that a function written for either setting is read as it expects.
    """
    if not _is_read(response, report_batch_item_failures):
        return set()
    if isinstance(response, NotJson):
        raise InvalidLambdaResponseError("response is not JSON")
    if not isinstance(response, Mapping):
        raise InvalidLambdaResponseError(f"response is a {type(response).__name__}, not an object")
    failures = response.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list | tuple):  # json.dumps makes an array of either
        raise InvalidLambdaResponseError("batchItemFailures is not a list")
    known = set(message_ids)
    failed: set[str] = set()
    for entry in failures:
        identifier = entry.get("itemIdentifier") if isinstance(entry, Mapping) else None
        if not isinstance(identifier, str) or not identifier:
            raise InvalidLambdaResponseError(
                f"batchItemFailures entry {entry!r} has no itemIdentifier"
            )
        if identifier not in known:
            raise InvalidLambdaResponseError(
                f"batchItemFailures names {identifier!r}, which is not in the batch"
            )
        failed.add(identifier)
    return failed


def _is_read(response: Any, mode: BatchItemFailures | bool) -> bool:
    """Whether the response is read for failures at all, under the ReportBatchItemFailures mode."""
    if isinstance(mode, bool):
        mode = BatchItemFailures.TRUE if mode else BatchItemFailures.FALSE
    if mode is BatchItemFailures.FALSE or response is None:
        return False
    if mode is BatchItemFailures.AUTO:
        return isinstance(response, Mapping) and "batchItemFailures" in response
    return True


class NotJson(bytes):
    """A response that is not JSON (a custom runtime may answer anything)."""


def parse_response(payload: bytes) -> Any:
    """A function's serialised response, as the event source mapping reads it."""
    if not payload.strip():
        return None
    try:
        return json.loads(payload)
    except ValueError:
        return NotJson(payload)
