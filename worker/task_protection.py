"""ECS task scale-in protection while handlers run, so that a scale-in does not stop a busy task.

An ECS service that scales in, or rolls out a deployment, stops tasks with SIGTERM and kills them
``stopTimeout`` later — at most 120 s on Fargate. A handler that runs longer, the very jobs this
worker stands in for Lambda for, would be cancelled and its message handed out again. ECS leaves
alone the tasks that ask it to, through the container agent's endpoint
``$ECS_AGENT_URI/task-protection/v1/state``. So the worker asks as soon as a handler starts,
renews the request well before it lapses for as long as handlers run, and withdraws it once no
handler has run for a while (not at once: a steady trickle of messages would otherwise cost two
calls each, and the agent's calls to ECS are throttled).

The agent is reached over plain HTTP on the task's link-local network. A call that fails is logged,
counted and tried again shortly: protection is a request to the scheduler, never a reason to stop
consuming. A SIGTERM that comes anyway (a task stopped by hand, a Fargate Spot interruption) is
handled as ever, by the shutdown deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog

from worker.config import TaskProtectionMode
from worker.consume.lease import Lease
from worker.errors import ConfigurationError
from worker.handlers.adapters import Adapter, Invocation
from worker.metrics import Metrics

log = structlog.get_logger("worker.task_protection")

AGENT_URI_VARIABLE = "ECS_AGENT_URI"
_PATH = "/task-protection/v1/state"


def task_protection(
    mode: TaskProtectionMode, environ: Mapping[str, str], metrics: Metrics
) -> TaskProtection | None:
    """The protection ``mode`` asks for where the worker runs, or ``None`` for none."""
    agent_uri = environ.get(AGENT_URI_VARIABLE, "")
    if mode is TaskProtectionMode.OFF or (mode is TaskProtectionMode.AUTO and not agent_uri):
        return None
    if not agent_uri:
        raise ConfigurationError(
            [
                f"WORKER_ECS_TASK_PROTECTION=on: {AGENT_URI_VARIABLE} is not set, so this is not "
                "an ECS task (the ECS agent sets it in every task); use auto or off elsewhere"
            ]
        )
    return TaskProtection(agent_uri, metrics=metrics)


class TaskProtection:
    """Keeps the task out of scale-ins while handler calls run, and only then.

    An idle task stays unprotected, so that it is the one a scale-in stops and a deployment
    replaces without waiting.
    """

    def __init__(
        self,
        agent_uri: str,
        *,
        metrics: Metrics,
        expires_minutes: int = 15,
        renew_seconds: float = 300.0,
        idle_seconds: float = 30.0,
        retry_seconds: float = 15.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # ExpiresInMinutes bounds how long a worker that can no longer renew (wedged, or cut off
        # from the agent) keeps its task from a scale-in; renewing every third of it lets two
        # renewals fail (each retried every retry_seconds) before it lapses.
        self._url = agent_uri.rstrip("/") + _PATH
        self._metrics = metrics
        self.expires_minutes = expires_minutes
        self.renew_seconds = renew_seconds
        self.idle_seconds = idle_seconds
        self.retry_seconds = retry_seconds
        self._timeout = timeout
        self._clock = clock
        self._running = 0  # handler calls in progress
        self._idle_since = clock()
        self.protected = False  # as the agent last confirmed
        self._renew_at = 0.0
        self._retry_at = 0.0
        self._closing = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return (
            f"TaskProtection(expires_in={self.expires_minutes}m,"
            f" renew_every={self.renew_seconds:g}s, drop_after_idle={self.idle_seconds:g}s)"
        )

    def around(self, adapter: Adapter) -> Adapter:
        """``adapter``, with each call counted: the first call that starts asks for protection.

        A call that outlives its budget and is abandoned counts as ended: its message is settled
        already, and a runaway thread must not hold the task (and deployments) for ever.
        """

        async def counted(leases: Sequence[Lease], deadline: float) -> Invocation:
            self._started()
            try:
                return await adapter(leases, deadline)
            finally:
                self._ended()

        return counted

    def _started(self) -> None:
        self._running += 1
        if self._running == 1:
            self._wake.set()

    def _ended(self) -> None:
        self._running -= 1
        if self._running == 0:
            self._idle_since = self._clock()
            self._wake.set()

    def start(self) -> asyncio.Task[None]:
        """Start keeping the task protected while handlers run, until :meth:`close`."""
        log.info("ecs.task_protection", policy=repr(self))
        self._task = asyncio.get_running_loop().create_task(self._run(), name="task-protection")
        return self._task

    async def close(self) -> None:
        """Stop, and withdraw protection if it is on: nothing runs any more."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            if self._closing:
                if self.protected:
                    await self._set(enabled=False)
                return
            now = self._clock()
            wanted = self._wanted(now)
            if wanted is not None and now >= self._retry_at:
                await self._set(enabled=wanted)
                continue  # the state may have moved while the agent answered
            self._wake.clear()
            timeout = self._next_check(now, wanted)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _wanted(self, now: float) -> bool | None:
        """True: protect (or renew), False: withdraw, None: leave it as it is."""
        if self._running > 0:
            return True if not self.protected or now >= self._renew_at else None
        if self.protected and now - self._idle_since >= self.idle_seconds:
            return False
        return None

    def _next_check(self, now: float, wanted: bool | None) -> float | None:
        """Seconds until the state may call for a change on its own; None: only an event."""
        if wanted is not None:  # held back by a failure
            return max(0.0, self._retry_at - now)
        if not self.protected:
            return None
        if self._running > 0:
            return max(0.0, self._renew_at - now)
        return max(0.0, self._idle_since + self.idle_seconds - now)

    async def _set(self, *, enabled: bool) -> None:
        renewal = enabled and self.protected
        problem = await asyncio.to_thread(self._put, enabled)
        if problem is not None:
            self._retry_at = self._clock() + self.retry_seconds
            self._metrics.task_protection_failures.inc()
            log.warning("ecs.task_protection_failed", protect=enabled, error=problem)
            return
        self.protected = enabled
        self._metrics.task_protected.set(1 if enabled else 0)
        if enabled:
            self._renew_at = self._clock() + self.renew_seconds
        if renewal:
            log.debug("ecs.task_protection_renewed", expires_in_minutes=self.expires_minutes)
        elif enabled:
            log.info("ecs.task_protected", expires_in_minutes=self.expires_minutes)
        else:
            log.info("ecs.task_unprotected")

    def _put(self, enabled: bool) -> str | None:
        """Ask the agent; what went wrong in one line, or None. Runs in a thread."""
        body: dict[str, Any] = {"ProtectionEnabled": enabled}
        if enabled:
            body["ExpiresInMinutes"] = self.expires_minutes
        request = urllib.request.Request(  # noqa: S310 -- the agent's URL, from the ECS agent
            self._url,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="PUT",
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:  # noqa: S310
                answer = response.read()
        except urllib.error.HTTPError as exc:
            try:
                answer = exc.read()
            finally:
                exc.close()
            return _problem(answer, enabled) or f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return _problem(answer, enabled)


def _problem(answer: bytes, enabled: bool) -> str | None:
    """What the agent's answer says went wrong (its ``failure`` or ``error``), or None."""
    try:
        document = json.loads(answer)
    except ValueError:
        return "the agent's answer is not JSON"
    if not isinstance(document, dict):
        return "the agent's answer is not a JSON object"
    failure, error = document.get("failure"), document.get("error")
    if isinstance(failure, dict):
        return f"{failure.get('Reason')}: {failure.get('Detail')}"
    if isinstance(error, dict):
        return f"{error.get('Code')}: {error.get('Message')}"
    protection = document.get("protection")
    if isinstance(protection, dict) and protection.get("ProtectionEnabled") is enabled:
        return None
    return f"unexpected answer: {answer[:200].decode(errors='replace')}"
