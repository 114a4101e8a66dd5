"""Handler adapters: how the user's function is found and called, for each handler type.

An adapter turns a batch of leased messages into one call of the user's function and one outcome
per message. The ``message`` adapter calls the function once per message with a
:class:`~worker.handlers.message.Message`; the ``lambda`` adapter calls an unmodified Lambda
handler with
the SQS event and a context, and reads its ReportBatchItemFailures response.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from worker.config import HANDLER_FORMS, BatchItemFailures, EnvelopeMode, split_handler
from worker.consume.lease import Lease
from worker.consume.outcome import Failure, FailureReason, Outcome, bounded_stack
from worker.errors import ConfigurationError, InvalidLambdaResponseError, MalformedMessageError
from worker.handlers.calls import Call, Caller, is_generator_function
from worker.handlers.message import parse_message
from worker.lambda_.env import FunctionIdentity
from worker.lambda_.event import (
    LambdaContext,
    failed_message_ids,
    parse_response,
    sqs_event,
    sqs_record,
)
from worker.lambda_.invocation import (
    INIT_TIMEOUT_SECONDS,
    FunctionError,
    FunctionResponse,
    Result,
    StartHook,
)

Handler = Callable[..., Any]


@dataclass(slots=True)
class Invocation:
    """One call's outcome per message, and the call itself if it is still running (abandoned)."""

    outcomes: list[Outcome]
    running: asyncio.Future[Any] | None = field(default=None)


class Adapter(Protocol):
    """Calls the user's function for a batch of messages."""

    async def __call__(self, leases: Sequence[Lease], deadline: float) -> Invocation:
        """Run the handler on ``leases`` until ``deadline``; one outcome per lease, in order."""
        ...


def load_handler(spec: str, search_path: Path | None = None) -> Handler:
    """Import ``package.module:function`` (or Lambda's ``module.function``).

    Raises :class:`ConfigurationError` with one line.
    """

    def problem(text: str) -> ConfigurationError:
        return ConfigurationError([f"WORKER_HANDLER={spec}: {text}"])

    names = split_handler(spec)
    if names is None:
        raise problem(f"must be {HANDLER_FORMS}")
    module_name, attribute = names
    # Without WORKER_HANDLER_PATH, the current directory, as `python -m`, celery and uvicorn do:
    # the console script's own directory is on the path, not the one it was started from.
    directory = str(search_path if search_path is not None else Path.cwd())
    if directory not in sys.path:
        sys.path.insert(0, directory)
    target: Any = _imported(module_name, problem)
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            shadowed = _shadowed_by_the_worker(module_name, directory)
            raise problem(f"{module_name} has no attribute {attribute!r}{shadowed}") from None
    if not callable(target):
        raise problem(f"{attribute} is not callable")
    if is_generator_function(target):
        # Calling it would return a generator and run nothing: every message would "succeed".
        raise problem(f"{attribute} is a generator function (a yield in its body), not a handler")
    return target  # type: ignore[no-any-return]  # checked callable above


def _shadowed_by_the_worker(module_name: str, directory: str) -> str:
    """Why a module of the user's was not the one imported: its name is the worker's package."""
    top = module_name.split(".", 1)[0]
    if top != "worker" or not (Path(directory) / f"{top}.py").exists():
        return ""
    return (
        f" ({top} is the worker's own package, imported instead of {top}.py: rename the module;"
        " a lambda handler's module may keep the name, it runs in an environment of its own)"
    )


