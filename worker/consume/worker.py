"""The worker: one path for every message, and the lifecycle around it.

receive (pollers, as many messages as there are free slots, plus a few received ahead) → run
(the runner starts the handler, at most ``WORKER_CONCURRENCY`` at once) → extend (the lease
keeper) → settle (the settler deletes or sets visibility, in batches). This module wires those
parts to one queue, starts them, and stops them in order:

1. stop receiving: idle pollers stop at once; an open long poll is let finish and what it returns
   is released (visibility 0), as is what was received ahead and waits for a slot;
2. let running handlers finish until ``WORKER_SHUTDOWN_TIMEOUT``, then cancel them and release
   their messages;
3. send every buffered delete and visibility change;
4. stop extending.

Redelivery is the only possible side effect of stopping; no message is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog
from prometheus_client import CollectorRegistry

from worker.config import HANDLER_FORMS, BackoffMode, HandlerType, Settings
from worker.consume.backoff import ExponentialBackoff, QueueTimeout, RetryDelay
from worker.consume.capacity import Capacity
from worker.consume.depth import QueueDepth
from worker.consume.lease import Lease, LeaseKeeper
from worker.consume.poller import Lookout, Poller
from worker.consume.prefetch import Prefetch
from worker.consume.runner import Runner
from worker.consume.settler import Settler
from worker.consume.sqs import (
    DEFAULT_VISIBILITY_SECONDS,
    MAX_BATCH,
    QueueInfo,
    SqsQueue,
    describe_failure,
    describe_queue,
    open_sqs,
)
from worker.errors import ConfigurationError, StartupError
from worker.handlers.adapters import (
    Adapter,
    Handler,
    InProcessFunction,
    LambdaAdapter,
    LambdaInvoker,
    MessageAdapter,
    load_handler,
)
from worker.handlers.calls import Caller
from worker.handlers.message import published_body
from worker.health import Health, heartbeat
from worker.http import StatusServer
from worker.lambda_.env import (
    FunctionIdentity,
    apply_environment,
    container_memory_mb,
    lambda_environment,
)
from worker.lambda_.invocation import INIT_TIMEOUT_SECONDS
from worker.metrics import Metrics
from worker.task_protection import task_protection

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

    from worker.handlers.filtering import FilterCriteria

log = structlog.get_logger("worker")

# Once handlers are done and long polls have had their WaitTimeSeconds: time still given to a
# poll to bring its messages back, then the deadline of every last call to SQS. What is not sent
# by then comes back by its visibility timeout (a duplicate, never a loss). With the process's
# own exit (worker.ops.cli), a stop takes at most max(shutdown timeout, wait time) + 5 s.
_POLL_GRACE_SECONDS = 2.0
FINAL_CALLS_SECONDS = 4.0
EXIT_SECONDS = 1.0


@dataclass
class Report:
    """What a run did, for the final log line, the demo and tests."""

    received: int = 0
    succeeded: int = 0
    failed: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    deleted: int = 0
    retried: int = 0
    released: int = 0
    settle_failures: int = 0
    extended: int = 0
    extension_failures: int = 0
    interrupted: int = 0
    stop_reason: str = ""
    threads_left_running: int = 0
    coroutines_left_running: int = 0


class Worker:
    """Consumes one queue with one handler until :meth:`stop`."""

    def __init__(
        self,
        settings: Settings,
        *,
        client: SQSClient,
        info: QueueInfo,
        adapter: Adapter,
        caller: Caller,
        metrics: Metrics,
        health: Health,
    ) -> None:
        self.settings = settings
        self.info = info
        self._caller = caller
        self.metrics = metrics
        self.health = health
        self.queue = SqsQueue(client, info.url, metrics)
        # A queue whose visibility timeout is 0 would hand each message straight to the next
        # receive: the worker then asks for SQS's default on each receive and leases for that.
        self.visibility_timeout = (
            settings.visibility_timeout or info.visibility_timeout or DEFAULT_VISIBILITY_SECONDS
        )
        receive_visibility = (
            None if self.visibility_timeout == info.visibility_timeout else self.visibility_timeout
        )
        self.keeper = LeaseKeeper(
            self.queue,
            visibility_timeout=self.visibility_timeout,
            metrics=metrics,
            queue_name=info.name,
        )
        self.settler = Settler(
            self.queue,
            queue_name=info.name,
            metrics=metrics,
            on_settled=self._settled,
            flush_delay=settings.settle_flush_seconds,
        )
        # On ECS: no scale-in or deployment stops this task while a handler runs.
        self.protection = task_protection(settings.ecs_task_protection, os.environ, metrics)
        if self.protection is not None:
            adapter = self.protection.around(adapter)
        self.capacity = Capacity(settings.concurrency)
        # Receive-ahead (worker.consume.prefetch) where a slot runs one message of a standard
        # queue; a
        # Lambda batch or a FIFO group already gathers several messages under one slot.
        self.prefetch = Prefetch(
            self.capacity,
            settings.prefetch if settings.batch_size_for_type == 1 and not info.fifo else 0,
            fill_seconds=settings.receive_fill_seconds,
        )
        self.retry_delay = self._retry_delay()
        self.runner = Runner(
            adapter,
            keeper=self.keeper,
            settler=self.settler,
            capacity=self.capacity,
            metrics=metrics,
            retry_delay=self.retry_delay,
            budget=settings.max_processing_seconds,
            batch_size=settings.batch_size_for_type,
            queue_name=info.name,
            fifo=info.fifo,
            criteria=_filter_criteria(settings),
            filtered_body=(
                functools.partial(published_body, envelope=settings.sns_envelope)
                if settings.handler_type is HandlerType.MESSAGE
                else None  # Lambda's filters see the SQS body, an SNS envelope included
            ),
            log_bodies=settings.log_message_bodies,
            prefetch=self.prefetch,
            has_dlq=info.redrive is not None,
        )
        carry: list[Lease] = []
        lookout = Lookout()
        self.wait_seconds = receive_wait_seconds(settings)
        self.pollers = [
            Poller(
                self.queue,
                capacity=self.capacity,
                runner=self.runner,
                wait_seconds=self.wait_seconds,
                visibility_timeout=receive_visibility,
                batching_window=(
                    settings.max_batching_window
                    if settings.handler_type is HandlerType.LAMBDA
                    else 0.0
                ),
                fill_seconds=settings.receive_fill_seconds,
                carry=carry,
                prefetch=self.prefetch,
                lookout=lookout,
            )
            for _ in range(settings.poller_count)
        ]
        depth_queues = [(self.queue, info.name, "source")]
        if info.dlq_url is not None and info.redrive is not None:
            depth_queues.append(
                (SqsQueue(client, info.dlq_url, metrics), info.redrive.dlq_name, "dlq")
            )
        self.depth = QueueDepth(metrics, depth_queues, settings.depth_interval_seconds)
        self._stop = asyncio.Event()
        self.stop_reason = ""
        self._last_activity = time.monotonic()
        self.http_port: int | None = None
        # An async def handler that will not stop past its budget: the runner keeps its messages.
        caller.on_overrun = self.runner.overran
        self._watch_state()

    def _watch_state(self) -> None:
        self.metrics.watch("worker_messages_in_flight", lambda: self.keeper.in_flight)
        self.metrics.watch("worker_handlers_running", lambda: self.runner.running)
        self.metrics.watch("worker_messages_waiting", lambda: self.runner.waiting)
        self.metrics.watch("worker_concurrency_limit", lambda: self.settings.concurrency)
        self.metrics.watch("worker_handlers_abandoned", lambda: self._caller.abandoned)
        self.metrics.watch("worker_pollers_running", lambda: self.health.pollers_running)
        self.health.pollers_expected = len(self.pollers)
        self.health.slots = self.settings.concurrency
        self.health.abandoned = lambda: self._caller.abandoned

    def _retry_delay(self) -> RetryDelay:
        if self.settings.backoff is BackoffMode.OFF:
            return QueueTimeout(self.visibility_timeout)
        return ExponentialBackoff(
            self.settings.backoff_base_seconds, self.settings.backoff_max_seconds
        )

    def stop(self, reason: str) -> None:
        """Begin a graceful shutdown (idempotent)."""
        if not self._stop.is_set():
            self.stop_reason = reason
            self.health.draining = True
            log.info(
                "worker.stopping",
                reason=reason,
                in_flight=self.keeper.in_flight,
                running=self.runner.running,
                shutdown_timeout=self.settings.shutdown_timeout,
            )
            self._stop.set()

    @property
    def stop_seconds(self) -> float:
        """The longest a stop takes, from :meth:`stop` to the end of the process (worker.ops.cli).

        Handlers get the shutdown timeout, open long polls their wait time, then the last calls
        to SQS and the process's own exit share what is left.
        """
        waited = max(self.settings.shutdown_timeout, self.settings.wait_time_seconds)
        return waited + FINAL_CALLS_SECONDS + EXIT_SECONDS

    @property
    def stopping(self) -> bool:
        """Whether a shutdown has begun."""
        return self._stop.is_set()

    def _settled(self, lease: Lease) -> None:
        self.keeper.forget(lease)
        self._last_activity = time.monotonic()

    async def run(self) -> Report:
        """Consume until stopped, then shut down in order; returns what was done."""
        keeper = asyncio.create_task(self.keeper.run(), name="lease-keeper")
        poll_tasks = [poller.start() for poller in self.pollers]
        for task in poll_tasks:
            task.add_done_callback(self._poller_ended)
        self.health.pollers_running = len(poll_tasks)
        helpers = []
        if self.settings.depth_interval_seconds > 0:
            helpers.append(asyncio.create_task(self.depth.run(), name="queue-depth"))
        if self.settings.exit_when_idle is not None:
            helpers.append(asyncio.create_task(self._watch_idle(self.settings.exit_when_idle)))
        if self.protection is not None:
            self.protection.start()  # stopped by _shut_down, once the handlers are done
        try:
            await self._stop.wait()
        finally:
            for helper in helpers:
                helper.cancel()
            report = await self._shut_down(poll_tasks)
            keeper.cancel()
            await asyncio.gather(keeper, *helpers, return_exceptions=True)
        return report

    def _poller_ended(self, task: asyncio.Task[None]) -> None:
        self.health.pollers_running -= 1
        if not task.cancelled() and task.exception() is not None and not self.stopping:
            # Pollers catch every error talking to SQS; reaching this is a bug. Liveness fails
            # (a restart is the cure) and the traceback says where.
            log.error("worker.poller_died", exc_info=task.exception())

    async def _shut_down(self, poll_tasks: list[asyncio.Task[None]]) -> Report:
        stopped_at = time.monotonic()
        deadline = stopped_at + self.settings.shutdown_timeout
        self.runner.close()
        for poller in self.pollers:
            poller.stop()
        interrupted = await self.runner.drain(deadline)
        # Open long polls end by themselves within WaitTimeSeconds, however short the shutdown
        # timeout: wait for them (they may carry messages to release), then a grace period.
        polls_end = max(deadline, stopped_at + self.wait_seconds)
        self._say_why_it_waits()
        _, pending = (
            await asyncio.wait(
                poll_tasks, timeout=max(0.0, polls_end + _POLL_GRACE_SECONDS - time.monotonic())
            )
            if poll_tasks
            else (set(), set())
        )
        for task in pending:
            task.cancel()
        await asyncio.gather(*poll_tasks, return_exceptions=True)
        # SQS unreachable, or silent, must not hold the stop: every last call has a deadline.
        final = polls_end + FINAL_CALLS_SECONDS
        await self.settler.close(until=final)
        if self.protection is not None:
            with contextlib.suppress(TimeoutError):  # the agent's own expiry ends it otherwise
                await asyncio.wait_for(self.protection.close(), max(0.0, final - time.monotonic()))
        with contextlib.suppress(TimeoutError):  # the gauges stay as last read
            await asyncio.wait_for(self.depth.refresh(), max(0.0, final - time.monotonic()))
        self._caller.close()
        report = self.report()
        report.interrupted = interrupted
        log.info("worker.stopped", **{k: v for k, v in vars(report).items() if v})
        return report

    def _say_why_it_waits(self) -> None:
        """Name the wait for open receives, which on an idle worker is the whole of a stop.

        Up to 20 s of silence after Ctrl-C reads as a hang; a second signal ends it at once.
        """
        ends = [end for poller in self.pollers if (end := poller.receive_ends) is not None]
        if ends:
            seconds = max(1, math.ceil(max(ends) - time.monotonic()))
            again = " again" if self.stop_reason.startswith("SIG") else ""  # stopped by a signal
            log.info(
                "worker.waiting_for_receive",
                seconds=seconds,
                message=f"waiting up to {seconds} s for the open receive; Ctrl-C{again} to quit",
            )

    def report(self) -> Report:
        """The counts so far."""
        counts = self.settler.counts
        return Report(
            received=self.runner.counts["received"],
            succeeded=self.runner.counts["succeeded"],
            failed=self.runner.counts["failed"],
            failures={r.value: n for r, n in self.runner.failures.items() if n},
            deleted=counts["deleted"],
            retried=counts["retried"],
            released=counts["released"],
            settle_failures=counts["failed"],
            extended=self.keeper.extended,
            extension_failures=self.keeper.extension_failures,
            stop_reason=self.stop_reason,
            threads_left_running=self._caller.threads_running,
            coroutines_left_running=self._caller.coroutines_running,
        )

    async def _watch_idle(self, idle_seconds: float) -> None:
        # A timer re-armed from the last arrival or settlement, not a polling loop.
        while True:
            last = max(self._last_activity, self.runner.last_arrival)
            remaining = last + idle_seconds - time.monotonic()
            if remaining <= 0 and self.keeper.in_flight == 0:
                visible = await self._visible_messages()
                if not visible:
                    self.stop(f"idle for {idle_seconds:g}s")
                    return
                # Quiet receives do not make an empty queue: a FIFO group waits behind a
                # message in its backoff, or an emulator's long poll missed what became
                # visible. Go on until SQS itself says there is nothing to take.
                log.info("worker.idle_but_not_empty", visible=visible)
                self._last_activity = time.monotonic()
                continue
            await asyncio.sleep(remaining if remaining > 0 else idle_seconds)

    async def _visible_messages(self) -> int:
        """What SQS counts as visible; 0 when it cannot say, so the idle exit still comes."""
        try:
            attributes = await self.queue.attributes(["ApproximateNumberOfMessages"])
            return int(attributes.get("ApproximateNumberOfMessages", "0"))
        except Exception as exc:  # noqa: BLE001 -- advisory: the worker's own count stands
            log.warning("worker.depth_unknown", error=describe_failure(exc))
            return 0


def receive_wait_seconds(settings: Settings) -> int:
    """A long poll's wait: never longer than ``--exit-when-idle``, so that the stop it causes
    does not wait out a 20 s receive."""
    if settings.exit_when_idle is None:
        return settings.wait_time_seconds
    return max(1, min(settings.wait_time_seconds, int(settings.exit_when_idle)))


def function_identity(settings: Settings, info: QueueInfo) -> FunctionIdentity:
    """What a Lambda handler's context and environment say it is."""
    return FunctionIdentity(
        function_name=settings.function_name or info.name.removesuffix(".fifo"),
        memory_limit_in_mb=settings.memory_limit_in_mb or container_memory_mb(),
        region=info.region,
        account=info.arn.split(":")[4],
        partition=info.arn.split(":")[1],
    )


