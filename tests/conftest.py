"""One broker for the whole session, over real HTTP; a fresh topic, queue and DLQ per test.

The broker is moto unless ``TEST_BROKER`` names another (tests/brokers.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import structlog

from tests.brokers import Broker, BrokerName, Flaw, localstack_process, selected_broker
from tests.support import Queues, make_queues, moto_server_process
from worker.config import LogFormat, LogLevel
from worker.logs import configure_logging

# What users deploy is checked by .ci/check-helm and .ci/check-cloudformation (make deploy-check),
# which install the pinned tools those tests need and run them by path: not collected otherwise.
collect_ignore = ["deploy"]


@pytest.fixture(scope="session", autouse=True)
def clean_environment() -> Iterator[None]:
    """No WORKER_* setting leaks in from the machine; placeholder credentials for the broker."""
    saved = dict(os.environ)
    for name in list(os.environ):
        if name.startswith("WORKER_") or name.startswith("AWS_"):
            del os.environ[name]
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",  # noqa: S106 -- the emulators ignore it
        AWS_DEFAULT_REGION="us-east-1",
    )
    yield
    os.environ.clear()
    os.environ.update(saved)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests that use the session's broker ``broker`` and ``slow`` (integration tests:
    ``-m "not slow"`` is the logic); check ``broker_flaw`` marks."""
    del config
    for item in items:
        uses_broker = "broker" in getattr(item, "fixturenames", ())
        if uses_broker:
            item.add_marker(pytest.mark.broker)
            item.add_marker(pytest.mark.slow)
        for mark in item.iter_markers("broker_flaw"):
            if len(mark.args) != 1 or not isinstance(mark.args[0], Flaw):
                raise pytest.UsageError(f"{item.nodeid}: broker_flaw takes one tests.brokers.Flaw")
            if not uses_broker:  # it would skip nothing
                raise pytest.UsageError(f"{item.nodeid}: broker_flaw on a test without the broker")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a test on the broker whose flaw it would trip over, naming the flaw."""
    if "broker" not in getattr(item, "fixturenames", ()):
        return
    name = selected_broker()
    for mark in item.iter_markers("broker_flaw"):
        flaw: Flaw = mark.args[0]
        if flaw.broker is name:
            pytest.skip(str(flaw))


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    """The session's broker, in a process of its own (so that it does not share our GIL)."""
    name = selected_broker()
    if name is BrokerName.LOCALSTACK:
        with localstack_process() as url:
            yield Broker(name, url)
    else:
        with moto_server_process() as url:
            yield Broker(name, url)


@pytest.fixture(scope="session")
def broker_endpoint(broker: Broker) -> str:
    """The endpoint URL of the session's broker."""
    return broker.endpoint_url


@pytest.fixture(scope="session")
def atomic_broker_endpoint(broker: Broker) -> Iterator[str]:
    """A broker whose receives are atomic: for tests that count deliveries exactly.

    LocalStack's are; for moto, a second moto server, patched to make them so.
    """
    if broker.name is not BrokerName.MOTO:
        yield broker.endpoint_url
        return
    with moto_server_process(atomic=True) as url:
        yield url


@pytest.fixture(scope="session")
def moto_endpoint(broker_endpoint: str) -> str:
    """``broker_endpoint`` under its older name (it is moto only when TEST_BROKER is)."""
    return broker_endpoint


@pytest.fixture(scope="session")
def atomic_moto_endpoint(atomic_broker_endpoint: str) -> str:
    """``atomic_broker_endpoint`` under its older name."""
    return atomic_broker_endpoint


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
async def queues(broker_endpoint: str) -> Queues:
    """A fresh topic → queue (visibility 30 s, maxReceiveCount 3) → DLQ."""
    return await make_queues(broker_endpoint)
