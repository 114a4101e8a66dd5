"""What a consumer process records about itself, the same way for the worker and the ceiling.

A consumer (the worker running a bench handler, or the ceiling loop) reports each message when it
starts (``start``: the handler starts, or the ceiling's receive returned it) and when it is done
(``done``: the handler returned, or the ceiling's delete returned). The probe writes the message
ids to a file (the harness counts them, so that a duplicate or a missing message shows), reads
the process's own CPU time (``os.times``, user + system, every thread) and RSS
(``/proc/self/status``) at fixed points of progress, samples RSS in a background thread, and
writes everything as JSON when the process ends. It also counts every HTTP request the
process's aiobotocore clients send, by SQS action (:func:`count_requests`): retries included,
as the broker sees and SQS bills them.

Figures are taken between the moments 10% and 90% of the expected messages were done, so that
start-up, ramp-up and the tail of the last slow handlers do not weigh on them.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

WINDOW = (0.1, 0.9)  # the part of the run the rates and CPU figures are taken over
_RSS_SAMPLE_SECONDS = 0.5


def memory_kb() -> tuple[int, int]:
    """This process's (VmRSS, VmHWM) in KiB."""
    rss = hwm = 0
    with Path("/proc/self/status").open(encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return rss, hwm


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads."""
    times = os.times()
    return times.user + times.system


class Probe:
    """Counts messages and takes the process's measurements; thread-safe."""

    def __init__(self, expected: int, path: Path, on_complete: Callable[[], None]) -> None:
        self.expected = expected
        self._path = path
        self._on_complete = on_complete
        self._lock = threading.Lock()
        # Ids go to a file, not to a set: 100,000 ids in memory would be 10 MB of RSS growth,
        # the probe's and not the consumer's. The harness counts them after the run.
        self.ids_path = path.with_suffix(".ids")
        self._ids = self.ids_path.open("w", encoding="ascii", buffering=64 * 1024)
        self.starts = 0
        self.done_count = 0
        self._marks = [max(1, round(expected * fraction)) for fraction in WINDOW]
        self.points: dict[str, dict[str, Any]] = {}
        self.first_start: float | None = None
        self.last_done: float | None = None
        self.latencies: list[float] = []
        self.durations: list[float] = []
        self.rss_samples: list[tuple[float, int, int]] = []  # (time, messages done, VmRSS KiB)
        self.complete = False
        self.extra: dict[str, Any] = {}  # anything else the consumer wants reported
        self.requests: dict[str, int] = {}  # HTTP requests sent, by action (count_requests)
        self.request_samples: list[tuple[float, int]] = []  # (time, requests sent so far)
        self.first_start_cpu: float | None = None
        self._sampling = threading.Event()
        self._sampler = threading.Thread(target=self._sample, name="bench-rss", daemon=True)
        self._sampler.start()

    def start(self, message_id: str, published_at: float | None = None) -> None:
        """A message was taken up; ``published_at`` (epoch seconds) gives its latency."""
        now = time.time()
        with self._lock:
            self.starts += 1
            self._ids.write(message_id + "\n")
            if self.first_start is None:
                self.first_start = now
                self.first_start_cpu = cpu_seconds()
            if published_at is not None:
                self.latencies.append(now - published_at)

    def done(self, count: int = 1, duration: float | None = None) -> None:
        """``count`` messages are finished (their handler returned, or they were deleted)."""
        with self._lock:
            before = self.done_count
            self.done_count += count
            if duration is not None:
                self.durations.append(duration)
            for name, mark in zip(("window_start", "window_end"), self._marks, strict=True):
                if before < mark <= self.done_count:
                    self.points[name] = {"time": time.time(), "cpu": cpu_seconds(),
                                         "requests": dict(self.requests)}  # fmt: skip
            # A duplicate ends the run a message early: the harness reports it, and the message
            # that was not received, from the ids.
            finished = not self.complete and self.done_count >= self.expected
            if finished:
                self.complete = True
                self.last_done = time.time()
        if finished:
            self._on_complete()

    def _sample(self) -> None:
        while not self._sampling.wait(_RSS_SAMPLE_SECONDS):
            now = time.time()
            self.rss_samples.append((now, self.done_count, memory_kb()[0]))
            # Summed from another thread than the one counting: a value may be one request
            # behind, and a new action while summing is left for the next sample.
            with contextlib.suppress(RuntimeError):
                self.request_samples.append((now, sum(self.requests.values())))

    def result(self, **extra: Any) -> dict[str, Any]:
        """Everything measured, as a JSON-able dict."""
        rss, hwm = memory_kb()
        return {
            "expected": self.expected,
            "ids": str(self.ids_path),
            "starts": self.starts,
            "done": self.done_count,
            "points": self.points,
            "first_start": self.first_start,
            "first_start_cpu": self.first_start_cpu,
            "requests": self.requests,
            "last_done": self.last_done,
            "latencies": self.latencies,
            "durations": self.durations,
            "rss_samples": self.rss_samples,
            "request_samples": self.request_samples,
            "rss_kb": rss,
            "hwm_kb": hwm,
            "cpu_total": cpu_seconds(),
            **self.extra,
            **extra,
        }

    def write(self, **extra: Any) -> None:
        """Stop sampling and write the result file."""
        self._sampling.set()
        with self._lock:
            self._ids.close()
        self._path.write_text(json.dumps(self.result(**extra)), encoding="utf-8")


def count_requests(probe: Probe) -> None:
    """Count, in ``probe.requests``, every HTTP request this process's SQS clients send.

    Counted where aiobotocore hands a signed request to its HTTP session, once per attempt, by
    the action its ``X-Amz-Target`` header names (SQS's JSON protocol); the same for the worker
    and the ceiling, whatever the broker.
    """
    from aiobotocore.endpoint import AioEndpoint  # noqa: PLC0415 -- only in consumer processes

    send = AioEndpoint._send  # type: ignore[attr-defined]  # the one place every attempt passes
    counts = probe.requests

    async def counted(self: AioEndpoint, request: Any) -> Any:
        target = request.headers.get("X-Amz-Target") or b"other"
        if isinstance(target, bytes):
            target = target.decode("ascii", "replace")
        action = target.rpartition(".")[2]
        counts[action] = counts.get(action, 0) + 1
        return await send(self, request)

    AioEndpoint._send = counted  # type: ignore[attr-defined]
