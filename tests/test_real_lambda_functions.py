"""Unmodified Lambda functions (tests/lambda_functions) through the worker, as on Lambda.

Each function is loaded the way a deployment package is: ``WORKER_HANDLER_PATH`` names the
directory and ``WORKER_HANDLER`` the module and function. What becomes of each message —
deleted, retried, moved to the DLQ — is what Lambda's SQS event source mapping would do with
ReportBatchItemFailures.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    depth,
    drain,
    eventually,
    make_queues,
    publish,
    running_worker,
    send,
)
from tests.test_fifo import fifo_queues
from worker.config import HandlerType
from worker.consume.sqs import open_sns

FUNCTIONS = Path(__file__).resolve().parent / "lambda_functions"


def function_settings(settings: Any, module: str, **overrides: Any) -> Any:
    return settings.model_copy(
        update={
            "handler_type": HandlerType.LAMBDA,
            "handler": f"{module}.lambda_handler",  # Lambda's own form, copied as it is
            "handler_path": FUNCTIONS,
            **overrides,
        }
    )


def printed(capfd: pytest.CaptureFixture[str], prefix: str) -> list[str]:
    """What the functions printed, in order: their environments' lines reach the worker's
    standard output as ``timestamp<TAB>request id<TAB>line``."""
    lines = capfd.readouterr().out.splitlines()
    return [
        line.split("\t", 2)[2].removeprefix(prefix)
        for line in lines
        if line.count("\t") >= 2 and line.split("\t", 2)[2].startswith(prefix)
    ]


class TestPowertoolsBatchProcessor:
    """BatchProcessor + process_partial_response on a standard queue."""

    async def test_good_records_deleted_poison_to_the_dlq(self, atomic_moto_endpoint: str) -> None:
        queues = await make_queues(atomic_moto_endpoint)
        orders = [{"order_id": f"o-{n}", "poison": n == 3} for n in range(6)]
        await send(queues, *(json.dumps(order) for order in orders))
        settings = function_settings(queues.settings(sns_envelope="raw"), "powertools_batch")
        async with running_worker(settings) as running:
            dead = await drain(queues, queues.dlq_url, expect=1, timeout=30)
            await eventually(lambda: running.worker.keeper.in_flight == 0)
        assert [json.loads(m["Body"])["order_id"] for m in dead] == ["o-3"]
        assert running.report.deleted == 5
        assert running.report.failures == {"handler_error": queues.max_receive_count}
        assert await depth(queues, queues.queue_url) == (0, 0)


class TestPowertoolsFifo:
    """SqsFifoPartialProcessor on a FIFO queue: order kept through a failure and its retry."""

    async def test_fifo_processor_keeps_order(
        self, atomic_moto_endpoint: str, capfd: pytest.CaptureFixture[str]
    ) -> None:
        settings, made = await fifo_queues(atomic_moto_endpoint)
        async with open_sns(settings) as sns:
            for number in range(4):
                for group in ("a", "b"):
                    item = {"group": group, "n": number, "flaky": group == "a" and number == 1}
                    await sns.publish(
                        TopicArn=made.topic_arn,
                        Message=json.dumps(item),
                        MessageGroupId=group,
                        MessageDeduplicationId=f"{group}-{number}-{uuid.uuid4().hex}",
                    )
        async with running_worker(function_settings(settings, "powertools_fifo")) as running:
            await eventually(lambda: running.worker.report().deleted == 8, timeout=60)
            await eventually(lambda: running.worker.keeper.in_flight == 0)
        handled = [line.split(" ") for line in printed(capfd, "handled ")]
        assert [int(n) for group, n in handled if group == "a"] == [0, 1, 2, 3]
        assert [int(n) for group, n in handled if group == "b"] == [0, 1, 2, 3]
        # "a 1" failed once (with the rest of its batch, as the FIFO processor stops there).
        assert running.report.failures["handler_error"] >= 1
        assert running.report.deleted == 8


class TestSnsSubscriber:
    """A function that reads the SNS envelope itself, with partial failures."""

    async def test_envelope_read_by_the_function(
        self, atomic_moto_endpoint: str, capfd: pytest.CaptureFixture[str]
    ) -> None:
        # It counts what the function printed: on a broker whose receives are atomic, as SQS's
        # are (stock moto may hand one message to two pollers).
        queues = await make_queues(atomic_moto_endpoint)
        await publish(
            queues,
            json.dumps({"order_id": "o-1", "amount": 10}),
            json.dumps({"order_id": "o-2", "amount": -1}),
        )
        settings = function_settings(queues.settings(), "sns_subscriber", function_name="orders")
        async with running_worker(settings) as running:
            dead = await drain(queues, queues.dlq_url, expect=1, timeout=30)
            await eventually(lambda: running.worker.keeper.in_flight == 0)
        assert [json.loads(line) for line in printed(capfd, "processed ")] == [
            {"order_id": "o-1", "topic": queues.topic_arn, "function": "orders"}
        ]
        assert json.loads(json.loads(dead[0]["Body"])["Message"])["order_id"] == "o-2"
