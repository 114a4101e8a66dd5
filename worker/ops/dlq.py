"""Dead-letter operations: see what failed, and bring it back without losing a message.

Everything starts from the source queue (``WORKER_QUEUE_URL``) and finds its DLQ through the
RedrivePolicy, as the worker does. Reading the DLQ never consumes it: a peek receives messages
and releases them at once (visibility 0). A manual redrive sends each message to the destination
first and deletes it from the DLQ only after the send succeeded, so a message can be duplicated —
only if the process dies between those two steps — but never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import botocore.exceptions
import structlog

from worker.config import EnvelopeMode, Settings
from worker.consume.sqs import (
    MAX_BATCH,
    QueueInfo,
    describe_failure,
    describe_queue,
    error_code,
    open_sqs,
    queue_url_for,
)
from worker.errors import ConfigurationError, MalformedMessageError, StartupError
from worker.handlers.message import parse_message
from worker.lambda_.event import sqs_record
from worker.ops.batches import split_batches
from worker.ops.fingerprint import fingerprint

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.type_defs import MessageTypeDef

    from worker.handlers.filtering import FilterCriteria

log = structlog.get_logger("worker.ops.dlq")

_DEPTH_ATTRIBUTES = {
    "ApproximateNumberOfMessages": "visible",
    "ApproximateNumberOfMessagesNotVisible": "in_flight",
    "ApproximateNumberOfMessagesDelayed": "delayed",
}
_DEPTH_EVERY_SECONDS = 5.0  # how often a redrive's progress rereads the DLQ's depth
# Errors with which an endpoint says it does not implement message move tasks (moto: HTTP 500).
_UNSUPPORTED = {"InternalFailure", "InternalError", "InvalidAction", "UnsupportedOperation", "500"}


@dataclass(frozen=True)
class QueuePair:
    """The source queue and its DLQ."""

    source: QueueInfo
    dlq_url: str
    dlq_arn: str
    dlq_fifo: bool

    @property
    def dlq_name(self) -> str:
        """The DLQ's name."""
        return self.dlq_arn.rsplit(":", 1)[-1]


async def find_pair(client: SQSClient, settings: Settings) -> QueuePair:
    """The configured source queue and the DLQ its RedrivePolicy names."""
    if settings.queue is None:
        raise ConfigurationError(["WORKER_QUEUE_URL or WORKER_QUEUE_NAME (--queue): required"])
    try:
        source = await describe_queue(client, settings.queue)
    except StartupError:
        raise
    except Exception as exc:  # noqa: BLE001 -- one line for the operator
        raise StartupError(f"cannot read queue {settings.queue}: {describe_failure(exc)}") from None
    if source.redrive is None or source.dlq_url is None:
        raise StartupError(f"queue {source.name} has no RedrivePolicy, so it has no DLQ")
    attributes = await client.get_queue_attributes(
        QueueUrl=source.dlq_url, AttributeNames=["QueueArn", "FifoQueue"]
    )
    return QueuePair(
        source=source,
        dlq_url=source.dlq_url,
        dlq_arn=attributes["Attributes"]["QueueArn"],
        dlq_fifo=attributes["Attributes"].get("FifoQueue") == "true",
    )


# --- stats ------------------------------------------------------------------------------------


@dataclass
class QueueStats:
    """Depth and age of one queue."""

    role: str
    name: str
    visible: int
    in_flight: int
    delayed: int
    oldest_age_seconds: float | None = None
    oldest_is_estimate: bool = False


async def _depth(client: SQSClient, url: str) -> dict[str, int]:
    response = await client.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=list(_DEPTH_ATTRIBUTES),  # type: ignore[arg-type]
    )
    attributes = response.get("Attributes", {})
    return {state: int(attributes.get(key, 0)) for key, state in _DEPTH_ATTRIBUTES.items()}  # type: ignore[call-overload]


def _stats(role: str, name: str, depth: dict[str, int]) -> QueueStats:
    return QueueStats(role, name, depth["visible"], depth["in_flight"], depth["delayed"])


