"""A corpus of hostile messages: each ends in the DLQ after maxReceiveCount receives, and the
worker is unharmed (it goes on handling good messages).

The handler is a strict consumer of orders, as real ones are: it wants a JSON object with an
``order_id`` and reads every published attribute as text. Whatever the worker cannot read fails
as malformed before the handler is called; whatever the handler cannot use fails in it. Either
way the message is retried, then moved to the DLQ intact, and never deleted.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog
from prometheus_client import CollectorRegistry
from structlog.testing import LogCapture

from tests.invariant import Ledger
from tests.support import REGION, Queues, depth, eventually, publish, running_worker, send
from worker import Message, NonRetryableError
from worker.config import Settings
from worker.consume.sqs import open_sns, open_sqs
from worker.handlers.filtering import FilterCriteria

TOPIC = "arn:aws:sns:us-east-1:123456789012:orders"
DEEP = 100_000  # nesting levels: far past Python's recursion limit


def envelope(ledger_id: str, **fields: Any) -> dict[str, Any]:
    """An SNS notification envelope; ``fields`` replace or add to it (``...`` removes one)."""
    document: dict[str, Any] = {
        "Type": "Notification",
        "MessageId": ledger_id,
        "TopicArn": TOPIC,
        "Message": json.dumps({"order_id": "o-1"}),
        "Timestamp": "2026-11-29T00:00:00.000Z",
        **fields,
    }
    return {key: value for key, value in document.items() if value is not ...}


@dataclass(frozen=True)
class Hostile:
    """One hostile message: how to make its body (given its ledger id), and how it travels."""

    body: Callable[[str, int], str]  # (ledger id, the queue's MaximumMessageSize) → body
    # How it fails: "malformed" (the worker cannot read it), "non_retryable" (not an order) or
    # "handler_error" (the handler cannot read its attributes); None: not checked.
    reason: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    via: str = "sqs"  # "sqs": sent straight to the queue; "sns": published to the topic


def text(document: Any) -> str:
    return json.dumps(document)


def deep(ledger_id: str, levels: int = DEEP) -> str:
    return plus(text({"id": ledger_id}), '"x": ' + "[" * levels + "]" * levels)


def at_limit(ledger_id: str, limit: int) -> str:
    """A JSON object (not an order) exactly ``limit`` characters long."""
    head = text({"id": ledger_id, "pad": ""})[:-2]
    return head + "x" * (limit - len(head) - 2) + '"}'


def envelope_at_limit(ledger_id: str, limit: int) -> str:
    """An SNS envelope exactly ``limit`` characters long, its Message a huge text."""
    document = {**envelope(ledger_id, Message=...), "Message": ""}
    head = text(document)[:-2]  # up to the Message's opening quote: it comes last
    assert head.endswith('"Message": "')
    return head + "x" * (limit - len(head) - 2) + '"}'


def sns_attributes(ledger_id: str, count: int, last: dict[str, Any]) -> dict[str, Any]:
    attributes = {f"a{n:05d}": {"Type": "String", "Value": f"v{n}"} for n in range(count - 1)}
    return envelope(ledger_id, MessageAttributes={**attributes, "zz-last": last})


INVALID_UTF8 = b"\xff\xfe\xfa not utf-8 \xc3\x28"


def plus(document: str, extra: str) -> str:
    """A JSON object's text with ``extra`` members added at its end."""
    return document[:-1] + ", " + extra + "}"


def order(ledger_id: str) -> str:
    return text({"order_id": "o-1", "id": ledger_id})


BINARY = {"blob": {"DataType": "Binary", "BinaryValue": INVALID_UTF8}}
SNS_BINARY = {"Type": "Binary", "Value": base64.b64encode(INVALID_UTF8).decode()}
HUGE_INTEGER = "7" * 5000  # past Python's 4300-digit limit on int()
NESTING = "[" * DEEP + "]" * DEEP

