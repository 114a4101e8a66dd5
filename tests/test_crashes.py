"""Worker processes that die, stop under load, run misbehaving handlers, or cannot start.

Workers run as subprocesses (``python -m worker run``, as in tests/test_process.py) with the
handlers of tests/fault_handlers.py, which record into the ledger's marker files, so that the
invariant (tests/invariant.py) is checked across processes, including one killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import errno
import io
import json
import logging
import os
import re
import signal
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from tests.faults import Fault, FaultProxy, Rule
from tests.invariant import Ledger
from tests.support import REGION, Queues, depth, eventually, make_queues
from tests.test_process import ROOT, Process, run_args, worker_env, worker_process
from worker.config import LogFormat, LogLevel, Settings
from worker.consume.sqs import open_sqs
from worker.logs import configure_logging, lines_dropped

pytestmark = pytest.mark.slow

RECORD = "tests.fault_handlers:record"
FLOODED, FLOOD_LINES = 200, 100  # messages, and log lines each handler call writes
RECORD_SYNC = "tests.fault_handlers:record_sync"


def http_port(worker: Process) -> int:
    """The status server's port, from the worker's ``worker.started`` line."""
    started = next(e for e in worker.events() if e["event"] == "worker.started")
    return int(str(started["http_port"]))


def probe(port: int, path: str = "/healthz") -> tuple[int, str]:
    """(status, body) of a GET on a worker's status server."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def event(worker: Process, name: str) -> dict[str, Any]:
    """The worker's (first) log event called ``name``."""
    return next(e for e in worker.events() if e["event"] == name)


def is_json(line: str) -> bool:
    """Whether a log line is one JSON object."""
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def whole_events(worker: Process) -> list[dict[str, Any]]:
    """The worker's log events, skipping lines that are not one JSON object."""
    return [json.loads(line) for line in worker.err.splitlines() if is_json(line)]


async def run_worker(env: dict[str, str], *args: str) -> tuple[int, str]:
    """Run ``python -m worker ARGS`` with exactly ``env``: (exit code, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return int(proc.returncode or 0), err.decode()


def one_clear_line(worker: Process) -> str:
    """What a worker that could not start wrote: exactly one line, no traceback."""
    assert "Traceback" not in worker.err, worker.err
    lines = worker.err.strip().splitlines()
    assert len(lines) == 1, worker.err
    assert lines[0].startswith("worker: ")
    return lines[0]


@pytest.fixture
def proxy(broker_endpoint: str) -> Iterator[FaultProxy]:
    """A fault proxy in front of the session's moto server, with no fault to begin with."""
    with FaultProxy(broker_endpoint, seed=11) as started:
        yield started


class TestKilledWorker:
    """Two workers on one queue, one killed with SIGKILL mid-work: the other finishes the job."""

    async def test_sigkill_mid_work_loses_nothing(
        self, broker_endpoint: str, tmp_path: Path
    ) -> None:
        # A short visibility timeout, so that the killed worker's messages come back soon.
        queues = await make_queues(broker_endpoint, visibility_timeout=4, max_receive_count=5)
        ledger = Ledger(markers=tmp_path)
        await ledger.publish(queues, 150)
        options = {
            **run_args(queues, RECORD),
            "WORKER_CONCURRENCY": "5",
            "TEST_SLEEP": "0.1",
            "TEST_SLEEP_JITTER": "0.2",
        }
        async with (
            worker_process(tmp_path, "run", **options) as survivor,
            worker_process(tmp_path, "run", **options) as victim,
        ):
            victim_pid = victim.proc.pid
            await eventually(lambda: len(ledger.started_by(victim_pid)) >= 20, timeout=30)
            victim.proc.kill()
            assert await victim.exit_code() == -signal.SIGKILL
            # What it had taken up and not finished when it died.
            stranded = ledger.started_by(victim_pid) - ledger.handled_by(victim_pid)
            assert stranded, "the kill struck while the worker had nothing in hand"
            await eventually(lambda: len(ledger.handled_counts()) == 150, timeout=60)
            survivor.signal(signal.SIGTERM)
            assert await survivor.exit_code() == 0
        verdict = (await ledger.inspect(queues, settle_timeout=10)).check()
        assert verdict.in_dlq == set()
        # The stranded messages came back after their visibility timeout, to the survivor.
        assert stranded <= set(ledger.handled_counts())


