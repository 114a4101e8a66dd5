"""One moto server for the whole session, over real HTTP; a fresh topic, queue and DLQ per test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import structlog

from tests.support import Queues, make_queues, moto_server_process
from worker.config import LogFormat, LogLevel
from worker.logs import configure_logging

# Fixtures that bring a broker: a test that uses one is an integration test, marked slow.
_BROKER_FIXTURES = frozenset({"moto_endpoint", "atomic_moto_endpoint", "queues"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that talks to a broker ``slow``, so ``-m "not slow"`` is the logic."""
    for item in items:
        if _BROKER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


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
    with moto_server_process() as url:
        yield url


@pytest.fixture(scope="session")
def atomic_moto_endpoint() -> Iterator[str]:
    """A moto server whose receives are atomic: for tests that count deliveries exactly."""
    with moto_server_process(atomic=True) as url:
        yield url


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