def check_queue_kind(settings: Settings, info: QueueInfo) -> None:
    """Lambda's limits on FIFO queues: batches of at most ten, and no batching window."""
    if not info.fifo or settings.handler_type is not HandlerType.LAMBDA:
        return
    problems = []
    if settings.batch_size > MAX_BATCH:
        problems.append(f"WORKER_BATCH_SIZE: at most 10 on a FIFO queue ({info.name})")
    if settings.max_batching_window > 0:
        problems.append(f"WORKER_MAX_BATCHING_WINDOW: FIFO queues have none ({info.name})")
    if problems:
        raise ConfigurationError(problems)


def build_adapter(
    settings: Settings,
    info: QueueInfo,
    caller: Caller,
    function: Handler | None = None,
    invoker: LambdaInvoker | None = None,
) -> Adapter:
    """The adapter for the configured handler type, around ``function`` or the named one.

    A Lambda handler named by ``WORKER_HANDLER`` runs in execution environments (``invoker``,
    see :func:`lambda_environments`); a Python function passed in is called in this process,
    with the Lambda runtime's environment variables set (where not set already) first.
    """
    identity = function_identity(settings, info)
    if settings.handler_type is HandlerType.LAMBDA:
        if invoker is None:
            if function is None:
                raise ConfigurationError([f"WORKER_HANDLER: required ({HANDLER_FORMS})"])
            added = apply_environment(
                lambda_environment(
                    identity, handler=settings.handler, task_root=settings.handler_path
                )
            )
            log.debug("worker.lambda_environment", set=added)
            invoker = InProcessFunction(function, caller, identity)
        return LambdaAdapter(
            invoker,
            queue_arn=info.arn,
            region=identity.region,
            report_batch_item_failures=settings.report_batch_item_failures,
        )
    if function is None:
        function = message_handler(settings)
    return MessageAdapter(function, caller, queue_url=info.url, envelope=settings.sns_envelope)