class TestShutdownUnderLoad:
    """SIGTERM with every slot busy and deletes in flight, then a restart: nothing lost or
    duplicated, since a graceful stop finishes, flushes or gives back everything it holds."""

    async def test_sigterm_with_a_full_pool_and_pending_deletes(
        self, broker_endpoint: str, proxy: FaultProxy, tmp_path: Path
    ) -> None:
        queues = await make_queues(broker_endpoint, visibility_timeout=30, max_receive_count=3)
        ledger = Ledger(markers=tmp_path)
        await ledger.publish(queues, 60)
        # Every delete takes a second and a half to be answered: some are always in flight.
        proxy.add(Rule.on(Fault.LATENCY, "DeleteMessageBatch", seconds=1.5))
        options = {**run_args(queues, RECORD), "WORKER_ENDPOINT_URL": proxy.url}
        async with worker_process(
            tmp_path, "run", **options, WORKER_CONCURRENCY="8", TEST_SLEEP="1"
        ) as worker:
            pid = worker.proc.pid
            # A second round of handlers has started: the pool is full, and the first round's
            # deletes are waiting on the slow broker.
            await eventually(lambda: len(ledger.started_by(pid)) >= 12, timeout=30)
            worker.signal(signal.SIGTERM)
            assert await worker.exit_code(timeout=60) == 0
        assert proxy.injected[Fault.LATENCY] >= 1
        stopped = event(worker, "worker.stopped")
        handled_here = len(ledger.handled_counts())
        # Every handler that was running finished, and every one of its deletes was sent.
        assert ledger.started_by(pid) == set(ledger.handled_counts())
        assert stopped["deleted"] == handled_here
        proxy.clear()
        async with worker_process(
            tmp_path, "run", "--exit-when-idle", "2", **options, TEST_SLEEP="0"
        ) as successor:
            assert await successor.exit_code(timeout=60) == 0
        verdict = (await ledger.inspect(queues, settle_timeout=5, allowed_duplicates=())).check()
        assert verdict.figures()["handled"] == 60
        assert verdict.duplicates == {}