def _imported(module_name: str, problem: Callable[[str], ConfigurationError]) -> ModuleType:
    """The handler's module; whatever importing it raises becomes one line."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(f"{exc.name}.")):
            raise problem(f"no module named {exc.name!r}") from None
        raise problem(f"importing {module_name} failed: {_described(exc)}") from None
    except BaseException as exc:  # noqa: BLE001 -- user code, KeyboardInterrupt and all: one line
        raise problem(f"importing {module_name} failed: {_described(exc)}") from None


def _described(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _outcome_of(call: Call) -> Outcome:
    return None if call.error is None else Failure.from_exception(call.error)


class MessageAdapter:
    """Calls ``handler(message)`` once per message; returning is success, raising is failure."""

    def __init__(
        self, function: Handler, caller: Caller, *, queue_url: str, envelope: EnvelopeMode
    ) -> None:
        self._function = function
        self._caller = caller
        self._queue_url = queue_url
        self._envelope = envelope

    async def __call__(self, leases: Sequence[Lease], deadline: float) -> Invocation:
        """Read the message, then call the handler with it."""
        (lease,) = leases
        try:
            message = parse_message(lease.raw, queue_url=self._queue_url, envelope=self._envelope)
        except MalformedMessageError as exc:
            return Invocation([Failure.from_exception(exc)])
        call = await self._caller.call(self._function, (message,), deadline=deadline)
        return Invocation([_outcome_of(call)], call.running)


_REPORTED_FAILURE = Failure(
    FailureReason.HANDLER_ERROR, "BatchItemFailure", "listed in batchItemFailures"
)
# Error types that say how to treat the batch, whatever runtime reported them.
_REASONS_BY_ERROR_TYPE = {
    "Sandbox.Timedout": FailureReason.TIMEOUT,
    "NonRetryableError": FailureReason.NON_RETRYABLE,
}


class LambdaInvoker(Protocol):
    """Runs one invocation of a Lambda function, as the Lambda service would."""

    async def invoke(
        self, event: bytes, deadline: float, started: StartHook | None = None
    ) -> Result:
        """Invoke the function with the serialised ``event``.

        ``deadline`` (monotonic) is where the function's timeout ends if the invocation starts
        now; a cold start moves it later by the init's time, as Lambda does, and tells
        ``started`` the new one.
        """
        ...


class LambdaAdapter:
    """Hands the SQS event Lambda would build to the function; reads its batch response.

    The function runs in execution environments (:mod:`worker.lambda_.environments`); the
    adapter only builds the event and reads what came back by the event source mapping's rules.
    """

    def __init__(
        self,
        invoker: LambdaInvoker,
        *,
        queue_arn: str,
        region: str,
        report_batch_item_failures: BatchItemFailures,
    ) -> None:
        self._invoker = invoker
        self._queue_arn = queue_arn
        self._region = region
        self._report_failures = report_batch_item_failures

    async def __call__(self, leases: Sequence[Lease], deadline: float) -> Invocation:
        """Build the event, invoke the function, read its batch response."""
        event = sqs_event(
            sqs_record(lease.raw, queue_arn=self._queue_arn, region=self._region)
            for lease in leases
        )
        latest = min(lease.hard_limit for lease in leases)

        def started(invocation_deadline: float) -> float:
            # The function's timeout counts from the end of a cold start's init, not from
            # here: keep the messages for as long (never past SQS's 12 hours).
            kept = min(invocation_deadline, latest)
            for lease in leases:
                lease.deadline = kept
            return kept

        # Until the environment is ready the leases are kept through a cold start's init too.
        for lease in leases:
            lease.deadline = min(deadline + INIT_TIMEOUT_SECONDS, latest)
        result = await self._invoker.invoke(json.dumps(event).encode("utf-8"), deadline, started)
        if isinstance(result, FunctionError):
            reason = _REASONS_BY_ERROR_TYPE.get(result.error_type, FailureReason.HANDLER_ERROR)
            failure = Failure(
                reason,
                result.error_type,
                result.error_message[:500],
                bounded_stack(result.stack_trace),
            )
            return Invocation([failure] * len(leases))
        try:
            failed = failed_message_ids(
                parse_response(result.payload),
                [lease.message_id for lease in leases],
                report_batch_item_failures=self._report_failures,
            )
        except InvalidLambdaResponseError as exc:
            return Invocation([Failure.from_exception(exc)] * len(leases))
        return Invocation(
            [_REPORTED_FAILURE if lease.message_id in failed else None for lease in leases]
        )


class InProcessFunction:
    """A Lambda handler given as a Python function, called in the worker's own process.

    For embedding and tests (``serve(handler=...)``) only: there is no process to isolate the
    function, so it is called through the worker's :class:`~worker.handlers.calls.Caller` like a
    message handler, concurrently with itself. Its response is serialised as Lambda's runtime
    serialises it, so the same responses fail here as there. ``WORKER_HANDLER`` always runs in
    execution environments.
    """

    def __init__(self, function: Handler, caller: Caller, identity: FunctionIdentity) -> None:
        self._function = function
        self._caller = caller
        self._identity = identity
        self._log_stream = identity.log_stream_name

    async def invoke(
        self, event: bytes, deadline: float, started: StartHook | None = None
    ) -> Result:
        """Call the function with a fresh event and context; serialise what it returns."""
        if started is not None:  # no environment, no init: the invocation starts now
            deadline = started(deadline)
        identity = self._identity
        context = LambdaContext(
            function_name=identity.function_name,
            invoked_function_arn=identity.function_arn,
            memory_limit_in_mb=identity.memory_limit_in_mb,
            deadline=deadline,
            function_version=identity.function_version,
            log_group_name=identity.log_group_name,
            log_stream_name=self._log_stream,
        )
        call = await self._caller.call(
            self._function, (json.loads(event), context), deadline=deadline
        )
        if call.running is not None:
            # An abandoned thread keeps running; so would a Lambda environment's, until killed.
            await asyncio.wait({call.running})
        if call.error is not None:
            failure = Failure.from_exception(call.error)
            error_type = (
                "Sandbox.Timedout"
                if failure.reason is FailureReason.TIMEOUT
                else failure.error_type
            )
            return FunctionError(error_type, failure.error_message, list(failure.stack))
        try:
            return FunctionResponse(json.dumps(call.value).encode("utf-8"))
        except (TypeError, ValueError) as exc:
            return FunctionError("Runtime.MarshalError", f"Unable to marshal response: {exc}")
