"""The Lambda Runtime API, served on loopback for one execution environment.

An execution environment runs the function under a runtime interface client (AWS's own
``awslambdaric``, ``aws-lambda-ric``, or any custom runtime's ``bootstrap``). The client speaks
this API to whoever plays the Lambda service; here that is the worker:

- ``GET /2018-06-01/runtime/invocation/next`` waits for the next event and returns it with the
  headers Lambda sends (request id, deadline, function ARN, trace id, client context, Cognito
  identity; AWS's native client crashes when one is missing);
- ``POST /2018-06-01/runtime/invocation/{id}/response`` and ``.../{id}/error`` end an invocation;
- ``POST /2018-06-01/runtime/init/error`` says the function could not be initialised.

Each environment gets its own listener on its own port, as each Lambda environment has its own
API: what arrives on a port can only come from that environment, so nothing has to be matched
up. The first ``next`` marks the end of the environment's initialisation.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from aiohttp import web

from worker.lambda_.invocation import (
    FunctionError,
    FunctionResponse,
    InvocationRequest,
    Result,
)

RUNTIME = "/2018-06-01/runtime"
# Lambda's limit on a synchronous response: 6 MB. A larger response fails the invocation.
MAX_RESPONSE_BYTES = 6 * 1024 * 1024
_ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type"
_READ_LIMIT = MAX_RESPONSE_BYTES + 64 * 1024  # room for an error document about a large one
# awslambdaric sends the X-Ray cause of an error as a header of up to 1 MiB.
_HEADER_LIMIT = 1024 * 1024 + 1024


class RuntimeApi:
    """One environment's Runtime API: hands it one invocation at a time and takes its answer."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        # Resolved by the first ``next`` (None) or by an init error.
        self.initialised: asyncio.Future[FunctionError | None] = loop.create_future()
        self._events: asyncio.Queue[InvocationRequest] = asyncio.Queue(maxsize=1)
        self._current: tuple[str, asyncio.Future[Result]] | None = None
        self._closed: asyncio.Future[None] = loop.create_future()
        self._runner: web.AppRunner | None = None
        self.address = ""

    async def start(self) -> str:
        """Listen on a free loopback port; returns ``host:port`` for AWS_LAMBDA_RUNTIME_API."""
        app = web.Application(client_max_size=_READ_LIMIT)
        app.router.add_get(f"{RUNTIME}/invocation/next", self._next)
        app.router.add_post(f"{RUNTIME}/invocation/{{request_id}}/response", self._response)
        app.router.add_post(f"{RUNTIME}/invocation/{{request_id}}/error", self._error)
        app.router.add_post(f"{RUNTIME}/init/error", self._init_error)
        runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=0.1, max_field_size=_HEADER_LIMIT
        )
        await runner.setup()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        host, port = listener.getsockname()
        await web.SockSite(runner, listener).start()
        self._runner = runner
        self.address = f"{host}:{port}"
        return self.address

    def invoke(self, request: InvocationRequest) -> asyncio.Future[Result]:
        """Hand ``request`` to the environment's next ``next``; the future holds its answer."""
        answer: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._current = (request.request_id, answer)
        self._events.put_nowait(request)
        return answer

    async def close(self) -> None:
        """Stop listening; a ``next`` still waiting is cut off."""
        self._end_current(FunctionError("Runtime.ExitError", "the environment was stopped"))
        if not self._closed.done():
            self._closed.set_result(None)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _end_current(self, result: Result) -> None:
        if self._current is not None:
            _, answer = self._current
            self._current = None
            if not answer.done():
                answer.set_result(result)

    async def _next(self, _: web.Request) -> web.StreamResponse:
        if not self.initialised.done():
            self.initialised.set_result(None)
        if self._current is not None and self._events.empty():
            # Asking for the next event without answering this one ends it unanswered.
            self._end_current(
                FunctionError("Runtime.NoResponse", "the runtime asked for the next event first")
            )
        getter = asyncio.ensure_future(self._events.get())
        either: set[asyncio.Future[Any]] = {getter, self._closed}
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if not getter.done():  # closing: nothing more will come
            getter.cancel()
            return web.json_response({"errorType": "Runtime.Stopped"}, status=410)
        request = getter.result()
        return web.Response(body=request.event, headers=request.headers())

    async def _response(self, request: web.Request) -> web.StreamResponse:
        answer = self._answer_for(request)
        if answer is None:
            return _invalid_request_id()
        try:
            payload = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self._end_current(_too_large(request.content_length))
            return web.json_response(
                {"errorType": "Function.ResponseSizeTooLarge", "errorMessage": "too large"},
                status=413,
            )
        if len(payload) > MAX_RESPONSE_BYTES:
            self._end_current(_too_large(len(payload)))
            return web.json_response({"errorType": "Function.ResponseSizeTooLarge"}, status=413)
        self._end_current(FunctionResponse(payload))
        return _accepted()

    async def _error(self, request: web.Request) -> web.StreamResponse:
        answer = self._answer_for(request)
        if answer is None:
            return _invalid_request_id()
        body = await _read_tolerantly(request)
        self._end_current(
            FunctionError.from_document(body, request.headers.get(_ERROR_TYPE_HEADER))
        )
        return _accepted()

    async def _init_error(self, request: web.Request) -> web.StreamResponse:
        body = await _read_tolerantly(request)
        error = FunctionError.from_document(body, request.headers.get(_ERROR_TYPE_HEADER))
        if not self.initialised.done():
            self.initialised.set_result(error)
        return _accepted()

    def _answer_for(self, request: web.Request) -> asyncio.Future[Result] | None:
        if self._current is None or self._current[0] != request.match_info["request_id"]:
            return None
        return self._current[1]


async def _read_tolerantly(request: web.Request) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        return b""


def _too_large(size: int | None) -> FunctionError:
    shown = "more than" if size is None else f"{size:,}"
    return FunctionError(
        "Function.ResponseSizeTooLarge",
        f"Response payload size ({shown} bytes) exceeded maximum allowed payload size "
        f"({MAX_RESPONSE_BYTES:,} bytes).",
    )


def _accepted() -> web.Response:
    return web.json_response({"status": "OK"}, status=202)


def _invalid_request_id() -> web.Response:
    return web.json_response(
        {"errorType": "InvalidRequestID", "errorMessage": "no such invocation in progress"},
        status=400,
    )
