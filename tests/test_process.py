"""The ``worker`` command as operators run it: a process, signals, exit codes, one-line errors."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.handlers import marks
from tests.support import REGION, Queues, depth, drain, eventually, make_queues, send
from worker.config import Settings
from worker.consume.sqs import open_sqs
from worker.ops.demo import run_demo

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@dataclass
class Process:
    """A ``python -m worker`` subprocess and the files its output goes to."""

    proc: asyncio.subprocess.Process
    stdout: Path
    stderr: Path

    def signal(self, number: int) -> None:
        self.proc.send_signal(number)

    async def exit_code(self, timeout: float = 30) -> int:
        return await asyncio.wait_for(self.proc.wait(), timeout)

    @property
    def err(self) -> str:
        return self.stderr.read_text(encoding="utf-8")

    @property
    def out(self) -> str:
        return self.stdout.read_text(encoding="utf-8")

    def events(self) -> list[dict[str, object]]:
        """The JSON log lines it wrote."""
        return [json.loads(line) for line in self.err.splitlines() if line.startswith("{")]


def worker_env(tmp_path: Path, **variables: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("WORKER_") and key != "PYTHONPATH"
    }
    env.update(
        PYTHONPATH=str(ROOT),
        TEST_MARKERS=str(tmp_path),
        WORKER_LOG_FORMAT="json",
        WORKER_LOG_LEVEL="debug",
        WORKER_HTTP_PORT="0",
        AWS_REGION=REGION,
        **variables,
    )
    return env


@asynccontextmanager
async def worker_process(tmp_path: Path, *args: str, **variables: str) -> AsyncIterator[Process]:
    """Start ``python -m worker ARGS`` with ``WORKER_*`` ``variables``; killed if left running."""
    async with _spawn(tmp_path, args, variables, stdin=None) as process:
        yield process


@asynccontextmanager
async def _spawn(
    tmp_path: Path, args: tuple[str, ...], variables: dict[str, str], *, stdin: bytes | None
) -> AsyncIterator[Process]:
    name = f"w{time.monotonic_ns()}"
    stdout, stderr = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "worker",
            *args,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=worker_env(tmp_path, **variables),
            cwd=ROOT,
        )
    if stdin is not None:
        assert proc.stdin is not None
        proc.stdin.write(stdin)
        await proc.stdin.drain()
        proc.stdin.close()
    try:
        yield Process(proc, stdout, stderr)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def run_args(queues: Queues, handler: str = "tests.handlers:slow") -> dict[str, str]:
    return {
        "WORKER_QUEUE_URL": queues.queue_url,
        "WORKER_ENDPOINT_URL": queues.endpoint_url,
        "WORKER_HANDLER": handler,
        "WORKER_WAIT_TIME_SECONDS": "1",
    }


class TestGracefulShutdown:
    """SIGTERM: running handlers finish, unstarted messages go back at once, nothing is lost."""

    async def test_sigterm_mid_work_loses_nothing(
        self, broker_endpoint: str, tmp_path: Path
    ) -> None:
        # A 60 s visibility timeout: a message stranded in flight would stay invisible.
        queues = await make_queues(broker_endpoint, visibility_timeout=60)
        async with worker_process(
            tmp_path,
            "run",
            **{**run_args(queues), "WORKER_WAIT_TIME_SECONDS": "5"},
            WORKER_CONCURRENCY="4",
            # No fill: the poller goes straight from the three started handlers to its receive
            # with the fourth slot. With one, it can still be collecting slots (up to 20 ms)
            # when SIGTERM comes, and stop without that receive (seen once in CI).
            WORKER_RECEIVE_FILL_SECONDS="0",
            TEST_SLEEP="2",
        ) as worker:
            await send(queues, "a", "b", "c")
            await eventually(lambda: set(marks(tmp_path, "started")) == {"a", "b", "c"})
            # The fourth slot is now in an open long poll on an empty queue.
            worker.signal(signal.SIGTERM)
            await eventually(lambda: "worker.stopping" in worker.err)
            # These arrive while that poll is open: it returns them after the stop; they must be
            # released, not started and not stranded.
            await send(queues, "late-1", "late-2")
            assert await worker.exit_code() == 0
        assert marks(tmp_path, "done") == {"a": 1, "b": 1, "c": 1}
        assert "late-1" not in marks(tmp_path, "started")
        assert await depth(queues, queues.queue_url) == (2, 0)  # visible at once
        # The open poll held the one free slot, so it asked for (and released) one message;
        # the other was never received.
        released = [e for e in worker.events() if e["event"] == "message.released"]
        assert len(released) == 1
        stopped = next(e for e in worker.events() if e["event"] == "worker.stopped")
        assert stopped["deleted"] == 3

        # The next worker picks the released messages up at once, far inside 60 s.
        async with worker_process(
            tmp_path, "run", "--exit-when-idle", "2", **run_args(queues), TEST_SLEEP="0"
        ) as successor:
            assert await successor.exit_code(timeout=20) == 0
        assert marks(tmp_path, "done") == {"a": 1, "b": 1, "c": 1, "late-1": 1, "late-2": 1}
        assert await depth(queues, queues.queue_url) == (0, 0)
        assert await depth(queues, queues.dlq_url) == (0, 0)

    async def test_handlers_past_the_shutdown_timeout_are_released(
        self, queues: Queues, tmp_path: Path
    ) -> None:
        async with worker_process(
            tmp_path,
            "run",
            **run_args(queues),
            WORKER_CONCURRENCY="1",
            WORKER_SHUTDOWN_TIMEOUT="1",
            TEST_SLEEP="60",
        ) as worker:
            await send(queues, "stuck")
            await eventually(lambda: "stuck" in marks(tmp_path, "started"))
            started = time.monotonic()
            worker.signal(signal.SIGTERM)
            assert await worker.exit_code() == 0
        assert time.monotonic() - started < 10
        assert await depth(queues, queues.queue_url) == (1, 0)
        assert "stuck" not in marks(tmp_path, "done")

    async def test_a_blocked_sync_handler_does_not_keep_the_process_alive(
        self, queues: Queues, tmp_path: Path
    ) -> None:
        async with worker_process(
            tmp_path,
            "run",
            **run_args(queues, "tests.handlers:slow_sync"),
            WORKER_SHUTDOWN_TIMEOUT="1",
            TEST_SLEEP="60",
        ) as worker:
            await send(queues, "blocked")
            await eventually(lambda: "blocked" in marks(tmp_path, "started"))
            worker.signal(signal.SIGTERM)
            assert await worker.exit_code(timeout=15) == 0
        names = [e["event"] for e in worker.events()]
        assert "worker.threads_left_running" in names
        # Its thread ran on while the process stopped: the message was not handed to another
        # consumer then (it was released at once), but left to come back after its timeout.
        assert "message.left_to_visibility_timeout" in names
        assert "message.released" not in names
        assert await depth(queues, queues.queue_url) == (0, 1)

    async def test_a_thread_a_handler_left_running_does_not_keep_the_process_alive(
        self, queues: Queues, tmp_path: Path
    ) -> None:
        source = (
            "import threading, time\n\n"
            "def handle(message):\n"
            "    threading.Thread(target=time.sleep, args=(3600,), name='left-behind').start()\n"
        )
        async with user_handler(tmp_path, queues, source) as worker:
            await send(queues, "starts-a-thread")
            await eventually(lambda: "message.deleted" in worker.err)
            worker.signal(signal.SIGTERM)
            # It used to wait for that thread: still running 40 s later.
            assert await worker.exit_code() == 0
        forced = next(e for e in worker.events() if e["event"] == "worker.exit_forced")
        assert forced["threads"] == ["left-behind"]
        assert await depth(queues, queues.queue_url) == (0, 0)

    async def test_an_async_handler_that_swallows_cancellation(
        self, moto_endpoint: str, tmp_path: Path
    ) -> None:
        queues = await make_queues(moto_endpoint, visibility_timeout=3)
        source = (
            "import asyncio, os, pathlib\n\n"
            "async def handle(message):\n"
            "    with (pathlib.Path(os.environ['TEST_MARKERS']) / 'calls').open('a') as calls:\n"
            "        calls.write(message.body + '\\n')\n"
            "    while True:\n"
            "        try:\n"
            "            await asyncio.sleep(0.1)\n"
            "        except BaseException:  # a bare except in a loop: cancellation is lost\n"
            "            pass\n"
        )
        calls = tmp_path / "calls"
        async with user_handler(
            tmp_path,
            queues,
            source,
            WORKER_MAX_PROCESSING_SECONDS="1",
            WORKER_BACKOFF_BASE_SECONDS="0.1",
            WORKER_BACKOFF_MAX_SECONDS="0.1",
            WORKER_SHUTDOWN_TIMEOUT="2",
        ) as worker:
            await send(queues, "never-ends")
            await eventually(calls.exists)
            # Past its budget (1 s) and the grace of its cancellation (1 s), its retry would
            # come 0.1 s later: it must not run beside the coroutine that is still running.
            await asyncio.sleep(4)
            assert calls.read_text(encoding="utf-8").split() == ["never-ends"]
            assert "message.handler_still_running" in worker.err
            worker.signal(signal.SIGTERM)
            assert await worker.exit_code() == 0
        names = [e["event"] for e in worker.events()]
        assert "message.left_to_visibility_timeout" in names
        assert "message.released" not in names  # not handed to a retry beside it
        left = next(e for e in worker.events() if e["event"] == "worker.threads_left_running")
        assert left["coroutines"] == 1
        # The process is gone: the message comes back after its visibility timeout.
        await eventually(lambda: _depth_is(queues, (1, 0)))

    async def test_second_signal_exits_at_once(self, queues: Queues, tmp_path: Path) -> None:
        async with worker_process(
            tmp_path,
            "run",
            **run_args(queues),
            WORKER_SHUTDOWN_TIMEOUT="60",
            TEST_SLEEP="60",
        ) as worker:
            await send(queues, "long")
            await eventually(lambda: "long" in marks(tmp_path, "started"))
            worker.signal(signal.SIGTERM)
            await eventually(lambda: "worker.stopping" in worker.err)
            started = time.monotonic()
            worker.signal(signal.SIGINT)
            assert await worker.exit_code(timeout=10) == 128 + signal.SIGINT
        assert time.monotonic() - started < 5
        assert "worker.forced_exit" in worker.err

    async def test_ctrl_c_on_an_idle_worker_says_what_it_waits_for(
        self, queues: Queues, tmp_path: Path
    ) -> None:
        async with worker_process(
            tmp_path,
            "run",
            **{**run_args(queues), "WORKER_WAIT_TIME_SECONDS": "20"},
            WORKER_CONCURRENCY="2",
            TEST_SLEEP="0.5",
        ) as worker:
            await send(queues, "one")
            # While it ran, the poller's receive for the other slot opened: 20 s on an empty queue.
            await eventually(lambda: "one" in marks(tmp_path, "done"))
            worker.signal(signal.SIGINT)
            await eventually(lambda: "worker.waiting_for_receive" in worker.err)
            worker.signal(signal.SIGINT)
            assert await worker.exit_code(timeout=10) == 128 + signal.SIGINT
        (waiting,) = [e for e in worker.events() if e["event"] == "worker.waiting_for_receive"]
        seconds = waiting["seconds"]
        assert isinstance(seconds, int)
        assert 1 <= seconds <= 20
        assert waiting["message"] == (
            f"waiting up to {seconds} s for the open receive; Ctrl-C again to quit"
        )


class TestStartup:
    """What stops the worker from starting is said in one line, without a traceback."""

    async def test_bad_configuration_exits_2_with_one_line_per_problem(
        self, tmp_path: Path
    ) -> None:
        async with worker_process(
            tmp_path,
            "run",
            WORKER_CONCURRENCY="zero",
            WORKER_HANDLER_TYPE="java",
            WORKER_CONCURENCY="8",
        ) as worker:
            assert await worker.exit_code() == 2
        lines = worker.err.splitlines()
        assert sorted(lines) == sorted(
            [
                "worker: configuration error: WORKER_CONCURENCY: unknown setting "
                "(did you mean WORKER_CONCURRENCY?)",
                "worker: configuration error: WORKER_CONCURRENCY: Input should be a valid "
                "integer, unable to parse string as an integer (got 'zero')",
                "worker: configuration error: WORKER_HANDLER_TYPE: Input should be 'message' or "
                "'lambda' (got 'java')",
                # What `run` needs and was not given, in the same breath.
                "worker: configuration error: WORKER_HANDLER: required ('package.module:function',"
                " or Lambda's 'module.function')",
                "worker: configuration error: WORKER_QUEUE_URL or WORKER_QUEUE_NAME (--queue): "
                "required",
            ]
        )

    async def test_handler_that_cannot_be_imported(self, queues: Queues, tmp_path: Path) -> None:
        async with worker_process(
            tmp_path, "run", **run_args(queues, "no_such_package.module:handle")
        ) as worker:
            assert await worker.exit_code() == 2
        assert worker.err.strip().splitlines()[-1] == (
            "worker: configuration error: WORKER_HANDLER=no_such_package.module:handle: "
            "no module named 'no_such_package'"
        )
        assert "Traceback" not in worker.err

    @pytest.mark.parametrize("function", ["handle", "handle_async"])
    async def test_a_generator_function_is_refused(
        self, queues: Queues, tmp_path: Path, function: str
    ) -> None:
        # A stray yield: calling it runs none of its code, and every message would "succeed".
        code = await refused_handler(
            queues,
            tmp_path,
            "def handle(message):\n    yield\n\nasync def handle_async(message):\n    yield\n",
            function,
        )
        assert code == (
            f"worker: configuration error: WORKER_HANDLER=user_code:{function}: {function} is a "
            "generator function (a yield in its body), not a handler"
        )

    @pytest.mark.parametrize(
        ("raised", "shown"),
        [
            pytest.param(
                "class Halt(BaseException):\n    pass\n\nraise Halt('no licence')",
                "Halt: no licence",
                id="base-exception-subclass",
            ),
            pytest.param("raise KeyboardInterrupt", "KeyboardInterrupt", id="keyboard-interrupt"),
        ],
    )
    async def test_a_module_that_raises_a_base_exception_at_import(
        self, queues: Queues, tmp_path: Path, raised: str, shown: str
    ) -> None:
        # These were a traceback, and KeyboardInterrupt a silent exit with code 130.
        line = await refused_handler(queues, tmp_path, raised, "handle")
        assert line == (
            "worker: configuration error: WORKER_HANDLER=user_code:handle: "
            f"importing user_code failed: {shown}"
        )

    async def test_missing_queue(self, moto_endpoint: str, tmp_path: Path) -> None:
        async with worker_process(
            tmp_path,
            "run",
            "--queue",
            "no-such-queue",
            WORKER_ENDPOINT_URL=moto_endpoint,
            WORKER_HANDLER="tests.handlers:slow",
        ) as worker:
            assert await worker.exit_code() == 1
        assert worker.err.strip() == "worker: queue 'no-such-queue' does not exist"

    async def test_queue_without_dlq_is_refused_unless_allowed(
        self, broker_endpoint: str, tmp_path: Path
    ) -> None:
        settings = Settings(endpoint_url=broker_endpoint, region=REGION)
        async with open_sqs(settings) as sqs:
            url = (await sqs.create_queue(QueueName=f"no-dlq-{time.monotonic_ns()}"))["QueueUrl"]
        variables = {
            "WORKER_QUEUE_URL": url,
            "WORKER_ENDPOINT_URL": broker_endpoint,
            "WORKER_HANDLER": "tests.handlers:slow",
        }
        async with worker_process(tmp_path, "run", **variables) as refused:
            assert await refused.exit_code() == 1
        assert "has no RedrivePolicy" in refused.err
        assert len(refused.err.strip().splitlines()) == 1
        async with worker_process(
            tmp_path,
            "run",
            "--exit-when-idle",
            "1",
            **variables,
            WORKER_ALLOW_NO_DLQ="true",
            WORKER_WAIT_TIME_SECONDS="1",
        ) as allowed:
            assert await allowed.exit_code() == 0
        assert any(e["event"] == "worker.no_dlq" for e in allowed.events())

    async def test_unreachable_endpoint(self, tmp_path: Path) -> None:
        async with worker_process(
            tmp_path,
            "run",
            "--queue",
            "http://127.0.0.1:9/123456789012/q",
            WORKER_ENDPOINT_URL="http://127.0.0.1:9",
            WORKER_HANDLER="tests.handlers:slow",
        ) as worker:
            assert await worker.exit_code() == 1
        assert worker.err.strip().startswith("worker: cannot read queue")
        assert "Traceback" not in worker.err


@asynccontextmanager
async def user_handler(
    tmp_path: Path, queues: Queues, source: str, function: str = "handle", **variables: str
) -> AsyncIterator[Process]:
    """``worker run`` with ``user_code:FUNCTION`` from a module of ``source``."""
    directory = tmp_path / "code"
    directory.mkdir(exist_ok=True)
    (directory / "user_code.py").write_text(source, encoding="utf-8")
    async with worker_process(
        tmp_path,
        "run",
        **run_args(queues, f"user_code:{function}"),
        WORKER_HANDLER_PATH=str(directory),
        **variables,
    ) as worker:
        yield worker


async def _depth_is(queues: Queues, expected: tuple[int, int]) -> bool:
    return await depth(queues, queues.queue_url) == expected


async def refused_handler(queues: Queues, tmp_path: Path, source: str, function: str) -> str:
    """The error line of a worker refusing ``function`` of a module with ``source`` (exit 2)."""
    async with user_handler(tmp_path, queues, source, function) as worker:
        assert await worker.exit_code() == 2
    assert "Traceback" not in worker.err, worker.err
    # After the JSON lines of the start (the queue was reached), one line for the operator.
    (line,) = [line for line in worker.err.splitlines() if not line.startswith("{")]
    return line


class TestCommands:
    """provision, publish and demo."""

    async def test_provision_is_idempotent(self, broker_endpoint: str, tmp_path: Path) -> None:
        name = f"prov-{time.monotonic_ns()}"
        args = ("provision", "--queue", name, "--endpoint-url", broker_endpoint)
        async with worker_process(tmp_path, *args, "--max-receive-count", "4") as first:
            assert await first.exit_code() == 0
        async with worker_process(tmp_path, *args, "--max-receive-count", "4") as second:
            assert await second.exit_code() == 0
        verdicts = {line.split()[0]: line.split()[1] for line in first.out.splitlines()}
        assert verdicts["topic"] == verdicts["queue"] == verdicts["dlq"] == "created"
        assert verdicts["subscription"] == "created"
        again = {line.split()[0]: line.split()[1] for line in second.out.splitlines()}
        assert again["topic"] == again["queue"] == again["dlq"] == again["subscription"]
        assert again["subscription"] == "unchanged"
        assert second.out.splitlines()[-1] == "unchanged: everything was already as asked"
        settings = Settings(endpoint_url=broker_endpoint, region=REGION)
        async with open_sqs(settings) as sqs:
            url = (await sqs.get_queue_url(QueueName=name))["QueueUrl"]
            attributes = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]))[
                "Attributes"
            ]
        assert json.loads(attributes["RedrivePolicy"])["maxReceiveCount"] == 4
        policy = json.loads(attributes["Policy"])["Statement"][0]
        assert policy["Principal"] == {"Service": "sns.amazonaws.com"}
        assert policy["Condition"]["ArnEquals"]["aws:SourceArn"].endswith(f":{name}")

    async def test_publish_from_stdin_with_attributes(self, queues: Queues, tmp_path: Path) -> None:
        lines = b'{"n": 1}\n\n{"n": 2}\n'
        async with _spawn(
            tmp_path,
            (
                "publish",
                "--file",
                "-",
                "--topic",
                queues.topic_arn,
                "--attribute",
                "source=test",
                "--attribute",
                "priority:Number=5",
                "--endpoint-url",
                queues.endpoint_url,
            ),
            {},
            stdin=lines,
        ) as publisher:
            assert await publisher.exit_code() == 0
        assert len(publisher.out.split()) == 2  # the message ids
        assert "published 2 messages" in publisher.err
        received = await drain(queues, queues.queue_url, expect=2)
        envelopes = [json.loads(m["Body"]) for m in received]
        assert sorted(json.loads(e["Message"])["n"] for e in envelopes) == [1, 2]
        assert envelopes[0]["MessageAttributes"]["source"] == {"Type": "String", "Value": "test"}
        assert envelopes[0]["MessageAttributes"]["priority"] == {"Type": "Number", "Value": "5"}

    async def test_demo_runs_the_main_job(self, tmp_path: Path) -> None:
        async with worker_process(tmp_path, "demo") as demo:
            assert await demo.exit_code(timeout=90) == 0
        assert "Everything as expected." in demo.out
        assert "moved to the DLQ" in demo.out
        # The DLQ's two ways back: a redrive once the outage is over, then a separate function.
        assert "moved 1 of 3 messages" in demo.out
        assert "worker run: order-1400 processed" in demo.out
        assert "order-1300   archived: amount 'lots' is not a number" in demo.out
        assert "queue and DLQ: 0 messages" in demo.out
        assert 'worker_messages_received_total{queue="demo-orders"} 20.0' in demo.out
        assert "→ DLQ, on the embedded local broker (moto)\n" in demo.out

    async def test_demo_says_which_endpoint_it_ran_on(self, moto_endpoint: str) -> None:
        out = io.StringIO()
        settings = Settings(endpoint_url=moto_endpoint, region=REGION)
        assert await run_demo(settings, out) == 0, out.getvalue()
        assert f"→ DLQ, at {moto_endpoint}\n" in out.getvalue()
        assert "embedded" not in out.getvalue()