class TestMisbehavingHandlers:
    """Handlers that flood the logs or never return do not take the worker down."""

    async def flood(self, queues: Queues, tmp_path: Path, ledger: Ledger) -> Process:
        """Run a worker whose handler threads log hundreds of lines per message, until idle."""
        await ledger.publish(queues, FLOODED)
        async with worker_process(
            tmp_path,
            "run",
            "--exit-when-idle",
            "2",
            **run_args(queues, "tests.fault_handlers:floods"),
            WORKER_CONCURRENCY="8",
            TEST_FLOOD_LINES=str(FLOOD_LINES),
        ) as worker:
            assert await worker.exit_code(timeout=60) == 0
        return worker

    async def test_a_handler_that_floods_the_logs(self, queues: Queues, tmp_path: Path) -> None:
        ledger = Ledger(markers=tmp_path)
        worker = await self.flood(queues, tmp_path, ledger)
        (await ledger.inspect(queues, allowed_duplicates=())).check()
        assert len(worker.err.splitlines()) > FLOODED * FLOOD_LINES  # all went through
        assert worker.out.count("\n") == FLOODED * FLOOD_LINES
        stopped = [e for e in whole_events(worker) if e["event"] == "worker.stopped"]
        assert stopped[0]["deleted"] == FLOODED

    async def test_flooding_leaves_every_log_line_whole(
        self, queues: Queues, tmp_path: Path
    ) -> None:
        worker = await self.flood(queues, tmp_path, Ledger(markers=tmp_path))
        broken = [line for line in worker.err.splitlines() if not is_json(line)]
        assert broken == []

    async def test_sync_handlers_that_never_return(self, queues: Queues, tmp_path: Path) -> None:
        ledger = Ledger(markers=tmp_path)
        options = {
            **run_args(queues, RECORD_SYNC),
            "WORKER_CONCURRENCY": "3",
            "WORKER_MAX_PROCESSING_SECONDS": "1",
            "WORKER_SHUTDOWN_TIMEOUT": "2",
        }
        async with worker_process(tmp_path, "run", **options) as worker:
            await eventually(lambda: "worker.started" in worker.err, timeout=30)
            port = http_port(worker)
            for held in (1, 2):
                # One more message that hangs on its first delivery, and five ordinary ones.
                await ledger.publish(queues, 1, kind="hang")
                await ledger.publish(queues, 5)
                # The hung handler keeps its slot; the others are handled with what is left, and
                # the hung message itself on its second delivery.
                await eventually(lambda h=held: len(ledger.handled_counts()) == 6 * h, timeout=30)
                status, body = await asyncio.to_thread(probe, port)
                assert status == 200, body
                metrics = (await asyncio.to_thread(probe, port, "/metrics"))[1]
                assert f'worker_handlers_abandoned{{queue="{queues.queue_name}"}} {held}.0' in (
                    metrics
                )
            # A third: every slot is held by a handler past its budget. Only now does liveness
            # fail, since only a restart can free them.
            await ledger.publish(queues, 1, kind="hang")
            await eventually(lambda: asyncio.to_thread(lambda: probe(port)[0] == 503), timeout=30)
            status, body = await asyncio.to_thread(probe, port)
            assert json.loads(body)["problems"] == [
                "all 3 handler slots held by handlers past their budget"
            ]
            worker.signal(signal.SIGTERM)
            assert await worker.exit_code(timeout=30) == 0
        assert event(worker, "worker.threads_left_running")["threads"] == 3
        # After the restart the third one is handled too, on its second delivery.
        async with worker_process(tmp_path, "run", "--exit-when-idle", "2", **options) as again:
            assert await again.exit_code(timeout=60) == 0
        verdict = (await ledger.inspect(queues, settle_timeout=5, allowed_duplicates=())).check()
        assert verdict.figures()["handled"] == 13


class TestStartupFaults:
    """What stops the worker from starting is said in one line, with a non-zero exit code."""

    async def test_no_credentials(
        self, queues: Queues, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        empty = tmp_path / "empty"
        empty.write_text("", encoding="utf-8")
        async with worker_process(
            tmp_path,
            "run",
            **run_args(queues),
            AWS_SHARED_CREDENTIALS_FILE=str(empty),
            AWS_CONFIG_FILE=str(empty),
            AWS_EC2_METADATA_DISABLED="true",
        ) as worker:
            assert await worker.exit_code() == 1
        assert one_clear_line(worker) == (
            f"worker: cannot read queue {queues.queue_url}: no AWS credentials found "
            "(set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or a role)"
        )

    async def test_wrong_region(self, queues: Queues, tmp_path: Path) -> None:
        # The queue exists, in us-east-1: asked for in another region, it does not.
        async with worker_process(
            tmp_path, "run", "--region", "eu-west-1", **run_args(queues)
        ) as worker:
            assert await worker.exit_code() == 1
        assert one_clear_line(worker) == f"worker: queue {queues.queue_url} does not exist"

    @pytest.mark.parametrize("region", ["us east 1", None], ids=["malformed", "none"])
    async def test_malformed_or_missing_region(
        self, queues: Queues, tmp_path: Path, region: str | None
    ) -> None:
        empty = tmp_path / "empty"
        empty.write_text("", encoding="utf-8")
        env = worker_env(
            tmp_path,
            WORKER_ENDPOINT_URL=queues.endpoint_url,
            WORKER_HANDLER=RECORD,
            AWS_CONFIG_FILE=str(empty),
        )
        for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
            env.pop(name, None)
        if region is not None:
            env["WORKER_REGION"] = region
        # The queue by name: there is no region to read from a URL either.
        code, err = await run_worker(env, "run", "--queue", queues.queue_name)
        assert code == 1
        assert "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1, err
        assert "region" in err

    async def test_wrong_endpoint(self, queues: Queues, tmp_path: Path) -> None:
        # Something answers there, but it is not SQS: the worker's own status server.
        async with worker_process(tmp_path, "run", **run_args(queues, RECORD)) as healthy:
            await eventually(lambda: "worker.started" in healthy.err, timeout=30)
            not_sqs = f"http://127.0.0.1:{http_port(healthy)}"
            async with worker_process(
                tmp_path, "run", **{**run_args(queues), "WORKER_ENDPOINT_URL": not_sqs}
            ) as worker:
                assert await worker.exit_code() == 1
        line = one_clear_line(worker)
        assert line.startswith(f"worker: cannot read queue {queues.queue_url}: ")

    async def test_dlq_missing(self, broker_endpoint: str, tmp_path: Path) -> None:
        settings = Settings(endpoint_url=broker_endpoint, region=REGION)
        name = f"lost-dlq-{tmp_path.name[-8:]}"
        async with open_sqs(settings) as sqs:
            url = (await sqs.create_queue(QueueName=name))["QueueUrl"]
            dlq_url = (await sqs.create_queue(QueueName=f"{name}-dlq"))["QueueUrl"]
            dlq_arn = (
                await sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])
            )["Attributes"]["QueueArn"]
            policy = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3}
            await sqs.set_queue_attributes(
                QueueUrl=url, Attributes={"RedrivePolicy": json.dumps(policy)}
            )
            await sqs.delete_queue(QueueUrl=dlq_url)  # the RedrivePolicy now names nothing
        async with worker_process(
            tmp_path,
            "run",
            WORKER_QUEUE_URL=url,
            WORKER_ENDPOINT_URL=broker_endpoint,
            WORKER_HANDLER=RECORD,
        ) as worker:
            assert await worker.exit_code() == 1
        assert one_clear_line(worker) == (
            f"worker: the DLQ {dlq_arn} named by the RedrivePolicy of {url} does not exist"
        )