async def stats(settings: Settings, *, sample: int = 10) -> tuple[QueuePair, list[QueueStats]]:
    """Depth of the source queue and its DLQ, and the age of the DLQ's oldest message.

    SQS has no attribute for the age of the oldest message (CloudWatch does, minutes late), so it
    is estimated from up to ``sample`` DLQ messages peeked and released at once. The source queue
    is never peeked: a receive there counts towards its messages' maxReceiveCount.
    """
    async with open_sqs(settings) as client:
        pair = await find_pair(client, settings)
        source = _stats("source", pair.source.name, await _depth(client, pair.source.url))
        dlq = _stats("dlq", pair.dlq_name, await _depth(client, pair.dlq_url))
        if dlq.visible and sample:
            peeked = await _peek(client, pair.dlq_url, sample)
            stamps = [m.sent_at for m in peeked if m.sent_at is not None]
            if stamps:
                dlq.oldest_age_seconds = (datetime.now(tz=UTC) - min(stamps)).total_seconds()
                dlq.oldest_is_estimate = dlq.visible > len(peeked)
    return pair, [source, dlq]


# --- peek -------------------------------------------------------------------------------------


@dataclass
class Peeked:
    """One DLQ message, as read by a peek."""

    message_id: str
    sent_at: datetime | None
    receive_count: int
    body: str
    attributes: dict[str, str]
    topic_arn: str | None
    shape: str
    malformed: str | None = None
    group_id: str | None = None

    def as_json(self, *, body_limit: int | None) -> dict[str, Any]:
        """A JSON-ready view, the body truncated to ``body_limit`` characters."""
        return {
            "message_id": self.message_id,
            "sent_at": self.sent_at.isoformat() if self.sent_at else None,
            "receive_count": self.receive_count,
            "attributes": self.attributes,
            "topic_arn": self.topic_arn,
            "group_id": self.group_id,
            "shape": self.shape,
            "malformed": self.malformed,
            "body": truncate(self.body, body_limit),
        }


