"""One invocation of a Lambda function: what it is handed, and what can come back.

Kept apart from the Runtime API's server so that the handler adapters, which only read results,
do not import an HTTP server.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Lambda's limit on an on-demand environment's init phase. Init is not part of the function's
# timeout: an invocation's timeout starts when its environment is ready.
INIT_TIMEOUT_SECONDS = 10.0

# Told the deadline (monotonic) an invocation has once its environment is ready (later than the
# one asked for by a cold start's init); returns the deadline to keep (the caller's may be
# earlier: SQS's 12 hours).
StartHook = Callable[[float], float]


@dataclass(frozen=True, slots=True)
class InvocationRequest:
    """What ``next`` hands the runtime: the event and the headers that describe it."""

    request_id: str
    event: bytes
    deadline_ms: int  # epoch milliseconds, as Lambda-Runtime-Deadline-Ms
    function_arn: str
    trace_id: str

    def headers(self) -> dict[str, str]:
        """Every header Lambda sends with an event; empty where Lambda would send nothing."""
        return {
            "Lambda-Runtime-Aws-Request-Id": self.request_id,
            "Lambda-Runtime-Deadline-Ms": str(self.deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": self.function_arn,
            "Lambda-Runtime-Trace-Id": self.trace_id,
            "Lambda-Runtime-Client-Context": "",
            "Lambda-Runtime-Cognito-Identity": "",
            "Content-Type": "application/json",
        }


@dataclass(frozen=True, slots=True)
class FunctionResponse:
    """The function returned: its serialised response."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class FunctionError:
    """The function, its runtime or its environment failed: Lambda's error document."""

    error_type: str
    error_message: str
    stack_trace: list[str] = field(default_factory=list)

    @classmethod
    def from_document(cls, body: bytes, header_type: str | None) -> FunctionError:
        """Read the error document a runtime posts; tolerate any shape, as Lambda does.

        A body that is not a JSON object (a custom runtime posting plain text) is kept as the
        message, so that what the runtime said reaches the logs.
        """
        try:
            document: Any = json.loads(body) if body else {}
        except ValueError:
            document = None
        if not isinstance(document, dict):
            text = body.decode("utf-8", errors="replace").strip()
            return cls(header_type or "Runtime.Unknown", text[:_MAX_PLAIN_MESSAGE])
        error_type = document.get("errorType") or header_type or "Runtime.Unknown"
        message = document.get("errorMessage")
        trace = document.get("stackTrace")
        return cls(
            str(error_type),
            "" if message is None else str(message),
            [str(line) for line in trace] if isinstance(trace, list) else [],
        )


_MAX_PLAIN_MESSAGE = 4096  # of a plain-text error body, kept as the message

Result = FunctionResponse | FunctionError
