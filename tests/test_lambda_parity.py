"""Event source mapping settings as Lambda has them: batching window, filters, context, env."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests.support import Queues, depth, eventually, make_queues, publish, running_worker, send
from worker.config import HandlerType
from worker.consume.sqs import open_sqs
from worker.errors import ConfigurationError


@pytest.fixture
async def queues(atomic_moto_endpoint: str) -> Queues:
    """This module's queues are on a broker whose receives are atomic, as SQS's are: Lambda
    settings run ten pollers, and the tests count deliveries exactly (stock moto may hand one
    message to two of them)."""
    return await make_queues(atomic_moto_endpoint)


class Batches:
    """A Lambda handler that records each batch and when it arrived."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.arrived: list[float] = []
        self.contexts: list[Any] = []

    def __call__(self, event: dict[str, Any], context: Any) -> None:
        self.batches.append([record["body"] for record in event["Records"]])
        self.arrived.append(time.monotonic())
        self.contexts.append(context)

    @property
    def handled(self) -> int:
        return sum(map(len, self.batches))


def lambda_settings(queues: Queues, **overrides: Any) -> Any:
    return queues.settings(handler_type=HandlerType.LAMBDA, sns_envelope="raw", **overrides)


async def send_batched(queues: Queues, bodies: list[str]) -> None:
    async with open_sqs(queues.settings()) as sqs:
        for start in range(0, len(bodies), 10):
            await sqs.send_message_batch(
                QueueUrl=queues.queue_url,
                Entries=[
                    {"Id": str(i), "MessageBody": body}
                    for i, body in enumerate(bodies[start : start + 10])
                ],
            )


class TestBatchingWindow:
    """A batch is handed over when full, when its window closes, or at 6 MB."""

    async def test_window_gathers_more_than_one_receive(self, queues: Queues) -> None:
        handler = Batches()
        await send_batched(queues, [f"m{n}" for n in range(25)])
        settings = lambda_settings(queues, batch_size=100, max_batching_window=2, concurrency=1)
        started = time.monotonic()
        async with running_worker(settings, handler):
            await eventually(lambda: handler.handled == 25, timeout=30)
        assert len(handler.batches[0]) > 10  # more than one receive's worth
        assert sorted(body for batch in handler.batches for body in batch) == sorted(
            f"m{n}" for n in range(25)
        )
        assert handler.arrived[0] - started >= 1.5  # waited for the window to close

    async def test_full_batches_do_not_wait_for_the_window(self, queues: Queues) -> None:
        handler = Batches()
        await send_batched(queues, [f"m{n}" for n in range(40)])
        # One poller: each poller gathers a batch of its own, as each of Lambda's does, so two
        # pollers that split the second twenty between them each hold a partial batch until
        # the window closes (as on Lambda); this test is about a batch that fills.
        settings = lambda_settings(
            queues, batch_size=20, max_batching_window=30, concurrency=2, pollers=1
        )
        started = time.monotonic()
        async with running_worker(settings, handler):
            await eventually(lambda: handler.handled == 40, timeout=20)
        assert [len(batch) for batch in handler.batches] == [20, 20]
        assert max(handler.arrived) - started < 30  # handed over full, not at the window's end

    @pytest.mark.parametrize(
        ("count", "kib", "batch_size", "concurrency"),
        [
            pytest.param(30, 240, 100, 1, id="one-poller"),
            # Two pollers gathering at once share what either carries past the limit; what one
            # gather takes from it is still one batch, by count and by size.
            pytest.param(24, 1000, 10, 2, id="two-pollers-1-mib-messages"),
        ],
    )
    async def test_payload_limit_splits_batches(
        self, queues: Queues, count: int, kib: int, batch_size: int, concurrency: int
    ) -> None:
        handler = Batches()
        big = "x" * (kib * 1024)
        await send(queues, *(f"{n:02d}{big}" for n in range(count)))  # 7 or 24 MB in all
        settings = lambda_settings(
            queues, batch_size=batch_size, max_batching_window=2, concurrency=concurrency
        )
        async with running_worker(settings, handler):
            await eventually(lambda: handler.handled >= count, timeout=90)
        sizes = [sum(len(body) for body in batch) for batch in handler.batches]
        assert len(handler.batches) >= 2
        assert max(sizes) <= 6 * 1024 * 1024
        assert max(len(batch) for batch in handler.batches) <= batch_size
        # At least once: two pollers may be handed the same message by the emulator.
        assert {body[:2] for batch in handler.batches for body in batch} == {
            f"{n:02d}" for n in range(count)
        }

    async def test_more_pollers_than_slots_still_receive_after_an_idle_spell(
        self, queues: Queues
    ) -> None:
        # The poller holding the one slot waited for news while the other, waiting for that
        # slot, counted as receiving: nothing received again.
        handler = Batches()
        settings = lambda_settings(
            queues, batch_size=10, max_batching_window=1, concurrency=1, pollers=2
        )
        async with running_worker(settings, handler):
            await asyncio.sleep(2.5)  # receives come back empty
            await send(queues, "late")
            await eventually(lambda: handler.batches == [["late"]], timeout=8)

    async def test_a_free_slot_receives_while_a_long_batch_runs(self, queues: Queues) -> None:
        started: dict[str, float] = {}

        def handler(event: dict[str, Any], context: Any) -> None:
            for record in event["Records"]:
                started[record["body"]] = time.monotonic()
            if event["Records"][0]["body"] == "long":
                time.sleep(8)

        settings = lambda_settings(
            queues, batch_size=10, max_batching_window=1, concurrency=2, max_processing_seconds=60
        )
        async with running_worker(settings, handler):
            await send(queues, "long")
            await eventually(lambda: "long" in started, timeout=8)
            await asyncio.sleep(2.5)  # receives come back empty
            sent = time.monotonic()
            await send(queues, "short")
            await eventually(lambda: "short" in started, timeout=15)
        # Its receive, then its one-second window: not the rest of the long batch (8 s).
        assert started["short"] - sent < 4

    def test_batch_size_above_ten_needs_a_window(self, queues: Queues) -> None:
        with pytest.raises(ValueError, match="needs WORKER_MAX_BATCHING_WINDOW"):
            queues.settings(batch_size=50, handler_type="lambda")


