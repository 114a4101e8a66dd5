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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import botocore.exceptions
import structlog

from worker.config import EnvelopeMode, Settings
from worker.errors import ConfigurationError, MalformedMessageError, StartupError
from worker.fingerprint import fingerprint
from worker.lambda_event import sqs_record
from worker.message import parse_message
from worker.sqs import (
    MAX_BATCH,
    QueueInfo,
    describe_failure,
    describe_queue,
    error_code,
    open_sqs,
    queue_url_for,
)

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.type_defs import MessageTypeDef

    from worker.filtering import FilterCriteria

log = structlog.get_logger("worker.dlq")

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


async def _peek(client: SQSClient, url: str, limit: int, hold: int = 30) -> list[Peeked]:
    # Held for ``hold`` seconds while reading, so that one peek does not see a message twice;
    # released at once afterwards, whatever happens.
    handles: list[str] = []
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
            batch = response.get("Messages", [])
            if not batch:
                break
            for raw in batch:
                handles.append(raw["ReceiptHandle"])
                peeked.append(_peeked(raw, url))
    finally:
        if handles:
            await asyncio.shield(_release(client, url, handles))
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


async def peek(settings: Settings, *, limit: int) -> tuple[QueuePair, list[Peeked], int]:
    """Read up to ``limit`` DLQ messages without consuming them; returns the DLQ's depth too."""
    async with open_sqs(settings) as client:
        pair = await find_pair(client, settings)
        depth = (await _depth(client, pair.dlq_url))["visible"]
        return pair, await _peek(client, pair.dlq_url, limit), depth


# --- purge ------------------------------------------------------------------------------------


async def purge(settings: Settings) -> tuple[QueuePair, int]:
    """Empty the DLQ; returns how many messages it held."""
    async with open_sqs(settings) as client:
        pair = await find_pair(client, settings)
        depth = await _depth(client, pair.dlq_url)
        await client.purge_queue(QueueUrl=pair.dlq_url)
    return pair, depth["visible"] + depth["in_flight"] + depth["delayed"]


# --- native moves -----------------------------------------------------------------------------


class MoveTasksUnsupportedError(Exception):
    """The endpoint does not implement message move tasks (moto, some emulators)."""


async def start_move_task(
    client: SQSClient, *, dlq_arn: str, destination_arn: str | None, rate: float | None
) -> str:
    """Start SQS's own move of every DLQ message; returns the task handle."""
    request: dict[str, Any] = {"SourceArn": dlq_arn}
    if destination_arn is not None:
        request["DestinationArn"] = destination_arn
    if rate is not None:
        request["MaxNumberOfMessagesPerSecond"] = max(1, int(rate))
    try:
        response = await client.start_message_move_task(**request)
    except botocore.exceptions.ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if error_code(exc) in _UNSUPPORTED or status in {500, 501}:
            raise MoveTasksUnsupportedError(describe_failure(exc)) from None
        raise
    return response["TaskHandle"]


async def list_move_tasks(client: SQSClient, dlq_arn: str) -> list[dict[str, Any]]:
    """The DLQ's recent message move tasks, newest first."""
    try:
        response = await client.list_message_move_tasks(SourceArn=dlq_arn, MaxResults=10)
    except botocore.exceptions.ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if error_code(exc) in _UNSUPPORTED or status in {500, 501}:
            raise MoveTasksUnsupportedError(describe_failure(exc)) from None
        raise
    return [dict(task) for task in response.get("Results", [])]


async def cancel_move_task(client: SQSClient, handle: str) -> int:
    """Cancel a running move task; returns how many messages it had moved."""
    response = await client.cancel_message_move_task(TaskHandle=handle)
    return int(response.get("ApproximateNumberOfMessagesMoved", 0))


