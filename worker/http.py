"""The metrics and health endpoints: ``/metrics``, ``/healthz``, ``/readyz``, and nothing else.

Served from a thread of the worker's own process, so that a probe gets an answer — "event loop
blocked for 42 s" — even when the event loop cannot run, and a scrape never competes with message
handling for the loop.

Probes and scrapes come a few at a time and are answered in milliseconds, so connections are
capped (:data:`MAX_CONNECTIONS`; beyond it a connection is closed at once) and each read or write
times out (:data:`CONNECTION_TIMEOUT_SECONDS`): a client that opens connections and never
finishes its request cannot make the process hold a thread for each.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import socket
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from worker.errors import StartupError
from worker.health import Health, Verdict

MAX_CONNECTIONS = 16
CONNECTION_TIMEOUT_SECONDS = 5.0


def _address_family(host: str) -> socket.AddressFamily:
    """The family to listen with, which the socket needs before ``host`` can be bound.

    An address literal decides by itself. A name keeps IPv4 whenever it has an IPv4 address, as
    before, and takes IPv6 only when it has nothing else — a name on an IPv6-only cluster. A name
    that does not resolve is left to ``bind`` to report.
    """
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return socket.AF_INET6 if literal.version == 6 else socket.AF_INET
    if not host:
        return socket.AF_INET  # "" is INADDR_ANY, as the server has always taken it
    try:
        found = {info[0] for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)}
    except OSError:
        return socket.AF_INET
    return socket.AF_INET6 if found == {socket.AF_INET6} else socket.AF_INET


def _is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # the listen backlog: a burst waits to be taken or refused, not lost
    registry: CollectorRegistry
    health: Health

    def __init__(self, host: str, port: int) -> None:
        self.address_family = _address_family(host)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__((host, port), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve the connection in a thread of its own, if one of the few slots is free."""
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve one connection; its slot is free again when it ends, however it ends."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def server_bind(self) -> None:
        """Make the IPv6 wildcard dual-stack, so ``::`` also answers probes sent over IPv4.

        Linux defaults to dual-stack, but ``net.ipv6.bindv6only`` and other systems do not; where
        the option cannot be cleared the socket stays IPv6-only rather than failing to start.

        ``HTTPServer.server_bind`` would also ask the resolver for this host's full name, for a
        CGI variable nothing here reads: a reverse lookup that holds start-up for the resolver's
        timeout where the cluster's DNS does not answer it, and loads the IDNA codec (0.2 MB).
        The bound address stands in for it.
        """
        if self.address_family == socket.AF_INET6 and _is_unspecified(str(self.server_address[0])):
            with contextlib.suppress(OSError, AttributeError):  # no IPV6_V6ONLY on the platform
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "worker"
    sys_version = ""
    timeout = CONNECTION_TIMEOUT_SECONDS  # per read and write: a half-sent request ends here

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, *, send_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, CONTENT_TYPE_LATEST, generate_latest(self.server.registry), send_body)
        elif path == "/healthz":
            self._verdict(self.server.health.liveness(), send_body)
        elif path == "/readyz":
            self._verdict(self.server.health.readiness(), send_body)
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found\n", send_body)

    def _verdict(self, verdict: Verdict, send_body: bool) -> None:
        document: dict[str, Any] = {
            "status": "ok" if verdict.ok else "failing",
            "problems": list(verdict.problems),
            **verdict.details,
        }
        body = (json.dumps(document) + "\n").encode()
        self._send(200 if verdict.ok else 503, "application/json", body, send_body)

    def _send(self, status: int, content_type: str, body: bytes, send_body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Probes and scrapes every few seconds are not worth a log line each."""


class StatusServer:
    """The HTTP server in its own daemon thread."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, health: Health) -> None:
        host = host.removeprefix("[").removesuffix("]")  # "[::1]", as in a URL, is "::1"
        try:
            self._server = _Server(host, port)
        except OSError as exc:
            shown = f"[{host}]" if ":" in host else host
            raise StartupError(f"cannot listen on {shown}:{port}: {exc.strerror}") from None
        self._server.registry = registry
        self._server.health = health
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="status-http", daemon=True
        )

    def start(self) -> None:
        """Start answering."""
        self._thread.start()

    def stop(self) -> None:
        """Stop answering and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