def _filter_criteria(settings: Settings) -> FilterCriteria | None:
    """``WORKER_FILTER_CRITERIA``, parsed; the filtering module (0.5 MB resident) is imported
    only where criteria are set."""
    if not settings.filter_criteria:
        return None
    from worker.handlers.filtering import FilterCriteria  # noqa: PLC0415 -- see above

    return FilterCriteria.parse(settings.filter_criteria)


def message_handler(settings: Settings) -> Handler:
    """The function ``WORKER_HANDLER`` names, imported the one way ``serve`` and ``worker invoke``
    share; a :class:`ConfigurationError` (one line) rather than an import traceback.
    """
    if settings.handler is None:
        raise ConfigurationError([f"WORKER_HANDLER: required ({HANDLER_FORMS})"])
    return load_handler(settings.handler, settings.handler_path)


@contextlib.asynccontextmanager
async def lambda_environments(
    settings: Settings, info: QueueInfo, metrics: Metrics
) -> AsyncIterator[LambdaInvoker | None]:
    """The execution environments of the function ``WORKER_HANDLER`` names, for its lifetime.

    One environment is started and initialised before the worker consumes: a function that
    cannot be loaded stops start-up with its error, instead of failing every batch. All are
    stopped when the worker is done. Yields ``None`` where no environments are needed.
    """
    if settings.handler_type is not HandlerType.LAMBDA or settings.handler is None:
        yield None
        return
    from worker.lambda_.environments import (  # noqa: PLC0415 -- lambda handlers only
        EnvironmentMetrics,
        EnvironmentPool,
        environment_spec,
    )

    spec = environment_spec(settings, function_identity(settings, info))
    pool = EnvironmentPool(
        spec,
        size=settings.concurrency,
        metrics=EnvironmentMetrics(metrics.registry, queue=metrics.queue),
    )
    try:
        error = await pool.warm_up(INIT_TIMEOUT_SECONDS)
        if error is not None:
            raise ConfigurationError(
                [
                    f"WORKER_HANDLER={settings.handler}: the function failed to initialise: "
                    f"{error.error_type}: {error.error_message}"
                ]
            )
        yield pool
    finally:
        await pool.close()


