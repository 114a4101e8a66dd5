"""What became of a message: success, or a failure with its reason.

Reasons are few and fixed because they label metrics and decide what the settler does: a
non-retryable failure is released at once, the others wait out the retry backoff.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from enum import StrEnum

from worker.errors import (
    HandlerExitError,
    HandlerTimeoutError,
    MalformedMessageError,
    NonRetryableError,
)


class FailureReason(StrEnum):
    """Why a message failed."""

    HANDLER_ERROR = "handler_error"
    TIMEOUT = "timeout"
    NON_RETRYABLE = "non_retryable"
    MALFORMED = "malformed"


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed message: why, and the error that said so."""

    reason: FailureReason
    error_type: str
    error_message: str
    # Where the handler failed: frames (file, line, function, code), never locals, at most
    # STACK_FRAMES of them, innermost last. Logged once per failed call.
    stack: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def from_exception(cls, exc: BaseException) -> Failure:
        """Classify an exception raised by or around a handler."""
        if isinstance(exc, NonRetryableError):
            reason = FailureReason.NON_RETRYABLE
        elif isinstance(exc, MalformedMessageError):
            reason = FailureReason.MALFORMED
        elif isinstance(exc, HandlerTimeoutError):
            reason = FailureReason.TIMEOUT
        else:
            reason = FailureReason.HANDLER_ERROR
        # A wrapped SystemExit or KeyboardInterrupt is reported as what the handler raised.
        shown = exc.__cause__ if isinstance(exc, HandlerExitError) and exc.__cause__ else exc
        stack = _frames(shown) if reason in _WITH_STACK else ()
        return cls(reason, type(shown).__name__, str(shown)[:500], stack)


STACK_FRAMES = 20
_FRAME_CHARACTERS = 300
# A timeout's stack is where it was interrupted, and a malformed message's the worker's parser:
# neither says where the handler went wrong.
_WITH_STACK = frozenset({FailureReason.HANDLER_ERROR, FailureReason.NON_RETRYABLE})


def _frames(exc: BaseException) -> tuple[str, ...]:
    """The traceback's last frames, one line each, bounded: never locals (they hold bodies)."""
    summary = traceback.extract_tb(exc.__traceback__)[-STACK_FRAMES:]
    return tuple(
        f"{frame.filename}:{frame.lineno} in {frame.name}: {frame.line or ''}"[:_FRAME_CHARACTERS]
        for frame in summary
    )


def bounded_stack(lines: list[str]) -> tuple[str, ...]:
    """A stack reported as text lines (by a Lambda runtime), bounded as :func:`_frames` is."""
    return tuple(" ".join(line.split())[:_FRAME_CHARACTERS] for line in lines[-STACK_FRAMES:])


@dataclass(frozen=True, slots=True)
class Released:
    """Not handled, given back at once: behind a failed message of its FIFO group."""

    reason: str


HELD_FOR_ORDER = Released("fifo_order")

# ``None`` is success: the common case allocates nothing.
Outcome = Failure | Released | None
