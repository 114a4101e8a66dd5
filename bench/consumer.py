"""``python -m bench.consumer``: the worker as deployed, with the benchmark's probe installed.

The benchmarks that measure the worker with a probe (:mod:`bench.run`, :mod:`bench.startup`,
:mod:`bench.idle`) start it this way: it installs a :class:`~bench.probe.Probe` (from
``BENCH_RESULT`` and ``BENCH_EXPECTED``) and the request counter
(:func:`~bench.probe.count_requests`) in this process, then calls the worker's own entry point,
``worker run`` (:func:`worker.ops.cli.main`), which reads its settings from the environment as
in a container. The bench handlers (:mod:`bench.handlers`) report to this probe; a Lambda
handler runs in execution environments, the worker's child processes, which append their ids
to the file named by ``BENCH_ENVIRONMENT_IDS``, which the probe's thread follows. Once every
expected message is done the probe reads the worker's receive timings (its ``/metrics``, on
``BENCH_HTTP_PORT``) and the environments' memory, and sends the worker SIGTERM, so that it
stops as it would in a pod: gracefully, flushing its deletes. The result is written when the
process exits.
"""

from __future__ import annotations

import atexit
import os
import signal
import urllib.request
from pathlib import Path

from bench.probe import (
    SHARED_IDS,
    Probe,
    children,
    count_requests,
    install,
    memory_kb,
)
from worker.ops.cli import main as worker_main


def receive_timing() -> dict[str, float]:
    """Time in the worker's receives, and their count, from its /metrics (``BENCH_HTTP_PORT``)."""
    port = os.environ.get("BENCH_HTTP_PORT")
    if not port:
        return {}
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    timing: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("worker_sqs_request_duration_seconds_") and (
            'operation="ReceiveMessage"' in line
        ):
            name, value = line.split("{", 1)[0], float(line.rsplit(" ", 1)[1])
            if name.endswith("_sum"):
                timing["receive_seconds"] = value
            elif name.endswith("_count"):
                timing["receives_timed"] = value
    return timing


def environments_memory() -> list[tuple[int, int]]:
    """(VmRSS, VmHWM) in KiB of each of the worker's children: its Lambda environments."""
    found = []
    for pid in children():
        try:
            found.append(memory_kb(pid))
        except OSError:  # ended meanwhile
            continue
    return found


def main() -> int:
    """Install the probe, then run the worker as ``worker run`` does."""
    probe: Probe

    def stop() -> None:
        # The receives timed are all of them: none is empty before the end. The environments
        # are idle now, between invocations: their memory at rest.
        probe.extra.update(receive_timing())
        probe.extra["environments_kb"] = environments_memory()
        os.kill(os.getpid(), signal.SIGTERM)

    shared = os.environ.get(SHARED_IDS)
    probe = Probe(
        int(os.environ["BENCH_EXPECTED"]),
        Path(os.environ["BENCH_RESULT"]),
        stop,
        follow=Path(shared) if shared else None,
    )
    count_requests(probe)
    install(probe)
    atexit.register(probe.write, kind="worker")
    if shared:
        atexit.register(probe.stop_following)  # runs first: the last ids before the result
    return worker_main(["run"])


if __name__ == "__main__":
    raise SystemExit(main())
