"""Lambda handlers in execution environments: one invocation per process at a time, as on Lambda.

The functions here are files in a task root, run unmodified under AWS's runtime interface client
(or a custom runtime's ``bootstrap``) by ``worker run`` as users run it. What each function did
is read from a file it appends to (environments are other processes) and from what the worker
printed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tests.support import (
    REGION,
    ROOT,
    Queues,
    depth,
    drain,
    eventually,
    make_queues,
    running_worker,
    send,
)
from tests.test_lambda_parity import send_batched
from worker.config import HandlerType, Settings
from worker.consume.outcome import FailureReason
from worker.lambda_.env import FunctionIdentity
from worker.lambda_.environments import EnvironmentMetrics, EnvironmentPool, environment_spec
from worker.lambda_.invocation import FunctionError, FunctionResponse

# One line per record handled: "<request id> <message id> <body>".
RECORDER = """
import os

def record(context, record, note=""):
    with open(os.environ["RECORD_FILE"], "a") as out:
        out.write(f"{context.aws_request_id} {record['messageId']} {record['body']} {note}\\n")
"""

POWERTOOLS_SYNC = """
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor, EventType, process_partial_response,
)
from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
from pydantic import BaseModel, Json

from recorder import record as write_record

class Order(BaseModel):
    order_id: str
    amount: int

class OrderRecord(SqsRecordModel):
    body: Json[Order]

processor = BatchProcessor(event_type=EventType.SQS, model=OrderRecord)
CONTEXT = None

def record_handler(record: OrderRecord) -> None:
    print(f"processing {record.messageId}")
    write_record(CONTEXT, {"messageId": record.messageId, "body": record.body.order_id})

def lambda_handler(event, context):
    global CONTEXT
    CONTEXT = context
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
"""

POWERTOOLS_ASYNC = """
import asyncio

from aws_lambda_powertools.utilities.batch import (
    AsyncBatchProcessor, EventType, async_process_partial_response,
)
from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
from pydantic import BaseModel, Json

from recorder import record as write_record

class Order(BaseModel):
    order_id: str
    amount: int

class OrderRecord(SqsRecordModel):
    body: Json[Order]

processor = AsyncBatchProcessor(event_type=EventType.SQS, model=OrderRecord)
CONTEXT = None

async def record_handler(record: OrderRecord) -> None:
    await asyncio.sleep(0)
    print(f"processing {record.messageId}")
    write_record(CONTEXT, {"messageId": record.messageId, "body": record.body.order_id})

def lambda_handler(event, context):
    global CONTEXT
    CONTEXT = context
    return async_process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
"""

# What each body asks of the function; "ok" bodies are recorded.
MISBEHAVING = """
import ctypes, datetime, os, time

from recorder import record

def handler(event, context):
    for item in event["Records"]:
        body = item["body"]
        if body.startswith("sleep"):
            time.sleep(60)
        elif body.startswith("exit"):
            os._exit(1)
        elif body.startswith("segfault"):
            ctypes.string_at(0)
        elif body.startswith("memory"):
            raise MemoryError()
        elif body.startswith("datetime"):
            return {"when": datetime.datetime.now()}
        elif body.startswith("huge"):
            return {"padding": "x" * 6_291_556}  # over Lambda's limit with the JSON around it
        record(context, item, note=str(os.getpid()))
    return None
