"""One moto server for the whole session, over real HTTP; a fresh topic, queue and DLQ per test."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
import structlog

from tests.support import Queues, make_queues
from worker.config import LogFormat, LogLevel
from worker.logs import configure_logging


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session", autouse=True)
def clean_environment() -> Iterator[None]:
    """No WORKER_* setting leaks in from the machine; placeholder credentials for moto."""
    saved = dict(os.environ)
    for name in list(os.environ):
        if name.startswith("WORKER_") or name.startswith("AWS_"):
            del os.environ[name]
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",  # noqa: S106 -- moto ignores it
        AWS_DEFAULT_REGION="us-east-1",
    )
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto server in its own process, so that it does not share this process's GIL."""
    port = _free_port()
    server = subprocess.Popen(  # noqa: S603 -- our own interpreter and arguments
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):  # noqa: S310 -- loopback
                break
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError("the moto server did not start") from None
            time.sleep(0.1)
    yield url
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture(autouse=True)
def isolated_environment() -> Iterator[None]:
    """Each test starts from the session's environment (a Lambda handler sets AWS_LAMBDA_*)."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(autouse=True)
def quiet_logs() -> None:
    """JSON logs at debug level, so log assertions see every event."""
    configure_logging(LogLevel.DEBUG, LogFormat.JSON)
    structlog.contextvars.clear_contextvars()


@pytest.fixture
async def queues(moto_endpoint: str) -> Queues:
    """A fresh topic → queue (visibility 30 s, maxReceiveCount 3) → DLQ."""
    return await make_queues(moto_endpoint)
