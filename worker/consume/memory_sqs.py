"""An in-memory SQS queue with the interface the consume path uses: for tests of pure logic.

The worker's core (pollers, runner, lease keeper, settler, depth) talks to its queue only through
:class:`~worker.consume.sqs.Queue`. This implements that protocol in memory, with the SQS semantics
the
core depends on: a received message is invisible for the visibility timeout and then visible
again with its receive count raised; a receipt handle is valid for one receive; a visibility
change or delete with a stale handle is refused per entry; a long poll returns as soon as a
message is visible (also one whose visibility ran out during the poll); a RedrivePolicy moves a
message to the dead-letter queue when a receive would exceed ``max_receive_count``.

Not modelled: FIFO queues, delays, message attributes beyond what tests pass, retention, the
wire protocol. Wire-level behaviour is tested against a real server over HTTP.

``await queue.join()`` waits until every message has been deleted or moved to the DLQ, so a test
waits for the work to end instead of sleeping (dramatiq's ``StubBroker.join``).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from worker.consume.sqs import EntryFailure

if TYPE_CHECKING:
    from types_aiobotocore_sqs.literals import QueueAttributeNameType
    from types_aiobotocore_sqs.type_defs import MessageTypeDef

_STALE = EntryFailure("ReceiptHandleIsInvalid", "the receipt handle has expired", True)


@dataclass
class _Stored:
    message_id: str
    body: str
    sent_at: float
    visible_at: float = 0.0
    receive_count: int = 0
    receipt: str | None = None  # the handle of the latest receive
    attributes: dict[str, Any] = field(default_factory=dict)


class MemoryQueue:
    """One standard queue, in memory; optionally with a dead-letter queue."""

    def __init__(
        self,
        name: str = "memory",
        *,
        visibility_timeout: int = 30,
        dead_letter_queue: MemoryQueue | None = None,
        max_receive_count: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = f"memory://{name}"
        self.name = name
        self.visibility_timeout = visibility_timeout
        self.dead_letter_queue = dead_letter_queue
        self.max_receive_count = max_receive_count
        self._clock = clock
        self._messages: dict[str, _Stored] = {}
        self._changed = asyncio.Event()
        self._handles = itertools.count(1)
        self.calls: dict[str, int] = {}  # operation -> calls, for tests that count requests

    # --- what producers and tests do ---

    def send(self, body: str, **attributes: Any) -> str:
        """Put a message on the queue; returns its id."""
        message_id = str(uuid.uuid4())
        self._messages[message_id] = _Stored(
            message_id, body, time.time(), attributes=dict(attributes)
        )
        self._wake()
        return message_id

    @property
    def visible(self) -> int:
        """Messages a receive could return now."""
        now = self._clock()
        return sum(1 for stored in self._messages.values() if stored.visible_at <= now)

    @property
    def in_flight(self) -> int:
        """Messages received and not yet visible again."""
        return len(self._messages) - self.visible

    def bodies(self) -> list[str]:
        """The bodies still on the queue, in the order sent."""
        return [stored.body for stored in self._messages.values()]

    async def join(self) -> None:
        """Wait until the queue is empty (everything deleted or moved to the DLQ).

        Bound it with ``asyncio.timeout`` where the work may never end.
        """
        while self._messages:
            await self._next_change(self._seconds_to_next_visible())

    # --- the Queue protocol ---

    async def receive(
        self, max_messages: int, wait_seconds: int, visibility_timeout: int | None = None
    ) -> Sequence[MessageTypeDef]:
        """Up to ``max_messages`` visible messages, waiting up to ``wait_seconds`` for one."""
        self._count("ReceiveMessage")
        deadline = self._clock() + wait_seconds
        while True:
            taken = self._take(max_messages, visibility_timeout or self.visibility_timeout)
            remaining = deadline - self._clock()
            if taken or remaining <= 0:
                return taken
            await self._next_change(min(remaining, self._seconds_to_next_visible()))

    async def delete_batch(self, receipts: Mapping[str, str]) -> dict[str, EntryFailure]:
        """Delete by receipt handle; a handle not of the latest receive is refused."""
        self._count("DeleteMessageBatch")
        failures = {}
        for key, handle in receipts.items():
            stored = self._by_receipt(handle)
            if stored is None:
                failures[key] = _STALE
            else:
                del self._messages[stored.message_id]
        self._wake()
        return failures

    async def change_visibility_batch(
        self, changes: Mapping[str, tuple[str, int]]
    ) -> dict[str, EntryFailure]:
        """Set visibility timeouts by receipt handle, from now."""
        self._count("ChangeMessageVisibilityBatch")
        failures = {}
        for key, (handle, seconds) in changes.items():
            stored = self._by_receipt(handle)
            if stored is None:
                failures[key] = _STALE
            else:
                stored.visible_at = self._clock() + seconds
        self._wake()
        return failures

    async def attributes(self, names: Sequence[QueueAttributeNameType]) -> dict[str, str]:
        """The counts SQS reports (approximate there, exact here)."""
        self._count("GetQueueAttributes")
        known: dict[str, str] = {
            "ApproximateNumberOfMessages": str(self.visible),
            "ApproximateNumberOfMessagesNotVisible": str(self.in_flight),
            "ApproximateNumberOfMessagesDelayed": "0",
            "VisibilityTimeout": str(self.visibility_timeout),
        }
        if "All" in names:
            return known
        return {name: known[name] for name in names if name in known}

    # --- inside ---

    def _take(self, most: int, visibility: int) -> list[MessageTypeDef]:
        now = self._clock()
        taken: list[MessageTypeDef] = []
        for stored in list(self._messages.values()):
            if len(taken) >= most:
                break
            if stored.visible_at > now:
                continue
            if self.dead_letter_queue is not None and (
                stored.receive_count >= self.max_receive_count
            ):
                del self._messages[stored.message_id]
                self.dead_letter_queue.send(stored.body, **stored.attributes)
                continue
            stored.receive_count += 1
            stored.receipt = f"{stored.message_id}#{next(self._handles)}"
            stored.visible_at = now + visibility
            taken.append(self._as_received(stored))
        return taken

    def _as_received(self, stored: _Stored) -> MessageTypeDef:
        attributes: dict[str, str] = {
            "ApproximateReceiveCount": str(stored.receive_count),
            "SentTimestamp": str(int(stored.sent_at * 1000)),
            **{str(k): str(v) for k, v in stored.attributes.items()},
        }
        received: dict[str, Any] = {
            "MessageId": stored.message_id,
            "ReceiptHandle": stored.receipt or "",
            "Body": stored.body,
            "MD5OfBody": hashlib.md5(stored.body.encode(), usedforsecurity=False).hexdigest(),
            "Attributes": attributes,
        }
        return received  # type: ignore[return-value]  # the TypedDict's keys, as SQS sends them

    def _by_receipt(self, handle: str) -> _Stored | None:
        message_id = handle.partition("#")[0]
        stored = self._messages.get(message_id)
        return stored if stored is not None and stored.receipt == handle else None

    def _seconds_to_next_visible(self) -> float:
        now = self._clock()
        pending = [s.visible_at - now for s in self._messages.values() if s.visible_at > now]
        return max(0.0, min(pending)) if pending else 3600.0

    async def _next_change(self, within: float) -> None:
        self._changed.clear()
        try:
            async with asyncio.timeout(within):
                await self._changed.wait()
        except TimeoutError:
            return

    def _wake(self) -> None:
        self._changed.set()

    def _count(self, operation: str) -> None:
        self.calls[operation] = self.calls.get(operation, 0) + 1
