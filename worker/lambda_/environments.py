"""Execution environments: the function runs as on Lambda, one invocation at a time per process.

Lambda never calls a function from two threads of one process: concurrency means more
execution environments, each a process that initialises the function once (module-level state,
clients, Powertools' processor) and then handles one invocation after another. Code written for
Lambda counts on that, so the worker does the same:

- an environment is a process running the function under a runtime interface client (AWS's
  ``awslambdaric`` for Python; any executable ``bootstrap`` for ``provided``, Lambda's OS-only
  runtime) against its own :class:`~worker.lambda_.runtime_api.RuntimeApi` on loopback;
- environments start on demand, up to one per handler slot (``WORKER_CONCURRENCY``), and stay
  warm until the worker stops; an idle one takes the next batch;
- at the deadline an environment is killed and replaced, its batch failed as a timeout; one that
  exits or is killed mid-invocation (``os._exit``, a segmentation fault, the kernel's OOM killer)
  fails its batch with ``Runtime.ExitError`` and is replaced; the worker goes on;
- each line an environment writes reaches the worker's standard output with the request id of
  the invocation it belongs to (:mod:`worker.lambda_.logs`), framed by START, END and REPORT.

Environments die with the worker: the kernel kills each one when the worker's process ends
(``PR_SET_PDEATHSIG`` on Linux), SIGKILL included, and each runs in its own process group so
that killing it takes whatever it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
import signal
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVarTuple

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from worker.config import LambdaRuntime, Settings
from worker.errors import ConfigurationError
from worker.lambda_.env import FunctionIdentity, lambda_environment
from worker.lambda_.invocation import (
    INIT_TIMEOUT_SECONDS,
    FunctionError,
    FunctionResponse,
    InvocationRequest,
    Result,
    StartHook,
)
from worker.lambda_.logs import LineForwarder, OutputFormat
from worker.lambda_.runtime_api import RuntimeApi

if TYPE_CHECKING:
    from asyncio.subprocess import Process

log = structlog.get_logger("worker.lambda")

_KILL_GRACE_SECONDS = 0.5  # SIGTERM, then SIGKILL, when the worker stops
_READ_CHUNK = 64 * 1024
REPLACE_CAUSES = ("timeout", "exit", "init_error")


@dataclass(frozen=True)
class EnvironmentSpec:
    """How to start an environment: the command, where, with which variables and limits."""

    command: tuple[str, ...]
    task_root: Path
    environment: Mapping[str, str]
    function_arn: str
    memory_limit_mb: int  # reported as Lambda's Memory Size; enforced when ``enforce_memory``
    enforce_memory: bool = False
    output: OutputFormat = OutputFormat.TEXT
    version: str = "$LATEST"


class EnvironmentMetrics:
    """What operators watch of the environments: how many, how busy, how often replaced."""

    def __init__(self, registry: CollectorRegistry, *, queue: str) -> None:
        gauge = Gauge(
            "worker_lambda_environments",
            "Lambda execution environments by state (busy: running an invocation; idle: warm).",
            ["queue", "state"],
            registry=registry,
        )
        self.busy = gauge.labels(queue, "busy")
        self.idle = gauge.labels(queue, "idle")
        self.started = Counter(
            "worker_lambda_environments_started_total",
            "Execution environments started (cold starts).",
            ["queue"],
            registry=registry,
        ).labels(queue)
        replaced = Counter(
            "worker_lambda_environments_replaced_total",
            "Execution environments killed or lost and replaced, by cause.",
            ["queue", "cause"],
            registry=registry,
        )
        self.replaced = {cause: replaced.labels(queue, cause) for cause in REPLACE_CAUSES}
        self.lines_dropped = Counter(
            "worker_lambda_log_lines_dropped_total",
            "Lines an environment wrote that could not be forwarded (a closed or full output).",
            ["queue"],
            registry=registry,
        ).labels(queue)
        self.init_duration = Histogram(
            "worker_lambda_init_duration_seconds",
            "Time from an environment's start to its first request for an event.",
            ["queue"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        ).labels(queue)


class Environment:
    """One process running the function, and the Runtime API it talks to."""

    def __init__(self, spec: EnvironmentSpec, number: int, forwarder: LineForwarder) -> None:
        self.spec = spec
        self.number = number
        self._forwarder = forwarder
        self.api: RuntimeApi | None = None
        self.process: Process | None = None
        self.request_id: str | None = None  # the invocation running now, for its log lines
        self.init_seconds: float | None = None  # reported once, on the first invocation
        self.init_timed_out = False  # its init outlasted the limit (see EnvironmentPool._take)
        # Set where an init past the limit was tried again under the function's timeout: the
        # first invocation must end by then, its init counted in it, as on Lambda.
        self.suppressed_deadline: float | None = None
        self._readers: list[asyncio.Task[None]] = []
        self._partial = [b"", b""]  # stdout's and stderr's line not yet ended
        self._exited: asyncio.Task[int] | None = None
        self._started = 0.0
        # /proc/<pid>/status, opened once: its peak memory is read after every invocation, and
        # an open descriptor stays with the process (a reused pid cannot be read through it).
        self._status: int | None = None

    @property
    def alive(self) -> bool:
        """Whether the process still runs."""
        return self._exited is not None and not self._exited.done()

    async def start(self) -> None:
        """Start the process against a new Runtime API; returns once it is spawned."""
        self.api = RuntimeApi()
        address = await self.api.start()
        variables = {**self.spec.environment, "AWS_LAMBDA_RUNTIME_API": address}
        self._started = time.monotonic()
        _watch_children_on_the_loop()
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self.spec.command,
                cwd=self.spec.task_root,
                env=variables,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                preexec_fn=_dies_with(os.getpid(), self.spec),
            )
        except OSError:  # the entrypoint cannot be run: not executable, no interpreter...
            await self.api.close()
            raise
        self._readers = [
            asyncio.create_task(self._forward(stream, index))
            for index, stream in enumerate((self.process.stdout, self.process.stderr))
            if stream is not None  # both are pipes
        ]
        self._exited = asyncio.create_task(self.process.wait())
        with contextlib.suppress(OSError):  # no /proc: no peak memory in the REPORT line
            self._status = os.open(f"/proc/{self.process.pid}/status", os.O_RDONLY)

    async def initialise(self, deadline: float) -> FunctionError | None:
        """Wait until the function is ready for events; the error if it cannot be."""
        api, exited = self._parts()
        outcome = await _first_of(api.initialised, exited, deadline)
        if outcome is api.initialised:
            error = api.initialised.result()
            if error is None:
                self.init_seconds = time.monotonic() - self._started
                return None
            await self.kill()
            return error
        if outcome is exited:
            await self._drain_output()
            return FunctionError(
                "Runtime.ExitError",
                f"Runtime exited without providing a reason ({_exit_status(exited)})",
            )
        self.init_timed_out = True
        await self.kill()
        return FunctionError("Runtime.InitError", "the function did not initialise in time")

    async def invoke(self, request: InvocationRequest, deadline: float) -> tuple[Result, str]:
        """Run one invocation until ``deadline``; the result and, on failure, the cause."""
        api, exited = self._parts()
        self.request_id = request.request_id
        invoked = time.monotonic()
        answer = api.invoke(request)
        try:
            outcome = await _first_of(answer, exited, deadline)
            if outcome is answer:
                await self._end_output()
        except asyncio.CancelledError:
            # The worker stops and ran out of time: the invocation cannot finish. Kill it.
            await self.kill()
            raise
        finally:
            self.request_id = None
        if outcome is answer:
            return answer.result(), ""
        if outcome is exited:
            await self._drain_output()
            status = _exit_status(exited)
            return (
                FunctionError(
                    "Runtime.ExitError",
                    f"RequestId: {request.request_id} Error: Runtime exited with error: {status}",
                ),
                "exit",
            )
        await self.kill()
        return (
            FunctionError(
                "Sandbox.Timedout",
                f"RequestId: {request.request_id} Error: Task timed out after "
                f"{time.monotonic() - invoked:.2f} seconds",
            ),
            "timeout",
        )

    def fetched(self, request_id: str) -> bool:
        """Whether the runtime took the invocation ``request_id`` with a ``next``."""
        return self.api is not None and self.api.fetched == request_id

    def _parts(self) -> tuple[RuntimeApi, asyncio.Task[int]]:
        if self.api is None or self._exited is None:
            raise RuntimeError("the environment was not started")
        return self.api, self._exited

    def max_memory_mb(self) -> int | None:
        """The process's peak resident memory (VmHWM), where the OS tells it."""
        if self._status is None:
            return None
        try:
            status = os.pread(self._status, 4096, 0)
        except OSError:  # the process has been reaped
            return None
        start = status.find(b"VmHWM:")
        if start < 0:
            return None
        return int(status[start + 6 : status.index(b"kB", start)]) // 1024

    async def kill(self, grace: float = 0.0) -> None:
        """End the process and everything it started; close its Runtime API."""
        process = self.process
        if process is not None and process.returncode is None:
            if grace > 0:
                _signal_group(process.pid, signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(process.wait()), grace)
            _signal_group(process.pid, signal.SIGKILL)
            await process.wait()
        if self.api is not None:
            await self.api.close()
        if self._status is not None:
            os.close(self._status)
            self._status = None
        await self._drain_output()

    async def _drain_output(self) -> None:
        """Let the readers forward what the process wrote before it ended."""
        if self._readers:
            await asyncio.wait(self._readers, timeout=1.0)
            for reader in self._readers:
                reader.cancel()
            await asyncio.gather(*self._readers, return_exceptions=True)
            self._readers = []

    async def _end_output(self) -> None:
        """What the invocation wrote is its own: let the readers take what the pipes already
        hold (a few turns of the loop), then end a last line the function left open, as
        Lambda does at the end of an invocation, rather than prefix the next one's with it."""
        for _ in range(3):
            await asyncio.sleep(0)
        for index, pending in enumerate(self._partial):
            if pending:
                self._partial[index] = b""
                self._forwarder.line(pending, self.request_id)

    async def _forward(self, stream: asyncio.StreamReader, index: int) -> None:
        """Forward the process's output, line by line, tagged with the running request id."""
        while chunk := await stream.read(_READ_CHUNK):
            pending = self._partial[index] + chunk
            # Lambda's runtimes end the lines of one multi-line entry with "\r": a line each.
            *lines, pending = pending.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
            for line in lines:
                self._forwarder.line(line, self.request_id)
            if len(pending) > _READ_CHUNK:  # a line that never ends is cut, not hoarded
                self._forwarder.line(pending, self.request_id)
                pending = b""
            self._partial[index] = pending
        if self._partial[index]:
            self._forwarder.line(self._partial[index], self.request_id)
            self._partial[index] = b""


