"""``worker invoke``: your handler on one event, with no queue, as ``sam local invoke -e`` does.

Trying a handler should not take a topic, a queue and a DLQ. A ``message`` handler is called in
this process as the worker calls it (a plain function in a thread, under
``WORKER_MAX_PROCESSING_SECONDS``), with the :class:`~worker.Message` the worker would build. A
``lambda`` handler runs the way the worker runs it, in one execution environment
(:mod:`worker.lambda_.environments`): the same runtime client, event, context, variables and
error documents, so that a function that works here works under ``worker run``.

The response, or the error as Lambda's error document, is printed on stdout; what the handler
itself prints, and the worker's log lines, go to stderr, so that stdout can be piped.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from prometheus_client import CollectorRegistry

from worker import testing
from worker.config import HandlerType, Settings
from worker.consume.outcome import Failure
from worker.consume.sqs import region_of
from worker.errors import ConfigurationError, HandlerExitError, StartupError
from worker.handlers import calls as invoke
from worker.handlers.calls import Caller
from worker.lambda_.env import FunctionIdentity, container_memory_mb
from worker.lambda_.invocation import (
    INIT_TIMEOUT_SECONDS,
    FunctionError,
    FunctionResponse,
    Result,
)
from worker.ops.cli_help import command, option

_CALL_MACHINERY = (
    invoke.__file__,
    str(Path(concurrent.futures.__file__).parent),
    str(Path(asyncio.__file__).parent),
)
EXAMPLES = [
    """worker invoke --handler myhandlers:handle --body '{"order_id": "o-1", "amount": 5}'""",
    "worker invoke --handler app.handler --handler-type lambda --file events/sqs.json",
    "worker invoke --handler myhandlers:handle --file order.json --json | jq .status",
]


def add_command(commands: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``worker invoke`` to the top-level subcommands."""
    parser = command(
        commands,
        "invoke",
        summary="run the handler on one event and print what it returns",
        description="Run the handler once, with no queue: a message handler on one message, a "
        "Lambda handler on one SQS event in an execution environment, as worker run runs "
        "them. Prints the response, or the error as Lambda's error document; exits 0 on "
        "success and 1 on failure. The handler's own output goes to stderr.",
        examples=EXAMPLES,
    )
    common(parser)
    given = parser.add_mutually_exclusive_group(required=True)
    given.add_argument(
        "--body",
        metavar="TEXT",
        help=option("the message body, as published; a Lambda handler gets an SQS event of it"),
    )
    given.add_argument(
        "--file",
        metavar="PATH",
        help=option(
            "a file of the body (a message handler) or of the SQS event (a Lambda handler, as "
            "sam local invoke -e takes it); '-' reads stdin"
        ),
    )
    parser.add_argument(
        "--sns",
        action="store_true",
        help=option("wrap the body in the SNS envelope a subscribed queue delivers", False),
    )
    parser.add_argument(
        "--json", action="store_true", help=option("print one JSON document with status", False)
    )


@dataclass
class Invoked:
    """What one invocation gave: a response, or Lambda's error document."""

    response: Any = None
    error: dict[str, Any] | None = None
    duration_ms: float = 0.0
    # A plain function past its budget is still running in its thread: only an exit ends it.
    abandoned: bool = False
    handler_type: HandlerType = HandlerType.MESSAGE

    @property
    def succeeded(self) -> bool:
        """Whether the handler returned."""
        return self.error is None


