"""A fault-injecting HTTP proxy between the worker and the broker (moto or LocalStack).

The worker is pointed at the proxy (``WORKER_ENDPOINT_URL``); the proxy forwards each request to
the broker unless a :class:`Rule` picks it, in which case it injects one :class:`Fault`:

- ``latency``: forward after a delay;
- ``http_500`` / ``http_503``: answer an AWS server error without forwarding;
- ``throttle``: answer SQS's throttling error (HTTP 400, ``RequestThrottled``, which botocore's
  standard retry mode treats as throttling) without forwarding;
- ``access_denied``: answer HTTP 403 ``AccessDenied`` without forwarding, as SQS answers a call
  that the caller's IAM policy does not allow (not retried);
- ``reset``: reset the connection (TCP RST) before forwarding: the request is not applied;
- ``drop_response``: forward, so that the broker applies the request, then reset the connection
  instead of answering: the client cannot know that it was applied;
- ``stall``: neither forward nor answer, until the client gives up (its read timeout) or the
  rule's ``seconds`` run out.

Rules select requests by service (SQS by default: its ``X-Amz-Target`` header, e.g.
``AmazonSQS.ReceiveMessage``; SNS requests are only faulted by rules that name ``sns``), by
operation, by probability and by count, and can be added and removed while the worker runs. Every
injected fault is counted by kind.

The proxy runs its own event loop in a daemon thread, so that it keeps answering whatever the
test's loop (or a worker in it) is doing. It speaks enough HTTP/1.1 for botocore: keep-alive
connections from the client, one fresh upstream connection per forwarded request.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import socket
import struct
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import urlsplit

_HEAD_LIMIT = 64 * 1024
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection"}
)
_SERVICE_IN_CREDENTIAL = re.compile(r"Credential=[^/]+/[^/]+/[^/]+/([a-z0-9-]+)/aws4_request")
_ACTION_IN_FORM = re.compile(rb"(?:^|&)Action=([A-Za-z]+)")
_RECEIPT_HANDLE = re.compile(rb'"ReceiptHandle"\s*:\s*"([^"]+)"')


class Fault(StrEnum):
    """The kinds of fault the proxy injects."""

    LATENCY = "latency"
    HTTP_500 = "http_500"
    HTTP_503 = "http_503"
    THROTTLE = "throttle"
    ACCESS_DENIED = "access_denied"
    RESET = "reset"
    DROP_RESPONSE = "drop_response"
    STALL = "stall"


# What a server error or throttling looks like in SQS's JSON protocol.
_ERROR_RESPONSES: dict[Fault, tuple[int, str, str, str]] = {
    Fault.HTTP_500: (500, "Internal Server Error", "InternalFailure", "injected server error"),
    Fault.HTTP_503: (503, "Service Unavailable", "ServiceUnavailable", "injected unavailability"),
    Fault.THROTTLE: (400, "Bad Request", "RequestThrottled", "Rate exceeded (injected)"),
    Fault.ACCESS_DENIED: (403, "Forbidden", "AccessDenied", "not authorized (injected)"),
}


@dataclass
class Rule:
    """Which requests get which fault.

    ``operations`` empty means every operation of ``service`` (``"sqs"``, ``"sns"`` or ``"*"``);
    ``count`` caps how many requests the rule faults (``None``: no cap); ``seconds`` is the
    added latency, or the longest stall.
    """

    fault: Fault
    operations: frozenset[str] = frozenset()
    service: str = "sqs"
    probability: float = 1.0
    count: int | None = None
    seconds: float = 0.0
    injected: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability {self.probability} is not between 0 and 1")

    @classmethod
    def on(cls, fault: Fault, *operations: str, **options: float | int | str | None) -> Rule:
        """A rule for ``fault`` on the named SQS operations (all of them when none is named)."""
        return cls(fault, frozenset(operations), **options)  # type: ignore[arg-type]

    @property
    def spent(self) -> bool:
        """Whether the rule has faulted its ``count`` requests."""
        return self.count is not None and self.injected >= self.count

    def matches(self, service: str, operation: str) -> bool:
        """Whether a request to ``service``'s ``operation`` is one this rule is about."""
        if self.service not in ("*", service):
            return False
        return not self.operations or operation in self.operations


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str:
        lowered = name.lower()
        return next((value for key, value in self.headers if key.lower() == lowered), "")

    @property
    def service(self) -> str:
        match = _SERVICE_IN_CREDENTIAL.search(self.header("Authorization"))
        if match:
            return match.group(1)
        return "sqs" if self.header("X-Amz-Target").startswith("AmazonSQS.") else "unknown"

    @property
    def operation(self) -> str:
        target = self.header("X-Amz-Target")
        if target:
            return target.rsplit(".", 1)[-1]
        match = _ACTION_IN_FORM.search(self.body)
        return match.group(1).decode() if match else ""

    @property
    def keep_alive(self) -> bool:
        return self.header("Connection").lower() != "close"


