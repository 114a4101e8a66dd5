"""Calling user code: coroutines on the loop, plain functions in a bounded thread pool.

Both kinds get the same processing budget. An ``async def`` handler runs in the caller's own
task (a task of its own per call cost a fifth of the worker's CPU per message) and is cancelled
when its budget runs out. A coroutine that swallows that cancellation cannot be parted from the
task it runs in: the call returns when it finally ends, so its messages are held (and its slot
taken) until then, and no retry runs beside it; ``on_overrun`` hears of it once its grace has
passed, so that the caller can say so and keep its messages invisible. A plain function cannot
be stopped from outside its thread, so it is abandoned: its message is failed as a timeout at
once, and :attr:`Call.running` lets the caller keep the handler's slot until the thread really
ends, so abandoned threads never push the pool past its limit.

Deadlines share one timer (:class:`_Deadlines`) rather than one per call.

Whatever a handler raises, ``SystemExit`` and ``KeyboardInterrupt`` included, fails only the
message it was handling; it never unwinds the worker.

A plain function that returns an awaitable (an ``async def`` under a plain decorator) has its
work in that awaitable: it is awaited on the loop under what is left of the same budget, never
mistaken for a success that did nothing. A call that returns a generator (a stray ``yield``, in a
plain or an ``async def`` function) did nothing at all: it fails.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import heapq
import inspect
import itertools
import math
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from worker.errors import GeneratorHandlerError, HandlerExitError, HandlerTimeoutError

# How long a cancelled coroutine may take to unwind before it is abandoned.
CANCEL_GRACE_SECONDS = 1.0


@dataclass(slots=True)
class Call:
    """The result of one handler call."""

    value: Any = None
    error: BaseException | None = None
    # A plain function's thread, still running after its budget ran out (abandoned); done when
    # the code really stops.
    running: asyncio.Future[Any] | None = None


def is_async(function: Callable[..., Any]) -> bool:
    """Whether calling ``function`` returns a coroutine to await."""
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        getattr(function, "__call__", None)  # noqa: B004 -- instances with an async __call__
    )


def is_generator_function(function: Callable[..., Any]) -> bool:
    """Whether calling ``function`` returns a generator instead of running its body."""
    targets = (function, getattr(function, "__call__", None))  # noqa: B004 -- callable instances
    return any(
        inspect.isgeneratorfunction(target) or inspect.isasyncgenfunction(target)
        for target in targets
    )


def _checked(call: Call) -> Call:
    """A returned generator is code that never ran: a failure, never a success."""
    value = call.value
    if call.error is None and (inspect.isgenerator(value) or inspect.isasyncgen(value)):
        kind = "an async generator" if inspect.isasyncgen(value) else "a generator"
        return Call(
            error=GeneratorHandlerError(
                f"handler returned {kind}, so none of its code ran (a stray yield?)"
            )
        )
    return call


class _Deadlines:
    """One timer for the deadlines of every call in progress, instead of one per call.

    Calls mostly share one budget, so deadlines mostly arrive in the order they were set; a heap
    orders the rest. An entry whose call ended is dropped lazily, and the heap is rebuilt when
    such entries outnumber the live ones (a long call at its head keeps them from draining).
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Due]] = []
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._loop: asyncio.AbstractEventLoop | None = None
        self._live = 0

    def add(self, at: float, entry: _Due) -> None:
        """Call ``entry.due()`` at ``at`` (``time.monotonic``), unless it has ended by then."""
        self._live += 1
        entry.queued = True
        heapq.heappush(self._heap, (at, next(self._order), entry))
        if len(self._heap) > 2 * self._live + 64:
            self._heap = [item for item in self._heap if not item[2].done]
            heapq.heapify(self._heap)
        if at < self._timer_at or self._loop is not asyncio.get_running_loop():
            self._arm(min(at, self._heap[0][0]))

    def end(self, entry: _Due) -> None:
        """The call ``entry`` watches has ended: its deadline no longer matters."""
        entry.done = True
        if entry.queued:
            entry.queued = False
            self._live -= 1

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        loop = self._loop = asyncio.get_running_loop()
        self._timer_at = at
        # The loop's clock is time.monotonic on every platform asyncio supports.
        self._timer = loop.call_at(at, self._fire, context=contextvars.Context())

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        now = time.monotonic()
        # self._heap each time round: an entry's due() may add one, and adding may rebuild it.
        while self._heap and (self._heap[0][2].done or self._heap[0][0] <= now):
            _, _, entry = heapq.heappop(self._heap)
            if not entry.done:
                entry.queued = False
                self._live -= 1
                entry.due()
        if self._heap:
            self._arm(self._heap[0][0])