def free_port() -> int:
    """A port nothing listens on now (for a worker whose log line naming its port is lost)."""
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return int(probe_socket.getsockname()[1])


class TestBrokenLogStream:
    """A log stream that refuses every write (a closed pipe; a full disk acts the same) costs
    log lines, counted, and nothing else: failures reach the DLQ and SIGTERM stops the worker."""

    def test_a_failed_write_is_dropped_and_counted_never_raised(self) -> None:
        class Full(io.StringIO):
            def write(self, text: str) -> int:
                raise OSError(errno.ENOSPC, "No space left on device")

        configure_logging(LogLevel.DEBUG, LogFormat.JSON, stream=Full())
        structlog.get_logger("worker").warning("message.failed", reason="handler_error")
        logging.getLogger("botocore").warning("a library's own line")
        assert lines_dropped() == 2

    async def test_stderr_a_closed_pipe(self, queues: Queues, tmp_path: Path) -> None:
        ledger = Ledger(markers=tmp_path)
        poison = await ledger.publish(queues, 3, kind="poison")
        port = free_port()
        read_end, write_end = os.pipe()
        os.close(read_end)  # every write to stderr now fails with EPIPE
        env = {
            **worker_env(tmp_path, **run_args(queues, RECORD)),
            "WORKER_HTTP_PORT": str(port),
            # As reported: at debug level the worker used to die at its first line instead.
            "WORKER_LOG_LEVEL": "warning",
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "worker",
            "run",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=write_end,
            env=env,
            cwd=ROOT,
        )
        os.close(write_end)
        try:
            await eventually(
                lambda: _depth_is(queues, queues.dlq_url, (len(poison), 0)), timeout=60
            )
            status, _ = await asyncio.to_thread(probe, port)
            assert status == 200
            metrics = (await asyncio.to_thread(probe, port, "/metrics"))[1]
            dropped = re.search(r"^worker_log_lines_dropped_total\{[^}]*\} (\S+)$", metrics, re.M)
            assert dropped is not None
            assert float(dropped.group(1)) >= len(poison) * queues.max_receive_count
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), timeout=30) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert await depth(queues, queues.queue_url) == (0, 0)


async def _depth_is(queues: Queues, url: str, expected: tuple[int, int]) -> bool:
    return await depth(queues, url) == expected