def truncate(text: str, limit: int | None) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis."""
    if limit is None or len(text) <= limit:
        return text
    return text[: max(0, limit - 1)] + "…"


def _peeked(raw: MessageTypeDef, url: str) -> Peeked:
    attributes = raw.get("Attributes") or {}
    stamp = attributes.get("SentTimestamp")
    sent_at = datetime.fromtimestamp(int(stamp) / 1000, tz=UTC) if stamp else None
    try:
        message = parse_message(raw, queue_url=url, envelope=EnvelopeMode.AUTO)
    except MalformedMessageError as exc:
        body = raw.get("Body", "")
        return Peeked(
            raw.get("MessageId", ""),
            sent_at,
            int(attributes.get("ApproximateReceiveCount", "0")),
            body,
            {},
            None,
            fingerprint(body),
            malformed=str(exc),
            group_id=attributes.get("MessageGroupId"),
        )
    shown = {
        name: value.value if isinstance(value.value, str) else f"<{len(value.value)} bytes>"
        for name, value in message.published_attributes.items()
    }
    return Peeked(
        message.message_id,
        sent_at,
        message.receive_count,
        message.body,
        shown,
        message.sns.topic_arn if message.sns else None,
        fingerprint(message.body),
        group_id=message.group_id,
    )


async def _release(client: SQSClient, url: str, handles: Sequence[str]) -> int:
    """Make messages visible again at once; returns how many SQS refused."""
    refused = 0
    for start in range(0, len(handles), MAX_BATCH):
        chunk = handles[start : start + MAX_BATCH]
        response = await client.change_message_visibility_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": 0}
                for i, h in enumerate(chunk)
            ],
        )
        refused += len(response.get("Failed", []))
    return refused


_SEEN_ONLY_RECEIVES = 3  # receives in a row with nothing new that end a pass


class _Pass:
    """What one pass over the DLQ has received: the ids it has seen, and what it still holds.

    A pass that outlasts its hold sees its first messages again: SQS makes them visible once the
    hold runs out. Keeping ids counts each message once. The pass ends on an empty receive, or
    after a few receives in a row that bring nothing new: the queue is never empty then, and
    SQS answers a receive with a sample, so one such receive alone does not prove that every
    message was seen. ``came_back`` tells the caller that the hold ran out during the pass.
    """

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._given_back: set[str] = set()  # released during the pass, on purpose
        self._seen_only = 0  # receives in a row that brought nothing new
        self.held: dict[str, str] = {}  # message id -> latest receipt handle (older ones expire)
        self.came_back = False
        self.ended = False

    def fresh(self, batch: Sequence[MessageTypeDef]) -> list[MessageTypeDef]:
        """The messages of ``batch`` this pass had not received before; holds all of them."""
        new = []
        for raw in batch:
            message_id = _message_id(raw)
            if message_id not in self._seen:
                self._seen.add(message_id)
                new.append(raw)
            elif message_id not in self._given_back:
                self.came_back = True
            self.held[message_id] = raw["ReceiptHandle"]
        self._seen_only = 0 if new else self._seen_only + 1
        self.ended = not batch or self._seen_only >= _SEEN_ONLY_RECEIVES
        return new

    def deleted(self, raw: MessageTypeDef) -> None:
        """``raw`` left the DLQ: nothing to give back for it."""
        self.held.pop(_message_id(raw), None)

    def give_back(self, message_ids: Iterable[str] | None = None) -> list[str]:
        """The receipt handles of the messages ``message_ids`` (by default all) that are held,
        now released: seeing those messages again does not mean that a hold ran out."""
        chosen = (
            list(self.held) if message_ids is None else [i for i in message_ids if i in self.held]
        )
        self._given_back.update(chosen)
        return [self.held.pop(message_id) for message_id in chosen]


def _group(raw: MessageTypeDef) -> str:
    return str(raw.get("Attributes", {}).get("MessageGroupId", ""))


def _message_id(raw: MessageTypeDef) -> str:
    # SQS always sends one; the receipt handle keeps messages apart should one ever lack it.
    return raw.get("MessageId") or raw["ReceiptHandle"]


async def _peek(client: SQSClient, url: str, limit: int, hold: int = 30) -> list[Peeked]:
    # Held for ``hold`` seconds while reading, so that one peek does not see a message twice;
    # released at once afterwards, whatever happens.
    scan = _Pass()
    peeked: list[Peeked] = []
    try:
        while len(peeked) < limit:
            response = await client.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=min(MAX_BATCH, limit - len(peeked)),
                WaitTimeSeconds=1,
                VisibilityTimeout=hold,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            fresh = scan.fresh(response.get("Messages", []))
            if scan.ended:
                break  # empty, or only messages whose hold ran out: the whole DLQ was read
            peeked.extend(_peeked(raw, url) for raw in fresh)
    finally:
        if scan.held:
            await asyncio.shield(_release(client, url, list(scan.held.values())))
    return peeked


@dataclass
class Group:
    """Peeked messages that share a body shape."""

    shape: str
    messages: list[Peeked] = field(default_factory=list)


def group(peeked: Sequence[Peeked]) -> list[Group]:
    """Messages grouped by body shape (and malformation), largest group first."""
    groups: dict[str, Group] = {}
    for message in peeked:
        key = f"malformed: {message.malformed}" if message.malformed else message.shape
        groups.setdefault(key, Group(key)).messages.append(message)
    return sorted(groups.values(), key=lambda g: (-len(g.messages), g.shape))


async def peek(
    settings: Settings, *, limit: int, hold: int = 30
) -> tuple[QueuePair, list[Peeked], int]:
    """Read up to ``limit`` DLQ messages without consuming them; returns the DLQ's depth too.

    ``hold`` is how long each message stays invisible while the peek reads on; one that comes
    back before the peek ends is not shown twice.
    """
    async with open_sqs(settings) as client:
        pair = await find_pair(client, settings)
        depth = (await _depth(client, pair.dlq_url))["visible"]
        return pair, await _peek(client, pair.dlq_url, limit, hold), depth


# --- purge ------------------------------------------------------------------------------------


async def purge(settings: Settings) -> tuple[QueuePair, int]:
    """Empty the DLQ; returns how many messages it held."""
    async with open_sqs(settings) as client:
        pair = await find_pair(client, settings)
        depth = await _depth(client, pair.dlq_url)
        await client.purge_queue(QueueUrl=pair.dlq_url)
    return pair, depth["visible"] + depth["in_flight"] + depth["delayed"]


# --- native moves -----------------------------------------------------------------------------


MOVE_TASK_MAX_RATE = 500  # SQS: StartMessageMoveTask's MaxNumberOfMessagesPerSecond


class MoveTasksUnsupportedError(Exception):
    """The endpoint does not implement message move tasks (moto, some emulators)."""


@contextlib.contextmanager
def _move_task_call() -> Iterator[None]:
    """Tell an endpoint without move tasks (moto: HTTP 500) from a call that failed."""
    try:
        yield
    except botocore.exceptions.ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if error_code(exc) in _UNSUPPORTED or status in {500, 501}:
            raise MoveTasksUnsupportedError(describe_failure(exc)) from None
        raise


async def start_move_task(
    client: SQSClient, *, dlq_arn: str, destination_arn: str | None, rate: float | None
) -> str:
    """Start SQS's own move of every DLQ message; returns the task handle."""
    request: dict[str, Any] = {"SourceArn": dlq_arn}
    if destination_arn is not None:
        request["DestinationArn"] = destination_arn
    if rate is not None:
        # SQS documents 500 messages a second as a move task's most (an integer, at least 1):
        # --rate is a ceiling, and the task's own maximum keeps under a faster one.
        request["MaxNumberOfMessagesPerSecond"] = min(MOVE_TASK_MAX_RATE, max(1, int(rate)))
    with _move_task_call():
        response = await client.start_message_move_task(**request)
    return response["TaskHandle"]