"""


def task_root(tmp_path: Path, **modules: str) -> Path:
    """A directory of function files, as a deployment package unpacks."""
    root = tmp_path / "task"
    root.mkdir(exist_ok=True)
    (root / "recorder.py").write_text(RECORDER)
    for name, text in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(text))
    return root


def records(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split(" ") for line in path.read_text().splitlines() if line]


async def run_worker(
    queues: Queues, root: Path, handler: str, record_file: Path, **settings: str
) -> tuple[int, str, str]:
    """``worker run`` until the queue is idle; (exit code, stdout, stderr)."""
    env = {
        **os.environ,
        "AWS_REGION": REGION,
        "RECORD_FILE": str(record_file),
        "WORKER_QUEUE_URL": queues.queue_url,
        "WORKER_ENDPOINT_URL": queues.endpoint_url,
        "WORKER_HANDLER_TYPE": "lambda",
        "WORKER_HANDLER": handler,
        "WORKER_HANDLER_PATH": str(root),
        "WORKER_SNS_ENVELOPE": "raw",
        "WORKER_WAIT_TIME_SECONDS": "1",
        "WORKER_BACKOFF_BASE_SECONDS": "0.1",
        "WORKER_BACKOFF_MAX_SECONDS": "0.1",
        "WORKER_HTTP_PORT": "0",
        "WORKER_LOG_FORMAT": "json",
        "WORKER_EXIT_WHEN_IDLE": "3",
        **{f"WORKER_{name.upper()}": value for name, value in settings.items()},
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker",
        "run",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), 150)
    except TimeoutError:
        process.kill()
        out, err = await process.communicate()
        raise AssertionError(f"worker still running after 150 s: {err.decode()[-2000:]}") from None
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def events(stderr: str, name: str) -> list[dict[str, object]]:
    found = []
    for line in stderr.splitlines():
        if line.startswith("{") and f'"{name}"' in line:
            entry = json.loads(line)
            if entry.get("event") == name:
                found.append(entry)
    return found


class TestPowertoolsAtDefaultConcurrency:
    """Module-level Powertools processors, 300 messages, a third invalid: every one ends as on
    Lambda, and no line carries another invocation's request id."""

    @pytest.mark.parametrize(
        "module",
        [pytest.param(POWERTOOLS_SYNC, id="sync"), pytest.param(POWERTOOLS_ASYNC, id="async")],
    )
    async def test_every_message_ends_as_on_lambda(
        self, atomic_moto_endpoint: str, tmp_path: Path, module: str
    ) -> None:
        queues = await make_queues(atomic_moto_endpoint, max_receive_count=3)
        bodies = [
            json.dumps({"order_id": f"o-{n}", "amount": n})
            if n % 3
            else json.dumps({"order_id": f"o-{n}", "amount": "not a number"})
            for n in range(300)
        ]
        await send_batched(queues, bodies)
        root = task_root(tmp_path, orders=module)
        record_file = tmp_path / "records.txt"

        code, out, err = await run_worker(
            queues, root, "orders.lambda_handler", record_file, exit_when_idle="4"
        )

        assert code == 0, err[-3000:]
        handled = records(record_file)
        valid = {f"o-{n}" for n in range(300) if n % 3}
        assert Counter(order for _, _, order, _ in handled) == dict.fromkeys(valid, 1)
        assert await depth(queues, queues.queue_url) == (0, 0)
        dead = await drain(queues, queues.dlq_url, expect=100, timeout=20)
        assert sorted(json.loads(m["Body"])["order_id"] for m in dead) == sorted(
            f"o-{n}" for n in range(300) if n % 3 == 0
        )
        assert all(int(m["Attributes"]["ApproximateReceiveCount"]) >= 3 for m in dead)
        # Each printed line is tagged with the request id of the invocation that printed it.
        invocation_of = {message_id: request_id for request_id, message_id, _, _ in handled}
        printed = re.findall(r"^\S+\t(\S+)\tprocessing (\S+)$", out, flags=re.MULTILINE)
        assert len(printed) == len(handled)
        assert all(invocation_of[message_id] == request for request, message_id in printed)
        reports = events(err, "lambda.report")
        assert {entry["request_id"] for entry in reports} >= set(invocation_of.values())
        assert len(events(err, "lambda.init")) <= 10  # at most WORKER_CONCURRENCY environments


