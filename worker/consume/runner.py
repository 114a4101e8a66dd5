"""The runner: starts the handler on what the pollers received, and settles each outcome.

Every received message is leased at once, filtered (``WORKER_FILTER_CRITERIA``: what matches no
pattern is deleted unhandled, as on Lambda), grouped into handler calls and started, at most
``WORKER_CONCURRENCY`` at a time. The pollers ask for no more messages than there are free
slots plus the few received ahead (:mod:`worker.consume.prefetch`); those wait here, in the order
they
came, and start the moment a handler finishes. Each outcome goes to the settler: success is
deleted, failure waits out the retry backoff, a non-retryable failure is released at once
(where the queue has a DLQ to move it to).
Tasks are kept in a set so that they cannot be garbage-collected while they run.

On a FIFO queue, messages of one MessageGroupId are handled one at a time, in order, while other
groups run in parallel; when one fails, the later messages of its group in hand are released
unhandled, so that the group is retried in order (Lambda's rule).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Literal

import structlog
from structlog.contextvars import bind_contextvars, bound_contextvars, reset_contextvars

from worker.consume.backoff import RetryDelay
from worker.consume.capacity import Capacity
from worker.consume.lease import Lease, LeaseKeeper
from worker.consume.outcome import HELD_FOR_ORDER, Failure, FailureReason, Outcome, Released
from worker.consume.prefetch import Prefetch
from worker.consume.settler import Settler
from worker.consume.sqs import MAX_BATCH
from worker.errors import MalformedMessageError
from worker.handlers.adapters import Adapter, Invocation
from worker.handlers.calls import LeftRunning
from worker.metrics import Metrics

if TYPE_CHECKING:
    from types_aiobotocore_sqs.type_defs import MessageTypeDef

    from worker.handlers.filtering import FilterCriteria

log = structlog.get_logger("worker.consume.runner")

# How long cancelled handler calls get to unwind at shutdown, past their own cancel grace.
_UNWIND_SECONDS = 2.0


class Runner:
    """Runs handler calls on leased messages under the slots the pollers took."""

    def __init__(
        self,
        adapter: Adapter,
        *,
        keeper: LeaseKeeper,
        settler: Settler,
        capacity: Capacity,
        metrics: Metrics,
        retry_delay: RetryDelay,
        budget: float,
        batch_size: int,
        queue_name: str,
        fifo: bool = False,
        criteria: FilterCriteria | None = None,
        filtered_body: Callable[[str], str] | None = None,
        log_bodies: bool = False,
        prefetch: Prefetch | None = None,
        has_dlq: bool = True,
    ) -> None:
        self._adapter = adapter
        self._keeper = keeper
        self._settler = settler
        self._capacity = capacity
        self._metrics = metrics
        self._retry_delay = retry_delay
        self._budget = budget
        self.batch_size = batch_size
        self._queue_name = queue_name
        self.fifo = fifo
        self._criteria = criteria
        # What of a message the criteria see: the SQS body, as Lambda's filters (lambda
        # handlers), or what a message handler's ``Message.body`` holds (the SNS envelope
        # unwrapped).
        self._filtered_body = filtered_body or _as_is
        self._log_bodies = log_bodies
        # Bound once: a module's lazy logger builds a new bound logger on every call, which a
        # debug line per message would pay even when debug is off.
        self._log = log.bind()
        self._prefetch = prefetch
        # A non-retryable failure is released at once so that it reaches the DLQ after its
        # remaining receives. Without a DLQ (a DLQ being reprocessed, or no RedrivePolicy) it
        # would come straight back, again and again: there it waits out the backoff instead.
        self._release_non_retryable = has_dlq
        self._limit = capacity.base  # handler calls at once: the concurrency limit
        self._running = 0
        # A unit is one slot's messages: on a FIFO queue with one message per call, a group's
        # chain, run one message at a time; otherwise one handler call's batch.
        self._chains = fifo and batch_size == 1
        self._run_unit: Callable[[list[Lease]], Coroutine[Any, Any, None]] = (
            self._run_chain if self._chains else self._run
        )
        # Units in hand that wait for a handler slot (received ahead: see worker.consume.prefetch).
        self._waiting: deque[list[Lease]] = deque()
        self._tasks: dict[asyncio.Task[None], list[Lease]] = {}  # running units, by task
        self._closed = False
        self.last_arrival = time.monotonic()
        self.counts: dict[str, int] = {"received": 0, "succeeded": 0, "failed": 0, "filtered": 0}
        self.failures: dict[FailureReason, int] = dict.fromkeys(FailureReason, 0)

    @property
    def running(self) -> int:
        """Handler calls in progress (abandoned ones included)."""
        return self._running

    @property
    def waiting(self) -> int:
        """Messages received ahead, waiting for a handler slot."""
        return sum(len(unit) for unit in self._waiting)

    def has_waiting(self) -> bool:
        """Whether messages received ahead wait for a handler slot (so no handler idles)."""
        return bool(self._waiting)

    @property
    def slots_per_receive(self) -> int:
        """How many slots a poller takes for one receive.

        A slot runs one handler call. Message handlers take a slot per message (up to ten a
        receive); Lambda handlers a slot per batch. On a FIFO queue a Lambda batch is exactly
        one receive, so that no group is split across two calls that could run at once.
        """
        if self.fifo and self.batch_size > 1:
            return 1
        return max(1, MAX_BATCH // min(self.batch_size, MAX_BATCH))

    def messages_for(self, slots: int) -> int:
        """How many messages to ask for with ``slots`` slots in hand."""
        return max(1, min(MAX_BATCH, slots * self.batch_size))

    def lease(self, messages: Sequence[MessageTypeDef]) -> list[Lease]:
        """Lease messages just received; delete those the filter criteria reject."""
        if not messages:
            return []
        received_at = time.monotonic()
        self.last_arrival = received_at
        self.counts["received"] += len(messages)
        self._metrics.received.inc(len(messages))
        debug = self._log.debug
        leases = []
        failed_groups: set[str] = set()  # FIFO: a failure holds back the rest of its group
        for raw in messages:
            lease = self._keeper.take(raw, received_at)
            debug(
                "message.received",
                queue=self._queue_name,
                message_id=lease.message_id,
                receive_count=lease.receive_count,
            )
            if failed_groups and _group_of(lease) in failed_groups:
                self._settle(lease, HELD_FOR_ORDER, 0.0, in_batch=False)
                continue
            screened = "run" if self._criteria is None else self._screen(lease, self._criteria)
            if screened == "failed" and self.fifo:
                failed_groups.add(_group_of(lease))
            if screened == "run":
                leases.append(lease)
        return leases

    def _screen(
        self, lease: Lease, criteria: FilterCriteria
    ) -> Literal["run", "filtered", "failed"]:
        """Whether ``criteria`` let the message through (``run``); what they do not is settled
        here: ``filtered`` (deleted) or ``failed`` (malformed).

        The criteria are applied to whatever the body holds. A body that cannot be read (a
        broken SNS envelope) fails as malformed, as its handler call would; should the criteria
        ever raise, it is a defect on our side, not grounds to drop the message: it fails as
        malformed too (retried, then the DLQ), and nothing else of its receive is held up.
        """
        error: MalformedMessageError | None = None
        try:
            matched = criteria.matches({"body": self._filtered_body(lease.raw.get("Body", ""))})
        except MalformedMessageError as exc:
            error = exc
        except Exception as exc:  # noqa: BLE001 -- one message's content fails that message only
            error = MalformedMessageError(
                f"the filter criteria could not be applied to the body ({type(exc).__name__})"
            )
        if error is not None:
            with bound_contextvars(
                queue=self._queue_name,
                message_id=lease.message_id,
                receive_count=lease.receive_count,
            ):
                self._settle(lease, Failure.from_exception(error), 0.0, in_batch=False)
            return "failed"
        if not matched:
            self.counts["filtered"] += 1
            self._metrics.filtered.inc()
            self._log.debug("message.filtered", queue=self._queue_name, message_id=lease.message_id)
            self._settler.delete(lease)
            return "filtered"
        return "run"

    def start(self, leases: list[Lease], slots: int) -> None:
        """Start handler calls on ``leases``; gives back the slots they do not need."""
        if self._chains:
            units = list(_by_group(leases).values())
        else:
            size = len(leases) if self.fifo else self.batch_size
            units = [leases[i : i + size] for i in range(0, len(leases), max(1, size))]
        self._capacity.release(slots - len(units))
        if self._closed:
            # Shutting down: a long poll that was already open returned these. Give them back.
            self.give_back(leases)
            self._capacity.release(len(units))
            return
        self._waiting.extend(units)
        self._start_waiting()

    def _start_waiting(self) -> None:
        """Start waiting units, in the order they came, while handler slots are free."""
        while self._waiting and self._running < self._limit and not self._closed:
            self._running += 1
            unit = self._waiting.popleft()
            task = asyncio.get_running_loop().create_task(self._run_unit(unit))
            self._tasks[task] = unit
            task.add_done_callback(self._tasks.pop)

    def _finished(self, started: float) -> None:
        """A handler call's slot is free again: count it, and start what waits for one."""
        self._running -= 1
        self._capacity.release(1)
        if self._prefetch is not None:
            self._prefetch.completed(time.monotonic() - started)
        self._start_waiting()

    def give_back(self, leases: Sequence[Lease]) -> None:
        """Release leases that will not be handled (shutting down)."""
        for lease in leases:
            if not lease.settling:
                self._settler.release(lease, reason="shutdown")

    def close(self) -> None:
        """Start no more handlers; what waits for a slot, or arrives from now on, is released."""
        self._closed = True
        while self._waiting:
            unit = self._waiting.popleft()
            self.give_back(unit)
            self._capacity.release(1)

    async def drain(self, until: float) -> int:
        """Wait for running handlers until ``until`` (monotonic), then cancel the rest.

        Returns how many were cancelled; their messages are released.
        """
        self.close()
        if not self._tasks:
            return 0
        wait = max(0.0, until - time.monotonic())
        _, pending = await asyncio.wait(set(self._tasks), timeout=wait)
        for task in pending:
            task.cancel()
        if pending:
            # Bounded, so that no handler can hold the stop: a coroutine that swallows its
            # cancellation runs on in its task, and its messages are left as they are.
            _, stuck = await asyncio.wait(pending, timeout=_UNWIND_SECONDS)
            for task in stuck:
                self._leave(self._tasks.get(task, []))
        return len(pending)

    def overran(self, task: asyncio.Task[Any]) -> None:
        """The ``async def`` handler running in ``task`` outlived its budget and would not stop.

        Its messages are kept invisible (extended, up to SQS's 12 hours) so that their retry
        does not run beside it, as no two calls of an ``async def`` handler on one message ever
        do; the call returns, and they settle as a timeout, when it ends. Its slot stays taken,
        and liveness fails once every slot is held so.
        """
        batch = self._tasks.get(task)
        if batch is None:
            return
        log.warning(
            "message.handler_still_running",
            after_seconds=self._budget,
            message_ids=[lease.message_id for lease in batch],
        )
        self._keeper.keep_past_budget(batch)

    async def _run(self, batch: list[Lease]) -> None:
        started = time.monotonic()
        try:
            invocation = await self._invoke(batch)
            if invocation.running is not None:
                # The handler ran out of budget and could not be stopped: its messages are
                # settled, but its slot stays taken until it really ends.
                await asyncio.wait({invocation.running})
        finally:
            self._finished(started)

    async def _run_chain(self, chain: list[Lease]) -> None:
        """One FIFO group's messages, one at a time, in order, under one slot."""
        started = time.monotonic()
        try:
            for index, lease in enumerate(chain):
                if self._closed:
                    self.give_back(chain[index:])
                    return
                invocation = await self._invoke([lease])
                if invocation.running is not None:
                    # A plain function abandoned past its budget runs on: what follows in its
                    # group stays in hand (so SQS keeps the group locked) until it really ends,
                    # so that no later message of the group runs beside it.
                    await asyncio.wait({invocation.running})
                if invocation.outcomes[0] is not None:
                    for later in chain[index + 1 :]:
                        self._settle(later, HELD_FOR_ORDER, 0.0, in_batch=True)
                    return
        except asyncio.CancelledError:
            self.give_back(chain)
            raise
        finally:
            self._finished(started)

    async def _invoke(self, batch: list[Lease]) -> Invocation:
        started = time.monotonic()
        # Never past the point where SQS's 12 hours end and a message can no longer be held:
        # a handler still running then would have its message handed out again. A batch is in
        # the order received, so its first message is the first to reach that point.
        deadline = min(started + self._budget, batch[0].hard_limit)
        now = time.time()
        for lease in batch:
            lease.deadline = deadline
            self._metrics.receive_count.observe(lease.receive_count)
            sent = (lease.raw.get("Attributes") or {}).get("SentTimestamp")
            if sent is not None:
                self._metrics.message_age.observe(max(0.0, now - int(sent) / 1000))
        self._metrics.batch_size.observe(len(batch))
        first = batch[0]
        # The log context of the call (structlog's bound_contextvars, without its copy of the
        # whole context on the way in): every line about the message, the handler's included,
        # carries it, and the context is restored afterwards.
        if len(batch) == 1:
            tokens = bind_contextvars(
                queue=self._queue_name,
                message_id=first.message_id,
                receive_count=first.receive_count,
            )
        else:
            tokens = bind_contextvars(queue=self._queue_name, batch_size=len(batch))
        try:
            try:
                invocation = await self._adapter(batch, deadline)
            except LeftRunning:
                # Shutdown ran out of time and the handler's thread runs on: not handed out
                # again beside it while this process lives.
                self._leave(batch)
                raise
            except asyncio.CancelledError:
                # Shutdown ran out of time: the handler was interrupted, not at fault.
                self.give_back(batch)
                raise
            except Exception as exc:
                log.exception("worker.adapter_error")
                invocation = Invocation([Failure.from_exception(exc)] * len(batch))
            duration = time.monotonic() - started
            outcomes = invocation.outcomes
            if self.fifo and len(batch) > 1:
                outcomes = _hold_back_after_failures(batch, outcomes)
            self._metrics.duration_for(_outcome_label(outcomes)).observe(duration)
            self._settle_all(batch, outcomes, duration)
        finally:
            reset_contextvars(**tokens)
        return invocation

    def _leave(self, batch: list[Lease]) -> None:
        """Shutdown, with the handler of ``batch`` still running: its messages are neither
        released nor extended, but come back after their visibility timeout, when this process
        is gone and cannot run the handler beside their retry."""
        if not batch:
            return
        for lease in batch:
            lease.settling = True
            self._keeper.forget(lease)
        log.warning("message.left_to_visibility_timeout", messages=len(batch))

    def _settle_all(
        self, batch: Sequence[Lease], outcomes: Sequence[Outcome], duration: float
    ) -> None:
        """Settle a call's messages; a failure's stack is logged once per call, not per message."""
        stacks_logged: set[int] = set()  # a batch's failures share one Failure object
        for lease, outcome in zip(batch, outcomes, strict=True):
            if lease.settling:
                continue  # left at shutdown while its handler ran on: see _leave
            with_stack = isinstance(outcome, Failure) and id(outcome) not in stacks_logged
            if with_stack:
                stacks_logged.add(id(outcome))
            self._settle(lease, outcome, duration, in_batch=len(batch) > 1, stack=with_stack)

    def _settle(
        self,
        lease: Lease,
        outcome: Outcome,
        duration: float,
        *,
        in_batch: bool,
        stack: bool = False,
    ) -> None:
        extra: dict[str, Any] = {}
        if self._log_bodies:
            extra["body"] = lease.raw.get("Body", "")
        if in_batch:  # the context names the batch; each line names its message
            extra.update(message_id=lease.message_id, receive_count=lease.receive_count)
        if outcome is None:
            self.counts["succeeded"] += 1
            self._metrics.succeeded.inc()
            self._log.debug("message.succeeded", duration_seconds=round(duration, 6), **extra)
            self._settler.delete(lease)
            return
        if isinstance(outcome, Released):
            self._settler.release(lease, reason=outcome.reason)
            return
        self.counts["failed"] += 1
        self.failures[outcome.reason] += 1
        self._metrics.failed[outcome.reason].inc()
        fields: dict[str, Any] = {
            "reason": outcome.reason.value,
            "error_type": outcome.error_type,
            "error": outcome.error_message,
            "duration_seconds": round(duration, 6),
            **extra,
        }
        if stack and outcome.stack:
            fields["stack"] = list(outcome.stack)
        if outcome.reason is FailureReason.NON_RETRYABLE and self._release_non_retryable:
            log.warning("message.failed", retry_in_seconds=0, **fields)
            self._settler.release(lease, reason="non_retryable")
        else:
            delay = self._retry_delay.seconds(lease.receive_count)
            # SQS refuses a visibility change that ends over 12 hours after the receive (and the
            # backoff would be lost with it): a message failing near then waits what is left.
            delay = max(0, min(delay, int(lease.hard_limit - time.monotonic())))
            log.warning("message.failed", retry_in_seconds=delay, **fields)
            self._settler.retry(lease, delay)