def check_dead_letter_queue(settings: Settings, info: QueueInfo) -> None:
    """Refuse a queue without a DLQ unless told to allow it; log where poison messages go."""
    if info.redrive is None and info.dead_letter_sources:
        # Reprocessing a DLQ (worker run --queue <DLQ> --exit-when-idle ...): it has no DLQ of
        # its own; what fails again stays in it, to be looked at or retried later.
        log.info(
            "worker.reprocessing_dlq",
            queue=info.name,
            dlq_of=[url.rsplit("/", 1)[-1] for url in info.dead_letter_sources],
        )
        return
    if info.redrive is None:
        if not settings.allow_no_dlq and info.dead_letter_sources_error is not None:
            raise StartupError(
                f"queue {info.name} has no RedrivePolicy, and whether it is another queue's DLQ "
                "could not be checked: ListDeadLetterSourceQueues failed "
                f"({info.dead_letter_sources_error}); allow sqs:ListDeadLetterSourceQueues to "
                "reprocess a DLQ, add a DLQ (worker provision) or set WORKER_ALLOW_NO_DLQ=true"
            )
        if not settings.allow_no_dlq:
            raise StartupError(
                f"queue {info.name} has no RedrivePolicy, so a poison message would be retried "
                "until it expires; add a DLQ (worker provision) or set WORKER_ALLOW_NO_DLQ=true"
            )
        log.warning(
            "worker.no_dlq", queue=info.name, dlq_check_failed=info.dead_letter_sources_error
        )
        return
    log.info(
        "worker.dlq",
        queue=info.name,
        dlq=info.redrive.dlq_name,
        max_receive_count=info.redrive.max_receive_count,
    )


