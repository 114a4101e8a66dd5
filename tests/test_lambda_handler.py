"""Unmodified Lambda handlers through the worker: the event, the context, and batch responses."""

from __future__ import annotations

import json
import threading
from collections import Counter
from typing import Any

import pytest

from tests.support import Queues, depth, eventually, make_queues, publish, running_worker, send
from worker.consume.outcome import FailureReason


@pytest.fixture
async def queues(atomic_moto_endpoint: str) -> Queues:
    """This module's queues are on a broker whose receives are atomic, as SQS's are: Lambda
    settings run ten pollers, and the tests count deliveries exactly (stock moto may hand one
    message to two of them)."""
    return await make_queues(atomic_moto_endpoint)


class Invocations:
    """A Lambda handler that records its events and answers with a chosen response."""

    def __init__(self, respond: Any = None) -> None:
        self.events: list[dict[str, Any]] = []
        self.contexts: list[Any] = []
        self.threads: list[int] = []
        self._respond = respond

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        self.events.append(event)
        self.contexts.append(context)
        self.threads.append(threading.get_ident())
        return self._respond(event) if callable(self._respond) else self._respond

    @property
    def records(self) -> list[dict[str, Any]]:
        return [record for event in self.events for record in event["Records"]]

    def deliveries(self) -> Counter[str]:
        return Counter(record["body"] for record in self.records)


def lambda_settings(queues: Queues, **overrides: Any) -> Any:
    return queues.settings(handler_type="lambda", **overrides)