class TestEnvironmentsFailAsOnLambda:
    """Timeouts, exits, crashes and memory errors fail their batch; the worker goes on."""

    @pytest.mark.parametrize(
        ("body", "error_type", "cause"),
        [
            pytest.param("sleep", "Sandbox.Timedout", "timeout", id="timeout"),
            pytest.param("exit", "Runtime.ExitError", "exit", id="os-exit"),
            pytest.param("segfault", "Runtime.ExitError", "exit", id="segfault"),
            pytest.param("memory", "MemoryError", None, id="memory-error"),
            pytest.param("datetime", "Runtime.MarshalError", None, id="datetime-response"),
            pytest.param("huge", "Function.ResponseSizeTooLarge", None, id="response-over-6mb"),
        ],
    )
    async def test_bad_batch_fails_worker_goes_on(
        self, queues: Queues, tmp_path: Path, body: str, error_type: str, cause: str | None
    ) -> None:
        root = task_root(tmp_path, misbehaving=MISBEHAVING)
        record_file = tmp_path / "records.txt"
        os.environ["RECORD_FILE"] = str(record_file)
        settings = queues.settings(
            handler_type=HandlerType.LAMBDA,
            handler="misbehaving.handler",
            handler_path=root,
            sns_envelope="raw",
            batch_size=1,
            concurrency=2,
            max_processing_seconds=2,
        )
        async with running_worker(settings) as running:
            await send(queues, f"{body}-1")
            await eventually(
                lambda: running.worker.runner.failures[_reason(error_type)] >= 1, timeout=30
            )
            await send(queues, "ok-1", "ok-2")
            await eventually(lambda: len(records(record_file)) >= 2, timeout=30)
            registry = running.worker.metrics.registry
        assert running.report.failed >= 1
        assert running.worker.capacity.in_use == 0  # every slot given back
        assert sorted(body for _, _, body, _ in records(record_file)) == ["ok-1", "ok-2"]
        if cause is not None:
            replaced = registry.get_sample_value(
                "worker_lambda_environments_replaced_total",
                {"queue": queues.queue_name, "cause": cause},
            )
            assert replaced is not None
            assert replaced >= 1


# An init longer than the function's timeout leaves after it, and a handler that reports what
# its context says is left.
SLOW_INIT = """
import time

from recorder import record

time.sleep(1.5)

def handler(event, context):
    for item in event["Records"]:
        record(context, item, note=str(context.get_remaining_time_in_millis()))
        time.sleep(0.3)
"""


class TestInitIsNotPartOfTheTimeout:
    """As on Lambda, a cold start's init has its own limit; the timeout starts after it."""

    async def test_a_cold_start_leaves_the_invocation_its_whole_timeout(
        self, queues: Queues, tmp_path: Path
    ) -> None:
        root = task_root(tmp_path, slow_init=SLOW_INIT)
        record_file = tmp_path / "records.txt"
        os.environ["RECORD_FILE"] = str(record_file)
        settings = queues.settings(
            handler_type=HandlerType.LAMBDA,
            handler="slow_init.handler",
            handler_path=root,
            sns_envelope="raw",
            batch_size=1,
            concurrency=2,
            max_processing_seconds=1.2,
        )
        async with running_worker(settings) as running:  # one environment started warm
            await send(queues, "first", "second")  # the second needs a cold start (1.5 s)
            await eventually(lambda: len(records(record_file)) >= 2, timeout=30)
            started = running.worker.metrics.registry.get_sample_value(
                "worker_lambda_environments_started_total", {"queue": queues.queue_name}
            )
        assert started == 2
        assert running.report.failed == 0
        remaining = sorted(int(note) for _, _, _, note in records(record_file))
        # Each invocation began with (about) its whole 1.2 s; before, the cold one had none.
        assert remaining[0] > 1000, remaining


SLOWER_INIT = """
import json, os, time

time.sleep(float(os.environ["INIT_SECONDS"]))

def handler(event, context):
    return {"remaining_ms": context.get_remaining_time_in_millis()}
"""