# Every hostile message, by name: its body, how it fails, and how it travels.
CORPUS: dict[str, Hostile] = {
    "invalid-json": Hostile(lambda i, _: order(i)[:-1], "malformed"),
    "invalid-json-through-sns": Hostile(lambda i, _: f"not json {i}", "malformed", via="sns"),
    "json-that-is-not-an-object": Hostile(lambda i, _: text([i, "o-1"]), "non_retryable"),
    "integer-beyond-the-digit-limit": Hostile(
        lambda i, _: plus(order(i), f'"n": {HUGE_INTEGER}'), "malformed"
    ),
    "truncated-envelope": Hostile(lambda i, _: text(envelope(i))[:90], "malformed"),
    "envelope-fields-of-the-wrong-type": Hostile(
        lambda i, _: text(envelope(i, TopicArn=12, Timestamp=["today"])), "malformed"
    ),
    "envelope-message-not-a-string": Hostile(
        lambda i, _: text(envelope(i, Message={"order_id": "o-1"})), "malformed"
    ),
    "envelope-message-null": Hostile(lambda i, _: text(envelope(i, Message=None)), "malformed"),
    "envelope-that-is-a-list": Hostile(lambda i, _: text([envelope(i)]), "non_retryable"),
    "envelope-with-a-huge-integer": Hostile(
        lambda i, _: plus(text(envelope(i)), f'"n": {HUGE_INTEGER}'), "malformed"
    ),
    "deeply-nested-json": Hostile(lambda i, _: deep(i), "malformed"),
    "deeply-nested-json-through-sns": Hostile(  # SNS takes at most 256 KiB
        lambda i, _: deep(i, 100_000)[:250_000], "malformed", via="sns"
    ),
    "deeply-nested-envelope": Hostile(
        lambda i, _: plus(text(envelope(i)), f'"x": {NESTING}'), "malformed"
    ),
    "body-at-the-size-limit": Hostile(at_limit, "non_retryable"),
    "envelope-at-the-size-limit": Hostile(envelope_at_limit, "malformed"),
    "binary-attribute-not-utf8": Hostile(lambda i, _: order(i), "handler_error", BINARY),
    "custom-binary-attribute-not-utf8": Hostile(
        lambda i, _: order(i),
        "handler_error",
        {"blob": {"DataType": "Binary.jpeg", "BinaryValue": INVALID_UTF8}},
    ),
    # Through SNS without raw delivery: with raw delivery and a Binary message attribute, moto's
    # receives that ask for all attributes (as the worker's do) come back empty, and the message
    # is never seen. A moto flaw, not the worker's; SQS delivers such messages.
    "binary-attribute-not-utf8-through-sns": Hostile(
        lambda i, _: order(i), "handler_error", BINARY, via="sns"
    ),
    "envelope-binary-attribute-not-utf8": Hostile(
        lambda i, _: text(envelope(i, MessageAttributes={"blob": SNS_BINARY})), "handler_error"
    ),
    "envelope-attribute-value-not-a-string": Hostile(
        lambda i, _: text(envelope(i, MessageAttributes={"n": {"Type": "Number", "Value": 5}})),
        "malformed",
    ),
    "envelope-attribute-type-not-a-string": Hostile(
        lambda i, _: text(envelope(i, MessageAttributes={"n": {"Type": 7, "Value": "5"}})),
        "malformed",
    ),
    "envelope-with-thousands-of-attributes": Hostile(
        lambda i, _: text(sns_attributes(i, 5000, SNS_BINARY)), "handler_error"
    ),
    "envelope-with-thousands-of-attributes-one-broken": Hostile(
        lambda i, _: text(sns_attributes(i, 5000, {"Type": "Blob", "Value": "x"})), "malformed"
    ),
}


async def strict_orders(message: Message) -> None:
    """What a careful consumer does: it wants an order, and reads its attributes as text."""
    order = message.json()
    if not isinstance(order, dict) or not isinstance(order.get("order_id"), str):
        raise NonRetryableError("not an order")
    for attribute in message.published_attributes.values():
        if isinstance(attribute.value, bytes):
            attribute.value.decode("utf-8")


