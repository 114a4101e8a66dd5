"""ECS task scale-in protection, against a stand-in for the ECS agent's endpoint on loopback.

The stand-in answers ``PUT <ECS_AGENT_URI>/task-protection/v1/state`` as the agent does (its
``protection``, ``failure`` and ``error`` documents) and records what it was asked. The worker
runs against the session's moto server, so messages flow as they do in a real task.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from tests.support import Queues, eventually, running_worker, send
from worker import Message
from worker.config import TaskProtectionMode
from worker.consume.lease import Lease
from worker.errors import ConfigurationError
from worker.handlers.adapters import Invocation
from worker.metrics import Metrics
from worker.task_protection import TaskProtection, task_protection

TASK_ARN = "arn:aws:ecs:us-east-1:123456789012:task/orders/0123456789abcdef0"
Answer = Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]


def protection(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """What the agent answers when ECS took the request."""
    enabled = body["ProtectionEnabled"]
    return 200, {
        "protection": {
            "ExpirationDate": "2030-01-01T00:15:00Z" if enabled else None,
            "ProtectionEnabled": enabled,
            "TaskArn": TASK_ARN,
        }
    }


def not_in_a_service(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """A standalone task: ECS protects tasks of services only."""
    return 200, {"failure": {"Arn": TASK_ARN, "Detail": None, "Reason": "TASK_NOT_VALID"}}


def access_denied(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The task role lacks ecs:UpdateTaskProtection."""
    return 400, {
        "requestID": "12345-abc",
        "error": {
            "Arn": TASK_ARN,
            "Code": "AccessDeniedException",
            "Message": "not authorized to perform: ecs:UpdateTaskProtection",
        },
    }


class Agent:
    """A stand-in for the ECS container agent's task-protection endpoint."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.answer: Answer = protection
        agent = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/api/task-1/task-protection/v1/state":
                    status, document = 404, {"error": {"Code": "NotFound", "Message": self.path}}
                else:
                    agent.requests.append(body)
                    status, document = agent.answer(body)
                payload = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.uri = f"http://127.0.0.1:{self._server.server_address[1]}/api/task-1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def enabled(self) -> list[bool]:
        """What each request asked for, in order."""
        return [request["ProtectionEnabled"] for request in self.requests]


@pytest.fixture
def agent() -> Iterator[Agent]:
    stand_in = Agent()
    try:
        yield stand_in
    finally:
        stand_in.close()


@pytest.fixture
def on_ecs(agent: Agent, monkeypatch: pytest.MonkeyPatch) -> Agent:
    """The worker runs as in an ECS task: the agent's URI is in its environment."""
    monkeypatch.setenv("ECS_AGENT_URI", agent.uri)
    return agent


def value(registry: CollectorRegistry, name: str, queue: str) -> float:
    return registry.get_sample_value(name, {"queue": queue}) or 0.0