class TestAnInitPastTheLimitIsTriedAgain:
    """Lambda's init limit (10 s; shortened here) does not fail a function that only loads slowly:
    as on Lambda, the init is tried again at the first invocation, under the function's
    timeout, which it then shares with the invocation."""

    @staticmethod
    def pool(tmp_path: Path, init_seconds: float) -> EnvironmentPool:
        root = task_root(tmp_path, slower=SLOWER_INIT)
        os.environ["INIT_SECONDS"] = str(init_seconds)
        settings = Settings(
            handler_type=HandlerType.LAMBDA, handler="slower.handler", handler_path=root
        )
        identity = FunctionIdentity("slow", 1024, REGION, "123456789012")
        return EnvironmentPool(
            environment_spec(settings, identity),
            size=1,
            metrics=EnvironmentMetrics(CollectorRegistry(), queue="slow"),
            init_timeout=0.5,
        )

    async def test_a_slow_init_is_tried_again_under_the_timeout(self, tmp_path: Path) -> None:
        pool = self.pool(tmp_path, init_seconds=1.0)
        try:
            assert await pool.warm_up(0.5) is None  # slow, not broken: start-up goes on
            result = await pool.invoke(b'{"Records": []}', time.monotonic() + 5)
            warm = await pool.invoke(b'{"Records": []}', time.monotonic() + 5)
        finally:
            await pool.close()
        assert isinstance(result, FunctionResponse), result
        remaining = json.loads(result.payload)["remaining_ms"]
        assert 3000 < remaining < 4300  # about 5 s less the second init's 1 s: shared
        assert isinstance(warm, FunctionResponse), warm
        assert json.loads(warm.payload)["remaining_ms"] > 4500  # the next one has it all

    async def test_an_init_past_the_timeout_too_fails_the_invocation(self, tmp_path: Path) -> None:
        pool = self.pool(tmp_path, init_seconds=3.0)
        try:
            result = await pool.invoke(b'{"Records": []}', time.monotonic() + 1)
        finally:
            await pool.close()
        assert isinstance(result, FunctionError)
        assert result.error_type == "Runtime.InitError"
        assert "did not initialise in time" in result.error_message


QUICK = """
def handler(event, context):
    return {"ok": True}
"""


@pytest.mark.skipif(
    sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"),
    reason="Python 3.11's threaded child watcher, on Linux",
)
async def test_no_thread_waits_for_an_environment(tmp_path: Path) -> None:
    """Python 3.11 waits for each child process in a thread of its own ("asyncio-waitpid-N"); the
    environments' ends are read from pidfds on the event loop instead, and still seen."""
    root = task_root(tmp_path, quick=QUICK)
    settings = Settings(handler_type=HandlerType.LAMBDA, handler="quick.handler", handler_path=root)
    pool = EnvironmentPool(
        environment_spec(settings, FunctionIdentity("quick", 1024, REGION, "123456789012")),
        size=3,
        metrics=EnvironmentMetrics(CollectorRegistry(), queue="quick"),
    )
    try:
        results = await asyncio.gather(
            *(pool.invoke(b'{"Records": []}', time.monotonic() + 10) for _ in range(3))
        )
        waiting = [t.name for t in threading.enumerate() if "waitpid" in t.name]
        processes = [env.process for env in pool._idle if env.process is not None]
    finally:
        await pool.close()
    assert all(isinstance(result, FunctionResponse) for result in results), results
    assert waiting == []
    assert len(processes) == 3
    assert all(process.returncode is not None for process in processes)  # their ends were seen


def quick_pool(tmp_path: Path) -> EnvironmentPool:
    root = task_root(tmp_path, quick=QUICK)
    settings = Settings(handler_type=HandlerType.LAMBDA, handler="quick.handler", handler_path=root)
    return EnvironmentPool(
        environment_spec(settings, FunctionIdentity("quick", 1024, REGION, "123456789012")),
        size=1,
        metrics=EnvironmentMetrics(CollectorRegistry(), queue="quick"),
    )


async def invoke_once(pool: EnvironmentPool) -> object:
    try:
        return await pool.invoke(b'{"Records": []}', time.monotonic() + 10)
    finally:
        await pool.close()