async def list_move_tasks(client: SQSClient, dlq_arn: str) -> list[dict[str, Any]]:
    """The DLQ's recent message move tasks, newest first."""
    with _move_task_call():
        response = await client.list_message_move_tasks(SourceArn=dlq_arn, MaxResults=10)
    return [dict(task) for task in response.get("Results", [])]


async def cancel_move_task(client: SQSClient, handle: str) -> int:
    """Cancel a running move task; returns how many messages it had moved."""
    with _move_task_call():
        response = await client.cancel_message_move_task(TaskHandle=handle)
    return int(response.get("ApproximateNumberOfMessagesMoved", 0))


# --- manual redrive ---------------------------------------------------------------------------

MAX_REQUEST_BYTES = 1_048_576  # SQS: a message, and a whole send batch, at most 1 MiB


@dataclass
class RedrivePlan:
    """What a redrive should do."""

    destination: str | None = None  # URL or name; the source queue by default
    max_messages: int | None = None
    rate: float | None = None  # messages per second
    criteria: FilterCriteria | None = None
    dry_run: bool = False
    hold_seconds: int = 60  # how long received messages stay invisible while being moved
    manual: bool = False  # never use StartMessageMoveTask

    @property
    def native_possible(self) -> bool:
        """Whether SQS's own move task can do this (it moves everything, unfiltered)."""
        return not (self.manual or self.dry_run or self.criteria or self.max_messages)


@dataclass
class RedriveResult:
    """What a redrive did."""

    seen: int = 0  # received, each message once: moved + failed + skipped (a dry run: matched)
    moved: int = 0
    matched: int = 0  # for a dry run: what would have been moved
    skipped: int = 0  # did not match the filter, left in the DLQ
    failed: int = 0  # not sent; left in the DLQ
    delete_failed: int = 0  # sent but not deleted from the DLQ: now in both queues
    seconds: float = 0.0
    interrupted: bool = False
    native_task: str | None = None
    native_status: str | None = None  # the move task's last status; None if it was not followed
    outlasted_hold: bool = False  # messages came back during the run: a count may be short
    # A FIFO DLQ: messages the run never received, kept behind one it left in the DLQ (skipped,
    # or only counted by a dry run) in their message group, which FIFO order does not pass.
    unreached: int = 0
    shapes: Counter[str] = field(default_factory=Counter)


Progress = Callable[[RedriveResult, int | None], None]


class _Rate:
    """At most ``per_second`` messages a second, on average, from the start."""

    def __init__(self, per_second: float | None) -> None:
        self._per_second = per_second
        self._started = time.monotonic()
        self._granted = 0

    async def take(self, count: int) -> None:
        if not self._per_second:
            return
        self._granted += count
        due = self._started + (self._granted - count) / self._per_second
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


def _send_entry(index: int, raw: MessageTypeDef, fifo: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"Id": str(index), "MessageBody": raw.get("Body", "")}
    attributes = {}
    for name, attribute in (raw.get("MessageAttributes") or {}).items():
        kept = {
            k: v for k, v in attribute.items() if k in {"DataType", "StringValue", "BinaryValue"}
        }
        attributes[name] = kept
    if attributes:
        entry["MessageAttributes"] = attributes
    if fifo:
        system = raw.get("Attributes") or {}
        entry["MessageGroupId"] = system.get("MessageGroupId", "default")
        # A fresh id: the original one may still be inside the destination's dedup window.
        entry["MessageDeduplicationId"] = uuid.uuid4().hex
    return entry


