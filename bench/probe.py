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

The worker's probe is installed by its launcher (:mod:`bench.consumer`, :func:`install`) and
found by the bench handlers (:func:`installed`). A Lambda handler runs in execution
environments, the worker's child processes: there each batch's ids are appended to a file
shared with the worker (:func:`append_ids`), which the worker's probe follows (its
``follow``). At each mark the probe takes the process's own CPU and, separately,
its live children's (:func:`children_cpu`), so that the environments' share counts too.

Figures are taken between the moments 10% and 90% of the expected messages were done, so that
start-up, ramp-up and the tail of the last slow handlers do not weigh on them.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

WINDOW = (0.1, 0.9)  # the part of the run the rates and CPU figures are taken over
_RSS_SAMPLE_SECONDS = 0.5
_FOLLOW_SECONDS = 0.01  # how often the shared ids file is read: the marks' precision
_FOLLOW_BUFFER_BYTES = 16 * 1024  # read into one buffer, allocated once
_TICK = os.sysconf("SC_CLK_TCK")
SHARED_IDS = "BENCH_ENVIRONMENT_IDS"  # the file Lambda environments append their ids to


def memory_kb(pid: int | str = "self") -> tuple[int, int]:
    """A process's (VmRSS, VmHWM) in KiB; this one's by default."""
    rss = hwm = 0
    with Path(f"/proc/{pid}/status").open(encoding="ascii") as status:
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


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process, all threads, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def children(pid: int | str = "self") -> list[int]:
    """The live child processes of a process (of any of its threads); this one's by default."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def children_cpu() -> dict[int, float]:
    """User + system CPU seconds of each of this process's live children (Lambda environments)."""
    spent = {}
    for child in children():
        with contextlib.suppress(OSError):  # ended meanwhile
            spent[child] = process_cpu(child)
    return spent


class Probe:
    """Counts messages and takes the process's measurements; thread-safe."""

    def __init__(
        self,
        expected: int,
        path: Path,
        on_complete: Callable[[], None],
        *,
        follow: Path | None = None,
    ) -> None:
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
        # A sum, not a list: a list of every duration grew the worker's RSS by about 32 bytes a
        # message (0.6 MB over C's run), which the peak RSS figure then charged to the worker.
        self.duration_sum = 0.0
        self.durations = 0
        self.rss_samples: list[tuple[float, int, int]] = []  # (time, messages done, VmRSS KiB)
        self.complete = False
        self.extra: dict[str, Any] = {}  # anything else the consumer wants reported
        self.requests: dict[str, int] = {}  # HTTP requests sent, by action (count_requests)
        self.request_samples: list[tuple[float, int]] = []  # (time, requests sent so far)
        self.first_start_cpu: float | None = None
        # The ids other processes append to ``follow`` (:class:`IdsFollower`) are read every
        # 10 ms by this probe's own thread: a thread of their own would be the benchmark's, yet
        # charged to the worker's peak RSS (about 0.13 MB, its stack and its malloc arena),
        # which the ceiling's process, with the probe's one thread, does not carry.
        self._follower = IdsFollower(self, follow) if follow is not None else None
        self._following = threading.Lock()
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
                self.duration_sum += duration
                self.durations += 1
            for name, mark in zip(("window_start", "window_end"), self._marks, strict=True):
                if before < mark <= self.done_count:
                    self.points[name] = {"time": time.time(), "cpu": cpu_seconds(),
                                         "children_cpu": children_cpu(),
                                         "requests": dict(self.requests)}  # fmt: skip
            # A duplicate ends the run a message early: the harness reports it, and the message
            # that was not received, from the ids.
            finished = not self.complete and self.done_count >= self.expected
            if finished:
                self.complete = True
                self.last_done = time.time()
        if finished:
            self._on_complete()

    def stop_following(self) -> None:
        """Read what is left of the followed file, once its writers are gone, and stop."""
        with self._following:
            if self._follower is not None:
                self._follower.read()
                self._follower.close()
                self._follower = None

    def _sample(self) -> None:
        next_sample = time.monotonic() + _RSS_SAMPLE_SECONDS
        tick = _RSS_SAMPLE_SECONDS if self._follower is None else _FOLLOW_SECONDS
        while not self._sampling.wait(tick):
            with self._following:
                if self._follower is not None:
                    self._follower.read()
            if time.monotonic() < next_sample:
                continue
            next_sample += _RSS_SAMPLE_SECONDS
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
            "mean_duration": self.duration_sum / self.durations if self.durations else None,
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


_installed: list[Probe] = []  # the launcher's probe, for the handlers the worker imports by name


def install(probe: Probe) -> None:
    """Make ``probe`` this process's probe, the one the bench handlers report to (once only)."""
    if _installed:
        raise RuntimeError("this process has a probe already")
    _installed.append(probe)


def installed() -> Probe:
    """This process's probe (see :mod:`bench.consumer`)."""
    if not _installed:
        raise RuntimeError("no probe: run the worker with python -m bench.consumer")
    return _installed[0]


_STARTED = "#started"  # a line of the shared file: "#started <pid> <CPU seconds>"


@functools.cache
def _shared_ids() -> int:
    """The shared file, opened once per process, which first says what its start-up cost."""
    started = cpu_seconds()
    fd = os.open(os.environ[SHARED_IDS], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    _write_whole(fd, f"{_STARTED} {os.getpid()} {started}\n".encode("ascii"))
    return fd


def _write_whole(fd: int, data: bytes) -> None:
    if os.write(fd, data) != len(data):
        raise OSError(f"a short write to {os.environ[SHARED_IDS]}")


def append_ids(ids: Iterable[str]) -> None:
    """Append message ids to the file named by ``BENCH_ENVIRONMENT_IDS``, in one write.

    One ``O_APPEND`` write per batch, so that the lines of concurrent environments do not
    interleave. The first call of a process first appends the CPU the process had spent until
    then: an environment's start-up, up to its first invocation, which the figures leave out of
    the steady state as they leave out the worker's.
    """
    _write_whole(_shared_ids(), "".join(f"{message_id}\n" for message_id in ids).encode("ascii"))


class IdsFollower:
    """Counts in ``probe`` the ids other processes append to ``path`` (:func:`append_ids`).

    Each id is taken up and done when it is read: the Lambda function does nothing else with
    it. Each environment's start-up CPU, reported once, goes to ``extra``. The probe's thread
    calls :meth:`read` every 10 ms, so the marks are taken up to 10 ms late, alike at both ends
    of the window.
    """

    def __init__(self, probe: Probe, path: Path) -> None:
        self._probe = probe
        self._fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o600)
        self._pending = b""
        self._buffer = bytearray(_FOLLOW_BUFFER_BYTES)

    def read(self) -> None:
        """Count the whole lines appended since the last read."""
        view = memoryview(self._buffer)
        while size := os.readv(self._fd, [self._buffer]):
            self._pending += view[:size]
        *lines, self._pending = self._pending.split(b"\n")
        count = 0
        for line in lines:
            if line.startswith(_STARTED.encode("ascii")):
                _, pid, cpu = line.split()
                self._probe.extra.setdefault("environments_started_cpu", {})[int(pid)] = float(cpu)
                continue
            self._probe.start(line.decode("ascii"))
            count += 1
        if count:
            self._probe.done(count)

    def close(self) -> None:
        """Close the file."""
        os.close(self._fd)


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