async def connect(settings: Settings, client: SQSClient) -> QueueInfo:
    """Read the queue's configuration, turning AWS errors into one-line start-up errors."""
    if settings.queue is None:
        raise ConfigurationError(["WORKER_QUEUE_URL or WORKER_QUEUE_NAME (--queue): required"])
    try:
        return await describe_queue(client, settings.queue)
    except StartupError:
        raise
    except Exception as exc:  # noqa: BLE001 -- any failure here means we cannot start
        raise StartupError(f"cannot read queue {settings.queue}: {describe_failure(exc)}") from None


def _queue_label(settings: Settings) -> str:
    return (settings.queue or "").rstrip("/").rsplit("/", 1)[-1]


async def serve(
    settings: Settings,
    *,
    handler: Handler | None = None,
    registry: CollectorRegistry | None = None,
    on_started: Callable[[Worker], None] | None = None,
) -> Report:
    """Run the worker until it is stopped; the CLI's ``worker run``.

    ``handler`` replaces the function named by ``WORKER_HANDLER`` (for embedding and tests);
    ``registry`` receives the metrics (a new one by default); ``on_started`` receives the worker
    once it consumes, so that the caller can stop it.

    The metrics and health endpoints answer from the start, so that a liveness probe passes while
    the worker connects and readiness follows once the queue is reached.
    """
    metrics = Metrics(registry or CollectorRegistry(), queue=_queue_label(settings))
    health = Health(loop_block_threshold=settings.liveness_threshold_seconds)
    server = StatusServer(settings.http_host, settings.http_port, metrics.registry, health)
    server.start()
    metrics.loop_lag.set_function(health.loop_lag)  # computed at each scrape
    beat = asyncio.create_task(heartbeat(health), name="heartbeat")
    try:
        return await _consume(settings, metrics, health, server.port, handler, on_started)
    finally:
        beat.cancel()
        await asyncio.gather(beat, return_exceptions=True)
        server.stop()


