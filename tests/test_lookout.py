"""While the queue is empty one poller keeps watch (pure logic: an in-memory queue, no SQS).

An idle replica's receives are requests like any other: with five pollers each long-polling an
empty queue it would make five per ``WaitTimeSeconds`` where one tells as much. The others wait
for the first receive that brings messages, and then all receive again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from worker.consume.backoff import ExponentialBackoff
from worker.consume.capacity import Capacity
from worker.consume.lease import Lease, LeaseKeeper
from worker.consume.memory_sqs import MemoryQueue
from worker.consume.poller import Lookout, Poller
from worker.consume.runner import Runner
from worker.consume.settler import Settler
from worker.handlers.adapters import Invocation
from worker.metrics import Metrics

if TYPE_CHECKING:
    from types_aiobotocore_sqs.type_defs import MessageTypeDef


async def test_the_last_poller_receiving_never_waits() -> None:
    lookout = Lookout()
    lookout.join()
    async with asyncio.timeout(1):
        await lookout.came_back_empty()  # alone: back to receiving at once


async def test_a_poller_waits_for_news_while_another_receives() -> None:
    lookout = Lookout()
    lookout.join()
    lookout.join()
    waiting = asyncio.create_task(lookout.came_back_empty())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    second = asyncio.create_task(lookout.came_back_empty())  # now the only one receiving
    await asyncio.sleep(0.05)
    assert second.done()
    assert not waiting.done()
    lookout.brought()
    async with asyncio.timeout(1):
        await waiting


class Pool:
    """Five pollers over one in-memory queue, handlers that take ``seconds``."""

    def __init__(self, queue: MemoryQueue, *, pollers: int = 5, seconds: float = 0.0) -> None:
        self.queue = queue
        metrics = Metrics(CollectorRegistry(), queue="q")
        capacity = Capacity(50)
        self.settler = Settler(queue, queue_name="q", metrics=metrics, on_settled=lambda _: None)

        async def adapter(leases: Sequence[Lease], deadline: float) -> Invocation:
            await asyncio.sleep(seconds)
            return Invocation([None] * len(leases))

        self.runner = Runner(
            adapter,
            keeper=LeaseKeeper(queue, visibility_timeout=30, metrics=metrics),
            settler=self.settler,
            capacity=capacity,
            metrics=metrics,
            retry_delay=ExponentialBackoff(2, 300),
            budget=10,
            batch_size=1,
            queue_name="q",
        )
        lookout = Lookout()
        self.pollers = [
            Poller(
                queue,
                capacity=capacity,
                runner=self.runner,
                wait_seconds=1,
                visibility_timeout=None,
                lookout=lookout,
            )
            for _ in range(pollers)
        ]
        self.tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Pool:
        self.tasks = [poller.start() for poller in self.pollers]
        return self

    async def __aexit__(self, *_: object) -> None:
        for poller in self.pollers:
            poller.stop()
        async with asyncio.timeout(5):
            await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.settler.close()


class WatchedQueue(MemoryQueue):
    """An in-memory queue that notes which tasks (which pollers) ask it, once ``watching``."""

    def __init__(self) -> None:
        super().__init__()
        self.watching = False
        self.askers: set[asyncio.Task[object] | None] = set()

    async def receive(
        self, max_messages: int, wait_seconds: int, visibility_timeout: int | None = None
    ) -> Sequence[MessageTypeDef]:
        if self.watching:
            self.askers.add(asyncio.current_task())
        return await super().receive(max_messages, wait_seconds, visibility_timeout)


async def test_an_idle_pool_makes_one_receive_per_wait() -> None:
    queue = MemoryQueue()
    async with Pool(queue):
        await asyncio.sleep(3.5)  # each poller's first receive, then three waits of one second
    receives = queue.calls["ReceiveMessage"]
    # Five first receives, then one per second: without the lookout, five per second (20).
    assert 5 + 2 <= receives <= 5 + 4, receives


async def test_messages_after_an_idle_spell_wake_every_poller() -> None:
    queue = WatchedQueue()
    async with Pool(queue, seconds=0.2) as pool:
        await asyncio.sleep(1.5)  # four pollers now wait for news
        queue.watching = True
        for n in range(100):
            queue.send(str(n))
        async with asyncio.timeout(5):
            await queue.join()
        assert pool.runner.counts["succeeded"] == 100
    # The one receiving took the first ten and woke the others, which asked again too.
    assert len(queue.askers) == 5