class _Due:
    """What a deadline calls; ``done`` once the call it watches has ended."""

    __slots__ = ("done", "queued")

    def __init__(self) -> None:
        self.done = False
        self.queued = False  # in the heap

    def due(self) -> None:
        raise NotImplementedError


class _Wake(_Due):
    """Wakes a waiter at the deadline."""

    __slots__ = ("waiter",)

    def __init__(self, waiter: asyncio.Future[None]) -> None:
        super().__init__()
        self.waiter = waiter

    def due(self) -> None:
        if not self.waiter.done():
            self.waiter.set_result(None)


class _Running(_Due):
    """An ``async def`` call running in ``task``: cancelled at its deadline, reported through
    ``overran`` if it outlives the grace of that cancellation."""

    __slots__ = ("deadlines", "expired", "overran", "task")

    def __init__(
        self,
        task: asyncio.Task[Any],
        deadlines: _Deadlines,
        overran: Callable[[_Running], None],
    ) -> None:
        super().__init__()
        self.task = task
        self.deadlines = deadlines
        self.overran = overran
        self.expired = False

    def due(self) -> None:
        if not self.expired:
            self.expired = True
            self.task.cancel()
            self.deadlines.add(time.monotonic() + CANCEL_GRACE_SECONDS, self)
        else:
            self.overran(self)


async def _finished_by(future: asyncio.Future[Any], deadline: float, deadlines: _Deadlines) -> bool:
    """Wait for ``future`` until ``deadline`` (``time.monotonic``); whether it is done.

    ``asyncio.wait({future}, timeout=...)`` without its sets, generators and timer: this runs
    once per call of a plain function. The future is never cancelled here; cancelling the caller
    stops the wait.
    """
    if future.done():
        return True
    waiter = asyncio.get_running_loop().create_future()
    wake = _Wake(waiter)

    def woken(_: object) -> None:
        if not waiter.done():
            waiter.set_result(None)

    deadlines.add(deadline, wake)
    future.add_done_callback(woken)
    try:
        await waiter
    finally:
        deadlines.end(wake)
        future.remove_done_callback(woken)
    return future.done()


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


class LeftRunning(asyncio.CancelledError):
    """The call was cancelled (the worker stops and ran out of time) while its plain function
    runs on in its thread, which nothing can stop: its messages must not be given back to SQS,
    where another consumer would run them beside it, but left to their visibility timeout."""


