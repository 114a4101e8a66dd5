"""The queue policy's statement that lets the topic send, merged into what the policy holds.

A queue's policy is shared: an operator, S3 event notifications or another tool may have put
statements of their own in it. ``worker provision`` adds its own statement or brings it in line,
keeps every other one, and removes one of its own for an earlier topic only once the queue is no
longer subscribed to that topic (whose messages it would otherwise go on admitting).

Its own statements are known by their ``Sid`` together with their ``aws:SourceArn`` condition:
``AllowOnlyTheTopic``, as provisioning has always named it, or ``AllowTheTopic`` and a digest of
the topic's ARN where that name is taken by another topic's statement (a ``Sid`` is unique within
a policy).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from typing import Any

SID = "AllowOnlyTheTopic"
_SID_OF_ANOTHER = "AllowTheTopic"


def statement(queue_arn: str, topic_arn: str, sid: str = SID) -> dict[str, Any]:
    """The statement that lets ``topic_arn`` send to the queue."""
    return {
        "Sid": sid,
        "Effect": "Allow",
        "Principal": {"Service": "sns.amazonaws.com"},
        "Action": "sqs:SendMessage",
        "Resource": queue_arn,
        "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
    }


def topic_only_policy(queue_arn: str, topic_arn: str) -> str:
    """A new queue's policy: only ``topic_arn`` may send to it."""
    return json.dumps(
        {"Version": "2012-10-17", "Statement": [statement(queue_arn, topic_arn)]}, sort_keys=True
    )


def _digest_sid(topic_arn: str) -> str:
    return _SID_OF_ANOTHER + hashlib.sha256(topic_arn.encode()).hexdigest()[:16]


def topic_of(candidate: object) -> str | None:
    """The topic of a statement provisioning wrote; ``None`` for anybody else's statement."""
    if not isinstance(candidate, dict):
        return None
    condition = candidate.get("Condition")
    arns = condition.get("ArnEquals") if isinstance(condition, dict) else None
    arn = arns.get("aws:SourceArn") if isinstance(arns, dict) else None
    if not isinstance(arn, str):
        return None
    return arn if candidate.get("Sid") in {SID, _digest_sid(arn)} else None


def _document(current: str | None) -> dict[str, Any]:
    """The policy as a document; SQS accepts only valid JSON policies, so anything else is none."""
    try:
        document = json.loads(current) if current else {}
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


def _statements(document: dict[str, Any]) -> list[Any]:
    found = document.get("Statement", [])
    return list(found) if isinstance(found, list) else [found]  # a lone statement is allowed


def earlier_topics(current: str | None, topic_arn: str) -> list[str]:
    """The topics other than ``topic_arn`` that statements of provisioning's let send."""
    topics = (topic_of(candidate) for candidate in _statements(_document(current)))
    return [topic for topic in topics if topic is not None and topic != topic_arn]


def _without_sid(candidate: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in candidate.items() if key != "Sid"}


def _bring_in_line(kept: list[Any], queue_arn: str, topic_arn: str) -> tuple[list[Any], str | None]:
    """``kept`` with the statement for ``topic_arn`` added or corrected, and what was done."""
    mine = next((i for i, candidate in enumerate(kept) if topic_of(candidate) == topic_arn), None)
    if mine is None:
        taken = any(isinstance(c, dict) and c.get("Sid") == SID for c in kept)
        sid = _digest_sid(topic_arn) if taken else SID
        return [*kept, statement(queue_arn, topic_arn, sid)], "statement added"
    wanted = statement(queue_arn, topic_arn, kept[mine]["Sid"])
    if _without_sid(kept[mine]) == _without_sid(wanted):
        return kept, None
    return [*kept[:mine], wanted, *kept[mine + 1 :]], "statement replaced"


def merged(
    current: str | None, queue_arn: str, topic_arn: str, subscribed: Collection[str]
) -> tuple[str | None, list[str]]:
    """The policy to set, or ``None`` when it is already in line, and what changes, in words.

    ``subscribed``: the earlier topics the queue is still subscribed to, whose statements stay.
    """
    document = _document(current)
    kept: list[Any] = []
    notes: list[str] = []
    for candidate in _statements(document):
        topic = topic_of(candidate)
        if topic is None or topic == topic_arn or topic in subscribed:
            kept.append(candidate)
        else:
            name = topic.rsplit(":", 1)[-1]
            notes.append(f"statement for {name} removed: the queue is not subscribed to it")
    kept, done = _bring_in_line(kept, queue_arn, topic_arn)
    notes = [done, *notes] if done else notes
    if not notes:
        return None, []
    policy = {"Version": "2012-10-17", **document, "Statement": kept}
    return json.dumps(policy, sort_keys=True), notes