class TestEvent:
    """The event and context are what Lambda would pass."""

    async def test_event_has_lambdas_shape(self, queues: Queues) -> None:
        handler = Invocations()
        await publish(
            queues,
            '{"n": 1}',
            MessageAttributes={"kind": {"DataType": "String", "StringValue": "k"}},
        )
        async with running_worker(lambda_settings(queues, function_name="orders"), handler):
            await eventually(lambda: len(handler.records) == 1)
        record = handler.records[0]
        assert set(record) >= {
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
        assert record["eventSource"] == "aws:sqs"
        assert record["eventSourceARN"] == queues.queue_arn
        assert record["awsRegion"] == "us-east-1"
        assert record["attributes"]["ApproximateReceiveCount"] == "1"
        assert "SentTimestamp" in record["attributes"]
        # As on Lambda, the SNS envelope stays in the body for the function to read.
        envelope = json.loads(record["body"])
        assert envelope["TopicArn"] == queues.topic_arn
        assert json.loads(envelope["Message"]) == {"n": 1}
        context = handler.contexts[0]
        assert context.function_name == "orders"
        assert context.invoked_function_arn.endswith(":function:orders")
        assert 0 < context.get_remaining_time_in_millis() <= 900_000
        assert isinstance(context.aws_request_id, str)

    async def test_message_attributes_in_lambda_form(self, queues: Queues) -> None:
        handler = Invocations()
        await send(
            queues,
            "x",
            MessageAttributes={
                "text": {"DataType": "String", "StringValue": "v"},
                "blob": {"DataType": "Binary", "BinaryValue": b"\x00\xff"},
            },
        )
        async with running_worker(lambda_settings(queues), handler):
            await eventually(lambda: len(handler.records) == 1)
        attributes = handler.records[0]["messageAttributes"]
        assert attributes["text"] == {
            "stringValue": "v",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "String",
        }
        assert attributes["blob"]["binaryValue"] == "AP8="
        assert attributes["blob"]["dataType"] == "Binary"

    async def test_batches_hold_at_most_batch_size_records(self, queues: Queues) -> None:
        handler = Invocations()
        await send(queues, *(f"m{i}" for i in range(12)))
        async with running_worker(lambda_settings(queues, batch_size=5), handler):
            await eventually(lambda: len(handler.deliveries()) == 12)
        assert all(1 <= len(event["Records"]) <= 5 for event in handler.events)
        assert sorted(handler.deliveries()) == sorted(f"m{i}" for i in range(12))

    async def test_sync_lambda_handler_runs_off_the_loop(self, queues: Queues) -> None:
        handler = Invocations()
        await send(queues, "a")
        async with running_worker(lambda_settings(queues), handler):
            await eventually(lambda: len(handler.records) == 1)
        assert threading.get_ident() not in handler.threads


def fail_odd_first_time(event: dict[str, Any]) -> dict[str, Any]:
    failures = [
        {"itemIdentifier": record["messageId"]}
        for record in event["Records"]
        if int(record["body"][1:]) % 2 and record["attributes"]["ApproximateReceiveCount"] == "1"
    ]
    return {"batchItemFailures": failures}


class TestBatchResponse:
    """ReportBatchItemFailures: only the listed records fail; an invalid answer fails them all."""

    async def test_partial_batch_failure_retries_only_the_failed(self, queues: Queues) -> None:
        handler = Invocations(fail_odd_first_time)
        await send(queues, *(f"m{i}" for i in range(6)))
        async with running_worker(lambda_settings(queues), handler) as running:
            await eventually(lambda: sum(handler.deliveries().values()) == 9)
            await eventually(lambda: running.worker.keeper.in_flight == 0)
        deliveries = handler.deliveries()
        assert {body for body, n in deliveries.items() if n == 2} == {"m1", "m3", "m5"}
        assert {body for body, n in deliveries.items() if n == 1} == {"m0", "m2", "m4"}
        assert await depth(queues, queues.queue_url) == (0, 0)

    async def test_invalid_response_fails_the_whole_batch(self, queues: Queues) -> None:
        def unknown_id_first_time(event: dict[str, Any]) -> Any:
            first = event["Records"][0]["attributes"]["ApproximateReceiveCount"] == "1"
            return {"batchItemFailures": [{"itemIdentifier": "not-in-batch"}]} if first else None

        handler = Invocations(unknown_id_first_time)
        await send(queues, "a")
        async with running_worker(lambda_settings(queues), handler) as running:
            await eventually(lambda: handler.deliveries()["a"] == 2)
            await eventually(lambda: running.worker.keeper.in_flight == 0)
        assert running.report.failures == {"handler_error": 1}
        assert running.report.deleted == 1

    async def test_exception_fails_the_whole_batch(self, queues: Queues) -> None:
        def raises_first_time(event: dict[str, Any]) -> None:
            if any(r["attributes"]["ApproximateReceiveCount"] == "1" for r in event["Records"]):
                raise RuntimeError("downstream unavailable")

        handler = Invocations(raises_first_time)
        await send(queues, "a", "b", "c")
        settings = lambda_settings(queues, batch_size=10, concurrency=1)
        async with running_worker(settings, handler) as running:
            await eventually(lambda: all(handler.deliveries()[b] >= 2 for b in "abc"))
            await eventually(lambda: running.worker.keeper.in_flight == 0)
        assert running.report.failures.get("handler_error", 0) >= 3
        assert await depth(queues, queues.queue_url) == (0, 0)

    async def test_response_ignored_without_report_batch_item_failures(
        self, queues: Queues
    ) -> None:
        handler = Invocations(
            lambda event: {
                "batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in event["Records"]]
            }
        )
        await send(queues, "a", "b")
        settings = lambda_settings(queues, report_batch_item_failures=False)
        async with running_worker(settings, handler) as running:
            await eventually(
                lambda: running.report.deleted == 2 or running.worker.settler.counts["deleted"] == 2
            )
        assert handler.deliveries() == Counter({"a": 1, "b": 1})

    async def test_example_lambda_handler(self, queues: Queues) -> None:
        from worker.examples.lambda_orders import lambda_handler  # noqa: PLC0415

        await publish(queues, json.dumps({"order_id": "o-1", "amount": 5}))
        await publish(queues, json.dumps({"order_id": "o-2", "amount": "five"}))
        async with running_worker(lambda_settings(queues), lambda_handler) as running:
            await eventually(lambda: running.worker.settler.counts["deleted"] == 1)
            await eventually(
                lambda: running.worker.runner.failures[FailureReason.HANDLER_ERROR] >= 1
            )
        assert running.report.deleted == 1