# --- manual redrive ---------------------------------------------------------------------------


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

    moved: int = 0
    matched: int = 0  # for a dry run: what would have been moved
    skipped: int = 0  # did not match the filter, left in the DLQ
    failed: int = 0  # not sent; left in the DLQ
    delete_failed: int = 0  # sent but not deleted from the DLQ: now in both queues
    seconds: float = 0.0
    interrupted: bool = False
    native_task: str | None = None
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
    ) -> None:
        self._client = client
        self._pair = pair
        self._plan = plan
        self._destination = destination_url
        self._fifo = destination_fifo
        self._progress = progress
        self._stop = False
        self._held: dict[str, str] = {}  # message id -> latest receipt handle, given back at end
        self._seen_skipped: set[str] = set()
        self._remaining: int | None = None
        self._depth_read_at = 0.0
        self.result = RedriveResult()

    def stop(self) -> None:
        """Finish the batch in hand, give back what is held, and stop."""
        self._stop = True
        self.result.interrupted = True

    async def run(self) -> RedriveResult:
        """Move until the DLQ is empty, ``max_messages`` moved, or stopped."""
        started = time.monotonic()
        rate = _Rate(self._plan.rate)
        try:
            while not self._stop and not self._reached_max():
                batch = await self._receive()
                if not batch:
                    break
                await self._handle(batch, rate)
                await self._report()
        finally:
            await asyncio.shield(self._give_back())
            self.result.seconds = time.monotonic() - started
        return self.result

    def _reached_max(self) -> bool:
        limit = self._plan.max_messages
        done = self.result.matched if self._plan.dry_run else self.result.moved
        return limit is not None and done >= limit

    def _room(self) -> int:
        room = MAX_BATCH
        if self._plan.rate is not None:  # small batches, so that a low rate is a steady one
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
        if self._plan.criteria is None:
            return True
        record = sqs_record(raw, queue_arn=self._pair.dlq_arn, region=self._pair.source.region)
        record["body"] = self._payload(raw)
        return bool(self._plan.criteria.matches(record))

    async def _handle(self, batch: list[MessageTypeDef], rate: _Rate) -> None:
        chosen = []
        for raw in batch:
            if self._matches(raw):
                chosen.append(raw)
            else:
                # Kept invisible until the end of the run, so that it is not received again.
                message_id = raw.get("MessageId", "")
                self._held[message_id] = raw["ReceiptHandle"]
                if message_id not in self._seen_skipped:
                    self._seen_skipped.add(message_id)
                    self.result.skipped += 1
        for raw in chosen:
            self.result.shapes[fingerprint(self._payload(raw))] += 1
        if self._plan.dry_run:
            self.result.matched += len(chosen)
            self._held.update((raw.get("MessageId", ""), raw["ReceiptHandle"]) for raw in chosen)
            return
        self.result.matched += len(chosen)
        if chosen:
            await rate.take(len(chosen))
            await asyncio.shield(self._move(chosen))

    async def _move(self, batch: list[MessageTypeDef]) -> None:
        # Send first; delete from the DLQ only what the destination accepted.
        response = await self._client.send_message_batch(
            QueueUrl=self._destination,
            Entries=[_send_entry(i, raw, self._fifo) for i, raw in enumerate(batch)],  # type: ignore[misc]
        )
        failed = {entry["Id"]: entry for entry in response.get("Failed", [])}
        sent = [raw for i, raw in enumerate(batch) if str(i) not in failed]
        for index, entry in failed.items():
            raw = batch[int(index)]
            self.result.failed += 1
            self._held[raw.get("MessageId", "")] = raw["ReceiptHandle"]
            log.warning(
                "dlq.send_failed",
                message_id=raw.get("MessageId"),
                code=entry.get("Code"),
                error=entry.get("Message"),
            )
        if not sent:
            return
        deleted = await self._client.delete_message_batch(
            QueueUrl=self._pair.dlq_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": raw["ReceiptHandle"]} for i, raw in enumerate(sent)
            ],
        )
        not_deleted = deleted.get("Failed", [])
        self.result.delete_failed += len(not_deleted)
        self.result.moved += len(sent)
        for entry in not_deleted:
            log.warning(
                "dlq.delete_failed",
                message_id=sent[int(entry["Id"])].get("MessageId"),
                code=entry.get("Code"),
                note="the message was sent and is still in the DLQ: it may be moved twice",
            )

    async def _give_back(self) -> None:
        if self._held:
            refused = await _release(self._client, self._pair.dlq_url, list(self._held.values()))
            if refused:
                # Their hold runs out by itself: they come back, later than asked.
                log.warning("dlq.release_failed", messages=refused)
            self._held = {}

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


async def destination_of(
    client: SQSClient, pair: QueuePair, plan: RedrivePlan
) -> tuple[str, str, bool]:
    """(URL, ARN, FIFO) of where the redrive sends messages."""
    url = (
        pair.source.url
        if plan.destination is None
        else await queue_url_for(client, plan.destination)
    )
    attributes = (
        await client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn", "FifoQueue"])
    )["Attributes"]
    fifo = attributes.get("FifoQueue") == "true"
    if pair.dlq_fifo and not fifo:
        raise ConfigurationError([f"--to {url}: a FIFO DLQ's messages must go to a FIFO queue"])
    return url, attributes["QueueArn"], fifo


_FINISHED = {"COMPLETED", "CANCELLED", "FAILED"}


async def wait_for_move_task(
    client: SQSClient,
    dlq_arn: str,
    handle: str,
    *,
    progress: Progress | None = None,
    every: float = 5.0,
) -> dict[str, Any]:
    """Follow a move task until it ends; returns its last status."""
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
        await asyncio.sleep(every)


async def run_redrive(
    settings: Settings,
    plan: RedrivePlan,
    *,
    progress: Progress | None = None,
    on_started: Callable[[Redrive], None] | None = None,
    wait: bool = True,
) -> RedriveResult:
    """Redrive the DLQ: natively when SQS can, message by message otherwise."""
    async with open_sqs(settings) as client:
        pair = await find_pair(client, settings)
        url, arn, fifo = await destination_of(client, pair, plan)
        if plan.native_possible:
            try:
                handle = await start_move_task(
                    client,
                    dlq_arn=pair.dlq_arn,
                    destination_arn=None if plan.destination is None else arn,
                    rate=plan.rate,
                )
            except MoveTasksUnsupportedError as exc:
                log.info("dlq.native_unsupported", reason=str(exc), fallback="message by message")
            else:
                log.info("dlq.move_task_started", task=handle, dlq=pair.dlq_name)
                if not wait:
                    return RedriveResult(native_task=handle)
                task = await wait_for_move_task(client, pair.dlq_arn, handle, progress=progress)
                result = RedriveResult(
                    moved=int(task.get("ApproximateNumberOfMessagesMoved", 0)), native_task=handle
                )
                if task.get("Status") == "FAILED":
                    raise StartupError(f"move task {handle} failed: {task.get('FailureReason')}")
                return result
        redrive = Redrive(
            client, pair, plan, destination_url=url, destination_fifo=fifo, progress=progress
        )
        if on_started is not None:
            on_started(redrive)
        return await redrive.run()