def _guarded_sync(function: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    try:
        return function(*args)
    except (SystemExit, KeyboardInterrupt, GeneratorExit, StopIteration) as exc:
        # StopIteration too: asyncio refuses to put it in a future, so the call would never end
        # and its slot never come back. Wrapped, each is reported as what the handler raised.
        raise HandlerExitError(f"handler raised {type(exc).__name__}") from exc


class Caller:
    """Runs handler calls under a deadline, plain functions in at most ``max_threads`` threads."""

    def __init__(self, max_threads: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="handler")
        self._deadlines = _Deadlines()
        self._abandoned: set[asyncio.Future[Any]] = set()
        self._threads: set[asyncio.Future[Any]] = set()
        self._coroutines = 0
        self._overrunning: set[_Running] = set()
        self._kinds: dict[int, tuple[Callable[..., Any], bool]] = {}  # id → (function, is_async)
        # Told of the task running an ``async def`` call that outlived its budget and the grace
        # of its cancellation (the caller keeps its messages invisible while it runs).
        self.on_overrun: Callable[[asyncio.Task[Any]], None] | None = None

    @property
    def abandoned(self) -> int:
        """Handlers past their budget that are still running."""
        return len(self._abandoned) + len(self._overrunning)

    @property
    def threads_running(self) -> int:
        """Plain-function handlers still running in their threads, abandoned or not."""
        return len(self._threads)

    @property
    def coroutines_running(self) -> int:
        """``async def`` handler calls in progress: after a shutdown cancelled them, those that
        would not stop."""
        return self._coroutines

    async def call(
        self, function: Callable[..., Any], args: tuple[Any, ...], *, deadline: float
    ) -> Call:
        """Call ``function(*args)`` and wait for it until ``deadline`` (``time.monotonic``)."""
        if self._is_async(function):
            return _checked(await self._run_coroutine(function, args, deadline))
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        running = loop.run_in_executor(
            self._executor, functools.partial(context.run, _guarded_sync, function, args)
        )
        self._threads.add(running)
        running.add_done_callback(self._threads.discard)
        call = await self._wait(running, deadline)
        if call.error is None and inspect.isawaitable(call.value):
            call = await self._run_coroutine(_awaited, (call.value,), deadline)
        return _checked(call)

    async def _run_coroutine(
        self, function: Callable[..., Awaitable[Any]], args: tuple[Any, ...], deadline: float
    ) -> Call:
        """Await ``function(*args)`` in this task, cancelling it at ``deadline``."""
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a coroutine handler is called from a task")
        running = _Running(task, self._deadlines, self._overran)
        cancelling = task.cancelling()
        self._deadlines.add(deadline, running)
        self._coroutines += 1
        error: BaseException | None = None
        try:
            value = await function(*args)
        except asyncio.CancelledError as exc:
            if not running.expired and task.cancelling() == cancelling:
                # Nothing cancelled this task: the handler raised it itself (it awaited a task
                # of its own that was cancelled). Its message failed; the worker is not stopping.
                value, error = None, exc
            elif not running.expired or task.uncancel() > cancelling:
                raise  # the shutdown's cancellation, not the deadline's
            else:
                return Call(error=_timed_out())
        except (SystemExit, KeyboardInterrupt, GeneratorExit) as exc:
            value = None
            error = HandlerExitError(f"handler raised {type(exc).__name__}")
            error.__cause__ = exc  # raise ... from exc, without unwinding the task
            error.__suppress_context__ = True
        except BaseException as exc:  # noqa: BLE001 -- whatever it raises fails its message only
            value, error = None, exc
        finally:
            self._deadlines.end(running)
            self._coroutines -= 1
            self._overrunning.discard(running)
        if running.expired:
            # Past its deadline it swallowed the cancellation, or raised something else from
            # it: a timeout either way, and the cancellation is spent.
            task.uncancel()
            return Call(error=_timed_out())
        return Call(value=value, error=error)

    def _overran(self, running: _Running) -> None:
        self._overrunning.add(running)
        if self.on_overrun is not None:
            self.on_overrun(running.task)

    async def _wait(self, running: asyncio.Future[Any], deadline: float) -> Call:
        """Wait for a plain function's thread until ``deadline``; abandon it past that."""
        try:
            done = await _finished_by(running, deadline, self._deadlines)
        except asyncio.CancelledError:
            if running.done():
                raise  # the thread had ended: nothing runs on beside a retry
            # Shutdown ran out of time. A thread cannot be stopped: it is left to finish while
            # the process exits.
            self._abandon(running)
            raise LeftRunning from None
        if done:
            return _result(running)
        self._abandon(running)
        return Call(error=_timed_out(), running=running)

    def _is_async(self, function: Callable[..., Any]) -> bool:
        # The same handler is called for every message: inspect it once.
        known = self._kinds.get(id(function))
        if known is not None and known[0] is function:
            return known[1]
        kind = is_async(function)
        if len(self._kinds) < 64:  # bound methods are new objects each time: do not grow
            self._kinds[id(function)] = (function, kind)
        return kind

    def _abandon(self, running: asyncio.Future[Any]) -> None:
        self._abandoned.add(running)
        running.add_done_callback(self._abandoned.discard)
        # Retrieve the eventual result so that asyncio does not report it as never retrieved.
        running.add_done_callback(lambda future: future.cancelled() or future.exception())

    def close(self) -> None:
        """Stop taking calls; threads still running are left to finish on their own."""
        self._executor.shutdown(wait=False, cancel_futures=True)


def _timed_out() -> HandlerTimeoutError:
    return HandlerTimeoutError("handler did not finish within its budget")


def _result(future: asyncio.Future[Any]) -> Call:
    if future.cancelled():
        return Call(error=HandlerExitError("handler was cancelled"))
    error = future.exception()
    if error is not None:
        return Call(error=error)
    return Call(value=future.result())
