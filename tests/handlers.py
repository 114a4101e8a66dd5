"""Handlers for worker subprocesses in the tests; they leave a trail of marker files.

``TEST_MARKERS`` names a directory: a handler appends a line to ``started/<body>`` when it
starts and to ``done/<body>`` when it returns, so a test can see every delivery of every
message after the process has gone.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from worker import Message


def _mark(stage: str, body: str) -> None:
    directory = Path(os.environ["TEST_MARKERS"]) / stage
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / body).open("a", encoding="utf-8") as marker:
        marker.write(f"{os.getpid()}\n")


async def slow(message: Message) -> None:
    """Sleep ``TEST_SLEEP`` seconds (default 2) on the event loop."""
    _mark("started", message.body)
    await asyncio.sleep(float(os.environ.get("TEST_SLEEP", "2")))
    _mark("done", message.body)


def slow_sync(message: Message) -> None:
    """Block a thread for ``TEST_SLEEP`` seconds (default 2)."""
    _mark("started", message.body)
    time.sleep(float(os.environ.get("TEST_SLEEP", "2")))
    _mark("done", message.body)


def marks(root: Path, stage: str) -> dict[str, int]:
    """How many times each body reached ``stage``."""
    directory = root / stage
    if not directory.is_dir():
        return {}
    return {
        path.name: len(path.read_text(encoding="utf-8").splitlines())
        for path in directory.iterdir()
    }
