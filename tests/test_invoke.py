"""The caller of user code: what each kind of function gets (pure logic, no queue)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any

import pytest

from worker.errors import GeneratorHandlerError, HandlerTimeoutError
from worker.handlers.calls import Caller, _Deadlines, _Due


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
    """A coroutine that swallows its cancellation runs on in the caller's task until it ends.

    Past its budget and the grace of its cancellation the caller is told (``on_overrun``, with
    the task), so that it keeps the messages; the call returns a timeout when it finally ends.
    """

    async def test_past_its_budget(self, caller: Caller) -> None:
        release = asyncio.Event()
        overran: list[asyncio.Task[Any]] = []
        caller.on_overrun = overran.append
        calling = asyncio.create_task(
            caller.call(stubborn(release), (), deadline=time.monotonic() + 0.1)
        )
        await asyncio.sleep(1.5)  # its budget, and the second of grace of its cancellation
        assert not calling.done()
        assert overran == [calling]
        assert caller.abandoned == 1
        assert caller.coroutines_running == 1
        release.set()
        call = await calling
        assert isinstance(call.error, HandlerTimeoutError)
        assert call.running is None
        assert caller.abandoned == 0
        assert caller.coroutines_running == 0
        assert calling.cancelling() == 0  # the deadline's cancellation is spent

    async def test_within_its_grace_it_is_not_reported(self, caller: Caller) -> None:
        overran: list[asyncio.Task[Any]] = []
        caller.on_overrun = overran.append

        async def slow_to_stop() -> None:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                await asyncio.sleep(0.2)  # cleans up, then stops
                raise

        call = await caller.call(slow_to_stop, (), deadline=time.monotonic() + 0.1)
        assert isinstance(call.error, HandlerTimeoutError)
        assert overran == []
        assert caller.abandoned == 0
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]

    async def test_cancelled_at_shutdown(self, caller: Caller) -> None:
        release = asyncio.Event()
        waiting = asyncio.create_task(
            caller.call(stubborn(release), (), deadline=time.monotonic() + 60)
        )
        await asyncio.sleep(0.1)
        waiting.cancel()
        await asyncio.sleep(0.3)
        assert not waiting.done()  # it swallowed the cancellation and runs on
        assert caller.coroutines_running == 1
        release.set()
        call = await waiting  # it ended on its own: what it did stands
        assert call.error is None
        assert caller.coroutines_running == 0


class TestDeadlines:
    """Every call's deadline shares one timer; each call still ends at its own."""

    async def test_calls_with_different_budgets_end_in_their_own_time(self, caller: Caller) -> None:
        async def sleeps() -> None:
            await asyncio.sleep(60)

        started = time.monotonic()
        budgets = [0.4, 0.1, 0.3, 0.2]
        ended: dict[float, float] = {}

        async def one(budget: float) -> None:
            call = await caller.call(sleeps, (), deadline=started + budget)
            assert isinstance(call.error, HandlerTimeoutError)
            ended[budget] = time.monotonic() - started

        await asyncio.gather(*(one(budget) for budget in budgets))
        assert sorted(ended, key=ended.__getitem__) == sorted(budgets)
        for budget, after in ended.items():
            assert budget <= after < budget + 0.5, (budget, after)

    async def test_a_finished_call_leaves_no_deadline_behind(self, caller: Caller) -> None:
        async def quick(value: int) -> int:
            await asyncio.sleep(0)
            return value

        for value in range(5000):
            call = await caller.call(quick, (value,), deadline=time.monotonic() + 900)
            assert call.value == value
        # Finished calls' deadlines are dropped as they pile up behind a far one.
        assert len(caller._deadlines._heap) < 200

    async def test_a_thread_past_its_budget_is_abandoned_at_its_deadline(
        self, caller: Caller
    ) -> None:
        release = threading.Event()
        started = time.monotonic()
        call = await caller.call(release.wait, (5,), deadline=started + 0.2)
        assert isinstance(call.error, HandlerTimeoutError)
        assert 0.2 <= time.monotonic() - started < 1.0
        assert call.running is not None
        release.set()
        await call.running

    async def test_an_entry_added_while_deadlines_fire_is_called_once(self) -> None:
        """A deadline's due() may add another (a cancelled coroutine's grace), and adding may
        rebuild the heap; every entry is still called once, at its time."""
        deadlines = _Deadlines()
        calls: list[str] = []

        class Note(_Due):
            __slots__ = ("name",)

            def __init__(self, name: str) -> None:
                super().__init__()
                self.name = name

            def due(self) -> None:
                calls.append(self.name)

        class Adds(_Due):
            def due(self) -> None:
                calls.append("adds")
                for _ in range(100):  # enough ended entries behind it to force a rebuild
                    ended = Note("ended")
                    deadlines.add(time.monotonic() + 0.05, ended)
                    deadlines.end(ended)
                deadlines.add(time.monotonic() + 0.05, Note("later"))

        now = time.monotonic()
        for _ in range(200):  # ended calls behind the first deadline
            ended = Note("ended")
            deadlines.add(now + 0.05, ended)
            deadlines.end(ended)
        deadlines.add(now + 0.02, Adds())
        deadlines.add(now + 0.02, Note("second"))  # due in the same firing, after it
        await asyncio.sleep(0.3)
        assert calls == ["adds", "second", "later"]