def entry_bytes(entry: dict[str, Any]) -> int:
    """What SQS counts of a send entry against its size limits: body and message attributes."""
    size = len(entry["MessageBody"].encode())
    for name, attribute in entry.get("MessageAttributes", {}).items():
        value = attribute.get("StringValue", attribute.get("BinaryValue", b""))
        encoded = value.encode() if isinstance(value, str) else bytes(value)
        size += len(name.encode()) + len(attribute.get("DataType", "").encode()) + len(encoded)
    return size


def send_batches(
    entries: Sequence[dict[str, Any]], max_bytes: int = MAX_REQUEST_BYTES
) -> list[list[dict[str, Any]]]:
    """``entries`` cut, in order, into batches SQS accepts: ten entries, ``max_bytes`` in all
    (see :func:`~worker.ops.batches.split_batches`)."""
    return split_batches(entries, entry_bytes, max_bytes)


def _too_long(exc: botocore.exceptions.ClientError) -> bool:
    # JSON-protocol SQS says "BatchRequestTooLong"; its query-compatible code has a prefix.
    return error_code(exc).rsplit(".", 1)[-1] == "BatchRequestTooLong"


class Redrive:
    """A message-by-message move from the DLQ, stoppable between batches."""

    def __init__(
        self,
        client: SQSClient,
        pair: QueuePair,
        plan: RedrivePlan,
        *,
        destination_url: str,
        destination_fifo: bool,
        progress: Progress | None = None,
        stop: asyncio.Event | None = None,
        max_batch_bytes: int = MAX_REQUEST_BYTES,
    ) -> None:
        self._client = client
        self._pair = pair
        self._plan = plan
        self._destination = destination_url
        self._fifo = destination_fifo
        self._progress = progress
        self._stop = stop or asyncio.Event()
        self._max_batch_bytes = max_batch_bytes
        self._pass = _Pass()  # what was received; what is held, given back at the end
        # FIFO: the groups received, and those held until the end (a receive brought nothing
        # new of them, or the destination refused one of their messages).
        self._groups_seen: set[str] = set()
        self._blocked_groups: set[str] = set()
        self._remaining: int | None = None
        self._depth_read_at = 0.0
        self.result = RedriveResult()

    def stop(self) -> None:
        """Finish the batch in hand, give back what is held, and stop."""
        self._stop.set()

    async def run(self) -> RedriveResult:
        """Move until the DLQ has been read through, ``max_messages`` moved, or stopped."""
        started = time.monotonic()
        rate = _Rate(self._plan.rate)
        try:
            while not self._stop.is_set() and not self._reached_max():
                batch = await self._receive()
                fresh = self._pass.fresh(batch)
                self._groups_seen.update(_group(raw) for raw in batch)
                if self._pass.ended:
                    break  # empty, or only messages whose hold ran out: the DLQ was read through
                if fresh:
                    await self._handle(fresh, rate)
                    await self._report()
                if self._pair.dlq_fifo and not self._plan.dry_run:
                    await asyncio.shield(self._let_groups_flow(batch, fresh))
            self.result.interrupted = self._stop.is_set()
            self.result.outlasted_hold = self._pass.came_back
        finally:
            await asyncio.shield(self._give_back())
            self.result.seconds = time.monotonic() - started
        blocked = self._groups_seen if self._plan.dry_run else self._blocked_groups
        finished = not self.result.interrupted and not self._reached_max()
        if self._pair.dlq_fifo and blocked and finished:
            await self._count_unreached()
        return self.result

    async def _count_unreached(self) -> None:
        """About how many messages the run could not receive, behind the groups it held.

        A FIFO group is received in order, and not past a message that stays in the DLQ: a dry
        run reads the first ten of each group only, a filtered one stops at ten skipped in a row,
        and a group whose message the destination refused is not read further, so that its order
        holds. The rest of such a group was never seen. How many that is comes from the DLQ's
        depth, an approximate count on SQS, less what the run left there.
        """
        left = self.result.skipped + self.result.failed + self.result.delete_failed
        if self._plan.dry_run:
            left += self.result.matched
        try:
            depth = await _depth(self._client, self._pair.dlq_url)
        except Exception:  # noqa: BLE001 -- the count is advisory; the run itself is done
            return
        self.result.unreached = max(0, depth["visible"] + depth["in_flight"] - left)

    def _reached_max(self) -> bool:
        limit = self._plan.max_messages
        done = self.result.matched if self._plan.dry_run else self.result.moved
        return limit is not None and done >= limit

    def _room(self) -> int:
        room = MAX_BATCH
        if self._plan.rate is not None and not self._pair.dlq_fifo:
            # Small batches, so that a low rate is a steady one. Not on a FIFO DLQ, where a
            # receive must be able to bring a group's next message behind the ones it skips.
            room = max(1, min(room, int(self._plan.rate)))
        limit = self._plan.max_messages
        done = self.result.matched if self._plan.dry_run else self.result.moved
        return room if limit is None else max(1, min(room, limit - done))

    async def _receive(self) -> list[MessageTypeDef]:
        # Take only what can still be moved: a message received beyond --max would only be held.
        response = await self._client.receive_message(
            QueueUrl=self._pair.dlq_url,
            MaxNumberOfMessages=self._room(),
            WaitTimeSeconds=1,
            VisibilityTimeout=self._plan.hold_seconds,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return list(response.get("Messages", []))

    def _payload(self, raw: MessageTypeDef) -> str:
        """The published payload: the body with any SNS envelope unwrapped."""
        with contextlib.suppress(MalformedMessageError):
            return parse_message(raw, queue_url=self._pair.dlq_url, envelope=EnvelopeMode.AUTO).body
        return raw.get("Body", "")  # match and describe the body as it is

    def _matches(self, raw: MessageTypeDef) -> bool:
        """Whether the filter picks ``raw``; one it cannot be applied to stays in the DLQ."""
        if self._plan.criteria is None:
            return True
        record = sqs_record(raw, queue_arn=self._pair.dlq_arn, region=self._pair.source.region)
        record["body"] = self._payload(raw)
        try:
            return bool(self._plan.criteria.matches(record))
        except Exception as exc:  # noqa: BLE001 -- one message's content must not end the run
            log.warning(
                "dlq.filter_failed", message_id=raw.get("MessageId"), error=type(exc).__name__
            )
            return False

    async def _handle(self, batch: list[MessageTypeDef], rate: _Rate) -> None:
        # What is not moved stays held until the end of the run, so that it is not received
        # again while the run goes on.
        chosen = [raw for raw in batch if self._matches(raw)]
        self.result.seen += len(batch)
        self.result.skipped += len(batch) - len(chosen)
        self.result.matched += len(chosen)
        for raw in chosen:
            self.result.shapes[fingerprint(self._payload(raw))] += 1
        if chosen and not self._plan.dry_run:
            await rate.take(len(chosen))
            await asyncio.shield(self._move(chosen))

    async def _move(self, batch: list[MessageTypeDef]) -> None:
        # Send first; delete from the DLQ only what the destination accepted.
        entries = [_send_entry(i, raw, self._fifo) for i, raw in enumerate(batch)]
        for chunk in send_batches(entries, self._max_batch_bytes):
            sent = await self._send(chunk, batch)
            if sent:
                await self._delete(sent)

    async def _send(
        self, chunk: list[dict[str, Any]], batch: list[MessageTypeDef]
    ) -> list[MessageTypeDef]:
        """Send ``chunk``; returns the messages of ``batch`` the destination accepted."""
        try:
            response = await self._client.send_message_batch(
                QueueUrl=self._destination,
                Entries=chunk,  # type: ignore[arg-type]
            )
        except botocore.exceptions.ClientError as exc:
            if not _too_long(exc):
                raise
            # SQS measures a batch its own way; one at a time, each is within the limit.
            log.info("dlq.batch_too_long", messages=len(chunk), fallback="one at a time")
            return [batch[int(e["Id"])] for e in chunk if await self._send_one(e, batch)]
        for failure in response.get("Failed", []):
            self._send_failed(
                batch[int(failure["Id"])], failure.get("Code"), failure.get("Message")
            )
        return [batch[int(entry["Id"])] for entry in response.get("Successful", [])]

    async def _send_one(self, entry: dict[str, Any], batch: list[MessageTypeDef]) -> bool:
        single = {key: value for key, value in entry.items() if key != "Id"}
        try:
            await self._client.send_message(QueueUrl=self._destination, **single)
        except botocore.exceptions.ClientError as exc:
            self._send_failed(batch[int(entry["Id"])], error_code(exc), describe_failure(exc))
            return False
        return True

    def _send_failed(self, raw: MessageTypeDef, code: str | None, error: str | None) -> None:
        # It stays held with the rest, and is given back to the DLQ at the end; on a FIFO DLQ
        # its group stays held too, so that none of the group's later messages goes before it.
        self.result.failed += 1
        self._blocked_groups.add(_group(raw))
        log.warning("dlq.send_failed", message_id=raw.get("MessageId"), code=code, error=error)

    async def _delete(self, sent: list[MessageTypeDef]) -> None:
        deleted = await self._client.delete_message_batch(
            QueueUrl=self._pair.dlq_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": raw["ReceiptHandle"]} for i, raw in enumerate(sent)
            ],
        )
        self.result.moved += len(sent)
        not_deleted = {entry["Id"]: entry for entry in deleted.get("Failed", [])}
        self.result.delete_failed += len(not_deleted)
        for index, raw in enumerate(sent):
            if str(index) not in not_deleted:
                self._pass.deleted(raw)
                continue
            log.warning(
                "dlq.delete_failed",
                message_id=raw.get("MessageId"),
                code=not_deleted[str(index)].get("Code"),
                note="the message was sent and is still in the DLQ: it may be moved twice",
            )

    async def _let_groups_flow(
        self, batch: Sequence[MessageTypeDef], fresh: Sequence[MessageTypeDef]
    ) -> None:
        """FIFO: a message held in a group keeps the rest of the group from being received. What
        the filter skipped goes back at once where the batch brought something new of its
        group: it comes first in the group again, with the next ones behind it. A group that
        brought nothing new (ten skipped in a row) stays held, so that receives reach the other
        groups rather than that one again; the end of the run counts what it kept out of reach.
        """
        groups = {_group(raw) for raw in batch}
        flowing = {_group(raw) for raw in fresh} - self._blocked_groups
        self._blocked_groups |= groups - flowing
        ids = [_message_id(raw) for raw in batch if _group(raw) in flowing]
        await self._give_back(ids)

    async def _give_back(self, message_ids: Iterable[str] | None = None) -> None:
        held = self._pass.give_back(message_ids)
        if held:
            refused = await _release(self._client, self._pair.dlq_url, held)
            if refused:
                # Their hold runs out by itself: they come back, later than asked.
                log.warning("dlq.release_failed", messages=refused)

    async def _report(self) -> None:
        if self._progress is None:
            return
        if time.monotonic() - self._depth_read_at > _DEPTH_EVERY_SECONDS:
            self._depth_read_at = time.monotonic()
            try:
                self._remaining = (await _depth(self._client, self._pair.dlq_url))["visible"]
            except Exception:  # noqa: BLE001 -- progress is advisory
                self._remaining = None
        self._progress(self.result, self._remaining)