class TestFilterCriteria:
    """Messages matching no pattern are deleted unhandled, and counted, as on Lambda."""

    async def test_unmatched_messages_are_deleted_and_counted(self, queues: Queues) -> None:
        handled: list[str] = []

        def handler(event: dict[str, Any], context: Any) -> None:
            handled.extend(record["body"] for record in event["Records"])

        criteria = json.dumps({"Filters": [{"Pattern": json.dumps({"body": {"kind": ["order"]}})}]})
        registry = CollectorRegistry()
        kinds = ["order", "order", "refund", "refund", "order"]
        await send(queues, *(json.dumps({"kind": kind, "n": n}) for n, kind in enumerate(kinds)))
        await send(queues, "not json")
        settings = lambda_settings(queues, filter_criteria=criteria)
        async with running_worker(settings, handler, registry) as running:

            async def queue_empty() -> bool:
                return await depth(queues, queues.queue_url) == (0, 0)

            await eventually(queue_empty, timeout=20)
            await eventually(lambda: running.worker.keeper.in_flight == 0)
        assert sorted(json.loads(b)["n"] for b in handled) == [0, 1, 4]
        filtered = registry.get_sample_value(
            "worker_messages_filtered_total", {"queue": queues.queue_name}
        )
        assert filtered == 3  # two refunds and the body that is not JSON: deleted unhandled

    async def test_a_lambda_handler_filters_the_sqs_body_envelope_and_all(
        self, queues: Queues
    ) -> None:
        # Lambda's filters see the SQS body: through SNS without raw delivery, the envelope.
        handled: list[str] = []

        def handler(event: dict[str, Any], context: Any) -> None:
            handled.extend(json.loads(record["body"])["Message"] for record in event["Records"])

        pattern = json.dumps({"body": {"Message": [{"prefix": "keep"}]}})
        criteria = json.dumps({"Filters": [{"Pattern": pattern}]})
        await publish(queues, "keep-1", "drop-1", "keep-2")
        settings = lambda_settings(queues, filter_criteria=criteria, batch_size=1)
        async with running_worker(settings, handler) as running:
            await eventually(lambda: len(handled) == 2, timeout=20)
            await eventually(lambda: running.worker.keeper.in_flight == 0)
        assert sorted(handled) == ["keep-1", "keep-2"]
        assert await depth(queues, queues.queue_url) == (0, 0)  # drop-1 deleted unhandled

    def test_invalid_criteria_is_a_configuration_error(self, queues: Queues) -> None:
        pattern = json.dumps({"body": {"k": [{"prefix": 1}]}})
        criteria = json.dumps({"Filters": [{"Pattern": pattern}]})
        with pytest.raises(ValueError, match="prefix"):
            queues.settings(filter_criteria=criteria)


