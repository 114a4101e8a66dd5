"""What became of a message: success, or a failure with its reason.

Reasons are few and fixed because they label metrics and decide what the settler does: a
non-retryable failure is released at once, the others wait out the retry backoff.
"""

from __future__ import annotations

from dataclasses import dataclass
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
        return cls(reason, type(shown).__name__, str(shown)[:500])


@dataclass(frozen=True, slots=True)
class Released:
    """Not handled, given back at once: behind a failed message of its FIFO group."""

    reason: str


HELD_FOR_ORDER = Released("fifo_order")

# ``None`` is success: the common case allocates nothing.
Outcome = Failure | Released | None
