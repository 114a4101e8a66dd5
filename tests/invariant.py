"""The reliability invariant, checked after every fault scenario: nothing published is lost.

At the end of a run every message published must be either handled successfully and deleted, or in
the DLQ; none may be missing. A message may be handled more than once only if it was in flight when
a fault struck; such duplicates are counted, and a scenario says which ones it allows.

A :class:`Ledger` records what was published (each message carries a unique id in its body,
because SQS message ids change when a message is redriven) and what the handler finished: handlers
in this process call :meth:`Ledger.handled`; handlers in worker subprocesses append to marker
files (``tests/fault_handlers.py``) that the ledger reads. :meth:`Ledger.inspect` then drains the
source queue and the DLQ and returns a :class:`Verdict`, whose :meth:`~Verdict.check` fails with a
readable account of what went wrong.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import uuid
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.support import REGION, Queues
from worker import Message
from worker.config import Settings
from worker.consume.sqs import open_sns, open_sqs

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

# A message's ledger id: "msg-" + the ledger's run token + a sequence number.
ID_PATTERN = re.compile(r"msg-[0-9a-f]{8}-[0-9]{7}")
# Where subprocess handlers record, under their TEST_MARKERS directory.
MARKER_DIRECTORY = "ledger"
_SHOWN = 10  # ids listed per problem in an assertion message


def id_in(text: str | bytes) -> str | None:
    """The first ledger id found in a body (an SNS envelope, a broken document, anything)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    match = ID_PATTERN.search(text)
    return match.group(0) if match else None


def id_of(raw: Mapping[str, Any]) -> str | None:
    """The ledger id of a received message: in its body, else in a String attribute."""
    found = id_in(raw.get("Body", ""))
    if found is not None:
        return found
    for attribute in (raw.get("MessageAttributes") or {}).values():
        value = attribute.get("StringValue")
        if isinstance(value, str) and (found := id_in(value)) is not None:
            return found
    return None


