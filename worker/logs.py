"""Structured logging: JSON lines for log collectors, readable columns on a terminal.

Lines go to stderr so that stdout stays free for what commands print (provisioning results, the
demo's summary). Per-message context (message id, receive count, queue) is bound with
``structlog.contextvars`` where a message is taken up, so every line about it carries them.

Logging is never on the path that settles a message or stops the worker: a line that cannot be
written (a closed pipe, a full disk) is dropped and counted (:func:`lines_dropped`, the metric
``worker_log_lines_dropped_total``), never raised into the code that logged it. Tracebacks show
frames, never local variables, which hold message bodies and receipt handles.
"""

from __future__ import annotations

import logging
import sys
from contextlib import nullcontext
from typing import TextIO

import structlog

from worker.config import LogFormat, LogLevel

_LEVELS = {
    LogLevel.DEBUG: logging.DEBUG,
    LogLevel.INFO: logging.INFO,
    LogLevel.WARNING: logging.WARNING,
    LogLevel.ERROR: logging.ERROR,
}


class _Handler(logging.StreamHandler[TextIO]):
    """The standard library's side: a record that cannot be written is dropped and counted.

    The default ``handleError`` prints a traceback to stderr, the stream that just failed.
    """

    dropped = 0

    def handleError(self, record: logging.LogRecord) -> None:
        """Count the line as dropped; the caller carries on."""
        self.dropped += 1


class _LineWriter:
    """structlog's output: each line written whole, under the stdlib handler's lock.

    structlog and the standard library (botocore, handlers that use ``logging``) write to the same
    stream from the event loop and from handler threads. Sharing the handler's lock, and writing
    a line in a single call, keeps every line whole.
    """

    def __init__(self, handler: _Handler) -> None:
        self._handler = handler

    def msg(self, message: str) -> None:
        """Write one line, or count it as dropped if the stream refuses it."""
        try:
            with self._handler.lock or nullcontext():
                self._handler.stream.write(message + "\n")
                self._handler.stream.flush()
        except Exception:  # noqa: BLE001 -- EPIPE, ENOSPC, a closed stream: drop, never raise
            self._handler.dropped += 1

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def lines_dropped() -> int:
    """Log lines this process could not write since logging was configured."""
    return sum(getattr(handler, "dropped", 0) for handler in logging.getLogger().handlers)


_CHATTY_LIBRARIES = ("botocore", "aiobotocore", "aiohttp", "urllib3", "asyncio", "moto", "werkzeug")


def configure_logging(
    level: LogLevel = LogLevel.INFO,
    log_format: LogFormat = LogFormat.AUTO,
    stream: TextIO | None = None,
) -> None:
    """Configure structlog, and route the standard library's loggers (botocore) through it."""
    stream = stream or sys.stderr
    readable = log_format is LogFormat.CONSOLE or (log_format is LogFormat.AUTO and stream.isatty())
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        # A person at a terminal reads the time of day; collectors get the full UTC instant.
        structlog.processors.TimeStamper(fmt="%H:%M:%S" if readable else "iso", utc=not readable),
    ]
    renderer: structlog.types.Processor
    if readable:
        # Plain tracebacks whatever is installed: rich's would show every frame's locals.
        renderer = structlog.dev.ConsoleRenderer(
            colors=stream.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    else:
        # Frames, not locals: a handler's locals hold the message body it was reading.
        transformer = structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        shared.append(structlog.processors.ExceptionRenderer(transformer))
        renderer = structlog.processors.JSONRenderer()
    handler = _Handler(stream)
    writer = _LineWriter(handler)
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=lambda *_: writer,
        cache_logger_on_first_use=False,
    )
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # The handler's own loggers follow WORKER_LOG_LEVEL, with the message's context bound: a
    # handler's logging.info(...) is part of the story of its message. The libraries under the
    # worker are chatty below WARNING; their warnings are what an operator needs.
    root.setLevel(_LEVELS[level])
    quiet = max(_LEVELS[level], logging.WARNING)
    for library in _CHATTY_LIBRARIES:
        logging.getLogger(library).setLevel(quiet)
