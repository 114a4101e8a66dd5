"""Calling user code: coroutines on the loop, plain functions in a bounded thread pool.

Both kinds get the same processing budget. An ``async def`` handler over budget is cancelled; a
plain function cannot be stopped from outside its thread, so it is abandoned: its message is
failed as a timeout at once, and :attr:`Call.running` lets the caller keep the handler's slot
until the thread really ends, so abandoned threads never push the pool past its limit. A
coroutine that swallows its cancellation is abandoned the same way, and :attr:`Call.running`
tells the caller to hold its messages too until it ends, so that no retry runs beside it.

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
import inspect
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from worker.errors import GeneratorHandlerError, HandlerExitError, HandlerTimeoutError

# How long a cancelled coroutine may take to unwind before it is abandoned.
_CANCEL_GRACE_SECONDS = 1.0


class HandlerStillRunning(asyncio.CancelledError):
    """The call was cancelled, but its coroutine would not stop (it swallows cancellation).

    Its messages must not be given back while it runs, or their retry would run beside it: they
    are left to their visibility timeout, by when the process has exited.
    """


@dataclass(slots=True)
class Call:
    """The result of one handler call."""

    value: Any = None
    error: BaseException | None = None
    # Still running after its budget ran out (abandoned); done when the code really stops.
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


async def _finished_by(future: asyncio.Future[Any], deadline: float) -> bool:
    """Wait for ``future`` until ``deadline`` (``time.monotonic``); whether it is done.

    ``asyncio.wait({future}, timeout=...)`` without its sets and generators: this runs once per
    handler call. The future is never cancelled here; cancelling the caller stops the wait.
    """
    if future.done():
        return True
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    timer = loop.call_later(max(0.0, deadline - time.monotonic()), wake)
    future.add_done_callback(wake)
    try:
        await waiter
    finally:
        timer.cancel()
        future.remove_done_callback(wake)
    return future.done()


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


async def _guarded(function: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> Any:
    try:
        return await function(*args)
    except (SystemExit, KeyboardInterrupt, GeneratorExit) as exc:
        # Inside a task these would be re-raised out of the event loop itself.
        raise HandlerExitError(f"handler raised {type(exc).__name__}") from exc


def _guarded_sync(function: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    try:
        return function(*args)
    except (SystemExit, KeyboardInterrupt, GeneratorExit) as exc:
        raise HandlerExitError(f"handler raised {type(exc).__name__}") from exc


class Caller:
    """Runs handler calls under a deadline, plain functions in at most ``max_threads`` threads."""

    def __init__(self, max_threads: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="handler")
        self._abandoned: set[asyncio.Future[Any]] = set()
        self._threads: set[asyncio.Future[Any]] = set()
        self._kinds: dict[int, tuple[Callable[..., Any], bool]] = {}  # id → (function, is_async)

    @property
    def abandoned(self) -> int:
        """Handlers past their budget that are still running."""
        return len(self._abandoned)

    @property
    def threads_running(self) -> int:
        """Plain-function handlers still running in their threads, abandoned or not."""
        return len(self._threads)

    @property
    def coroutines_running(self) -> int:
        """``async def`` handlers that would not stop when cancelled, still running."""
        return sum(isinstance(call, asyncio.Task) for call in self._abandoned)

    async def call(
        self, function: Callable[..., Any], args: tuple[Any, ...], *, deadline: float
    ) -> Call:
        """Call ``function(*args)`` and wait for it until ``deadline`` (``time.monotonic``)."""
        loop = asyncio.get_running_loop()
        if self._is_async(function):
            return _checked(await self._wait(loop.create_task(_guarded(function, args)), deadline))
        context = contextvars.copy_context()
        running = loop.run_in_executor(
            self._executor, functools.partial(context.run, _guarded_sync, function, args)
        )
        self._threads.add(running)
        running.add_done_callback(self._threads.discard)
        call = await self._wait(running, deadline)
        if call.error is None and inspect.isawaitable(call.value):
            awaitable = loop.create_task(_guarded(_awaited, (call.value,)), context=context)
            call = await self._wait(awaitable, deadline)
        return _checked(call)

    async def _wait(self, running: asyncio.Future[Any], deadline: float) -> Call:
        """Wait for a started call until ``deadline``; cancel or abandon it past that."""
        try:
            done = await _finished_by(running, deadline)
        except asyncio.CancelledError:
            # Shutdown ran out of time. A thread cannot be stopped: it is left to finish while
            # the process exits. A coroutine is cancelled and given a moment to stop.
            if not isinstance(running, asyncio.Task):
                self._abandon(running)
                raise
            running.cancel()
            if not await _finished_by(running, time.monotonic() + _CANCEL_GRACE_SECONDS):
                self._abandon(running)
                raise HandlerStillRunning from None
            raise
        if done:
            return _result(running)
        error = HandlerTimeoutError("handler did not finish within its budget")
        if isinstance(running, asyncio.Task):
            running.cancel()
            if await _finished_by(running, time.monotonic() + _CANCEL_GRACE_SECONDS):
                return Call(error=error)
        self._abandon(running)
        return Call(error=error, running=running)

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


def _result(future: asyncio.Future[Any]) -> Call:
    if future.cancelled():
        return Call(error=HandlerExitError("handler was cancelled"))
    error = future.exception()
    if error is not None:
        return Call(error=error)
    return Call(value=future.result())