_MISSING_QUEUE = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}


async def destination_of(
    client: SQSClient, pair: QueuePair, plan: RedrivePlan
) -> tuple[str, str, bool]:
    """(URL, ARN, FIFO) of where the redrive sends messages; checked before anything moves."""
    url = (
        pair.source.url
        if plan.destination is None
        else await queue_url_for(client, plan.destination)
    )
    try:
        response = await client.get_queue_attributes(
            QueueUrl=url, AttributeNames=["QueueArn", "FifoQueue"]
        )
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) in _MISSING_QUEUE:
            raise StartupError(f"--to {url}: the queue does not exist") from None
        raise
    attributes = response["Attributes"]
    if attributes["QueueArn"] == pair.dlq_arn:
        # Each message would come back under a new id, to be moved again: a loop without end.
        raise ConfigurationError(
            [f"--to {url}: that is the DLQ itself; name the queue to move its messages to"]
        )
    fifo = attributes.get("FifoQueue") == "true"
    if pair.dlq_fifo and not fifo:
        raise ConfigurationError([f"--to {url}: a FIFO DLQ's messages must go to a FIFO queue"])
    return url, attributes["QueueArn"], fifo


_FINISHED = {"COMPLETED", "CANCELLED", "FAILED"}


async def _stopped_within(stop: asyncio.Event | None, seconds: float) -> bool:
    """Wait ``seconds``, or less if ``stop`` is set meanwhile; returns whether it was."""
    if stop is None:
        await asyncio.sleep(seconds)
        return False
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