class TestEveryLoopSeesItsProcessesEnd:
    """The child watcher installed for the environments serves every event loop, as asyncio's
    default did: not only the one that ran the first environment (Python 3.11's own pidfd
    watcher follows the main thread's ``set_event_loop``, and nothing else)."""

    def test_a_process_started_on_a_loop_not_set_as_current(self, tmp_path: Path) -> None:
        async def true() -> int:
            process = await asyncio.create_subprocess_exec("true")
            return await process.wait()

        assert isinstance(asyncio.run(invoke_once(quick_pool(tmp_path))), FunctionResponse)
        loop = asyncio.new_event_loop()  # not the thread's current loop: nothing attaches to it
        try:
            assert loop.run_until_complete(true()) == 0
        finally:
            loop.close()

    def test_an_environment_on_a_thread_outlives_the_main_loop(self, tmp_path: Path) -> None:
        started = threading.Event()
        main_ended = threading.Event()
        outcome: list[object] = []

        async def on_the_thread() -> None:
            pool = quick_pool(tmp_path)
            try:
                outcome.append(await pool.invoke(b'{"Records": []}', time.monotonic() + 10))
                started.set()
                await asyncio.to_thread(main_ended.wait, 10)
            finally:
                # Kills the environment and waits for its end: it never came, once the main
                # loop that was reading it had stopped.
                await asyncio.wait_for(pool.close(), 10)
            outcome.append("closed")

        def thread() -> None:
            try:
                asyncio.run(on_the_thread())
            except BaseException as exc:  # noqa: BLE001 -- reported by the assertion below
                outcome.append(exc)

        async def on_the_main_thread() -> threading.Thread:
            assert isinstance(await invoke_once(quick_pool(tmp_path)), FunctionResponse)
            running = threading.Thread(target=thread)
            running.start()
            await asyncio.to_thread(started.wait, 10)
            return running

        running = asyncio.run(on_the_main_thread())
        main_ended.set()
        running.join(30)
        assert len(outcome) == 2, outcome
        assert isinstance(outcome[0], FunctionResponse), outcome
        assert outcome[1] == "closed", outcome


def _reason(error_type: str) -> FailureReason:
    return (
        FailureReason.TIMEOUT if error_type == "Sandbox.Timedout" else FailureReason.HANDLER_ERROR
    )


class TestLoading:
    """The function is loaded as Lambda loads it, in its own process."""

    async def test_a_module_named_worker(self, queues: Queues, tmp_path: Path) -> None:
        root = task_root(
            tmp_path,
            worker="""
            from recorder import record

            def handler(event, context):
                for item in event["Records"]:
                    record(context, item)
            """,
        )
        record_file = tmp_path / "records.txt"
        await send(queues, "hello")
        code, _, err = await run_worker(queues, root, "worker.handler", record_file)
        assert code == 0, err[-2000:]
        assert [body for _, _, body, _ in records(record_file)] == ["hello"]

    async def test_a_function_that_cannot_load_stops_start_up(
        self, queues: Queues, tmp_path: Path
    ) -> None:
        root = task_root(tmp_path, broken="import no_such_module\n")
        code, _, err = await run_worker(queues, root, "broken.handler", tmp_path / "r.txt")
        assert code == 2
        assert "Runtime.ImportModuleError" in err
        assert "Traceback" not in err.split("Runtime.ImportModuleError")[0]

    async def test_a_line_left_open_belongs_to_the_invocation_that_wrote_it(
        self, queues: Queues, tmp_path: Path
    ) -> None:
        root = task_root(
            tmp_path,
            partial="""
            import sys

            def handler(event, context):
                for item in event["Records"]:
                    print("line of", item["body"])
                    sys.stdout.write("partial of " + item["body"])  # no newline
                    sys.stdout.flush()
            """,
        )
        await send(queues, "a", "b", "c")
        code, out, err = await run_worker(
            queues, root, "partial.handler", tmp_path / "r.txt", batch_size="1", concurrency="1"
        )
        assert code == 0, err[-2000:]
        by_line = {
            text: request
            for request, text in re.findall(
                r"^\S+\t(\S+)\t((?:line|partial) of \w)$", out, flags=re.MULTILINE
            )
        }
        assert len(by_line) == 6, out  # every line came through, tagged
        for body in "abc":
            # Both lines of an invocation carry its request id; before, the open line was
            # written with the next invocation's first line, under that one's id.
            assert by_line[f"partial of {body}"] == by_line[f"line of {body}"], out

    async def test_module_state_stays_per_environment(self, queues: Queues, tmp_path: Path) -> None:
        root = task_root(
            tmp_path,
            counter="""
            import os
            from recorder import record

            CALLS = 0

            def handler(event, context):
                global CALLS
                CALLS += 1
                for item in event["Records"]:
                    record(context, item, note=f"{os.getpid()}:{CALLS}")
            """,
        )
        record_file = tmp_path / "records.txt"
        await send(queues, *(f"m-{n}" for n in range(6)))
        code, _, err = await run_worker(
            queues, root, "counter.handler", record_file, batch_size="1", concurrency="1"
        )
        assert code == 0, err[-2000:]
        notes = [note for _, _, _, note in records(record_file)]
        # One environment (concurrency 1), warm: its module state counts every invocation.
        assert len({note.split(":")[0] for note in notes}) == 1
        assert sorted(int(note.split(":")[1]) for note in notes) == list(range(1, 7))