async def _consume(  # noqa: PLR0917 -- private; serve's pieces, passed on
    settings: Settings,
    metrics: Metrics,
    health: Health,
    http_port: int,
    handler: Handler | None,
    on_started: Callable[[Worker], None] | None,
) -> Report:
    if handler is None and settings.handler_type is HandlerType.MESSAGE:
        # Before any AWS call: a handler that cannot be imported is the first and only thing said.
        handler = message_handler(settings)
    caller = Caller(max_threads=settings.concurrency)
    async with (
        open_sqs(settings, pool=settings.poller_count + 16, validate=False) as client,
        contextlib.AsyncExitStack() as stack,
    ):
        info = await connect(settings, client)
        check_dead_letter_queue(settings, info)
        check_queue_kind(settings, info)
        if handler is None:
            health.starting = "the Lambda function is initialising (its first environment)"
        environments = await stack.enter_async_context(
            lambda_environments(settings, info, metrics)
            if handler is None
            else contextlib.nullcontext()
        )
        adapter = build_adapter(settings, info, caller, handler, environments)
        worker = Worker(
            settings,
            client=client,
            info=info,
            adapter=adapter,
            caller=caller,
            metrics=metrics,
            health=health,
        )
        worker.http_port = http_port
        health.queue_reached = True
        log.info(
            "worker.started",
            queue=info.name,
            handler=settings.handler,
            handler_type=settings.handler_type.value,
            concurrency=settings.concurrency,
            pollers=len(worker.pollers),
            visibility_timeout=worker.visibility_timeout,
            max_processing_seconds=settings.max_processing_seconds,
            retry=repr(worker.retry_delay),
            http_port=http_port,
        )
        if on_started is not None:
            on_started(worker)
        return await worker.run()
