"""Handler slots: take what is free up to a limit, wait when none are, wake waiters in order."""

from __future__ import annotations

import asyncio

import pytest

from worker.consume.capacity import Capacity


async def run_ready_tasks() -> None:
    """Let every task that can run reach its next wait."""
    for _ in range(5):
        await asyncio.sleep(0)


async def waiting(capacity: Capacity, most: int = 1) -> asyncio.Task[int]:
    """An ``acquire`` task, run until it waits for a slot."""
    task = asyncio.create_task(capacity.acquire(most))
    await run_ready_tasks()
    assert not task.done(), "expected acquire to wait"
    return task


class TestAcquire:
    """``acquire`` takes up to ``most`` of the free slots, at once while any are free."""

    async def test_takes_what_it_asks_for(self) -> None:
        capacity = Capacity(10)
        assert await capacity.acquire(3) == 3
        assert capacity.in_use == 3

    async def test_takes_no_more_than_are_free(self) -> None:
        capacity = Capacity(5)
        assert await capacity.acquire(3) == 3
        assert await capacity.acquire(3) == 2
        assert capacity.in_use == 5

    async def test_takes_at_most_the_limit(self) -> None:
        capacity = Capacity(4)
        assert await capacity.acquire(100) == 4

    async def test_waits_when_none_are_free(self) -> None:
        capacity = Capacity(1)
        await capacity.acquire(1)
        task = await waiting(capacity)
        capacity.release()
        assert await asyncio.wait_for(task, timeout=1) == 1
        assert capacity.in_use == 1

    async def test_woken_waiter_takes_up_to_most_of_the_released_slots(self) -> None:
        capacity = Capacity(5)
        await capacity.acquire(5)
        task = await waiting(capacity, most=4)
        capacity.release(3)
        assert await asyncio.wait_for(task, timeout=1) == 3
        assert capacity.in_use == 5

    async def test_slots_left_over_wake_the_next_waiter(self) -> None:
        capacity = Capacity(3)
        await capacity.acquire(3)
        first = await waiting(capacity, most=1)
        second = await waiting(capacity, most=5)
        capacity.release(3)
        assert await asyncio.wait_for(first, timeout=1) == 1
        assert await asyncio.wait_for(second, timeout=1) == 2
        assert capacity.in_use == 3


class TestOrder:
    """Waiters are served first come, first served."""

    async def test_woken_in_fifo_order(self) -> None:
        capacity = Capacity(1)
        await capacity.acquire(1)
        tasks = [await waiting(capacity) for _ in range(3)]
        served: list[int] = []
        for _ in tasks:
            capacity.release()
            await run_ready_tasks()
            served.extend(i for i, task in enumerate(tasks) if task.done() and i not in served)
        assert served == [0, 1, 2]
        assert [task.result() for task in tasks] == [1, 1, 1]

    async def test_one_release_wakes_one_waiter(self) -> None:
        capacity = Capacity(1)
        await capacity.acquire(1)
        first, second = await waiting(capacity), await waiting(capacity)
        capacity.release()
        await run_ready_tasks()
        assert first.done()
        assert not second.done()
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second

    async def test_newcomer_does_not_overtake_a_woken_waiter(self) -> None:
        capacity = Capacity(1)
        await capacity.acquire(1)
        first, second = await waiting(capacity), await waiting(capacity)
        newcomer = asyncio.create_task(capacity.acquire(1))  # scheduled, has not run yet
        capacity.release()  # meant for `first`, but `newcomer` runs before `first` resumes
        await run_ready_tasks()
        capacity.release()
        await run_ready_tasks()
        # Two slots were released to three contenders: the two that waited first get them.
        assert first.done()
        assert second.done()
        assert not newcomer.done()
        newcomer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await newcomer


class TestCancellation:
    """A cancelled waiter neither takes a slot nor swallows a wake-up."""

    async def test_cancelled_while_waiting(self) -> None:
        capacity = Capacity(1)
        await capacity.acquire(1)
        cancelled, other = await waiting(capacity), await waiting(capacity)
        cancelled.cancel()
        await run_ready_tasks()
        capacity.release()
        assert await asyncio.wait_for(other, timeout=1) == 1
        assert cancelled.cancelled()
        assert capacity.in_use == 1

    async def test_cancelled_after_its_wake_up_hands_it_on(self) -> None:
        capacity = Capacity(1)
        await capacity.acquire(1)
        woken, other = await waiting(capacity), await waiting(capacity)
        capacity.release()  # wakes `woken`, which is cancelled before it can run
        woken.cancel()
        assert await asyncio.wait_for(other, timeout=1) == 1
        assert woken.cancelled()
        assert capacity.in_use == 1

    async def test_cancelled_after_its_wake_up_with_no_one_waiting(self) -> None:
        capacity = Capacity(1)
        await capacity.acquire(1)
        woken = await waiting(capacity)
        capacity.release()
        woken.cancel()
        await run_ready_tasks()
        assert woken.cancelled()
        assert capacity.in_use == 0
        assert await capacity.acquire(1) == 1