class FaultProxy:
    """Forwards HTTP requests to ``upstream``, injecting the faults its rules pick."""

    def __init__(self, upstream: str, *, seed: int | None = None) -> None:
        parts = urlsplit(upstream)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"upstream {upstream!r} needs a host and a port")
        self._upstream = (parts.hostname, parts.port)
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._injected: Counter[Fault] = Counter()
        self._forwarded: Counter[str] = Counter()
        self._struck: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The endpoint URL to give the worker."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        """Listen on a free loopback port, in a thread of its own."""
        loop = asyncio.new_event_loop()
        ready: Future[int] = Future()
        self._loop = loop
        self._thread = threading.Thread(
            target=self._run, args=(loop, ready), name="fault-proxy", daemon=True
        )
        self._thread.start()
        self.port = ready.result(timeout=10)
        return self

    def _run(self, loop: asyncio.AbstractEventLoop, ready: Future[int]) -> None:
        asyncio.set_event_loop(loop)
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._serve, "127.0.0.1", 0, limit=_HEAD_LIMIT)
            )
        except OSError as exc:
            ready.set_exception(exc)
            return
        ready.set_result(int(self._server.sockets[0].getsockname()[1]))
        loop.run_forever()
        loop.run_until_complete(self._close())
        loop.close()

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    def stop(self) -> None:
        """Close every connection and stop the thread."""
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- rules and counts ------------------------------------------------------------------

    def add(self, *rules: Rule) -> None:
        """Start injecting the faults of ``rules`` (in order: the first that picks a request)."""
        with self._lock:
            self._rules.extend(rules)

    def remove(self, *rules: Rule) -> None:
        """Stop injecting the faults of ``rules``."""
        with self._lock:
            self._rules = [rule for rule in self._rules if all(rule is not r for r in rules)]

    def clear(self) -> None:
        """Stop injecting any fault."""
        with self._lock:
            self._rules.clear()

    @contextlib.contextmanager
    def inject(self, *rules: Rule) -> Iterator[tuple[Rule, ...]]:
        """Inject the faults of ``rules`` inside the ``with`` block only."""
        self.add(*rules)
        try:
            yield rules
        finally:
            self.remove(*rules)

    @property
    def injected(self) -> dict[Fault, int]:
        """How many faults of each kind were injected so far."""
        with self._lock:
            return dict(self._injected)

    @property
    def forwarded(self) -> dict[str, int]:
        """How many requests of each operation reached the upstream server."""
        with self._lock:
            return dict(self._forwarded)

    @property
    def struck_receipts(self) -> set[str]:
        """Receipt handles named by requests that a fault other than latency struck.

        They are the messages in flight when a fault struck (a delete or a visibility change
        that failed, or may have): the only ones a fault may have duplicated.
        """
        with self._lock:
            return set(self._struck)

    def _pick(self, request: _Request) -> Rule | None:
        service, operation = request.service, request.operation
        with self._lock:
            for rule in self._rules:
                if rule.spent or not rule.matches(service, operation):
                    continue
                if rule.probability < 1.0 and self._random.random() >= rule.probability:
                    continue
                rule.injected += 1
                self._injected[rule.fault] += 1
                if rule.fault is not Fault.LATENCY:
                    self._struck.update(
                        match.decode() for match in _RECEIPT_HANDLE.findall(request.body)
                    )
                return rule
        return None

    # -- serving ---------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while True:
                request = await _read_request(reader)
                if request is None or not await self._answer(request, reader, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            _reset(writer)
            raise
        finally:
            self._connections.discard(task)
            if not writer.is_closing():
                writer.close()

    async def _answer(
        self, request: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; ``False`` when the connection is done with."""
        rule = self._pick(request)
        fault = None if rule is None else rule.fault
        if rule is not None and fault is Fault.LATENCY:
            await asyncio.sleep(rule.seconds)
        elif fault in _ERROR_RESPONSES:
            status, reason, code, text = _ERROR_RESPONSES[fault]
            writer.write(_error_response(status, reason, code, text, keep=request.keep_alive))
            await writer.drain()
            return request.keep_alive
        elif fault is Fault.RESET:
            _reset(writer)
            return False
        elif rule is not None and fault is Fault.STALL:
            # Hold the request until the client gives up on it (EOF) or the stall ends.
            with contextlib.suppress(TimeoutError, ConnectionError):
                await asyncio.wait_for(reader.read(), timeout=rule.seconds or None)
            _reset(writer)
            return False
        response = await self._forward(request)
        with self._lock:
            self._forwarded[request.operation] += 1
        if fault is Fault.DROP_RESPONSE:
            _reset(writer)
            return False
        writer.write(response)
        await writer.drain()
        return request.keep_alive

    async def _forward(self, request: _Request) -> bytes:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self._upstream)
        try:
            head = [f"{request.method} {request.target} HTTP/1.1"]
            head += [f"{k}: {v}" for k, v in request.headers if k.lower() not in _HOP_BY_HOP]
            head += [f"Content-Length: {len(request.body)}", "Connection: close", "", ""]
            upstream_writer.write("\r\n".join(head).encode("latin-1") + request.body)
            await upstream_writer.drain()
            status_line, headers, body = await _read_response(upstream_reader)
        finally:
            upstream_writer.close()
        lines = [status_line]
        lines += [f"{k}: {v}" for k, v in headers if k.lower() not in _HOP_BY_HOP]
        lines += [f"Content-Length: {len(body)}", "", ""]
        return "\r\n".join(lines).encode("latin-1") + body


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close the connection with a TCP RST rather than an orderly FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _error_response(status: int, reason: str, code: str, text: str, *, keep: bool) -> bytes:
    body = ('{"__type": "com.amazonaws.sqs#%s", "message": "%s"}' % (code, text)).encode()  # noqa: UP031 -- JSON braces
    head = [
        f"HTTP/1.1 {status} {reason}",
        "Content-Type: application/x-amz-json-1.0",
        f"x-amzn-query-error: {code};{'Sender' if status < 500 else 'Receiver'}",
        f"Content-Length: {len(body)}",
        f"Connection: {'keep-alive' if keep else 'close'}",
        "",
        "",
    ]
    return "\r\n".join(head).encode("latin-1") + body