async def wait_for_move_task(
    client: SQSClient,
    dlq_arn: str,
    handle: str,
    *,
    progress: Progress | None = None,
    every: float = 5.0,
    stop: asyncio.Event | None = None,
) -> dict[str, Any]:
    """Follow a move task until it ends, or ``stop`` is set; returns its last status.

    Stopping stops only the following: the task is SQS's and goes on without us.
    """
    while True:
        tasks = await list_move_tasks(client, dlq_arn)
        task = next((t for t in tasks if t.get("TaskHandle") == handle), tasks[0] if tasks else {})
        if progress is not None:
            moved = int(task.get("ApproximateNumberOfMessagesMoved", 0))
            total = task.get("ApproximateNumberOfMessagesToMove")
            remaining = None if total is None else max(0, int(total) - moved)
            progress(RedriveResult(moved=moved, native_task=handle), remaining)
        if task.get("Status") in _FINISHED or not task:
            return task
        if await _stopped_within(stop, every):
            return task


async def native_redrive(
    client: SQSClient,
    pair: QueuePair,
    plan: RedrivePlan,
    destination_arn: str,
    *,
    progress: Progress | None = None,
    stop: asyncio.Event | None = None,
    wait: bool = True,
    starter: SQSClient | None = None,
) -> RedriveResult | None:
    """Redrive with SQS's own move task; ``None`` where the endpoint has none.

    ``starter``: the client that starts the task, where it is not ``client``.
    """
    try:
        handle = await start_move_task(
            starter or client,
            dlq_arn=pair.dlq_arn,
            destination_arn=None if plan.destination is None else destination_arn,
            rate=plan.rate,
        )
    except MoveTasksUnsupportedError as exc:
        log.info("dlq.native_unsupported", reason=str(exc), fallback="message by message")
        return None
    log.info("dlq.move_task_started", task=handle, dlq=pair.dlq_name)
    if not wait:
        return RedriveResult(native_task=handle)
    task = await wait_for_move_task(client, pair.dlq_arn, handle, progress=progress, stop=stop)
    status = str(task.get("Status") or "UNKNOWN")
    if status == "FAILED":
        raise StartupError(f"move task {handle} failed: {task.get('FailureReason')}")
    return RedriveResult(
        moved=int(task.get("ApproximateNumberOfMessagesMoved", 0)),
        native_task=handle,
        native_status=status,
        interrupted=stop is not None and stop.is_set() and status not in _FINISHED,
    )