class TestFill:
    """With ``fill_within`` the head collects released slots, up to ``most``, for a bounded time."""

    async def test_collects_released_slots_up_to_most(self) -> None:
        capacity = Capacity(10)
        await capacity.acquire(8)  # running handlers
        filling = asyncio.create_task(capacity.acquire(5, fill_within=10))
        await run_ready_tasks()
        assert not filling.done(), "two free of five wanted: it waits for more"
        capacity.release(1)
        await run_ready_tasks()
        assert not filling.done()
        capacity.release(2)  # five free now
        assert await asyncio.wait_for(filling, timeout=1) == 5
        assert capacity.in_use == 10

    async def test_takes_what_is_free_when_the_bound_passes(self) -> None:
        capacity = Capacity(10)
        await capacity.acquire(8)
        started = asyncio.get_running_loop().time()
        assert await capacity.acquire(5, fill_within=0.05) == 2
        assert asyncio.get_running_loop().time() - started >= 0.04
        assert capacity.in_use == 10

    async def test_patient_while_messages_wait_then_bounded(self) -> None:
        """While messages received ahead wait for a handler, the fill's bound does not run."""
        capacity = Capacity(10)
        await capacity.acquire(8)
        waiting = [True]
        filling = asyncio.create_task(
            capacity.acquire(5, fill_within=0.05, patient=lambda: waiting[0])
        )
        await asyncio.sleep(0.2)  # four times the bound
        assert not filling.done(), "messages wait for handlers: no partial receive yet"
        capacity.release(1)
        await asyncio.sleep(0.1)
        assert not filling.done()
        waiting[0] = False  # the last one started: now the bound runs
        assert await asyncio.wait_for(filling, timeout=0.5) == 3

    async def test_no_wait_when_enough_are_free(self) -> None:
        capacity = Capacity(10)
        await capacity.acquire(3)
        assert await asyncio.wait_for(capacity.acquire(5, fill_within=10), timeout=1) == 5

    async def test_no_wait_when_nothing_is_in_use(self) -> None:
        capacity = Capacity(4)  # fewer than wanted, but none will come back
        assert await asyncio.wait_for(capacity.acquire(10, fill_within=10), timeout=1) == 4

    async def test_slots_released_while_filling_are_not_taken_by_others(self) -> None:
        capacity = Capacity(10)
        await capacity.acquire(9)
        filling = asyncio.create_task(capacity.acquire(3, fill_within=10))
        await run_ready_tasks()
        other = asyncio.create_task(capacity.acquire(1))
        await run_ready_tasks()
        capacity.release(1)
        await run_ready_tasks()
        assert not other.done(), "a newcomer must not take what the head collects"
        capacity.release(1)
        assert await asyncio.wait_for(filling, timeout=1) == 3
        capacity.release(1)
        assert await asyncio.wait_for(other, timeout=1) == 1

    async def test_a_waiter_woken_before_the_fill_waits_for_what_it_leaves(self) -> None:
        capacity = Capacity(10)
        await capacity.acquire(10)
        first = asyncio.create_task(capacity.acquire(5, fill_within=0.05))
        second = asyncio.create_task(capacity.acquire(5, fill_within=0.05))
        await run_ready_tasks()
        capacity.release(2)  # wakes `first`
        capacity.release(1)  # `first` has not run yet: this wakes `second` too
        await run_ready_tasks()
        # `first` collects; `second` must neither collect too nor take what `first` collects.
        assert await asyncio.wait_for(first, timeout=1) == 3
        assert not second.done()
        capacity.release(4)
        assert await asyncio.wait_for(second, timeout=1) == 4
        assert capacity.in_use == 10

    async def test_never_returns_no_slots_under_contention(self) -> None:
        capacity = Capacity(20)
        held = await capacity.acquire(20)
        assert held == 20
        takers = [asyncio.create_task(capacity.acquire(10, fill_within=0.01)) for _ in range(6)]
        taken: list[int] = []
        for _ in range(400):  # slots come back one by one while six callers contend
            if capacity.in_use > 0:
                capacity.release()
            await asyncio.sleep(0.001)
            for task in [t for t in takers if t.done()]:
                taken.append(task.result())
                capacity.release(task.result())  # handled at once, given back
                takers.remove(task)
                takers.append(asyncio.create_task(capacity.acquire(10, fill_within=0.01)))
        for task in takers:
            task.cancel()
        await asyncio.gather(*takers, return_exceptions=True)
        assert taken, "callers were served"
        assert min(taken) >= 1
        assert capacity.in_use <= capacity.limit

    async def test_the_line_holds_only_the_callers_waiting(self) -> None:
        """A caller woken while another collects waits again; its spent place must not stay.

        Five pollers taking up to ten slots with a fill, handlers giving slots back one by one:
        the line once grew by about 30 spent futures a second (memory, and a longer scan at
        every release), forever.
        """
        capacity = Capacity(50)
        longest = 0
        handlers: set[asyncio.Task[None]] = set()

        async def handle(seconds: float) -> None:
            await asyncio.sleep(seconds)
            capacity.release()

        async def poll() -> None:
            nonlocal longest
            while True:
                taken = await capacity.acquire(10, fill_within=0.02)
                await asyncio.sleep(0.01)  # the receive
                for index in range(taken):
                    task = asyncio.create_task(handle(0.04 + index * 0.002))
                    handlers.add(task)
                    task.add_done_callback(handlers.discard)
                longest = max(longest, len(capacity._waiters))  # the line itself

        pollers = [asyncio.create_task(poll()) for _ in range(5)]
        await asyncio.sleep(1)
        for poller in pollers:
            poller.cancel()
        await asyncio.gather(*pollers, return_exceptions=True)
        assert 0 < longest <= len(pollers)

    async def test_cancelled_while_filling_hands_the_slots_on(self) -> None:
        capacity = Capacity(10)
        await capacity.acquire(9)
        filling = asyncio.create_task(capacity.acquire(5, fill_within=10))
        await run_ready_tasks()
        other = await waiting(capacity, most=2)
        capacity.release(1)
        await run_ready_tasks()
        filling.cancel()
        with pytest.raises(asyncio.CancelledError):
            await filling
        assert await asyncio.wait_for(other, timeout=1) == 2  # both free slots
        assert capacity.in_use == 10


