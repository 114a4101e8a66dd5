"""The worker's exceptions, under one root.

Handlers raise :class:`NonRetryableError` to send a message towards the DLQ without waiting out
backoffs. Everything else here is raised by the worker itself; a retry is not an error and is
never represented by an exception.
"""

from __future__ import annotations


class WorkerError(Exception):
    """Root of every exception the worker defines."""


class NonRetryableError(WorkerError):
    """Raised by a handler when retrying cannot help (a validation error, a missing record).

    The message is released at once (visibility 0) instead of being delayed by the retry backoff,
    so it reaches the DLQ after its remaining receives instead of after the sum of the backoffs.
    The worker cannot delete it for you: the DLQ is where operators look for what failed.
    """


class MalformedMessageError(WorkerError):
    """The message cannot be read: a broken SNS envelope, undecodable attributes, or a body that is
    not JSON where JSON was asked for.

    Treated like any other failure: the message is left on the queue so that SQS retries it and
    finally moves it to the DLQ, where it can be inspected. It is never deleted.
    """


class HandlerTimeoutError(WorkerError):
    """The handler ran past ``WORKER_MAX_PROCESSING_SECONDS``."""


class HandlerExitError(WorkerError):
    """The handler raised ``SystemExit``, ``KeyboardInterrupt`` or another ``BaseException``.

    Those would otherwise unwind the event loop and take every other message in flight with them;
    wrapped, they fail only the message that caused them.
    """


class GeneratorHandlerError(WorkerError):
    """The handler returned a generator: a stray ``yield`` made it one, and none of its code ran.

    Taken as a success, the message would be deleted without anything having handled it; it
    fails instead, and is retried, then moved to the DLQ.
    """


class InvalidLambdaResponseError(WorkerError):
    """A Lambda handler returned a response that ReportBatchItemFailures cannot interpret.

    Lambda fails the whole batch in that case, and so does the worker.
    """


class ConfigurationError(WorkerError):
    """The configuration cannot run. Each entry of :attr:`problems` is one line for the operator."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class StartupError(WorkerError):
    """The worker cannot start against this queue (missing queue, no DLQ, unreachable endpoint)."""