async def send_corpus(queues: Queues, ledger: Ledger, limit: int) -> dict[str, str]:
    """Send every hostile message; returns ledger id → name."""
    settings = Settings(endpoint_url=queues.endpoint_url, region=REGION)
    names: dict[str, str] = {}
    async with open_sqs(settings) as sqs, open_sns(settings) as sns:
        for name, hostile in CORPUS.items():
            ledger_id = ledger.new_id()
            body = hostile.body(ledger_id, limit)
            if hostile.via == "sns":
                attributes = hostile.attributes or {}
                await sns.publish(
                    TopicArn=queues.topic_arn, Message=body, MessageAttributes=attributes
                )
            else:
                await sqs.send_message(
                    QueueUrl=queues.queue_url,
                    MessageBody=body,
                    MessageAttributes=hostile.attributes,
                )
            ledger.published(ledger_id)
            names[ledger_id] = name
    return names


class TestHostileInput:
    """Every message of the corpus reaches the DLQ after exactly maxReceiveCount receives."""

    # aiohttp warns when a request body over 1 MiB is sent as bytes: the test's own sends of
    # the messages at the size limit, not the worker's.
    @pytest.mark.filterwarnings("ignore:Sending a large body directly:ResourceWarning")
    async def test_the_corpus_ends_in_the_dlq_and_the_worker_goes_on(self, queues: Queues) -> None:
        capture = LogCapture()
        structlog.configure(processors=[structlog.contextvars.merge_contextvars, capture])
        settings = Settings(endpoint_url=queues.endpoint_url, region=REGION)
        async with open_sqs(settings) as sqs:
            attributes = await sqs.get_queue_attributes(
                QueueUrl=queues.queue_url, AttributeNames=["MaximumMessageSize"]
            )
        limit = int(attributes["Attributes"]["MaximumMessageSize"])
        assert limit == 1024 * 1024  # SQS's limit since 2025, and moto's

        ledger = Ledger()
        names = await send_corpus(queues, ledger, limit)
        good = ledger.new_id()

        async def handler(message: Message) -> None:
            await strict_orders(message)
            await ledger.record(message)

        registry = CollectorRegistry()
        async with running_worker(queues.settings(concurrency=4), handler, registry) as running:
            await eventually(
                lambda: _visible(queues, queues.dlq_url, len(CORPUS)), timeout=90, interval=0.5
            )
            # Unharmed: it still handles a good message, its pollers alive.
            await ledger.publish_bodies(
                queues, [json.dumps({"order_id": "o-2", "id": good})], via="sns"
            )
            await eventually(lambda: good in ledger.handled_counts(), timeout=20)
            assert running.worker.health.liveness().ok
        verdict = (await ledger.inspect(queues, allowed_duplicates=())).check()
        assert {names[i] for i in verdict.in_dlq} == set(CORPUS)
        assert set(verdict.handled) == {good}
        # Exactly maxReceiveCount receives each, the last of which moved it to the DLQ.
        received = Counter(
            entry["message_id"] for entry in capture.entries if entry["event"] == "message.received"
        )
        receives = {
            names[ledger_id]: received[message_id]
            for ledger_id, message_id in verdict.dlq_message_ids.items()
        }
        assert receives == dict.fromkeys(CORPUS, queues.max_receive_count)
        reasons = {
            names[ledger_id]: {
                entry["reason"]
                for entry in capture.entries
                if entry["event"] == "message.failed" and entry["message_id"] == message_id
            }
            for ledger_id, message_id in verdict.dlq_message_ids.items()
        }
        expected = {name: {h.reason} for name, h in CORPUS.items() if h.reason is not None}
        assert {name: reasons[name] for name in expected} == expected
        assert running.report.failed == len(CORPUS) * queues.max_receive_count
        assert running.report.deleted == 1


async def _visible(queues: Queues, url: str, count: int) -> bool:
    return (await depth(queues, url))[0] == count


HUGE_EXPONENT = '{"amount": 1e99999999999999999999}'  # valid JSON; beyond what Decimal holds
POSITIVE_AMOUNTS = json.dumps(
    {"Filters": [{"Pattern": json.dumps({"body": {"amount": [{"numeric": [">", 0]}]}})}]}
)