SHELL_BOOTSTRAP = r"""#!/bin/sh
# A custom runtime in shell: Lambda's OS-only contract, with partial batch responses.
set -eu
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
FIELDS='"messageId": "[^"]*", "receiptHandle": "[^"]*", "body": "[^"]*"'
while true; do
  HEADERS="$(mktemp)"
  EVENT="$(curl -sS -D "$HEADERS" "$API/invocation/next")"
  REQUEST_ID="$(grep -i '^Lambda-Runtime-Aws-Request-Id:' "$HEADERS" | cut -d' ' -f2 | tr -d '\r')"
  FAILURES=""
  for RECORD in $(printf '%s' "$EVENT" | grep -o "$FIELDS" | tr ' ' '~'); do
    ID="$(printf '%s' "$RECORD" | sed 's/^"messageId":~"\([^"]*\)".*/\1/')"
    BODY="$(printf '%s' "$RECORD" | sed 's/.*"body":~"\([^"]*\)"$/\1/')"
    echo "handling $BODY"
    case "$BODY" in
      bad*) FAILURES="${FAILURES:+$FAILURES,}{\"itemIdentifier\": \"$ID\"}" ;;
      *) echo "$REQUEST_ID $ID $BODY $_HANDLER" >> "$RECORD_FILE" ;;
    esac
  done
  curl -sS -o /dev/null -X POST "$API/invocation/$REQUEST_ID/response" \
    -d "{\"batchItemFailures\": [$FAILURES]}"
done
"""


NODE_FUNCTION = """
import { appendFileSync } from "node:fs";

export const handler = async (event, context) => {
  const batchItemFailures = [];
  for (const record of event.Records) {
    console.log(`handling ${record.body}`);
    if (record.body.startsWith("bad")) {
      batchItemFailures.push({ itemIdentifier: record.messageId });
    } else {
      appendFileSync(
        process.env.RECORD_FILE,
        `${context.awsRequestId} ${record.messageId} ${record.body} node\\n`,
      );
    }
  }
  return { batchItemFailures };
};
"""


