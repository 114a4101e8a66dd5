"""Unmodified Lambda functions (tests/lambda_functions) through the worker, as on Lambda.

Each function is loaded the way a deployment package is: ``WORKER_HANDLER_PATH`` names the
directory and ``WORKER_HANDLER`` the module and function. What becomes of each message —
deleted, retried, moved to the DLQ — is what Lambda's SQS event source mapping would do with
ReportBatchItemFailures.
"""

from __future__ import annotations

import importlib
import json
import sys
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.support import Queues, depth, drain, eventually, publish, running_worker, send
from tests.test_fifo import fifo_queues
from worker.config import HandlerType
from worker.sqs import open_sns

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


@pytest.fixture
def fresh_modules() -> Any:
    """The functions keep module state, as a warm Lambda does: start each test cold."""
    yield
    for name in ("powertools_batch", "powertools_fifo", "sns_subscriber"):
        sys.modules.pop(name, None)
    while str(FUNCTIONS) in sys.path:
        sys.path.remove(str(FUNCTIONS))


def loaded(name: str) -> ModuleType:
    return importlib.import_module(name)


@pytest.mark.usefixtures("fresh_modules")
class TestPowertoolsBatchProcessor:
    """BatchProcessor + process_partial_response on a standard queue."""

    async def test_good_records_deleted_poison_to_the_dlq(self, queues: Queues) -> None:
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


@pytest.mark.usefixtures("fresh_modules")
class TestPowertoolsFifo:
    """SqsFifoPartialProcessor on a FIFO queue: order kept through a failure and its retry."""

    async def test_fifo_processor_keeps_order(self, moto_endpoint: str) -> None:
        settings, made = await fifo_queues(moto_endpoint)
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
            function = loaded("powertools_fifo")
            await eventually(lambda: len(function.HANDLED) == 8, timeout=60)
            await eventually(lambda: running.worker.keeper.in_flight == 0)
        handled = function.HANDLED
        assert [n for group, n in handled if group == "a"] == [0, 1, 2, 3]
        assert [n for group, n in handled if group == "b"] == [0, 1, 2, 3]
        assert {("a", 1)} == function.FAILED_ONCE
        assert running.report.deleted == 8


@pytest.mark.usefixtures("fresh_modules")
class TestSnsSubscriber:
    """A function that reads the SNS envelope itself, with partial failures."""

    async def test_envelope_read_by_the_function(self, queues: Queues) -> None:
        await publish(
            queues,
            json.dumps({"order_id": "o-1", "amount": 10}),
            json.dumps({"order_id": "o-2", "amount": -1}),
        )
        settings = function_settings(queues.settings(), "sns_subscriber", function_name="orders")
        async with running_worker(settings) as running:
            dead = await drain(queues, queues.dlq_url, expect=1, timeout=30)
            await eventually(lambda: running.worker.keeper.in_flight == 0)
            function = loaded("sns_subscriber")
        assert [
            {"order_id": "o-1", "topic": queues.topic_arn, "function": "orders"}
        ] == function.PROCESSED
        assert json.loads(json.loads(dead[0]["Body"])["Message"])["order_id"] == "o-2"
