"""The brokers the benchmarks run on, each in a process of its own on loopback.

- ``moto``: :mod:`bench.moto_server`, moto patched so that receives do not rescan the queue and
  served with keep-alive (``--no-patch`` and ``--werkzeug`` in :mod:`bench.run` for stock moto
  and its own server). It spends 1 to 10 ms of CPU per message, so in the throughput scenarios
  it is the limit, and a scenario compares how economically each consumer uses it. It also
  reports its CPU per kind of call (``/_bench/calls``).
- ``fauxqs``: the npm package ``fauxqs`` (an SNS/SQS emulator for Node.js), pinned to 1.9.2, the
  last release that runs on Node 20, and installed under ``.tools/fauxqs`` on first use. It
  spends about 0.07 ms of CPU per message: there the consumer is the limit, and a scenario
  measures the consumer's own cost. It serves one message per FIFO group per receive and has no
  message move tasks, so only standard-queue scenarios run on it. :file:`bench/fauxqs_server.mjs`
  binds it to 127.0.0.1 (its own entry points listen on every interface) with its per-request
  logger off.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAUXQS_VERSION = "1.9.2"
FAUXQS_DIR = ROOT / ".tools" / "fauxqs"
FAUXQS_APP = FAUXQS_DIR / "node_modules" / "fauxqs" / "dist" / "app.js"
NAMES = ("moto", "fauxqs")


@dataclass(frozen=True)
class Broker:
    """A running broker: its name, process and endpoint."""

    name: str
    pid: int
    url: str

    @property
    def accounts_calls(self) -> bool:
        """Whether it may report its CPU per kind of call (moto under waitress does)."""
        return self.name == "moto"


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def start(name: str, *, patch: bool = True, keep_alive: bool = True) -> Iterator[Broker]:
    """Start the broker ``name`` (one of :data:`NAMES`); stopped on exit."""
    port = free_port()
    if name == "fauxqs":
        install_fauxqs()
        command = ["node", str(ROOT / "bench" / "fauxqs_server.mjs"), str(port)]
        env = {"FAUXQS_APP": str(FAUXQS_APP)}
    else:
        command = [sys.executable, "-m", "bench.moto_server", "-H", "127.0.0.1", "-p", str(port)]
        command += [] if patch else ["--no-patch"]
        command += ["--keep-alive"] if keep_alive else []
        env = {}
    server = subprocess.Popen(  # noqa: S603 -- our own scripts
        command,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_listening(server, port)
        yield Broker(name, server.pid, url)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:  # a long poll's thread can keep moto up: no matter
            server.kill()
            server.wait()


def _wait_until_listening(server: subprocess.Popen[bytes], port: int) -> None:
    for _ in range(300):
        if server.poll() is not None:
            raise SystemExit(f"the broker exited at start-up (exit code {server.returncode})")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.1)
    raise SystemExit("the broker did not start within 30 s")


def install_fauxqs() -> None:
    """Install the pinned fauxqs under .tools/fauxqs unless it is there (needs npm)."""
    if FAUXQS_APP.exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("the fauxqs broker needs Node.js 20 or later and npm")
    FAUXQS_DIR.mkdir(parents=True, exist_ok=True)
    subprocess.run(  # noqa: S603 -- npm, a pinned package
        [npm, "install", "--prefix", str(FAUXQS_DIR), "--no-audit", "--no-fund", "--silent",
         f"fauxqs@{FAUXQS_VERSION}"],
        check=True,
    )  # fmt: skip


def one_message_worker_env(
    broker: Broker, queue_url: str, result: Path, **settings: str
) -> dict[str, str]:
    """The environment of ``python -m bench.consumer`` running a no-op handler on ``queue_url``,
    expecting one message: this machine's, less any WORKER_* or BENCH_* variable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKER_", "BENCH_"))}
    env.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",  # noqa: S106 -- not a secret
        BENCH_RESULT=str(result),
        BENCH_EXPECTED="1",
        WORKER_QUEUE_URL=queue_url,
        WORKER_ENDPOINT_URL=broker.url,
        WORKER_REGION="us-east-1",
        WORKER_HANDLER="bench.handlers:noop",
        WORKER_HTTP_PORT="0",
        WORKER_HTTP_HOST="127.0.0.1",
        WORKER_LOG_FORMAT="json",
        **settings,
    )
    return env


def call_costs(broker: Broker) -> dict[str, list[float]]:
    """The broker's [calls, CPU seconds] per kind of call so far; {} where it does not say."""
    if not broker.accounts_calls:
        return {}
    try:
        with urllib.request.urlopen(f"{broker.url}/_bench/calls", timeout=5) as response:  # noqa: S310 -- loopback
            return json.loads(response.read())  # type: ignore[no-any-return]
    except (OSError, ValueError):  # werkzeug mode: moto's own server, no accounting
        return {}