class TestInTheWorker:
    """A worker in an ECS task protects it while a handler runs, and drops that when stopping."""

    async def test_a_running_handler_protects_the_task(self, queues: Queues, on_ecs: Agent) -> None:
        registry = CollectorRegistry()
        q = queues.queue_name
        started, finish = asyncio.Event(), asyncio.Event()

        async def long_job(message: Message) -> None:
            started.set()
            await finish.wait()

        async with running_worker(queues.settings(), long_job, registry) as running:
            assert running.worker.protection is not None  # auto: ECS_AGENT_URI is set
            assert on_ecs.requests == []  # nothing runs: nothing to protect
            await send(queues, "a long job")
            await asyncio.wait_for(started.wait(), 15)
            await eventually(lambda: value(registry, "worker_task_protected", q) == 1)
            assert on_ecs.requests == [{"ProtectionEnabled": True, "ExpiresInMinutes": 15}]
            finish.set()
            await eventually(lambda: value(registry, "worker_messages_deleted_total", q) == 1)
        # Stopping withdraws it (here before the idle delay would have).
        assert on_ecs.enabled() == [True, False]
        assert value(registry, "worker_task_protected", q) == 0
        assert value(registry, "worker_task_protection_failures_total", q) == 0

    @pytest.mark.parametrize(
        ("answer", "error"),
        [
            pytest.param(not_in_a_service, "TASK_NOT_VALID: None", id="failure"),
            pytest.param(
                access_denied,
                "AccessDeniedException: not authorized to perform: ecs:UpdateTaskProtection",
                id="error",
            ),
        ],
    )
    async def test_agent_failures_are_logged_counted_and_not_fatal(
        self, queues: Queues, on_ecs: Agent, answer: Answer, error: str
    ) -> None:
        on_ecs.answer = answer
        registry = CollectorRegistry()
        q = queues.queue_name
        handled: list[str] = []

        async def job(message: Message) -> None:
            handled.append(message.body)
            await asyncio.sleep(0.5)  # long enough for the protection call to be made

        with capture_logs() as logs:
            async with running_worker(queues.settings(), job, registry):
                await send(queues, "one", "two")
                await eventually(lambda: value(registry, "worker_messages_deleted_total", q) == 2)
                await eventually(lambda: on_ecs.requests != [])
        assert sorted(handled) == ["one", "two"]
        failed = [e for e in logs if e["event"] == "ecs.task_protection_failed"]
        assert failed
        assert failed[0]["error"] == error
        assert failed[0]["log_level"] == "warning"
        assert value(registry, "worker_task_protection_failures_total", q) == len(failed)
        assert value(registry, "worker_task_protected", q) == 0

    async def test_an_agent_that_cannot_be_reached(
        self, queues: Queues, agent: Agent, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        agent.close()  # the port is closed now
        monkeypatch.setenv("ECS_AGENT_URI", agent.uri)
        registry = CollectorRegistry()
        q = queues.queue_name

        async def job(message: Message) -> None:
            await asyncio.sleep(0.5)

        with capture_logs() as logs:
            async with running_worker(queues.settings(), job, registry):
                await send(queues, "x")
                await eventually(lambda: value(registry, "worker_messages_deleted_total", q) == 1)
                await eventually(
                    lambda: value(registry, "worker_task_protection_failures_total", q) >= 1
                )
        failed = [e for e in logs if e["event"] == "ecs.task_protection_failed"]
        assert failed[0]["error"].startswith("URLError: ")

    async def test_off_asks_nothing(self, queues: Queues, on_ecs: Agent) -> None:
        settings = queues.settings(ecs_task_protection="off")
        registry = CollectorRegistry()

        async def job(message: Message) -> None:
            await asyncio.sleep(0.2)

        async with running_worker(settings, job, registry) as running:
            assert running.worker.protection is None
            await send(queues, "x")
            await eventually(
                lambda: value(registry, "worker_messages_deleted_total", queues.queue_name) == 1
            )
        assert on_ecs.requests == []

    async def test_on_outside_ecs_is_a_configuration_error(self, queues: Queues) -> None:
        async def job(message: Message) -> None:
            """Never called."""

        with pytest.raises(ConfigurationError) as raised:
            async with running_worker(queues.settings(ecs_task_protection="on"), job):
                pass
        (problem,) = raised.value.problems
        assert problem.startswith("WORKER_ECS_TASK_PROTECTION=on: ECS_AGENT_URI is not set")


class TestModes:
    """``auto`` protects in an ECS task only; ``on`` insists on one; ``off`` never does."""

    @pytest.mark.parametrize(
        ("mode", "environ", "protects"),
        [
            (TaskProtectionMode.AUTO, {"ECS_AGENT_URI": "http://169.254.170.2/api/x"}, True),
            (TaskProtectionMode.AUTO, {}, False),
            (TaskProtectionMode.AUTO, {"ECS_AGENT_URI": ""}, False),
            (TaskProtectionMode.ON, {"ECS_AGENT_URI": "http://169.254.170.2/api/x"}, True),
            (TaskProtectionMode.OFF, {"ECS_AGENT_URI": "http://169.254.170.2/api/x"}, False),
        ],
    )
    def test_modes(self, mode: TaskProtectionMode, environ: dict[str, str], protects: bool) -> None:
        made = task_protection(mode, environ, Metrics(CollectorRegistry(), queue="q"))
        assert (made is not None) == protects

    def test_on_without_the_agent(self) -> None:
        with pytest.raises(ConfigurationError):
            task_protection(TaskProtectionMode.ON, {}, Metrics(CollectorRegistry(), queue="q"))


@contextlib.asynccontextmanager
async def protecting(
    agent: Agent,
    *,
    renew_seconds: float = 300.0,
    idle_seconds: float = 30.0,
    retry_seconds: float = 15.0,
) -> AsyncIterator[TaskProtection]:
    """A started TaskProtection with the given timing, closed on exit."""
    kept = TaskProtection(
        agent.uri,
        metrics=Metrics(CollectorRegistry(), queue="q"),
        renew_seconds=renew_seconds,
        idle_seconds=idle_seconds,
        retry_seconds=retry_seconds,
    )
    kept.start()
    try:
        yield kept
    finally:
        await kept.close()


class Calls:
    """Handler calls through the protection's adapter, each running until it is let go."""

    def __init__(self, kept: TaskProtection) -> None:
        self._adapter = kept.around(self._call)
        self._gates: deque[asyncio.Event] = deque()  # one per call started, taken as it runs
        self._all: list[asyncio.Event] = []
        self._tasks: set[asyncio.Task[Invocation]] = set()

    async def _call(self, leases: Sequence[Lease], deadline: float) -> Invocation:
        await self._gates.popleft().wait()
        return Invocation([])

    def start(self) -> None:
        gate = asyncio.Event()
        self._gates.append(gate)
        self._all.append(gate)
        task = asyncio.get_running_loop().create_task(self._adapter([], 0.0))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def finish_all(self) -> None:
        for gate in self._all:
            gate.set()
        await asyncio.gather(*self._tasks)


class TestTiming:
    """Renewed while handlers run, dropped after an idle spell, and retried after a failure.

    The timing is shortened for the test; the worker's own is 15 minutes, renewed every 5, and
    dropped after 30 s without a handler running.
    """

    async def test_renewed_while_a_handler_runs_then_dropped_when_idle(self, agent: Agent) -> None:
        async with protecting(agent, renew_seconds=0.1, idle_seconds=0.2) as kept:
            calls = Calls(kept)
            calls.start()
            await eventually(lambda: len(agent.requests) >= 3)
            assert agent.enabled()[:3] == [True, True, True]
            assert all(r["ExpiresInMinutes"] == 15 for r in agent.requests[:3])
            await calls.finish_all()
            await eventually(lambda: agent.enabled()[-1] is False)
            assert kept.protected is False
            assert agent.enabled().count(False) == 1

    async def test_a_short_gap_between_handlers_keeps_it(self, agent: Agent) -> None:
        async with protecting(agent, idle_seconds=30) as kept:
            calls = Calls(kept)
            calls.start()
            await eventually(lambda: kept.protected)
            await calls.finish_all()
            calls.start()  # the next message comes within the idle delay
            await calls.finish_all()
            calls.start()
            await calls.finish_all()
            assert agent.enabled() == [True]
        assert agent.enabled() == [True, False]  # withdrawn on close

    async def test_a_failed_call_is_retried(self, agent: Agent) -> None:
        answers = iter([access_denied, protection])

        def first_refused(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            return next(answers)(body)

        agent.answer = first_refused
        async with protecting(agent, retry_seconds=0.1) as kept:
            calls = Calls(kept)
            calls.start()
            await eventually(lambda: kept.protected)
            assert agent.enabled() == [True, True]
            await calls.finish_all()

    async def test_nothing_to_withdraw_on_close_when_never_protected(self, agent: Agent) -> None:
        async with protecting(agent):
            pass
        assert agent.requests == []