async def run_redrive(
    settings: Settings,
    plan: RedrivePlan,
    *,
    progress: Progress | None = None,
    stop: asyncio.Event | None = None,
    wait: bool = True,
) -> RedriveResult:
    """Redrive the DLQ: natively when SQS can, message by message otherwise.

    Setting ``stop`` ends the run early: a manual one after the batch in hand, a native one at
    once (the move task goes on in SQS; its handle is in the result).
    """
    stop = stop or asyncio.Event()
    if plan.destination and not plan.destination.startswith(("http://", "https://")):
        # A name, given as the queue's is: with .fifo added where WORKER_FIFO says so.
        plan = replace(plan, destination=settings.fifo_named(plan.destination))
    async with open_sqs(settings) as client:
        pair = await find_pair(client, settings)
        url, arn, fifo = await destination_of(client, pair, plan)
        if plan.native_possible and not stop.is_set():
            # Started with one attempt: an endpoint without move tasks (moto: HTTP 500) says
            # so at once instead of after the SDK's retries (10 s); should SQS itself fail to
            # start one, the message-by-message redrive that follows is as correct.
            async with open_sqs(settings, max_attempts=1) as starter:
                result = await native_redrive(
                    client,
                    pair,
                    plan,
                    arn,
                    progress=progress,
                    stop=stop,
                    wait=wait,
                    starter=starter,
                )
            if result is not None:
                return result
        redrive = Redrive(
            client,
            pair,
            plan,
            destination_url=url,
            destination_fifo=fifo,
            progress=progress,
            stop=stop,
        )
        return await redrive.run()