class EnvironmentPool:
    """Up to ``size`` environments of one function; an invocation takes an idle one or a new one.

    The runner starts at most ``WORKER_CONCURRENCY`` handler calls at once, so at most that many
    environments exist; none is shared by two invocations.
    """

    def __init__(
        self,
        spec: EnvironmentSpec,
        *,
        size: int,
        metrics: EnvironmentMetrics,
        forwarder: LineForwarder | None = None,
        init_timeout: float = INIT_TIMEOUT_SECONDS,
    ) -> None:
        self.spec = spec
        self.size = size
        self.init_timeout = init_timeout
        self.metrics = metrics
        self._forwarder = forwarder or LineForwarder(spec.output, on_drop=metrics.lines_dropped.inc)
        self._idle: list[Environment] = []
        self._busy: set[Environment] = set()
        self._numbers = 0
        self._closed = False
        # Bound once: the module's lazy logger builds a bound logger on every call, and each
        # invocation logs three lines (START, END, REPORT).
        self._log = log.bind()

    @property
    def busy(self) -> int:
        """Environments running an invocation."""
        return len(self._busy)

    @property
    def idle(self) -> int:
        """Warm environments waiting for an invocation."""
        return len(self._idle)

    def environment_pids(self) -> list[int]:
        """The process ids of the environments, idle ones first (for benchmarks and probes)."""
        environments = [*self._idle, *self._busy]
        return [e.process.pid for e in environments if e.process is not None]

    async def warm_up(self, seconds: float) -> FunctionError | None:
        """Start one environment and initialise it: a function that cannot load says so now.

        An init that only takes longer than ``seconds`` is not an error: as Lambda does, the
        first invocation tries it again under the function's timeout.
        """
        try:
            environment = await self._start()
        except OSError as exc:
            return _invalid_entrypoint(exc)
        error = await environment.initialise(time.monotonic() + seconds)
        if error is not None:
            self.metrics.replaced["init_error"].inc()
            if environment.init_timed_out:
                self._log_slow_init()
                return None
            return error
        self._log_init(environment)
        self._idle.append(environment)
        self._count()
        return None

    async def invoke(
        self, event: bytes, deadline: float, started: StartHook | None = None
    ) -> Result:
        """Run one invocation of the function on ``event``.

        ``deadline`` (monotonic) is where the function's timeout ends if the invocation starts
        now. A cold start first initialises the function, under Lambda's own limit on init
        (:data:`INIT_TIMEOUT_SECONDS`), and, as on Lambda, the timeout counts from the end of
        it: the invocation's deadline moves later by the init's time, and ``started`` is told
        it (and may cap it).
        """
        timeout = deadline - time.monotonic()
        request_id = str(uuid.uuid4())
        for attempt in range(2):
            environment, cold_error = await self._take(timeout)
            began = time.monotonic()
            if attempt == 0:
                self._log.info("lambda.start", request_id=request_id, version=self.spec.version)
            if environment is None:
                assert cold_error is not None  # noqa: S101 -- one or the other
                self._report(request_id, began, None, cold_error, status="error")
                return cold_error
            # After an init tried again under the timeout, the first invocation shares it.
            invocation_deadline = environment.suppressed_deadline or began + timeout
            environment.suppressed_deadline = None
            result, cause, init_seconds = await self._invoke_on(
                environment, request_id, event, invocation_deadline, started
            )
            if cause == "exit" and not environment.fetched(request_id) and attempt == 0:
                # The runtime ended after its last answer, before it took this event: as on
                # Lambda, the event goes to a new environment instead of failing unseen.
                self._log.info("lambda.redispatched", request_id=request_id)
                continue
            break
        status = "success" if isinstance(result, FunctionResponse) else "error"
        if cause == "timeout":
            status = "timeout"
        self._report(
            request_id,
            began,
            environment,
            result,
            status=status,
            init_seconds=init_seconds,
        )
        return result

    async def _invoke_on(
        self,
        environment: Environment,
        request_id: str,
        event: bytes,
        deadline: float,
        started: StartHook | None,
    ) -> tuple[Result, str, float | None]:
        """One invocation on a taken environment: its result, the cause of a replacement,
        and the environment's init time on its first invocation."""
        if started is not None:
            deadline = started(deadline)
        request = InvocationRequest(
            request_id=request_id,
            event=event,
            deadline_ms=int((time.time() + deadline - time.monotonic()) * 1000),
            function_arn=self.spec.function_arn,
            trace_id=_trace_id(),
        )
        init_seconds, environment.init_seconds = environment.init_seconds, None
        cause = ""
        try:
            result, cause = await environment.invoke(request, deadline)
        finally:
            self._busy.discard(environment)
            if environment.alive and not cause and not self._closed:
                self._idle.append(environment)
            else:
                await environment.kill()
                if cause:
                    self.metrics.replaced[cause].inc()
            self._count()
        return result, cause, init_seconds

    async def close(self, grace: float = _KILL_GRACE_SECONDS) -> None:
        """Stop every environment: SIGTERM, then SIGKILL after ``grace`` seconds."""
        self._closed = True
        environments = [*self._idle, *self._busy]
        self._idle.clear()
        await asyncio.gather(
            *(environment.kill(grace) for environment in environments), return_exceptions=True
        )
        self._count()

    async def _take(
        self, function_timeout: float
    ) -> tuple[Environment | None, FunctionError | None]:
        """An initialised environment for one invocation: a warm one, or a cold start.

        A cold start's init has Lambda's limit (``init_timeout``). Past it, as on Lambda, it is
        tried once more under the function's timeout, which the invocation then shares.
        """
        while self._idle:
            idle = self._idle.pop()
            if idle.alive:
                self._busy.add(idle)
                self._count()
                return idle, None
            self.metrics.replaced["exit"].inc()  # died while idle
            await idle.kill()
        environment, error = await self._cold_start(time.monotonic() + self.init_timeout)
        if environment is None and error is None:  # the init outlasted the limit
            self._log_slow_init()
            retried = time.monotonic()
            environment, error = await self._cold_start(retried + function_timeout)
            if environment is not None:
                environment.suppressed_deadline = retried + function_timeout
            elif error is None:
                error = FunctionError(
                    "Runtime.InitError", "the function did not initialise in time"
                )
        if environment is None:
            assert error is not None  # noqa: S101 -- one or the other
            self._log.warning(
                "lambda.init_failed", error_type=error.error_type, error=error.error_message
            )
            return None, FunctionError(
                "Runtime.InitError", f"{error.error_type}: {error.error_message}"
            )
        self._log_init(environment)
        return environment, None

    async def _cold_start(self, deadline: float) -> tuple[Environment | None, FunctionError | None]:
        """A new environment, initialised by ``deadline``; (None, None) if its init ran out
        of time, (None, error) if it failed."""
        try:
            environment = await self._start()
        except OSError as exc:
            return None, _invalid_entrypoint(exc)
        self._busy.add(environment)
        self._count()
        error = await environment.initialise(deadline)
        if error is None:
            return environment, None
        self._busy.discard(environment)
        self._count()
        self.metrics.replaced["init_error"].inc()
        return None, None if environment.init_timed_out else error

    def _log_slow_init(self) -> None:
        self._log.warning(
            "lambda.init_slow",
            limit_seconds=self.init_timeout,
            message=(
                f"the function's init took over {self.init_timeout:g} s; as on Lambda, it is "
                "tried again at the first invocation, under the function's timeout"
            ),
        )

    async def _start(self) -> Environment:
        self._numbers += 1
        environment = Environment(self.spec, self._numbers, self._forwarder)
        await environment.start()
        self.metrics.started.inc()
        return environment

    def _log_init(self, environment: Environment) -> None:
        if environment.init_seconds is not None:
            self.metrics.init_duration.observe(environment.init_seconds)
            self._log.info(
                "lambda.init",
                environment=environment.number,
                init_duration_ms=round(environment.init_seconds * 1000, 2),
            )

    def _count(self) -> None:
        self.metrics.busy.set(len(self._busy))
        self.metrics.idle.set(len(self._idle))

    def _report(
        self,
        request_id: str,
        started: float,
        environment: Environment | None,
        result: Result,
        *,
        status: str,
        init_seconds: float | None = None,
    ) -> None:
        """Lambda's END and REPORT lines, as structured events."""
        duration_ms = (time.monotonic() - started) * 1000
        self._log.info("lambda.end", request_id=request_id)
        fields: dict[str, object] = {
            "request_id": request_id,
            "duration_ms": round(duration_ms, 2),
            "billed_duration_ms": int(-(-duration_ms // 1)),
            "memory_size_mb": self.spec.memory_limit_mb,
            "status": status,
        }
        peak = environment.max_memory_mb() if environment is not None else None
        if peak is not None:
            fields["max_memory_used_mb"] = peak
        if init_seconds is not None:
            fields["init_duration_ms"] = round(init_seconds * 1000, 2)
        if isinstance(result, FunctionError):
            fields["error_type"] = result.error_type
        self._log.info("lambda.report", **fields)


def _watch_children_on_the_loop() -> None:
    """Learn that an environment's process ended from the event loop, not from a thread.

    Python 3.11's asyncio waits for each child process in a thread of its own
    (``ThreadedChildWatcher``): a thread per execution environment, for the environment's whole
    life, with its stack (about 0.02 MB each, and a thread of the process's limit). A pidfd
    (Linux 5.3) makes a child's end readable on the event loop instead, as Python 3.12 does by
    default. Where the kernel or a seccomp profile refuses pidfds, the threads stay; a watcher
    the application chose itself is left to it.
    """
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return
    if type(asyncio.get_child_watcher()) is not asyncio.ThreadedChildWatcher:
        return
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return
    asyncio.set_child_watcher(_PidfdChildWatcher())


if sys.version_info < (3, 12):
    _Ts = TypeVarTuple("_Ts")

    class _PidfdChildWatcher(asyncio.AbstractChildWatcher):
        """Python 3.12's pidfd watcher: each child's end is read on the loop that started it.

        3.11's own ``PidfdChildWatcher`` serves the one loop attached to it, and the main
        thread's ``set_event_loop`` moves it to each new loop: a process started on any other
        loop (a thread's, or one not set as the thread's loop) could not be started ("not
        activated"), or had its end read on a loop that stopped first, forgetting it: its
        ``wait()`` never returned. Nothing here depends on which loop is attached.
        """

        def is_active(self) -> bool:
            return True

        def close(self) -> None:
            pass

        def attach_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
            pass

        def __enter__(self) -> _PidfdChildWatcher:
            return self

        def __exit__(self, *_: object) -> None:
            pass

        def add_child_handler(
            self, pid: int, callback: Callable[[int, int, *_Ts], object], *args: *_Ts
        ) -> None:
            loop = asyncio.get_running_loop()  # asyncio calls this on the loop it starts on
            pidfd = os.pidfd_open(pid)
            loop.add_reader(pidfd, self._reap, loop, pid, pidfd, callback, args)

        def remove_child_handler(self, pid: int) -> bool:
            return True  # asyncio never calls it (nor does 3.12's)

        @staticmethod
        def _reap(
            loop: asyncio.AbstractEventLoop,
            pid: int,
            pidfd: int,
            callback: Callable[[int, int, *_Ts], object],
            args: tuple[*_Ts],
        ) -> None:
            loop.remove_reader(pidfd)
            try:
                _, status = os.waitpid(pid, 0)
            except ChildProcessError:  # reaped elsewhere: its status is gone (asyncio says 255)
                returncode = 255
            else:
                returncode = os.waitstatus_to_exitcode(status)
            os.close(pidfd)
            callback(pid, returncode, *args)


def _invalid_entrypoint(exc: OSError) -> FunctionError:
    """Lambda's error for a runtime that cannot be started."""
    return FunctionError(
        "Runtime.InvalidEntrypoint", f"{type(exc).__name__}: {exc.strerror or exc}"
    )


def _trace_id() -> str:
    """An X-Ray trace header of the form Lambda sends (not sampled: nothing records it)."""
    root = f"1-{int(time.time()):08x}-{secrets.token_hex(12)}"
    return f"Root={root};Parent={secrets.token_hex(8)};Sampled=0"


async def _first_of(
    first: asyncio.Future[object] | asyncio.Future[Result] | asyncio.Future[FunctionError | None],
    exited: asyncio.Task[int],
    deadline: float,
) -> object | None:
    """Which of ``first`` and ``exited`` is done first, or ``None`` at the deadline.

    An answer that arrived together with the exit counts: the function answered, then its
    process ended (a runtime that exits after its last response).
    """
    waiting: set[asyncio.Future[object]] = {first, exited}  # type: ignore[arg-type]
    await asyncio.wait(
        waiting,
        timeout=max(0.0, deadline - time.monotonic()),
        return_when=asyncio.FIRST_COMPLETED,
    )
    if first.done():
        return first
    if exited.done():
        return exited
    return None


def _exit_status(exited: asyncio.Task[int]) -> str:
    code = exited.result()
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"signal: {_SIGNAL_WORDS.get(name, name)}"
    return f"exit status {code}"


# As Go's os/exec names them, which is how Lambda's messages read ("signal: killed").
_SIGNAL_WORDS = {
    "SIGKILL": "killed",
    "SIGSEGV": "segmentation fault",
    "SIGABRT": "aborted",
    "SIGTERM": "terminated",
    "SIGBUS": "bus error",
    "SIGILL": "illegal instruction",
    "SIGFPE": "floating point exception",
}


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


@functools.cache
def _libc() -> Any:
    import ctypes  # noqa: PLC0415 -- Lambda handlers only, on Linux

    return ctypes.CDLL(None, use_errno=True)


def _dies_with(parent: int, spec: EnvironmentSpec) -> Callable[[], None] | None:
    """What the child runs before exec: ask the kernel to kill it when the worker dies.

    Linux only (``prctl(PR_SET_PDEATHSIG)``); elsewhere an environment notices when its next
    request to the Runtime API fails, and exits. The memory limit, where set, is applied here
    too, as a data-segment limit (``RLIMIT_DATA``: heap and private mappings, not the address
    space a runtime merely reserves), so that an allocation past it fails in the function.
    """
    if not sys.platform.startswith("linux"):
        return None
    import resource  # noqa: PLC0415 -- Lambda handlers only

    libc = _libc()
    set_parent_death_signal = 1  # PR_SET_PDEATHSIG
    data_limit = spec.memory_limit_mb * 1024 * 1024 if spec.enforce_memory else None

    def before_exec() -> None:
        libc.prctl(set_parent_death_signal, signal.SIGKILL)
        if os.getppid() != parent:  # the worker died before the line above took effect
            os._exit(1)
        if data_limit is not None:
            resource.setrlimit(resource.RLIMIT_DATA, (data_limit, data_limit))

    return before_exec


def environment_spec(
    settings: Settings, identity: FunctionIdentity, environ: Mapping[str, str] | None = None
) -> EnvironmentSpec:
    """How this worker's function's environments start; a :class:`ConfigurationError` if not.

    The environment's variables are the worker's own (the function's configuration and AWS
    credentials come from the container, as a function's come from its configuration), less the
    worker's ``WORKER_*`` settings, plus those the Lambda runtime sets.
    """
    source = os.environ if environ is None else environ
    task_root = (settings.handler_path or Path.cwd()).resolve()
    handler = settings.handler or ""
    variables = {name: value for name, value in source.items() if not name.startswith("WORKER_")}
    for name, value in lambda_environment(identity, handler=None, task_root=task_root).items():
        variables.setdefault(name, value)
    variables["LAMBDA_TASK_ROOT"] = str(task_root)
    variables.setdefault("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
    if settings.lambda_runtime is LambdaRuntime.PROVIDED:
        bootstrap = task_root / "bootstrap"
        if not bootstrap.is_file() or not os.access(bootstrap, os.X_OK):
            raise ConfigurationError(
                [f"WORKER_LAMBDA_RUNTIME=provided: no executable bootstrap in {task_root}"]
            )
        command: tuple[str, ...] = (str(bootstrap),)
        variables["_HANDLER"] = handler
    else:
        command = (sys.executable, "-m", "awslambdaric", _python_handler(handler))
        variables["_HANDLER"] = command[-1]
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        variables.setdefault("AWS_EXECUTION_ENV", f"AWS_Lambda_python{version}")
    return EnvironmentSpec(
        command=command,
        task_root=task_root,
        environment=variables,
        function_arn=identity.function_arn,
        memory_limit_mb=identity.memory_limit_in_mb,
        enforce_memory=settings.memory_limit_in_mb is not None,
        output=OutputFormat.from_environment(variables.get("AWS_LAMBDA_LOG_FORMAT")),
        version=identity.function_version,
    )


def _python_handler(handler: str) -> str:
    """The handler as Lambda's Python runtime reads it: ``module.function``."""
    if ":" not in handler:
        return handler  # Lambda's own form, src/app.handler included
    module, _, attribute = handler.partition(":")
    if "." in attribute:
        raise ConfigurationError(
            [
                f"WORKER_HANDLER={handler}: Lambda's Python runtime calls a module-level "
                "function; name one (module.function)"
            ]
        )
    return f"{module}.{attribute}"
