"""HTTP/1.1 on loopback, for the one client an execution environment runs.

The Runtime API is four routes, each a small JSON or opaque body, exchanged twice per
invocation with a runtime interface client over one keep-alive connection. A web framework's
request objects, router, middleware and response machinery cost the worker more CPU per
invocation than the function's own no-op (aiohttp's server: 0.3 ms per invocation of ten
records), so the exchange is served here from an :class:`asyncio.Protocol` instead: a request
line and headers, a body by ``Content-Length`` or ``chunked`` transfer coding, ``Expect:
100-continue``, keep-alive and ``Connection: close``, bounded head and body sizes. What the
clients in use send (AWS's Python and Node.js runtime interface clients, curl in a ``provided``
runtime's ``bootstrap``) is all it needs to read; anything else is answered 400 and the
connection closed.

A request is handled to its end before the next is read from the same connection, as HTTP/1.1
requires of responses; what arrives meanwhile waits in the buffer (reading pauses only if it
grows past a request's limits).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import urlsplit

_REASONS = {status.value: status.phrase for status in HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_VERSIONS = frozenset({"HTTP/1.0", "HTTP/1.1"})
# RFC 9112's grammars, in ASCII only (str.isdigit and int() accept more: "²", "+5", "1_0").
_CONTENT_LENGTH = re.compile(r"[0-9]{1,18}")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")


@dataclass(slots=True)
class Request:
    """One request as read: ``headers`` by lower-case name, ``body`` whole.

    A body longer than the server's limit is read and dropped: ``body`` is then empty,
    ``body_too_large`` is set and ``body_size`` says how many bytes were announced or counted.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""
    body_size: int = 0
    body_too_large: bool = False


@dataclass(frozen=True, slots=True)
class Response:
    """What to send back; ``Content-Length`` is added."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Awaitable[Response]]


class HttpServer:
    """Serves ``handler`` on a loopback port until closed."""

    def __init__(self, handler: Handler, *, max_head_bytes: int, max_body_bytes: int) -> None:
        self._handler = handler
        self._max_head = max_head_bytes
        self._max_body = max_body_bytes
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()

    async def start(self, host: str = "127.0.0.1") -> tuple[str, int]:
        """Listen on a free port of ``host``; returns the address bound."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self._handler, self._max_head, self._max_body, self._connections),
            host=host,
            port=0,
        )
        address: tuple[str, int] = self._server.sockets[0].getsockname()[:2]
        return address

    async def close(self) -> None:
        """Stop listening, drop every connection and cancel what their requests still await."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        await asyncio.sleep(0)  # requests woken by the closing (a `next`) answer first
        for connection in list(self._connections):
            connection.abort()
        await server.wait_closed()


class _Connection(asyncio.Protocol):
    """One client connection: reads requests one at a time and answers each in turn."""

    def __init__(
        self, handler: Handler, max_head: int, max_body: int, registry: set[_Connection]
    ) -> None:
        self._handler = handler
        self._max_head = max_head
        self._max_body = max_body
        self._registry = registry
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._reader = _RequestReader(max_head, max_body)
        self._handling: asyncio.Task[None] | None = None
        self._eof = False  # the client sent all it will (a half-close): answer, then close

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # noqa: S101 -- a stream server
        self._transport = transport
        self._registry.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._registry.discard(self)
        self._transport = None
        if self._handling is not None:
            self._handling.cancel()

    def eof_received(self) -> bool:
        # A client may half-close after its request: the answer is still owed. Keep the
        # transport open while a request is handled (True), and close after answering it.
        self._eof = True
        return self._handling is not None

    def abort(self) -> None:
        """Drop the connection now (the server is closing)."""
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._handling is None:
            self._read_requests()
        elif len(self._buffer) > self._max_head + self._max_body and self._transport is not None:
            # A client that sends on while its request is handled waits for the answer first.
            self._transport.pause_reading()

    def _read_requests(self) -> None:
        transport = self._transport
        if transport is None:
            return
        try:
            request, keep_alive = self._reader.read(self._buffer, transport)
        except _BadRequest as bad:
            self._send(Response(bad.status, bad.reason.encode()), keep_alive=False)
            return
        except Exception:  # noqa: BLE001 -- a reader defect answers this client, not the loop
            self._send(Response(400, b"unreadable request"), keep_alive=False)
            return
        if request is None:
            return
        self._handling = asyncio.get_running_loop().create_task(self._handle(request, keep_alive))

    async def _handle(self, request: Request, keep_alive: bool) -> None:
        try:
            response = await self._handler(request)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 -- a bug here must not kill the connection's peer silently
            response = Response(500, b"internal error")
            keep_alive = False
        self._handling = None
        self._send(response, keep_alive=keep_alive and not self._eof)
        if keep_alive and not self._eof and self._transport is not None:
            if not self._transport.is_reading():
                self._transport.resume_reading()
            self._read_requests()

    def _send(self, response: Response, *, keep_alive: bool) -> None:
        transport = self._transport
        if transport is None:
            return
        lines = [f"HTTP/1.1 {response.status} {_REASONS.get(response.status, '')}"]
        lines.extend(f"{name}: {value}" for name, value in response.headers.items())
        lines.append(f"Content-Length: {len(response.body)}")
        if not keep_alive:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        transport.write(head + response.body)  # one send: the exchange is two per invocation
        if not keep_alive:
            transport.close()


class _BadRequest(Exception):
    """The bytes are not a request this server reads; answered, then the connection closed."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