def _read(args: argparse.Namespace) -> str:
    if args.body is not None:
        return str(args.body)
    if args.file == "-":
        return sys.stdin.read()
    try:
        return Path(args.file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigurationError([f"--file {args.file}: {reason}"]) from None


def _error_document(exc: BaseException) -> dict[str, Any]:
    """Lambda's error document, its stack trace starting at the handler: the frames of the
    worker's call machinery (a thread, a task) say nothing about the handler's bug."""
    failure = Failure.from_exception(exc)
    shown = exc.__cause__ if isinstance(exc, HandlerExitError) and exc.__cause__ else exc
    frames = traceback.extract_tb(shown.__traceback__)
    while len(frames) > 1 and frames[0].filename.startswith(_CALL_MACHINERY):
        frames.pop(0)
    return {
        "errorType": failure.error_type,
        "errorMessage": failure.error_message,
        "stackTrace": traceback.format_list(frames),
    }


async def invoke_message_handler(settings: Settings, body: str, *, sns: bool) -> Invoked:
    """Call the ``message`` handler on ``body`` as the worker would, in this process."""
    from worker.consume.worker import message_handler  # noqa: PLC0415 -- keeps `worker --help` light

    function = message_handler(settings)
    message = testing.message(body, sns=sns, queue_url=settings.queue_url or testing.QUEUE_URL)
    caller = Caller(max_threads=1)
    started = time.monotonic()
    try:
        with contextlib.redirect_stdout(sys.stderr):
            call = await caller.call(
                function, (message,), deadline=started + settings.max_processing_seconds
            )
    finally:
        caller.close()
    invoked = Invoked(duration_ms=round((time.monotonic() - started) * 1000, 2))
    if call.error is not None:
        invoked.error = _error_document(call.error)
        invoked.abandoned = call.running is not None
    else:
        invoked.response = call.value
    return invoked


def _identity(settings: Settings) -> FunctionIdentity:
    queue = (settings.queue or "").rstrip("/").rsplit("/", 1)[-1].removesuffix(".fifo")
    return FunctionIdentity(
        function_name=settings.function_name or queue or "local-function",
        memory_limit_in_mb=settings.memory_limit_in_mb or container_memory_mb(),
        region=region_of(settings) or testing.REGION,
        account=testing.ACCOUNT,
    )


def _event(settings: Settings, text: str, args: argparse.Namespace) -> bytes:
    """The event the function gets: the file as it is, or an SQS event of ``--body``."""
    if args.body is None:
        try:
            json.loads(text)
        except ValueError as exc:
            raise ConfigurationError([f"--file {args.file}: not a JSON event ({exc})"]) from None
        return text.encode("utf-8")
    identity = _identity(settings)
    queue_arn = f"arn:aws:sqs:{identity.region}:{identity.account}:{identity.function_name}"
    return json.dumps(testing.sqs_event(text, sns=args.sns, queue_arn=queue_arn)).encode()


async def invoke_lambda_handler(settings: Settings, event: bytes) -> Invoked:
    """Invoke the function once in an execution environment, as ``worker run`` does."""
    from worker.lambda_.environments import (  # noqa: PLC0415 -- lambda handlers only
        EnvironmentMetrics,
        EnvironmentPool,
        environment_spec,
    )
    from worker.lambda_.logs import LineForwarder  # noqa: PLC0415

    if settings.handler_path is not None and not settings.handler_path.is_dir():
        raise ConfigurationError([f"WORKER_HANDLER_PATH={settings.handler_path}: not a directory"])
    identity = _identity(settings)
    spec = environment_spec(settings, identity)
    pool = EnvironmentPool(
        spec,
        size=1,
        metrics=EnvironmentMetrics(CollectorRegistry(), queue=identity.function_name),
        forwarder=LineForwarder(spec.output, sys.stderr.buffer),
    )
    started = time.monotonic()
    try:
        result: Result | None = await pool.warm_up(INIT_TIMEOUT_SECONDS)
        if result is None:
            result = await pool.invoke(event, time.monotonic() + settings.max_processing_seconds)
    except OSError as exc:  # the environment's process could not be started at all
        raise StartupError(f"cannot start the function's environment: {exc}") from None
    finally:
        await pool.close()
    invoked = Invoked(
        duration_ms=round((time.monotonic() - started) * 1000, 2), handler_type=HandlerType.LAMBDA
    )
    if isinstance(result, FunctionError):
        invoked.error = {
            "errorType": result.error_type,
            "errorMessage": result.error_message,
            "stackTrace": result.stack_trace,
        }
    elif isinstance(result, FunctionResponse):
        try:
            invoked.response = json.loads(result.payload)
        except ValueError:
            invoked.response = result.payload.decode("utf-8", "replace")
    return invoked


def _jsonable(value: Any) -> Any:
    """What a handler returned, shown even when JSON cannot hold it: as its ``repr``.

    NaN and infinities count as what JSON cannot hold: Python writes them as ``NaN`` and
    ``Infinity``, which no strict JSON reader (``jq``, JavaScript's ``JSON.parse``) accepts.
    """
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return repr(value)
    return value


def report(invoked: Invoked, out: TextIO, *, as_json: bool) -> None:
    """Print the response or the error document; with ``as_json``, one document with both."""
    if as_json:
        document: dict[str, Any] = {
            "status": "success" if invoked.succeeded else "error",
            "handler_type": invoked.handler_type.value,
            "duration_ms": invoked.duration_ms,
        }
        if invoked.succeeded:
            document["response"] = _jsonable(invoked.response)
        else:
            document["error"] = _jsonable(invoked.error)
        out.write(json.dumps(document, indent=2, allow_nan=False) + "\n")
        return
    shown = invoked.response if invoked.succeeded else invoked.error
    out.write(json.dumps(_jsonable(shown), indent=2, allow_nan=False) + "\n")


async def run(settings: Settings, args: argparse.Namespace) -> Invoked:
    """Run ``worker invoke``; the caller prints and exits."""
    if settings.handler is None:
        raise ConfigurationError(["WORKER_HANDLER (--handler): required"])
    text = _read(args)
    if settings.handler_type is HandlerType.LAMBDA:
        return await invoke_lambda_handler(settings, _event(settings, text, args))
    return await invoke_message_handler(settings, text, sns=args.sns)
