"""The metrics and health endpoints: ``/metrics``, ``/healthz``, ``/readyz``, and nothing else.

Served from a thread of the worker's own process, so that a probe gets an answer — "event loop
blocked for 42 s" — even when the event loop cannot run, and a scrape never competes with message
handling for the loop.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from worker.errors import StartupError
from worker.health import Health, Verdict


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    registry: CollectorRegistry
    health: Health


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "worker"
    sys_version = ""

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
        try:
            self._server = _Server((host, port), _Handler)
        except OSError as exc:
            raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
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