class TestContextAndEnvironment:
    """The context counts down the budget; the AWS_LAMBDA_* variables functions read are set."""

    async def test_context(self, queues: Queues) -> None:
        remaining: list[int] = []

        def handler(event: dict[str, Any], context: Any) -> None:
            first = context.get_remaining_time_in_millis()
            time.sleep(0.3)
            remaining.extend([first, context.get_remaining_time_in_millis()])
            handler.contexts.append(context)  # type: ignore[attr-defined]

        handler.contexts = []  # type: ignore[attr-defined]
        await send(queues, "a")
        await asyncio.sleep(0)
        await send(queues, "b")
        settings = lambda_settings(
            queues,
            max_processing_seconds=60,
            function_name="orders-fn",
            memory_limit_in_mb=512,
            batch_size=1,
        )
        async with running_worker(settings, handler):
            await eventually(lambda: len(handler.contexts) == 2)  # type: ignore[attr-defined]
        first, later = remaining[0], remaining[1]
        assert 59_000 < first <= 60_000
        assert first - later >= 250  # it counts down
        contexts = handler.contexts  # type: ignore[attr-defined]
        assert contexts[0].aws_request_id != contexts[1].aws_request_id
        context = contexts[0]
        assert context.function_name == "orders-fn"
        assert context.memory_limit_in_mb == "512"
        assert context.invoked_function_arn == (
            f"arn:aws:lambda:us-east-1:{queues.account_id}:function:orders-fn"
        )
        assert context.log_group_name == "/aws/lambda/orders-fn"

    async def test_environment_is_set_before_the_handler_is_imported(
        self, queues: Queues, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        for name in list(os.environ):
            if name.startswith("AWS_LAMBDA_") or name in {"LAMBDA_TASK_ROOT", "_HANDLER"}:
                monkeypatch.delenv(name)
        out = tmp_path / "seen.json"
        monkeypatch.setenv("SEEN_FILE", str(out))
        module = f"fn_{uuid.uuid4().hex[:8]}"
        (tmp_path / f"{module}.py").write_text(
            "import json, os\n"
            "NAMES = ('LAMBDA_TASK_ROOT', '_HANDLER', 'AWS_REGION', 'AWS_EXECUTION_ENV')\n"
            "SEEN_AT_IMPORT = {k: v for k, v in os.environ.items()\n"
            "                  if k.startswith(('AWS_LAMBDA_', 'WORKER_')) or k in NAMES}\n"
            "def handler(event, context):\n"
            "    with open(os.environ['SEEN_FILE'], 'w') as out:\n"
            "        json.dump(SEEN_AT_IMPORT, out)\n",
            encoding="utf-8",
        )
        await send(queues, "x")
        settings = lambda_settings(
            queues, handler=f"{module}:handler", handler_path=tmp_path, function_name="fn"
        )
        async with running_worker(settings):
            await eventually(out.exists)
        seen = json.loads(out.read_text())
        assert seen["AWS_LAMBDA_FUNCTION_NAME"] == "fn"
        assert seen["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
        assert int(seen["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]) >= 128
        assert seen["AWS_LAMBDA_LOG_GROUP_NAME"] == "/aws/lambda/fn"
        assert seen["AWS_LAMBDA_RUNTIME_API"].startswith("127.0.0.1:")
        assert seen["AWS_REGION"] == "us-east-1"
        assert seen["AWS_EXECUTION_ENV"].startswith("AWS_Lambda_python3.")
        assert seen["LAMBDA_TASK_ROOT"] == str(tmp_path)
        assert seen["_HANDLER"] == f"{module}.handler"
        assert not [name for name in seen if name.startswith("WORKER_")]  # the worker's own

    async def test_a_handler_setting_in_lambdas_form_is_taken_as_it_is(
        self, queues: Queues, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # A file name with "-", in a directory: Lambda's Handler "src/my-fn.handler".
        out = tmp_path / "handler.txt"
        monkeypatch.setenv("SEEN_FILE", str(out))
        module = f"my-fn-{uuid.uuid4().hex[:8]}"
        (tmp_path / "src").mkdir()
        (tmp_path / "src" / f"{module}.py").write_text(
            "import os\n"
            "def handler(event, context):\n"
            "    with open(os.environ['SEEN_FILE'], 'w') as out:\n"
            "        out.write(os.environ['_HANDLER'])\n",
            encoding="utf-8",
        )
        await send(queues, "x")
        settings = lambda_settings(
            queues, handler=f"src/{module}.handler", handler_path=tmp_path, function_name="fn"
        )
        async with running_worker(settings):
            await eventually(out.exists)
        assert out.read_text() == f"src/{module}.handler"


class TestFifoLimits:
    """A FIFO queue takes batches of at most ten and no batching window, as on Lambda."""

    async def test_fifo_limits(self, moto_endpoint: str) -> None:
        from tests.test_fifo import fifo_queues  # noqa: PLC0415

        settings, _ = await fifo_queues(moto_endpoint)
        bad = settings.model_copy(
            update={"handler_type": HandlerType.LAMBDA, "batch_size": 20, "max_batching_window": 1}
        )
        with pytest.raises(ConfigurationError) as raised:
            async with running_worker(bad, lambda event, context: None):
                pass
        assert raised.value.problems[0].startswith("WORKER_BATCH_SIZE: at most 10 on a FIFO")
        assert raised.value.problems[1].startswith("WORKER_MAX_BATCHING_WINDOW: FIFO queues")
