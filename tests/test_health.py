"""Liveness and readiness verdicts (pure logic, a fake clock), and where they are served."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from worker.errors import StartupError
from worker.health import Health
from worker.http import MAX_CONNECTIONS, StatusServer
from worker.ops import cli


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def healthy(clock: Clock) -> Health:
    health = Health(loop_block_threshold=10, clock=clock)
    health.pollers_expected = health.pollers_running = 2
    health.slots = 4
    health.queue_reached = True
    return health


class TestLiveness:
    """Liveness fails only for what a restart cures."""

    def test_a_turning_loop_with_its_pollers_is_live(self) -> None:
        verdict = healthy(Clock()).liveness()
        assert verdict.ok
        assert verdict.problems == ()

    def test_a_blocked_loop_is_not(self) -> None:
        clock = Clock()
        health = healthy(clock)
        clock.now += 10.5
        verdict = health.liveness()
        assert not verdict.ok
        assert verdict.problems == ("event loop blocked for 10 s",)
        health.beat()
        assert health.liveness().ok

    def test_a_dead_poller_fails_liveness(self) -> None:
        health = healthy(Clock())
        health.pollers_running = 1
        assert health.liveness().problems == ("1 of 2 pollers died",)

    def test_pollers_ending_while_draining_are_expected(self) -> None:
        health = healthy(Clock())
        health.draining = True
        health.pollers_running = 0
        assert health.liveness().ok

    def test_every_slot_held_by_an_abandoned_handler(self) -> None:
        health = healthy(Clock())
        health.abandoned = lambda: 3
        assert health.liveness().ok
        health.abandoned = lambda: 4
        assert health.liveness().problems == (
            "all 4 handler slots held by handlers past their budget",
        )


class TestLoopLag:
    """The lag is worked out when it is read, so a loop blocked now is late now."""

    def test_a_loop_on_time_has_none(self) -> None:
        clock = Clock()
        health = Health(loop_block_threshold=10, beat_interval=1, clock=clock)
        clock.now += 0.9  # the next beat is not due yet
        assert health.loop_lag() == 0

    def test_it_grows_while_no_beat_comes(self) -> None:
        clock = Clock()
        health = Health(loop_block_threshold=10, beat_interval=1, clock=clock)
        clock.now += 3
        assert health.loop_lag() == 2
        clock.now += 5
        assert health.loop_lag() == 7

    def test_the_beat_that_ends_a_block_ends_it(self) -> None:
        clock = Clock()
        health = Health(loop_block_threshold=10, beat_interval=1, clock=clock)
        clock.now += 8
        health.beat()
        assert health.loop_lag() == 0


class TestReadiness:
    """Ready once the queue was reached, and until draining starts."""

    def test_not_ready_before_the_queue_is_reached(self) -> None:
        health = Health(loop_block_threshold=10)
        assert health.readiness().problems == ("queue not reached yet",)

    def test_not_ready_says_what_start_up_waits_for(self) -> None:
        health = Health(loop_block_threshold=10)
        health.starting = "the Lambda function is initialising (its first environment)"
        assert health.readiness().problems == (health.starting,)
        health.queue_reached = True
        assert health.readiness().ok

    def test_ready_then_draining(self) -> None:
        health = healthy(Clock())
        assert health.readiness().ok
        health.draining = True
        assert health.readiness().problems == ("draining",)


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(
    not _ipv6_loopback(), reason="this machine has no IPv6 loopback (::1) to listen on"
)


def _get(url: str) -> tuple[int, dict[str, object]]:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 -- a loopback URL
        return int(response.status), json.load(response)


@contextlib.contextmanager
def serving(host: str) -> Iterator[StatusServer]:
    server = StatusServer(host, 0, CollectorRegistry(), Health(loop_block_threshold=10))
    server.start()
    try:
        yield server
    finally:
        server.stop()


class TestListenAddress:
    """The status server listens on IPv6 as well as IPv4, so probes reach it on an IPv6 cluster."""

    @needs_ipv6
    def test_an_ipv6_address_is_served_over_ipv6(self) -> None:
        with serving("::1") as server:
            status, document = _get(f"http://[::1]:{server.port}/healthz")
        assert status == 200
        assert document["status"] == "ok"

    @needs_ipv6
    def test_the_ipv6_wildcard_answers_both_families(self) -> None:
        with serving("::") as server:
            assert _get(f"http://[::1]:{server.port}/healthz")[0] == 200
            # Dual-stack: a probe, or `worker healthcheck`, sent to 127.0.0.1 gets in too.
            assert _get(f"http://127.0.0.1:{server.port}/healthz")[0] == 200

    @needs_ipv6
    def test_a_bracketed_address_as_in_a_url(self) -> None:
        with serving("[::1]") as server:
            assert _get(f"http://[::1]:{server.port}/healthz")[0] == 200

    @needs_ipv6
    def test_worker_healthcheck_finds_a_server_on_the_ipv6_wildcard(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        with serving("::") as server:
            monkeypatch.setenv("WORKER_HTTP_HOST", "::")
            monkeypatch.setenv("WORKER_HTTP_PORT", str(server.port))
            assert cli.main(["healthcheck", "--timeout", "5"]) == 0
        assert json.loads(capsys.readouterr().out)["status"] == "ok"

    @pytest.mark.parametrize(
        ("listening_on", "asked"),
        [
            ("0.0.0.0", "127.0.0.1"),  # noqa: S104 -- the default wildcard
            ("", "127.0.0.1"),
            ("::", "[::1]"),  # the IPv6 wildcard may be IPv6-only: its own loopback
            ("::1", "[::1]"),
            ("[::1]", "[::1]"),
            ("10.0.0.5", "10.0.0.5"),
            ("fd00::5", "[fd00::5]"),
        ],
    )
    def test_where_worker_healthcheck_asks(self, listening_on: str, asked: str) -> None:
        assert cli._local_address(listening_on) == asked

    def test_the_ipv4_default_is_unchanged(self) -> None:
        with serving("0.0.0.0") as server:  # noqa: S104 -- the worker's default
            assert _get(f"http://127.0.0.1:{server.port}/healthz")[0] == 200

    def test_starting_looks_up_no_name(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """http.server asks the resolver for the host's full name when it binds, a reverse
        lookup that can hang a start-up for the resolver's timeout in a container whose DNS
        does not answer it, and that loads the IDNA codec; the server never uses that name."""

        def no_lookups(*_: object) -> str:
            raise AssertionError("the status server looked up a name")

        monkeypatch.setattr(socket, "getfqdn", no_lookups)
        monkeypatch.setattr(socket, "gethostbyaddr", no_lookups)
        with serving("0.0.0.0") as server:  # noqa: S104 -- the worker's default
            assert _get(f"http://127.0.0.1:{server.port}/healthz")[0] == 200

    @needs_ipv6
    def test_an_address_that_is_not_here_is_one_line(self) -> None:
        with pytest.raises(StartupError) as raised:
            StatusServer("2001:db8::1", 0, CollectorRegistry(), Health(loop_block_threshold=10))
        assert str(raised.value).startswith("cannot listen on [2001:db8::1]:0: ")


class TestConnections:
    """Few connections at once, each timed out: half-sent requests cannot pile up threads."""

    def test_half_sent_requests_hold_a_few_threads_and_are_closed(self) -> None:
        with serving("127.0.0.1") as server, contextlib.ExitStack() as open_sockets:
            idle = _connection_threads()
            stalled = []
            for _ in range(4 * MAX_CONNECTIONS):
                connection = open_sockets.enter_context(
                    socket.create_connection(("127.0.0.1", server.port), timeout=30)
                )
                connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: worker\r\n")  # no blank line
                stalled.append(connection)
            # One more connection, accepted after all of those, past the cap: refused.
            with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
                _get(f"http://127.0.0.1:{server.port}/healthz")
            assert _connection_threads() - idle <= MAX_CONNECTIONS
            # Each is closed by the server: at once past the cap, after the timeout below it.
            for connection in stalled:
                with contextlib.suppress(ConnectionResetError):
                    assert connection.recv(1024) == b""
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics") as response:
                assert response.status == 200  # served again


def _connection_threads() -> int:
    """Threads serving a connection of a status server in this process."""
    return sum("process_request_thread" in thread.name for thread in threading.enumerate())
