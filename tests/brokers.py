"""The broker the tests run against, chosen by ``TEST_BROKER``, and what each one gets wrong.

``TEST_BROKER=moto`` (the default) runs a moto server; ``TEST_BROKER=localstack`` starts
LocalStack (SQS and SNS, in host mode) in its own venv, made by ``.ci/localstack-venv`` on first
use. Either way the tests get one endpoint URL for the session (the ``broker`` fixture) and make a
fresh queue per test. Every test that uses that fixture is marked ``broker``: ``pytest -m broker``
selects the suite that runs against each emulator.

No emulator is SQS. A test that checks something one of them gets wrong says so with
``@pytest.mark.broker_flaw(Flaw.X)``, and is skipped on that broker with the flaw as the reason;
the table of divergences in docs/development.md lists these and the others that no test trips over.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum, StrEnum
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCALSTACK_VENV_SCRIPT = ROOT / ".ci" / "localstack-venv"


class BrokerName(StrEnum):
    """The emulators the suite runs against."""

    MOTO = "moto"
    LOCALSTACK = "localstack"


class Flaw(Enum):
    """Where an emulator is not SQS, in a way that a test can see: (broker, what it does)."""

    MOTO_NO_MOVE_TASKS = (BrokerName.MOTO, "no message move tasks (StartMessageMoveTask fails)")
    LOCALSTACK_FIFO_REVISIBLE_UNLOCKS_GROUP = (
        BrokerName.LOCALSTACK,
        "a re-visible FIFO message unlocks its group while another of the group is in flight",
    )
    LOCALSTACK_LATE_REVISIBLE = (
        BrokerName.LOCALSTACK,
        "a message whose visibility ran out comes back up to 1 s late",
    )

    def __init__(self, broker: BrokerName, description: str) -> None:
        self.broker = broker
        self.description = description

    def __str__(self) -> str:
        return f"{self.broker}: {self.description}"


def selected_broker() -> BrokerName:
    """The broker named by ``TEST_BROKER`` (moto when unset)."""
    value = os.environ.get("TEST_BROKER", "") or BrokerName.MOTO
    try:
        return BrokerName(value)
    except ValueError:
        names = ", ".join(b.value for b in BrokerName)
        raise ValueError(f"TEST_BROKER={value!r}: expected one of {names}") from None


@dataclass(frozen=True)
class Broker:
    """The broker of this test session."""

    name: BrokerName
    endpoint_url: str


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_answering(url: str, process: subprocess.Popen[bytes], what: str) -> None:
    """Wait (30 s at most) until ``url`` answers, or fail saying that ``what`` did not start."""
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 -- loopback
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.1)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate ``process``; kill it if it has not ended within 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def localstack_python() -> str:
    """LocalStack's interpreter, installing it first if needed (``.ci/localstack-venv``)."""
    done = subprocess.run(  # noqa: S603 -- our own script
        [str(LOCALSTACK_VENV_SCRIPT)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"LocalStack cannot be installed:\n{done.stderr.strip()}")
    return done.stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def localstack_process() -> Iterator[str]:
    """LocalStack (SQS and SNS only, no Docker) on a free loopback port; its URL.

    Its files (state, logs) go to a directory of its own that is removed afterwards; if it does
    not start, the error carries the end of its log.
    """
    python = localstack_python()
    port = free_port()
    home = Path(tempfile.mkdtemp(prefix="localstack-"))
    env = {
        **os.environ,
        "SERVICES": "sqs,sns",
        "GATEWAY_LISTEN": f"127.0.0.1:{port}",
        "LOCALSTACK_HOST": f"127.0.0.1:{port}",
        "FILESYSTEM_ROOT": str(home / "filesystem"),
        "DNS_ADDRESS": "0",  # no DNS server of its own
        "DISABLE_EVENTS": "1",  # no analytics
        "SKIP_SSL_CERT_DOWNLOAD": "1",  # nothing to fetch from outside
        # Queue URLs as moto and the worker's users write them: http://host:port/account/name.
        "SQS_ENDPOINT_STRATEGY": "off",
        # A second purge of a queue within 60 s fails with PurgeQueueInProgress, as in SQS.
        "SQS_DELAY_PURGE_RETRY": "1",
    }
    log = home / "localstack.log"
    with log.open("wb") as output:
        server = subprocess.Popen(  # noqa: S603 -- LocalStack's own interpreter and module
            [python, "-m", "localstack.runtime.main"],
            cwd=home,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until_answering(f"{url}/_localstack/health", server, "LocalStack")
        except RuntimeError as exc:
            tail = log.read_text(errors="replace")[-4000:]
            raise RuntimeError(f"{exc}; its log ends with:\n{tail}") from None
        yield url
    finally:
        stop(server)
        shutil.rmtree(home, ignore_errors=True)