_SIZE_LINE = -1  # chunked: a chunk-size line comes next
_TRAILERS = -2  # chunked: the last chunk was read; trailers up to an empty line come next
_MAX_SIZE_LINE = 1024


class _RequestReader:
    """Cuts requests out of a connection's bytes, in as many pieces as they arrive."""

    def __init__(self, max_head: int, max_body: int) -> None:
        self._max_head = max_head
        self._max_body = max_body
        self._request: Request | None = None
        self._keep_alive = True
        self._chunked = False
        # Content-Length framing: body bytes still to come. Chunked: the bytes left of the
        # current chunk and its CRLF, or _SIZE_LINE, or _TRAILERS.
        self._remaining = 0
        self._parts: list[bytes] = []

    def read(self, buffer: bytearray, transport: asyncio.Transport) -> tuple[Request | None, bool]:
        """The next whole request and whether to keep the connection, or ``None`` for now."""
        if self._request is None:
            self._request = self._read_head(buffer)
            if self._request is None:
                return None, False
            expect = self._request.headers.get("expect", "").lower()
            if expect == "100-continue" and self._remaining:
                if self._request.body_too_large:
                    # Refused before it is sent: the client may or may not send it anyway,
                    # so the connection ends with the answer.
                    self._remaining, self._keep_alive = 0, False
                else:
                    transport.write(_CONTINUE)
        request = self._request
        done = self._read_chunked(buffer, request) if self._chunked else self._read_sized(buffer)
        if not done:
            return None, False
        if not request.body_too_large:
            request.body = b"".join(self._parts)
        self._request, self._parts = None, []
        return request, self._keep_alive

    def _read_head(self, buffer: bytearray) -> Request | None:
        while buffer.startswith(b"\r\n"):  # RFC 9112 2.2: empty lines before a request
            del buffer[:2]
        end = buffer.find(b"\r\n\r\n")
        if end > self._max_head or (end < 0 and len(buffer) > self._max_head):
            raise _BadRequest(431, "request header fields too large")
        if end < 0:
            return None
        line, *header_lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
        del buffer[: end + 4]
        parts = line.split(" ")
        if len(parts) != 3 or parts[2] not in _VERSIONS:
            raise _BadRequest(400, "malformed request line")
        method, target, version = parts
        headers = _parse_headers(header_lines)
        if not target.startswith("/"):  # the absolute form, which servers must accept
            target = urlsplit(target).path or "/"
        request = Request(method, target.partition("?")[0], headers)
        connection = headers.get("connection", "").lower()
        if version == "HTTP/1.1":
            self._keep_alive = "close" not in connection
        else:
            self._keep_alive = "keep-alive" in connection
        self._frame_body(request)
        return request

    def _frame_body(self, request: Request) -> None:
        """How the body of ``request`` is delimited: chunked, or by Content-Length."""
        headers = request.headers
        coding = headers.get("transfer-encoding")
        self._chunked = coding is not None
        if coding is not None:
            if coding.lower() != "chunked":  # gzip and the like: no runtime sends them
                raise _BadRequest(501, "only the chunked transfer coding is read")
            if "content-length" in headers:  # RFC 9112 6.3: chunked wins; do not trust the rest
                self._keep_alive = False
            self._remaining = _SIZE_LINE
            return
        length = headers.get("content-length", "0")
        if not _CONTENT_LENGTH.fullmatch(length):
            raise _BadRequest(400, "malformed Content-Length")
        self._remaining = request.body_size = int(length)
        request.body_too_large = self._remaining > self._max_body

    def _read_sized(self, buffer: bytearray) -> bool:
        assert self._request is not None  # noqa: S101 -- reading its body
        take = min(self._remaining, len(buffer))
        if take:
            if not self._request.body_too_large:
                self._parts.append(bytes(buffer[:take]))
            del buffer[:take]
            self._remaining -= take
        return self._remaining == 0

    def _read_chunked(self, buffer: bytearray, request: Request) -> bool:
        while buffer or self._remaining == _TRAILERS:
            if self._remaining == _SIZE_LINE:
                if not self._read_chunk_size(buffer, request):
                    return False
            elif self._remaining == _TRAILERS:
                return self._read_trailers(buffer)
            else:
                self._read_chunk_data(buffer, request)
        return False

    def _read_chunk_size(self, buffer: bytearray, request: Request) -> bool:
        end = buffer.find(b"\r\n")
        if end < 0 or end > _MAX_SIZE_LINE:
            if end > _MAX_SIZE_LINE or len(buffer) > _MAX_SIZE_LINE:
                raise _BadRequest(400, "malformed chunk size")
            return False
        size_text = bytes(buffer[:end]).split(b";", 1)[0].rstrip(b" \t")
        del buffer[: end + 2]
        if not _CHUNK_SIZE.fullmatch(size_text):
            raise _BadRequest(400, "malformed chunk size")
        size = int(size_text, 16)
        if size == 0:
            self._remaining = _TRAILERS
            return True
        request.body_size += size
        if request.body_size > self._max_body and not request.body_too_large:
            request.body_too_large = True
            self._parts = []
        self._remaining = size + 2
        return True

    def _read_chunk_data(self, buffer: bytearray, request: Request) -> None:
        before = self._remaining
        take = min(before, len(buffer))
        self._remaining -= take
        # A chunk's last two bytes are its CRLF: leave out those among the ones taken, and
        # check them, or a client's framing error would pass for data.
        crlf = max(0, 2 - self._remaining) - max(0, 2 - before)
        seen = max(0, 2 - before)  # of the CRLF, the bytes taken by earlier reads
        if bytes(buffer[take - crlf : take]) != b"\r\n"[seen : seen + crlf]:
            raise _BadRequest(400, "a chunk does not end with CRLF")
        data = bytes(buffer[: take - crlf])
        if not request.body_too_large:
            self._parts.append(data)
        del buffer[:take]
        if self._remaining == 0:
            self._remaining = _SIZE_LINE

    def _read_trailers(self, buffer: bytearray) -> bool:
        if buffer.startswith(b"\r\n"):
            del buffer[:2]
            return True
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > self._max_head:
                raise _BadRequest(431, "trailers too large")
            return False
        del buffer[: end + 4]
        return True


def _parse_headers(lines: list[str]) -> dict[str, str]:
    """Headers by lower-case name; a repeated one's values joined by commas, as RFC 9110 says."""
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise _BadRequest(400, "malformed header")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers
