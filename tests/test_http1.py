"""The Runtime API's HTTP/1.1 server, spoken to over a real socket, byte by byte where it matters.

The runtime interface clients themselves (AWS's Python and Node.js clients, curl in a shell
``bootstrap``) are run against it in ``test_lambda_environments``; these tests pin down the
framing those clients may use and what malformed or oversized input gets.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from worker.lambda_.http1 import HttpServer, Request, Response
from worker.lambda_.invocation import FunctionError, InvocationRequest
from worker.lambda_.runtime_api import RUNTIME, RuntimeApi

pytestmark = pytest.mark.asyncio


class Recorder:
    """A handler that keeps what it was asked and answers with the body it got, reversed."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.hold: asyncio.Event | None = None

    async def __call__(self, request: Request) -> Response:
        self.requests.append(request)
        if self.hold is not None:
            await self.hold.wait()
        if request.path == "/boom":
            raise RuntimeError("a bug in a route")
        return Response(200, request.body[::-1], {"X-Path": request.path})


@pytest.fixture
async def served() -> AsyncIterator[tuple[Recorder, HttpServer, int]]:
    recorder = Recorder()
    server = HttpServer(recorder, max_head_bytes=4096, max_body_bytes=1000)
    _, port = await server.start()
    yield recorder, server, port
    await server.close()


async def exchange(port: int, *pieces: bytes, responses: int = 1) -> list[bytes]:
    """Send ``pieces`` one write each; read ``responses`` whole responses (or up to EOF)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for piece in pieces:
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(0)
    answers = [await read_response(reader) for _ in range(responses)]
    writer.close()
    return answers


async def read_response(reader: asyncio.StreamReader) -> bytes:
    """One response: its head, and as much body as it says it has."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


class TestFraming:
    """Every framing a client may send arrives as the same request."""

    async def test_content_length_body_in_pieces(
        self, served: tuple[Recorder, HttpServer, int]
    ) -> None:
        recorder, _, port = served
        request = b"POST /a?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
        [answer] = await exchange(port, *(request[i : i + 3] for i in range(0, len(request), 3)))
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"X-Path: /a\r\n" in answer  # the query string is not part of the path
        assert answer.endswith(b"\r\n\r\nolleh")
        assert recorder.requests[0].headers["host"] == "h"

    async def test_chunked_body_split_anywhere(
        self, served: tuple[Recorder, HttpServer, int]
    ) -> None:
        recorder, _, port = served
        request = (
            b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: t\r\n\r\n"
        )
        for size in (1, 2, 7, len(request)):
            recorder.requests.clear()
            await exchange(port, *(request[i : i + size] for i in range(0, len(request), size)))
            assert recorder.requests[0].body == b"abc0123456789abcdef", size
            assert recorder.requests[0].body_size == 19

    async def test_keep_alive_carries_requests_one_after_another(
        self, served: tuple[Recorder, HttpServer, int]
    ) -> None:
        recorder, _, port = served
        first = b"POST /1 HTTP/1.1\r\nContent-Length: 2\r\n\r\nab"
        second = b"GET /2 HTTP/1.1\r\n\r\n"
        answers = await exchange(port, first + second, responses=2)  # pipelined in one write
        assert [r.path for r in recorder.requests] == ["/1", "/2"]
        assert answers[0].endswith(b"ba")
        assert b"Connection: close" not in answers[0]
        assert b"X-Path: /2" in answers[1]

    async def test_expect_continue_is_answered_before_the_body(
        self, served: tuple[Recorder, HttpServer, int]
    ) -> None:
        _, _, port = served
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /e HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"xyz")
        assert (await read_response(reader)).endswith(b"zyx")
        writer.close()

    async def test_empty_lines_before_a_request_are_ignored(
        self, served: tuple[Recorder, HttpServer, int]
    ) -> None:
        recorder, _, port = served
        await exchange(port, b"\r\n\r\nPOST /x HTTP/1.1\r\nContent-Length: 1\r\n\r\nz")
        assert [(r.path, r.body) for r in recorder.requests] == [("/x", b"z")]

    async def test_the_absolute_form_of_a_target(
        self, served: tuple[Recorder, HttpServer, int]
    ) -> None:
        recorder, _, port = served
        await exchange(port, b"GET http://127.0.0.1:9001/2018-06-01/a?q=1 HTTP/1.1\r\n\r\n")
        assert recorder.requests[0].path == "/2018-06-01/a"

    async def test_chunked_with_a_content_length_is_read_chunked_then_closed(
        self, served: tuple[Recorder, HttpServer, int]
    ) -> None:
        recorder, _, port = served
        [answer] = await exchange(
            port,
            b"POST /c HTTP/1.1\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\nok\r\n0\r\n\r\n",
        )
        assert recorder.requests[0].body == b"ok"
        assert b"Connection: close" in answer  # RFC 9112 6.3: the framing is not trusted further

    async def test_a_client_that_half_closes_still_gets_its_answer(
        self, served: tuple[Recorder, HttpServer, int]
    ) -> None:
        recorder, _, port = served
        recorder.hold = asyncio.Event()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /h HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi")
        writer.write_eof()  # FIN after the request: legal, and the answer is still owed
        await asyncio.sleep(0.05)
        recorder.hold.set()
        answer = await read_response(reader)
        assert answer.endswith(b"ih")
        assert b"Connection: close" in answer
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()

    @pytest.mark.parametrize(
        ("head", "closes"),
        [
            pytest.param(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", True, id="close"),
            pytest.param(b"GET / HTTP/1.0\r\n\r\n", True, id="http-1.0"),
            pytest.param(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", False, id="1.0-ka"),
        ],
    )
    async def test_connection_close_is_honoured(
        self, served: tuple[Recorder, HttpServer, int], head: bytes, closes: bool
    ) -> None:
        _, _, port = served
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head)
        answer = await read_response(reader)
        assert (b"Connection: close" in answer) is closes
        if closes:
            assert await asyncio.wait_for(reader.read(), 5) == b""  # the server hung up
        writer.close()


class TestBadInput:
    """What malformed or oversized requests get: an answer, never a stuck or crashed server."""

    @pytest.mark.parametrize(
        ("request_bytes", "status"),
        [
            pytest.param(b"NONSENSE\r\n\r\n", b"400", id="request-line"),
            pytest.param(b"GET / SPDY/3\r\n\r\n", b"400", id="not-http-1"),
            pytest.param(b"GET / HTTP/1.1\r\nno colon\r\n\r\n", b"400", id="header"),
            pytest.param(b"GET / HTTP/1.1\r\n folded: x\r\n\r\n", b"400", id="folded-header"),
            pytest.param(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", b"400", id="length"),
            pytest.param(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", b"400", id="negative"),
            pytest.param(
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", b"400", id="chunk"
            ),
            pytest.param(b"GET / HTTP/1.1\r\nX: " + b"a" * 5000 + b"\r\n\r\n", b"431", id="head"),
            pytest.param(b"GET / HTTP/1.1\r\nX: " + b"a" * 5000, b"431", id="endless-head"),
            pytest.param(b"GET / HTTP/1.9\r\n\r\n", b"400", id="http-1.9"),
            # Digits to str.isdigit, not to int(): superscript two, in Latin-1.
            pytest.param(b"POST / HTTP/1.1\r\nContent-Length: \xb2\r\n\r\n", b"400", id="sup2"),
            pytest.param(b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", b"400", id="plus"),
            pytest.param(
                b"POST / HTTP/1.1\r\nContent-Length: 1234567890123456789\r\n\r\n",
                b"400",
                id="19-digits",
            ),
            pytest.param(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", b"501", id="gzip"),
            *(
                pytest.param(
                    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + size + b"\r\n",
                    b"400",
                    id=f"chunk-size-{size.decode()}",
                )
                for size in (b"0x5", b"+5", b"1_0", b"-0")
            ),
            pytest.param(
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY0\r\n\r\n",
                b"400",
                id="chunk-without-crlf",
            ),
        ],
    )
    async def test_malformed_request_is_refused_and_the_connection_closed(
        self, served: tuple[Recorder, HttpServer, int], request_bytes: bytes, status: bytes
    ) -> None:
        recorder, _, port = served
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request_bytes)
        answer = await read_response(reader)
        assert answer.startswith(b"HTTP/1.1 " + status)
        assert b"Connection: close" in answer
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        assert recorder.requests == []  # the handler never saw it

    @pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
    async def test_a_body_over_the_limit_is_read_and_dropped_then_the_connection_goes_on(
        self, served: tuple[Recorder, HttpServer, int], chunked: bool
    ) -> None:
        recorder, _, port = served
        body = b"x" * 1500
        if chunked:
            framed = b"Transfer-Encoding: chunked\r\n\r\n5dc\r\n" + body + b"\r\n0\r\n\r\n"
        else:
            framed = b"Content-Length: 1500\r\n\r\n" + body
        after = b"POST /next HTTP/1.1\r\nContent-Length: 2\r\n\r\nok"
        answers = await exchange(port, b"POST /big HTTP/1.1\r\n" + framed + after, responses=2)
        big, following = recorder.requests
        assert (big.body, big.body_size, big.body_too_large) == (b"", 1500, True)
        assert (following.path, following.body) == ("/next", b"ok")
        assert answers[1].endswith(b"ko")

    async def test_a_body_refused_before_it_is_sent(
        self, served: tuple[Recorder, HttpServer, int]
    ) -> None:
        # Expect: 100-continue with a body over the limit: no 100, the answer at once, and the
        # connection closed (the client may send the body anyway).
        recorder, _, port = served
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /big HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n")
        answer = await read_response(reader)
        assert answer.startswith(b"HTTP/1.1 200 ")  # the route decides; the body never came
        assert b"Connection: close" in answer
        assert (recorder.requests[0].body_too_large, recorder.requests[0].body_size) == (True, 5000)
        writer.close()

    async def test_a_failing_route_answers_500_and_closes(
        self, served: tuple[Recorder, HttpServer, int]
    ) -> None:
        _, _, port = served
        [answer] = await exchange(port, b"GET /boom HTTP/1.1\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 500 ")
        assert b"Connection: close" in answer


class TestClose:
    """Closing the server ends what its connections still wait for."""

    async def test_close_cancels_a_waiting_request_and_drops_the_connection(self) -> None:
        arrived = asyncio.Event()
        recorder = Recorder()
        recorder.hold = asyncio.Event()  # never set: the request waits until closed

        async def handler(request: Request) -> Response:
            arrived.set()
            return await recorder(request)

        server = HttpServer(handler, max_head_bytes=4096, max_body_bytes=1000)
        _, port = await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /wait HTTP/1.1\r\n\r\n")
        await asyncio.wait_for(arrived.wait(), 5)
        await asyncio.wait_for(server.close(), 5)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


class TestRuntimeApiRoutes:
    """The Runtime API's answers to requests no runtime interface client should send."""

    async def test_routes_outside_the_api(self) -> None:
        api = RuntimeApi()
        _, _, port = (await api.start()).partition(":")
        response = f"{RUNTIME}/invocation/x/response HTTP/1.1\r\n"
        answers = await exchange(
            int(port),
            f"GET {RUNTIME}/nope HTTP/1.1\r\n\r\n".encode()
            + f"GET {response}\r\n".encode()
            + f"POST {response}Content-Length: 0\r\n\r\n".encode(),
            responses=3,
        )
        assert [a.split(b" ")[1] for a in answers] == [b"404", b"405", b"400"]
        assert b"InvalidRequestID" in answers[2]  # no invocation is in progress
        await api.close()

    async def test_next_hands_over_an_event_then_410_once_closed(self) -> None:
        api = RuntimeApi()
        _, _, port = (await api.start()).partition(":")
        request = InvocationRequest("id-1", b'{"Records": []}', 1, "arn:fn", "Root=1")
        answer = api.invoke(request)
        reader, writer = await asyncio.open_connection("127.0.0.1", int(port))
        writer.write(f"GET {RUNTIME}/invocation/next HTTP/1.1\r\n\r\n".encode())
        event = await read_response(reader)
        assert b"Lambda-Runtime-Aws-Request-Id: id-1\r\n" in event
        assert event.endswith(b'{"Records": []}')
        writer.write(
            f"POST {RUNTIME}/invocation/id-1/response HTTP/1.1\r\n"
            "Content-Length: 2\r\n\r\n{}".encode()
        )
        assert (await read_response(reader)).startswith(b"HTTP/1.1 202 ")
        assert (await answer).payload == b"{}"  # type: ignore[union-attr]
        writer.write(f"GET {RUNTIME}/invocation/next HTTP/1.1\r\n\r\n".encode())
        await asyncio.sleep(0.05)  # the next waits for an event that will not come
        await api.close()
        writer.close()
        assert api.initialised.result() is None

    async def test_an_event_handed_to_a_next_that_is_cut_off_waits_for_the_next_one(
        self,
    ) -> None:
        api = RuntimeApi()
        await api.start()
        waiting = asyncio.get_running_loop().create_task(
            api._serve(Request("GET", f"{RUNTIME}/invocation/next", {}))
        )
        await asyncio.sleep(0)  # the next waits for an event
        api.invoke(InvocationRequest("id-2", b"{}", 1, "arn:fn", "Root=1"))
        waiting.cancel()  # its connection went before it could answer
        with pytest.raises(asyncio.CancelledError):
            await waiting
        again = await api._serve(Request("GET", f"{RUNTIME}/invocation/next", {}))
        assert again.headers["Lambda-Runtime-Aws-Request-Id"] == "id-2"
        await api.close()

    async def test_a_second_answer_and_a_late_init_error_are_refused_as_lambda_does(
        self,
    ) -> None:
        api = RuntimeApi()
        await api.start()
        answer = api.invoke(InvocationRequest("id-3", b"{}", 1, "arn:fn", "Root=1"))
        await api._serve(Request("GET", f"{RUNTIME}/invocation/next", {}))
        too_large = Request(
            "POST",
            f"{RUNTIME}/invocation/id-3/response",
            {},
            body_size=7_000_000,
            body_too_large=True,
        )
        refused = await api._serve(too_large)
        assert refused.status == 413
        assert json.loads(refused.body) == {
            "errorMessage": "Exceeded maximum allowed payload size (6291556 bytes).",
            "errorType": "RequestEntityTooLarge",
        }
        result = await answer
        assert result == FunctionError(
            "Function.ResponseSizeTooLarge",
            "Response payload size (7000000 bytes) exceeded maximum allowed payload size "
            "(6291556 bytes).",
        )
        error = Request("POST", f"{RUNTIME}/invocation/id-3/error", {}, body=b"{}")
        assert (await api._serve(error)).status == 403  # already answered
        unknown = Request("POST", f"{RUNTIME}/invocation/id-9/error", {}, body=b"{}")
        assert (await api._serve(unknown)).status == 400
        late = Request("POST", f"{RUNTIME}/init/error", {}, body=b"{}")
        assert (await api._serve(late)).status == 403
        await api.close()

    async def test_a_waiting_next_is_told_the_api_is_gone(self) -> None:
        api = RuntimeApi()
        _, _, port = (await api.start()).partition(":")
        reader, writer = await asyncio.open_connection("127.0.0.1", int(port))
        writer.write(f"GET {RUNTIME}/invocation/next HTTP/1.1\r\n\r\n".encode())
        await asyncio.sleep(0.05)
        await api.close()
        assert (await read_response(reader)).startswith(b"HTTP/1.1 410 ")
        writer.close()