def _group_of(lease: Lease) -> str:
    return str((lease.raw.get("Attributes") or {}).get("MessageGroupId", ""))


def _by_group(leases: Sequence[Lease]) -> dict[str, list[Lease]]:
    groups: dict[str, list[Lease]] = {}
    for lease in leases:
        groups.setdefault(_group_of(lease), []).append(lease)
    return groups


def _hold_back_after_failures(batch: Sequence[Lease], outcomes: Sequence[Outcome]) -> list[Outcome]:
    """Lambda's FIFO rule: after a failed record, the later records of its group fail too."""
    failed_groups: set[str] = set()
    result: list[Outcome] = []
    for lease, outcome in zip(batch, outcomes, strict=True):
        group = _group_of(lease)
        if group in failed_groups:
            result.append(HELD_FOR_ORDER)
            continue
        if isinstance(outcome, Failure):
            failed_groups.add(group)
        result.append(outcome)
    return result


def _outcome_label(outcomes: Sequence[Outcome]) -> str:
    """One label per call: ``success``, a failure reason, or ``partial`` for a mixed batch."""
    failures = [outcome for outcome in outcomes if isinstance(outcome, Failure)]
    if not failures:
        return "success"
    if len(failures) < len(outcomes):
        return "partial"
    return failures[0].reason.value


def _as_is(body: str) -> str:
    return body
