"""Malformed messages are failures like any other: retried, then in the DLQ, never deleted."""

from __future__ import annotations

import json
from collections import Counter

from tests.support import Queues, depth, drain, eventually, publish, running_worker, send
from worker import Message

NOTIFICATION = {
    "Type": "Notification",
    "MessageId": "5f0c3a0e-0000-4000-8000-000000000000",
    "TopicArn": "arn:aws:sns:us-east-1:123456789012:orders",
    "Message": '{"order": 1}',
    "Timestamp": "2026-11-29T00:00:00.000Z",
}


def envelope(**changes: object) -> str:
    document: dict[str, object] = {**NOTIFICATION, **changes}
    return json.dumps({k: v for k, v in document.items() if v is not ...})


# Each bad input, and the reason it must be failed with.
MALFORMED = {
    "truncated-envelope": json.dumps(NOTIFICATION)[:70],
    "message-not-a-string": envelope(Message={"order": 1}),
    "message-missing": envelope(Message=...),
    "timestamp-not-a-date": envelope(Timestamp="yesterday"),
    "attributes-not-an-object": envelope(MessageAttributes=["a"]),
    "binary-attribute-not-base64": envelope(
        MessageAttributes={"b": {"Type": "Binary", "Value": "%%%not base64"}}
    ),
    "attribute-of-unknown-type": envelope(MessageAttributes={"b": {"Type": "Blob", "Value": "x"}}),
    "subscription-confirmation": envelope(Type="SubscriptionConfirmation"),
}


class TestMalformed:
    """Every malformed input ends in the DLQ after maxReceiveCount receives; the worker goes on."""

    async def test_each_malformed_input_reaches_the_dlq(self, queues: Queues) -> None:
        handled: list[str] = []

        async def handler(message: Message) -> None:
            handled.append(message.body)

        ids = await send(queues, *MALFORMED.values())
        label_of = dict(zip(ids, MALFORMED, strict=True))
        async with running_worker(queues.settings(concurrency=4), handler) as running:
            dead = await drain(queues, queues.dlq_url, expect=len(MALFORMED), timeout=30)
            await send(queues, "still working")
            await eventually(lambda: handled == ["still working"])
        assert sorted(label_of[m["MessageId"]] for m in dead) == sorted(MALFORMED)
        for message in dead:  # moved intact, not rewritten
            assert message["Body"] == MALFORMED[label_of[message["MessageId"]]]
        assert running.report.failures == {"malformed": len(MALFORMED) * queues.max_receive_count}
        assert running.report.deleted == 1  # only the good message

    async def test_body_that_is_not_json_where_json_is_asked(self, queues: Queues) -> None:
        attempts: Counter[str] = Counter()

        async def wants_json(message: Message) -> None:
            attempts[message.message_id] += 1
            message.json()

        await publish(queues, "this is not JSON")
        async with running_worker(queues.settings(), wants_json) as running:
            dead = await drain(queues, queues.dlq_url, expect=1, timeout=20)
        assert list(attempts.values()) == [queues.max_receive_count]
        assert json.loads(dead[0]["Body"])["Message"] == "this is not JSON"
        assert running.report.failures == {"malformed": queues.max_receive_count}
        assert await depth(queues, queues.queue_url) == (0, 0)