class TestCustomRuntimes:
    """Any runtime through the same API: Lambda's ``provided`` contract."""

    async def test_shell_bootstrap_with_partial_batch_response(
        self, queues: Queues, tmp_path: Path
    ) -> None:
        root = tmp_path / "task"
        root.mkdir()
        bootstrap = root / "bootstrap"
        bootstrap.write_text(SHELL_BOOTSTRAP)
        bootstrap.chmod(0o755)
        record_file = tmp_path / "records.txt"
        await send(queues, "good-1", "bad-1", "good-2")
        code, out, err = await run_worker(
            queues, root, "function.handler", record_file, lambda_runtime="provided"
        )
        assert code == 0, err[-2000:]
        handled = records(record_file)
        assert sorted(body for _, _, body, _ in handled) == ["good-1", "good-2"]
        assert {handler for _, _, _, handler in handled} == {"function.handler"}
        dead = await drain(queues, queues.dlq_url, expect=1)
        assert [m["Body"] for m in dead] == ["bad-1"]
        # The shell's own output is tagged with the request id of its invocation.
        for request_id, _, body, _ in handled:
            assert f"\t{request_id}\thandling {body}" in out

    async def test_a_runtime_that_exits_after_its_answer_fails_no_event_it_never_took(
        self, queues: Queues, tmp_path: Path
    ) -> None:
        # One invocation, then a pause (it is still running when the next batch is handed to
        # it) and an exit before it asks for the next event: that event was never seen, so it
        # goes to a new environment, as on Lambda, instead of failing as Runtime.ExitError.
        root = tmp_path / "task"
        root.mkdir()
        bootstrap = root / "bootstrap"
        bootstrap.write_text(
            SHELL_BOOTSTRAP.replace("while true; do", "for ONCE in 1; do").replace(
                "\ndone\n", "\ndone\nsleep 0.5\nexit 0\n"
            )
        )
        bootstrap.chmod(0o755)
        record_file = tmp_path / "records.txt"
        await send(queues, "good-1", "good-2", "good-3")
        code, _, err = await run_worker(
            queues,
            root,
            "function.handler",
            record_file,
            lambda_runtime="provided",
            batch_size="1",
            concurrency="1",
        )
        assert code == 0, err[-2000:]
        assert sorted(body for _, _, body, _ in records(record_file)) == [
            "good-1",
            "good-2",
            "good-3",
        ]
        assert events(err, "message.failed") == []
        assert len(events(err, "lambda.redispatched")) >= 1

    async def test_nodejs_function_through_aws_lambda_ric(
        self, queues: Queues, tmp_path: Path
    ) -> None:
        ric = ROOT / ".tools" / "node-ric" / "node_modules" / "aws-lambda-ric" / "bin"
        if not (ric / "index.mjs").exists():
            pytest.fail("aws-lambda-ric is not installed: run `make node-ric`")
        root = tmp_path / "task"
        root.mkdir()
        (root / "index.mjs").write_text(NODE_FUNCTION)
        bootstrap = root / "bootstrap"
        bootstrap.write_text(f'#!/bin/sh\nexec node {ric / "index.mjs"} "$_HANDLER"\n')
        bootstrap.chmod(0o755)
        record_file = tmp_path / "records.txt"
        await send(queues, "good-1", "bad-1", "good-2")
        code, out, err = await run_worker(
            queues, root, "index.handler", record_file, lambda_runtime="provided"
        )
        assert code == 0, err[-2000:]
        handled = records(record_file)
        assert sorted(body for _, _, body, _ in handled) == ["good-1", "good-2"]
        dead = await drain(queues, queues.dlq_url, expect=1)
        assert [m["Body"] for m in dead] == ["bad-1"]
        for request_id, _, body, _ in handled:  # console.log lines, as Node's runtime writes them
            assert f"\t{request_id}\tINFO\thandling {body}" in out

    async def test_a_bootstrap_that_cannot_run_stops_start_up(
        self, queues: Queues, tmp_path: Path
    ) -> None:
        (tmp_path / "bootstrap").write_text("#!/no/such/interpreter\n")
        (tmp_path / "bootstrap").chmod(0o755)
        code, _, err = await run_worker(
            queues, tmp_path, "function.handler", tmp_path / "r.txt", lambda_runtime="provided"
        )
        assert code == 2
        assert "Runtime.InvalidEntrypoint" in err
        assert "Traceback" not in err

    async def test_missing_bootstrap_is_a_configuration_error(
        self, queues: Queues, tmp_path: Path
    ) -> None:
        code, _, err = await run_worker(
            queues, tmp_path, "function.handler", tmp_path / "r.txt", lambda_runtime="provided"
        )
        assert code == 2
        assert "no executable bootstrap" in err