def record_marker(root: Path, stage: str, ledger_id: str, message: Message | None = None) -> None:
    """Append ``ledger_id`` to this process's ``stage`` file (``started`` or ``handled``).

    One ``write`` of one line to a file opened for appending: a process killed with SIGKILL
    leaves every line it wrote complete.
    """
    directory = root / MARKER_DIRECTORY
    directory.mkdir(parents=True, exist_ok=True)
    ids = "" if message is None else f" {message.message_id} {message.receipt_handle}"
    line = f"{ledger_id}{ids}\n".encode()
    fd = os.open(directory / f"{stage}.{os.getpid()}", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class Mark:
    """One line of a marker file: a message a handler started or finished."""

    ledger_id: str
    message_id: str = ""
    receipt_handle: str = ""


def read_markers(root: Path, stage: str) -> dict[int, list[Mark]]:
    """Per process id, the messages recorded at ``stage``."""
    directory = root / MARKER_DIRECTORY
    if not directory.is_dir():
        return {}
    found: dict[int, list[Mark]] = {}
    for path in directory.glob(f"{stage}.*"):
        lines = path.read_text(encoding="utf-8").splitlines()
        found[int(path.suffix[1:])] = [Mark(*line.split(" ", 2)) for line in lines if line]
    return found


@dataclass(frozen=True)
class Verdict:
    """What became of every message published, once the queue and the DLQ were drained."""

    published: frozenset[str]
    handled: Counter[str]  # ledger id → successful handler calls
    in_dlq: frozenset[str]
    left: frozenset[str]  # still in the source queue at the end: neither deleted nor dead
    unknown: frozenset[str]  # handled or found but never published
    unidentified: int  # messages found without a ledger id
    dlq_message_ids: Mapping[str, str] = field(default_factory=dict)  # ledger id → SQS id
    allowed: frozenset[str] | None = None  # duplicates the scenario allows (None: any)

    @property
    def lost(self) -> frozenset[str]:
        """Published, and neither handled nor in the DLQ nor still in the queue."""
        return self.published - set(self.handled) - self.in_dlq - self.left

    @property
    def duplicates(self) -> dict[str, int]:
        """Ledger ids handled more than once, and how many times."""
        return {key: count for key, count in self.handled.items() if count > 1}

    @property
    def extra_deliveries(self) -> int:
        """Handler calls beyond the first, over all messages."""
        return sum(count - 1 for count in self.handled.values() if count > 1)

    @property
    def handled_then_dead(self) -> frozenset[str]:
        """Handled successfully, yet in the DLQ: its deletes failed until its receives ran out."""
        return frozenset(set(self.handled) & self.in_dlq)

    @property
    def unexpected_duplicates(self) -> frozenset[str]:
        """Duplicates the scenario did not allow."""
        if self.allowed is None:
            return frozenset()
        return frozenset(set(self.duplicates) - self.allowed)

    def figures(self) -> dict[str, int]:
        """The counts, for a report."""
        return {
            "published": len(self.published),
            "handled": len(set(self.handled) & self.published),
            "in_dlq": len(self.in_dlq),
            "lost": len(self.lost),
            "left_in_queue": len(self.left),
            "duplicates": len(self.duplicates),
            "extra_deliveries": self.extra_deliveries,
            "handled_then_dead": len(self.handled_then_dead),
            "unknown": len(self.unknown),
            "unidentified": self.unidentified,
        }

    def summary(self) -> str:
        """One line of figures."""
        return ", ".join(f"{name} {value}" for name, value in self.figures().items())

    def problems(self) -> list[str]:
        """What breaks the invariant, one line each (empty when it holds)."""
        found = []
        for label, ids in (
            ("lost (neither handled nor in the DLQ)", self.lost),
            ("left in the source queue", self.left),
            ("never published", self.unknown),
            ("duplicated without a fault to explain it", self.unexpected_duplicates),
        ):
            if ids:
                shown = ", ".join(sorted(ids)[:_SHOWN])
                more = f" and {len(ids) - _SHOWN} more" if len(ids) > _SHOWN else ""
                found.append(f"{len(ids)} {label}: {shown}{more}")
        if self.unidentified:
            found.append(f"{self.unidentified} messages without a ledger id")
        return found

    def check(self) -> Verdict:
        """Fail with a readable account unless the invariant holds; returns self."""
        problems = self.problems()
        if problems:
            raise AssertionError(
                "reliability invariant broken: " + "; ".join(problems) + f" ({self.summary()})"
            )
        return self


@dataclass
class Ledger:
    """Ids published and handled, and the check of what became of them."""

    markers: Path | None = None  # TEST_MARKERS of worker subprocesses, if any
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    _next: int = 0
    _published: list[str] = field(default_factory=list)
    _handled: Counter[str] = field(default_factory=Counter)
    # SQS message ids and receipt handles → ledger id, as handlers saw them: to map log lines
    # and the requests a fault struck to messages.
    message_ids: dict[str, str] = field(default_factory=dict)
    receipts: dict[str, str] = field(default_factory=dict)

    # -- publishing ------------------------------------------------------------------------

    def new_id(self) -> str:
        """A fresh ledger id (not yet published)."""
        self._next += 1
        return f"msg-{self.token}-{self._next:07d}"

    def body(self, ledger_id: str | None = None, **fields: Any) -> str:
        """A JSON body carrying a ledger id (a new one unless given)."""
        return json.dumps({"id": ledger_id or self.new_id(), **fields})

    def published(self, *ledger_ids: str) -> None:
        """Record ids as published (call it once the broker accepted them)."""
        self._published.extend(ledger_ids)

    @property
    def published_ids(self) -> list[str]:
        """Every id published, in order."""
        return list(self._published)

    async def publish(
        self, queues: Queues, count: int, *, via: str = "sns", **fields: Any
    ) -> list[str]:
        """Publish ``count`` new messages, ten per call, through SNS or straight to SQS."""
        bodies = [self.body(**fields) for _ in range(count)]
        await self.publish_bodies(queues, bodies, via=via)
        return [id_in(body) or "" for body in bodies]

    async def publish_bodies(self, queues: Queues, bodies: Sequence[str], *, via: str) -> None:
        """Publish ready-made bodies (each carrying a ledger id), ten per call."""
        settings = Settings(endpoint_url=queues.endpoint_url, region=REGION)
        batches = [bodies[start : start + 10] for start in range(0, len(bodies), 10)]
        if via == "sns":
            async with open_sns(settings) as sns:
                for batch in batches:
                    published = await sns.publish_batch(
                        TopicArn=queues.topic_arn,
                        PublishBatchRequestEntries=[
                            {"Id": str(i), "Message": body} for i, body in enumerate(batch)
                        ],
                    )
                    self._accepted(batch, published.get("Failed", []))
        elif via == "sqs":
            async with open_sqs(settings) as sqs:
                for batch in batches:
                    sent = await sqs.send_message_batch(
                        QueueUrl=queues.queue_url,
                        Entries=[
                            {"Id": str(i), "MessageBody": body} for i, body in enumerate(batch)
                        ],
                    )
                    self._accepted(batch, sent.get("Failed", []))
        else:
            raise ValueError(f"via must be 'sns' or 'sqs', not {via!r}")

    def _accepted(self, batch: Sequence[str], failed: Iterable[Mapping[str, Any]]) -> None:
        refused = {str(entry["Id"]) for entry in failed}
        if refused:
            raise AssertionError(f"the broker refused {len(refused)} of {len(batch)} messages")
        self.published(*(id_in(body) or "" for body in batch))

    # -- handling ----------------------------------------------------------------------------

    def handled(self, ledger_id: str, message: Message | None = None) -> None:
        """A handler in this process finished the message successfully."""
        self._handled[ledger_id] += 1
        if message is not None:
            self._remember(Mark(ledger_id, message.message_id, message.receipt_handle))

    def _remember(self, mark: Mark) -> None:
        if mark.message_id:
            self.message_ids[mark.message_id] = mark.ledger_id
        if mark.receipt_handle:
            self.receipts[mark.receipt_handle] = mark.ledger_id

    async def record(self, message: Message) -> None:
        """A message handler that succeeds, recording the message as handled."""
        ledger_id = id_in(message.body)
        if ledger_id is None:
            raise ValueError("the message carries no ledger id")
        self.handled(ledger_id, message)

    def handled_counts(self) -> Counter[str]:
        """Successful handler calls per ledger id, in this process and in subprocesses."""
        counts = Counter(self._handled)
        if self.markers is not None:
            for marks in read_markers(self.markers, "handled").values():
                for mark in marks:
                    counts[mark.ledger_id] += 1
                    self._remember(mark)
        return counts

    def started_by(self, pid: int) -> set[str]:
        """Ledger ids whose handler the subprocess ``pid`` started."""
        if self.markers is None:
            return set()
        return {mark.ledger_id for mark in read_markers(self.markers, "started").get(pid, [])}

    def handled_by(self, pid: int) -> set[str]:
        """Ledger ids whose handler the subprocess ``pid`` finished successfully."""
        if self.markers is None:
            return set()
        return {mark.ledger_id for mark in read_markers(self.markers, "handled").get(pid, [])}

    def by_message_id(self, message_ids: Iterable[object]) -> set[str]:
        """The ledger ids of SQS message ids that handlers saw (e.g. from log lines)."""
        self.handled_counts()  # refresh the mapping from the marker files
        return {self.message_ids[str(m)] for m in message_ids if str(m) in self.message_ids}

    def by_receipt(self, receipt_handles: Iterable[str]) -> set[str]:
        """The ledger ids of receipt handles that handlers saw (e.g. struck by a fault)."""
        self.handled_counts()
        return {self.receipts[r] for r in receipt_handles if r in self.receipts}

    # -- the verdict -----------------------------------------------------------------------

    async def inspect(
        self,
        queues: Queues,
        *,
        settle_timeout: float = 0.0,
        allowed_duplicates: Collection[str] | None = None,
    ) -> Verdict:
        """Wait up to ``settle_timeout`` for the source queue to empty, then drain it and the DLQ.

        Call it once the workers have stopped (or are idle): what is still in the source queue
        then is reported as left there. ``allowed_duplicates`` are the ids a fault may have
        duplicated (``None``: any).
        """
        settings = Settings(endpoint_url=queues.endpoint_url, region=REGION)
        async with open_sqs(settings) as sqs:
            await _wait_empty(sqs, queues.queue_url, settle_timeout)
            left_ids, left_unidentified = await _drain(sqs, queues.queue_url)
            dead_ids, dead_unidentified = await _drain(sqs, queues.dlq_url)
        dead, left = set(dead_ids), set(left_ids)
        handled = self.handled_counts()
        published = frozenset(self._published)
        found = set(handled) | dead | left
        return Verdict(
            published=published,
            handled=handled,
            in_dlq=frozenset(dead),
            left=frozenset(left),
            unknown=frozenset(found - published),
            unidentified=left_unidentified + dead_unidentified,
            dlq_message_ids=dead_ids,
            allowed=None if allowed_duplicates is None else frozenset(allowed_duplicates),
        )


async def _wait_empty(sqs: SQSClient, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        attributes = (
            await sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                ],
            )
        )["Attributes"]
        if not any(int(value) for value in attributes.values()):
            return
        await asyncio.sleep(0.2)


async def _drain(sqs: SQSClient, url: str) -> tuple[dict[str, str], int]:
    """Receive and delete everything visible in ``url``.

    Returns the ledger ids found (with their SQS message ids), and how many messages had none.
    """
    found: dict[str, str] = {}
    unidentified = 0
    empty_receives = 0
    while empty_receives < 2:
        response = await sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            VisibilityTimeout=60,
            MessageAttributeNames=["All"],
        )
        messages = response.get("Messages", [])
        if not messages:
            empty_receives += 1
            continue
        empty_receives = 0
        for message in messages:
            ledger_id = id_of(message)
            if ledger_id is None:
                unidentified += 1
            else:
                found[ledger_id] = message["MessageId"]
        await sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": message["ReceiptHandle"]}
                for i, message in enumerate(messages)
            ],
        )
    return found, unidentified
