"""The in-memory queue keeps the SQS semantics the core relies on (worker.consume.memory_sqs)."""

from __future__ import annotations

import asyncio

from worker.consume.memory_sqs import MemoryQueue
from worker.consume.sqs import Queue


def as_queue(queue: MemoryQueue) -> Queue:
    """The protocol is met without a cast: mypy checks this assignment."""
    return queue


class TestMemoryQueue:
    """Visibility, receipt handles, long polls, redrive and join, as SQS has them."""

    async def test_a_received_message_is_invisible_then_back_with_a_higher_count(self) -> None:
        queue = MemoryQueue(visibility_timeout=1)
        queue.send("a")
        (first,) = await as_queue(queue).receive(10, 0)
        assert await queue.receive(10, 0) == []
        assert (queue.visible, queue.in_flight) == (0, 1)
        (again,) = await queue.receive(10, 2)  # the long poll sees it come back
        assert again["MessageId"] == first["MessageId"]
        assert again["Attributes"]["ApproximateReceiveCount"] == "2"
        assert again["ReceiptHandle"] != first["ReceiptHandle"]

    async def test_a_stale_receipt_handle_is_refused_per_entry(self) -> None:
        queue = MemoryQueue(visibility_timeout=0)
        queue.send("a")
        (first,) = await queue.receive(1, 0)
        (second,) = await queue.receive(1, 0)
        failures = await queue.delete_batch(
            {"old": first["ReceiptHandle"], "new": second["ReceiptHandle"]}
        )
        assert set(failures) == {"old"}
        assert failures["old"].code == "ReceiptHandleIsInvalid"
        assert queue.bodies() == []

    async def test_a_long_poll_returns_as_soon_as_a_message_arrives(self) -> None:
        queue = MemoryQueue()
        poll = asyncio.create_task(queue.receive(10, 20))
        await asyncio.sleep(0)
        queue.send("late")
        async with asyncio.timeout(1):
            received = await poll
        assert [m["Body"] for m in received] == ["late"]

    async def test_visibility_changes_apply_from_now(self) -> None:
        queue = MemoryQueue(visibility_timeout=30)
        queue.send("a")
        (message,) = await queue.receive(1, 0)
        assert await queue.change_visibility_batch({"0": (message["ReceiptHandle"], 0)}) == {}
        assert queue.visible == 1

    async def test_redrive_moves_a_message_past_max_receive_count(self) -> None:
        dlq = MemoryQueue("dlq")
        queue = MemoryQueue(visibility_timeout=0, dead_letter_queue=dlq, max_receive_count=2)
        queue.send("poison")
        assert len(await queue.receive(1, 0)) == 1
        assert len(await queue.receive(1, 0)) == 1
        assert await queue.receive(1, 0) == []  # the third receive moves it instead
        assert dlq.bodies() == ["poison"]
        async with asyncio.timeout(1):
            await queue.join()

    async def test_join_waits_for_the_work_to_end(self) -> None:
        queue = MemoryQueue()
        queue.send("a")
        queue.send("b")

        async def consume() -> None:
            while queue.bodies():
                for message in await queue.receive(10, 1):
                    await queue.delete_batch({"0": message["ReceiptHandle"]})

        consumer = asyncio.create_task(consume())
        async with asyncio.timeout(2):
            await queue.join()
        await consumer
        assert queue.calls["DeleteMessageBatch"] == 2

    async def test_attributes_count_visible_and_in_flight(self) -> None:
        queue = MemoryQueue()
        queue.send("a")
        queue.send("b")
        await queue.receive(1, 0)
        counts = await queue.attributes(
            ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        )
        assert counts == {
            "ApproximateNumberOfMessages": "1",
            "ApproximateNumberOfMessagesNotVisible": "1",
        }
