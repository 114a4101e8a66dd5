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
up. The first ``next`` marks the end of the environment's initialisation. The HTTP is
:mod:`worker.lambda_.http1`'s: two exchanges per invocation, framework-free.
"""

from __future__ import annotations

import asyncio
import json

from worker.lambda_.http1 import HttpServer, Request, Response
from worker.lambda_.invocation import (
    FunctionError,
    FunctionResponse,
    InvocationRequest,
    Result,
)

RUNTIME = "/2018-06-01/runtime"
# Lambda's limit on a synchronous response, as its Runtime API states it: "Exceeded maximum
# allowed payload size (6291556 bytes)" (6 MiB and 100 bytes). A larger one fails the invocation.
MAX_RESPONSE_BYTES = 6_291_556
_ERROR_TYPE_HEADER = "lambda-runtime-function-error-type"
_READ_LIMIT = MAX_RESPONSE_BYTES + 64 * 1024  # room for an error document about a large one
# awslambdaric sends the X-Ray cause of an error as a header of up to 1 MiB.
_HEADER_LIMIT = 1024 * 1024 + 1024
_NEXT = f"{RUNTIME}/invocation/next"
_INVOCATION = f"{RUNTIME}/invocation/"
_INIT_ERROR = f"{RUNTIME}/init/error"


class RuntimeApi:
    """One environment's Runtime API: hands it one invocation at a time and takes its answer."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        # Resolved by the first ``next`` (None) or by an init error.
        self.initialised: asyncio.Future[FunctionError | None] = loop.create_future()
        self._pending: InvocationRequest | None = None  # handed over, not yet fetched
        self._waiting: asyncio.Future[InvocationRequest | None] | None = None  # a ``next``
        self._current: tuple[str, asyncio.Future[Result]] | None = None
        self._ended = ""  # the last invocation answered: a second answer to it is refused
        self.fetched = ""  # the last invocation a ``next`` handed over
        self._closed = False
        self._server = HttpServer(
            self._serve, max_head_bytes=_HEADER_LIMIT, max_body_bytes=_READ_LIMIT
        )
        self.address = ""

    async def start(self) -> str:
        """Listen on a free loopback port; returns ``host:port`` for AWS_LAMBDA_RUNTIME_API."""
        host, port = await self._server.start("127.0.0.1")
        self.address = f"{host}:{port}"
        return self.address

    def invoke(self, request: InvocationRequest) -> asyncio.Future[Result]:
        """Hand ``request`` to the environment's next ``next``; the future holds its answer."""
        answer: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._current = (request.request_id, answer)
        waiting, self._waiting = self._waiting, None
        if waiting is not None and not waiting.done():
            waiting.set_result(request)
        else:
            self._pending = request
        return answer

    async def close(self) -> None:
        """Stop listening; a ``next`` still waiting is cut off."""
        self._end_current(FunctionError("Runtime.ExitError", "the environment was stopped"))
        self._closed = True
        if self._waiting is not None and not self._waiting.done():
            self._waiting.set_result(None)
        await self._server.close()

    def _end_current(self, result: Result) -> None:
        if self._current is not None:
            self._ended, answer = self._current
            self._current = None
            if not answer.done():
                answer.set_result(result)

    async def _serve(self, request: Request) -> Response:
        path, method = request.path, request.method
        if path == _NEXT:
            return await self._next() if method == "GET" else _NOT_ALLOWED
        if path == _INIT_ERROR:
            return self._init_error(request) if method == "POST" else _NOT_ALLOWED
        if path.startswith(_INVOCATION):
            request_id, _, action = path[len(_INVOCATION) :].partition("/")
            if action in ("response", "error"):
                if method != "POST":
                    return _NOT_ALLOWED
                if action == "response":
                    return self._response(request_id, request)
                return self._error(request_id, request)
        return _json(404, {"errorType": "NotFound"})

    async def _next(self) -> Response:
        if not self.initialised.done():
            self.initialised.set_result(None)
        if self._current is not None and self._pending is None:
            # Asking for the next event without answering this one ends it unanswered.
            self._end_current(
                FunctionError("Runtime.NoResponse", "the runtime asked for the next event first")
            )
        event, self._pending = self._pending, None
        if event is None and not self._closed:
            waiting = self._waiting = asyncio.get_running_loop().create_future()
            try:
                event = await waiting
            except asyncio.CancelledError:
                # The connection went between the event's handing over and this answer: keep
                # the event for the runtime's next ``next``.
                if waiting.done() and not waiting.cancelled() and waiting.result() is not None:
                    self._pending = waiting.result()
                raise
        if event is None:  # closing: nothing more will come
            return _json(410, {"errorType": "Runtime.Stopped"})
        self.fetched = event.request_id
        return Response(200, event.event, event.headers())

    def _response(self, request_id: str, request: Request) -> Response:
        if not self._is_current(request_id):
            return self._not_current(request_id)
        if request.body_too_large or len(request.body) > MAX_RESPONSE_BYTES:
            self._end_current(_too_large(request.body_size))
            return _json(
                413,
                {
                    "errorMessage": (
                        f"Exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes)."
                    ),
                    "errorType": "RequestEntityTooLarge",
                },
            )
        self._end_current(FunctionResponse(request.body))
        return _ACCEPTED

    def _error(self, request_id: str, request: Request) -> Response:
        if not self._is_current(request_id):
            return self._not_current(request_id)
        self._end_current(
            FunctionError.from_document(request.body, request.headers.get(_ERROR_TYPE_HEADER))
        )
        return _ACCEPTED

    def _init_error(self, request: Request) -> Response:
        if self.initialised.done():  # after the first ``next``: initialisation is over
            return _invalid_state("the runtime is already initialised")
        self.initialised.set_result(
            FunctionError.from_document(request.body, request.headers.get(_ERROR_TYPE_HEADER))
        )
        return _ACCEPTED

    def _is_current(self, request_id: str) -> bool:
        return self._current is not None and self._current[0] == request_id

    def _not_current(self, request_id: str) -> Response:
        # Lambda refuses a second answer to an invocation (an error posted after a response
        # refused as too large) as a state transition, and an id it never handed out as invalid.
        if request_id and request_id == self._ended:
            return _invalid_state(f"invocation {request_id} was already answered")
        return _invalid_request_id()


def _too_large(size: int) -> FunctionError:
    return FunctionError(
        "Function.ResponseSizeTooLarge",
        f"Response payload size ({size} bytes) exceeded maximum allowed payload size "
        f"({MAX_RESPONSE_BYTES} bytes).",
    )


def _invalid_state(message: str) -> Response:
    return _json(403, {"errorType": "InvalidStateTransition", "errorMessage": message})


def _json(status: int, document: dict[str, str]) -> Response:
    return Response(status, json.dumps(document).encode(), _JSON_TYPE)


def _invalid_request_id() -> Response:
    return _json(
        400, {"errorType": "InvalidRequestID", "errorMessage": "no such invocation in progress"}
    )


_JSON_TYPE = {"Content-Type": "application/json"}
_ACCEPTED = _json(202, {"status": "OK"})
_NOT_ALLOWED = _json(405, {"errorType": "MethodNotAllowed"})