class TestFilteredHostileInput:
    """With ``WORKER_FILTER_CRITERIA`` set, the filter sees every body first: no body stops it."""

    async def test_a_number_beyond_decimal_range_is_matched_and_consumption_goes_on(
        self, queues: Queues
    ) -> None:
        handled: list[str] = []

        async def records(message: Message) -> None:
            handled.append(message.body)

        await send(queues, HUGE_EXPONENT, '{"amount": 5}', '{"amount": -5}')
        settings = queues.settings(filter_criteria=POSITIVE_AMOUNTS)
        async with running_worker(settings, records) as running:
            await eventually(lambda: len(handled) == 2)
            await send(queues, '{"amount": 7}')
            await eventually(lambda: len(handled) == 3)
            await eventually(lambda: running.worker.keeper.in_flight == 0)
            assert running.worker.health.liveness().ok
        assert sorted(handled) == sorted([HUGE_EXPONENT, '{"amount": 5}', '{"amount": 7}'])
        assert running.report.deleted == 4  # three handled, one filtered out
        assert await depth(queues, queues.queue_url) == (0, 0)

    async def test_a_message_handler_filters_what_it_would_be_handed(self, queues: Queues) -> None:
        # Through SNS without raw delivery each body is an envelope. A message handler's filter
        # sees Message.body, the published payload, as `worker dlq redrive --filter` does; a
        # filter on the envelope would have matched nothing and deleted every message unhandled.
        handled: list[str] = []

        async def records(message: Message) -> None:
            handled.append(message.body)

        await publish(queues, '{"amount": 5}', '{"amount": -5}')
        await send(queues, '{"Type": "Notification", "TopicArn": "arn:aws:sns:x", "Message": 7}')
        settings = queues.settings(filter_criteria=POSITIVE_AMOUNTS)
        async with running_worker(settings, records) as running:
            await eventually(lambda: _visible(queues, queues.dlq_url, 1), timeout=30)
            await eventually(lambda: running.worker.keeper.in_flight == 0)
        assert handled == ['{"amount": 5}']
        assert running.report.failures == {"malformed": queues.max_receive_count}
        filtered = running.worker.metrics.registry.get_sample_value(
            "worker_messages_filtered_total", {"queue": queues.queue_name}
        )
        assert filtered == 1  # the negative amount; the broken envelope went to the DLQ

    async def test_a_body_the_filter_cannot_read_fails_alone_and_reaches_the_dlq(
        self, queues: Queues, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # A defect in the filter (none is known since the number above) stands in for any
        # exception a body could raise there: that message fails, the others go on.
        matches = FilterCriteria.matches

        def defective(criteria: FilterCriteria, record: Mapping[str, Any]) -> bool:
            if "defect" in str(record.get("body")):
                raise ArithmeticError("a defect in the filter")
            return matches(criteria, record)

        monkeypatch.setattr(FilterCriteria, "matches", defective)
        capture = LogCapture()
        structlog.configure(processors=[structlog.contextvars.merge_contextvars, capture])
        handled: list[str] = []

        async def records(message: Message) -> None:
            handled.append(message.body)

        await send(queues, '{"amount": 1, "n": "defect"}', '{"amount": 2}')
        settings = queues.settings(filter_criteria=POSITIVE_AMOUNTS)
        async with running_worker(settings, records) as running:
            await eventually(lambda: _visible(queues, queues.dlq_url, 1), timeout=30)
            await send(queues, '{"amount": 3}')
            await eventually(lambda: len(handled) == 2)
            assert running.worker.health.liveness().ok
        assert sorted(handled) == ['{"amount": 2}', '{"amount": 3}']
        failed = [entry for entry in capture.entries if entry["event"] == "message.failed"]
        assert len(failed) == queues.max_receive_count
        assert {entry["reason"] for entry in failed} == {"malformed"}
        assert failed[0]["error"] == (
            "the filter criteria could not be applied to the body (ArithmeticError)"
        )
        assert all(entry["queue"] == queues.queue_name for entry in failed)
