"""Handlers for worker subprocesses in the reliability tests and the soak.

Each records into the ledger's marker files under ``TEST_MARKERS`` (see ``tests/invariant.py``):
``started`` when it takes a message up, ``handled`` when it finishes it successfully. Bodies are
the ledger's JSON (``{"id": ..., "kind": ...}``); the ``kind`` says how to behave:

- ``poison``: always fails (the message ends in the DLQ);
- ``flaky``: fails on its first delivery, succeeds on the next;
- ``hang``: on its first delivery never returns (plain-function handlers only);
- anything else: succeeds after ``TEST_SLEEP`` seconds plus up to ``TEST_SLEEP_JITTER``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.invariant import id_in, record_marker
from worker import Message

_never = threading.Event()  # nobody sets it: a wait on it never returns


def _root() -> Path:
    return Path(os.environ["TEST_MARKERS"])


def _delay() -> float:
    base = float(os.environ.get("TEST_SLEEP", "0"))
    jitter = float(os.environ.get("TEST_SLEEP_JITTER", "0"))
    return base + (random.uniform(0, jitter) if jitter else 0.0)


def _kind(message: Message) -> str:
    document: Any = message.json()
    kind = document.get("kind", "") if isinstance(document, dict) else ""
    return str(kind)


def _begin(message: Message) -> str:
    ledger_id = id_in(message.body)
    if ledger_id is None:
        raise ValueError("the message carries no ledger id")
    record_marker(_root(), "started", ledger_id, message)
    return ledger_id


def _finish(message: Message, ledger_id: str, kind: str) -> None:
    if kind == "poison" or (kind == "flaky" and message.receive_count == 1):
        raise RuntimeError(f"{kind} message")
    record_marker(_root(), "handled", ledger_id, message)


async def record(message: Message) -> None:
    """Record the message, sleep on the event loop, then succeed (or fail, as its kind says)."""
    ledger_id = _begin(message)
    kind = _kind(message)
    delay = _delay()
    if delay:
        await asyncio.sleep(delay)
    _finish(message, ledger_id, kind)


def record_sync(message: Message) -> None:
    """The same in a thread; a ``hang`` message never returns on its first delivery."""
    ledger_id = _begin(message)
    kind = _kind(message)
    if kind == "hang" and message.receive_count == 1:
        _never.wait()
    delay = _delay()
    if delay:
        time.sleep(delay)
    _finish(message, ledger_id, kind)


_flood_log = logging.getLogger("tests.flood")


def floods(message: Message) -> None:
    """Write ``TEST_FLOOD_LINES`` log lines (warnings, which the worker routes to its own
    stderr output) and as many lines to stdout, from a handler thread, then succeed."""
    ledger_id = _begin(message)
    lines = int(os.environ.get("TEST_FLOOD_LINES", "1000"))
    padding = "x" * 200
    for number in range(lines):
        _flood_log.warning("flood line %d of %s %s", number, ledger_id, padding)
        print(f"flood {number} {ledger_id} {padding}", file=sys.stdout)
    _finish(message, ledger_id, _kind(message))
