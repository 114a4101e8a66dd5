"""The caller of user code: what each kind of function gets (pure logic, no queue)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any

import pytest

from worker.errors import GeneratorHandlerError, HandlerTimeoutError
from worker.handlers.calls import Caller, HandlerStillRunning


def plainly_wrapped(function: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Any]:
    """A decorator as users write them: a plain function that returns the coroutine."""

    @functools.wraps(function)
    def wrapper(*args: Any) -> Any:
        return function(*args)

    return wrapper


@pytest.fixture
async def caller() -> Any:
    made = Caller(max_threads=2)
    yield made
    made.close()


class TestAwaitableFromAPlainFunction:
    """A plain function that returns a coroutine has its work in it: the coroutine is run."""

    async def test_its_value_is_the_coroutines(self, caller: Caller) -> None:
        @plainly_wrapped
        async def handler(value: int) -> int:
            await asyncio.sleep(0)
            return value * 2

        call = await caller.call(handler, (21,), deadline=time.monotonic() + 5)
        assert call.error is None
        assert call.value == 42

    async def test_what_the_coroutine_raises_fails_the_call(self, caller: Caller) -> None:
        ran: list[str] = []

        @plainly_wrapped
        async def handler(body: str) -> None:
            ran.append(body)
            raise ValueError("bad order")

        call = await caller.call(handler, ("order-1",), deadline=time.monotonic() + 5)
        assert ran == ["order-1"]
        assert isinstance(call.error, ValueError)
        assert str(call.error) == "bad order"

    async def test_the_budget_covers_the_coroutine(self, caller: Caller) -> None:
        cancelled = asyncio.Event()

        @plainly_wrapped
        async def handler() -> None:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        call = await caller.call(handler, (), deadline=time.monotonic() + 0.2)
        assert isinstance(call.error, HandlerTimeoutError)
        assert cancelled.is_set()
        assert call.running is None  # a coroutine is stopped, not abandoned
        assert caller.abandoned == 0

    async def test_a_plain_value_is_not_awaited(self, caller: Caller) -> None:
        response: dict[str, list[str]] = {"batchItemFailures": []}
        call = await caller.call(lambda: response, (), deadline=time.monotonic() + 5)
        assert call.error is None
        assert call.value is response


class TestGenerators:
    """A call that returns a generator ran none of the handler's code: it fails, loudly."""

    async def test_a_generator_function(self, caller: Caller) -> None:
        ran: list[str] = []

        def handler(body: str) -> Iterator[None]:
            ran.append(body)
            yield  # stray

        call = await caller.call(handler, ("order-1",), deadline=time.monotonic() + 5)
        assert isinstance(call.error, GeneratorHandlerError)
        assert (
            str(call.error)
            == "handler returned a generator, so none of its code ran (a stray yield?)"
        )
        assert ran == []

    async def test_an_async_generator_function(self, caller: Caller) -> None:
        ran: list[str] = []

        async def handler(body: str) -> AsyncIterator[None]:
            ran.append(body)
            yield

        call = await caller.call(handler, ("order-1",), deadline=time.monotonic() + 5)
        assert isinstance(call.error, GeneratorHandlerError)
        assert "an async generator" in str(call.error)
        assert ran == []

    async def test_a_generator_behind_a_plain_decorator(self, caller: Caller) -> None:
        def generates(body: str) -> Iterator[str]:
            yield body

        @functools.wraps(generates)
        def wrapper(body: str) -> Iterator[str]:
            return generates(body)

        call = await caller.call(wrapper, ("order-1",), deadline=time.monotonic() + 5)
        assert isinstance(call.error, GeneratorHandlerError)


def stubborn(release: asyncio.Event) -> Callable[[], Coroutine[Any, Any, None]]:
    """A handler that swallows its cancellation (a bare except in a loop) until ``release``."""

    async def handler() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.05)

    return handler


class TestCoroutinesThatWillNotStop:
    """A coroutine that swallows its cancellation is abandoned and handed back, to be waited for."""

    async def test_past_its_budget(self, caller: Caller) -> None:
        release = asyncio.Event()
        call = await caller.call(stubborn(release), (), deadline=time.monotonic() + 0.1)
        assert isinstance(call.error, HandlerTimeoutError)
        assert isinstance(call.running, asyncio.Task)
        assert not call.running.done()
        assert caller.coroutines_running == 1
        release.set()
        await asyncio.wait({call.running})
        assert caller.coroutines_running == 0

    async def test_cancelled_at_shutdown(self, caller: Caller) -> None:
        release = asyncio.Event()
        waiting = asyncio.create_task(
            caller.call(stubborn(release), (), deadline=time.monotonic() + 60)
        )
        await asyncio.sleep(0.1)
        waiting.cancel()
        with pytest.raises(HandlerStillRunning):
            await waiting
        assert caller.coroutines_running == 1
        release.set()