def _parse_headers(lines: list[str]) -> list[tuple[str, str]]:
    headers = []
    for line in lines:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return headers


def _header(headers: list[tuple[str, str]], name: str) -> str:
    return next((v for k, v in headers if k.lower() == name), "")


async def _read_body(reader: asyncio.StreamReader, headers: list[tuple[str, str]]) -> bytes:
    if _header(headers, "transfer-encoding").lower() == "chunked":
        chunks: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
    length = _header(headers, "content-length")
    return await reader.readexactly(int(length)) if length else b""


async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None  # the client closed its keep-alive connection
    request_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
    method, target, _ = request_line.split(" ", 2)
    headers = _parse_headers(lines)
    return _Request(method, target, headers, await _read_body(reader, headers))


async def _read_response(reader: asyncio.StreamReader) -> tuple[str, list[tuple[str, str]], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
    headers = _parse_headers(lines)
    if _header(headers, "transfer-encoding") or _header(headers, "content-length"):
        return status_line, headers, await _read_body(reader, headers)
    return status_line, headers, await reader.read()  # delimited by the end of the connection


MOVE_TASK_OPERATIONS = ("StartMessageMoveTask", "ListMessageMoveTasks", "CancelMessageMoveTask")
# What the worker says of an endpoint whose move-task calls answer as without_move_tasks's do.
NO_MOVE_TASKS = "this endpoint has no message move tasks (InternalFailure: injected server error)"


@contextlib.contextmanager
def without_move_tasks(upstream: str) -> Iterator[str]:
    """An endpoint without message move tasks, whatever the broker: its URL.

    The broker behind a proxy that answers every move-task call with HTTP 500, as moto does
    (it has none), so that the worker's fallback is tested on every broker.
    """
    with (
        FaultProxy(upstream) as proxy,
        proxy.inject(Rule.on(Fault.HTTP_500, *MOVE_TASK_OPERATIONS)),
    ):
        yield proxy.url