class TestEnvironmentsEndWithTheWorker:
    """No environment outlives the worker, even one killed with SIGKILL."""

    async def test_sigkill_of_the_worker_ends_its_environments(
        self, queues: Queues, tmp_path: Path
    ) -> None:
        root = task_root(
            tmp_path,
            slow="""
            import os, time
            from recorder import record

            def handler(event, context):
                for item in event["Records"]:
                    record(context, item, note=str(os.getpid()))
                time.sleep(60)
            """,
        )
        record_file = tmp_path / "records.txt"
        await send(queues, "one")
        env = {
            **os.environ,
            "AWS_REGION": REGION,
            "RECORD_FILE": str(record_file),
            "WORKER_QUEUE_URL": queues.queue_url,
            "WORKER_ENDPOINT_URL": queues.endpoint_url,
            "WORKER_HANDLER_TYPE": "lambda",
            "WORKER_HANDLER": "slow.handler",
            "WORKER_HANDLER_PATH": str(root),
            "WORKER_HTTP_PORT": "0",
            "WORKER_WAIT_TIME_SECONDS": "1",
            "WORKER_CONCURRENCY": "2",
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "worker",
            "run",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            cwd=ROOT,
            env=env,
        )
        try:
            await eventually(lambda: len(records(record_file)) == 1, timeout=30)
        finally:
            process.send_signal(signal.SIGKILL)
            await process.wait()
        busy = int(records(record_file)[0][3])
        await eventually(lambda: not _alive(busy), timeout=10)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "State:\tZ" in status.read_text())


class TestLimits:
    """The memory setting bounds each environment; shutdown keeps its promises."""

    async def test_memory_limit_bounds_an_environment(
        self, queues: Queues, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        root = task_root(
            tmp_path,
            hungry="""
            from recorder import record

            def handler(event, context):
                for item in event["Records"]:
                    if item["body"] == "big":
                        hoard = bytearray(512 * 1024 * 1024)  # over the 256 MB setting
                        del hoard
                    record(context, item, note=context.memory_limit_in_mb)
            """,
        )
        record_file = tmp_path / "records.txt"
        monkeypatch.setenv("RECORD_FILE", str(record_file))
        settings = queues.settings(
            handler_type=HandlerType.LAMBDA,
            handler="hungry.handler",
            handler_path=root,
            sns_envelope="raw",
            batch_size=1,
            memory_limit_in_mb=256,
        )
        async with running_worker(settings) as running:
            await send(queues, "big")
            await eventually(lambda: running.worker.runner.counts["failed"] >= 1, timeout=30)
            await send(queues, "small")
            await eventually(lambda: len(records(record_file)) >= 1, timeout=30)
        assert [(body, note) for _, _, body, note in records(record_file)] == [("small", "256")]

    async def test_shutdown_kills_what_outlasts_it_and_releases_its_messages(
        self, queues: Queues, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        root = task_root(tmp_path, misbehaving=MISBEHAVING)
        record_file = tmp_path / "records.txt"
        monkeypatch.setenv("RECORD_FILE", str(record_file))
        settings = queues.settings(
            handler_type=HandlerType.LAMBDA,
            handler="misbehaving.handler",
            handler_path=root,
            sns_envelope="raw",
            shutdown_timeout=1,
        )
        async with running_worker(settings) as running:
            await send(queues, "sleep-1")
            await eventually(lambda: running.worker.runner.running == 1, timeout=30)
            await asyncio.sleep(0.5)  # the invocation is under way in its environment
        assert running.report.interrupted == 1
        assert running.report.released == 1
        assert await depth(queues, queues.queue_url) == (1, 0)  # back on the queue at once