class TestRelease:
    """``release`` gives slots back, and never more than were taken."""

    async def test_in_use_accounting(self) -> None:
        capacity = Capacity(10)
        assert capacity.in_use == 0
        taken = await capacity.acquire(7)
        assert capacity.in_use == 7
        capacity.release(2)
        assert capacity.in_use == 5
        capacity.release(taken - 2)
        assert capacity.in_use == 0
        assert capacity.limit == 10

    async def test_release_nothing_is_a_no_op(self) -> None:
        capacity = Capacity(2)
        await capacity.acquire(1)
        capacity.release(0)
        capacity.release(-3)
        assert capacity.in_use == 1

    def test_release_beyond_the_limit_raises(self) -> None:
        capacity = Capacity(2)
        with pytest.raises(RuntimeError, match="released more slots than were taken"):
            capacity.release()

    async def test_release_more_than_taken_raises(self) -> None:
        capacity = Capacity(3)
        await capacity.acquire(2)
        with pytest.raises(RuntimeError, match="released more slots than were taken"):
            capacity.release(3)

    async def test_rejected_release_leaves_the_count_alone(self) -> None:
        capacity = Capacity(3)
        await capacity.acquire(2)
        with pytest.raises(RuntimeError):
            capacity.release(3)
        assert capacity.in_use == 2


class TestExtend:
    """``extend`` sets the slots beyond the base limit (receive-ahead) without taking any in use."""

    async def test_raising_frees_slots_and_wakes_a_waiter(self) -> None:
        capacity = Capacity(2)
        await capacity.acquire(2)
        task = await waiting(capacity, most=10)
        capacity.extend(3)
        assert await task == 3
        assert capacity.limit == 5
        assert capacity.in_use == 5

    async def test_lowering_takes_back_free_slots_first(self) -> None:
        capacity = Capacity(2)
        capacity.extend(4)
        assert await capacity.acquire(1) == 1
        capacity.extend(0)
        assert capacity.limit == 2
        assert capacity.in_use == 1
        assert await capacity.acquire(10) == 1

    async def test_slots_in_use_beyond_a_lowered_limit_are_kept_back_when_released(
        self,
    ) -> None:
        capacity = Capacity(2)
        capacity.extend(3)
        assert await capacity.acquire(5) == 5
        capacity.extend(0)  # 5 in use, limit 2: three are owed
        assert capacity.in_use == 5
        task = await waiting(capacity)
        capacity.release(3)  # pays what is owed: still no slot free
        await run_ready_tasks()
        assert not task.done()
        assert capacity.in_use == 2
        capacity.release(1)
        assert await task == 1
        capacity.release(2)
        assert capacity.in_use == 0
        with pytest.raises(RuntimeError, match="released more slots than were taken"):
            capacity.release()

    async def test_raising_again_forgives_what_is_owed_first(self) -> None:
        capacity = Capacity(1)
        capacity.extend(2)
        await capacity.acquire(3)
        capacity.extend(0)  # two owed
        capacity.extend(1)  # one forgiven, one still owed
        assert capacity.limit == 2
        assert capacity.in_use == 3
        capacity.release(2)  # one pays the debt, one is free
        assert await capacity.acquire(5) == 1

    async def test_lowering_while_the_head_fills_leaves_it_a_slot(self) -> None:
        capacity = Capacity(4)
        await capacity.acquire(4)
        capacity.release(1)
        task = asyncio.create_task(capacity.acquire(4, fill_within=5.0))
        await run_ready_tasks()
        assert not task.done()  # collecting: one free, wants four
        capacity.extend(0)  # nothing to lower (base limit), then lower below what is free
        capacity.extend(2)
        capacity.extend(0)
        capacity.release(3)
        assert await task >= 1
