"""Structured logging: JSON lines for log collectors, readable columns on a terminal.

Lines go to stderr so that stdout stays free for what commands print (provisioning results, the
demo's summary). Per-message context (message id, receive count, queue) is bound with
``structlog.contextvars`` where a message is taken up, so every line about it carries them.
Tracebacks show frames, never local variables, which hold message bodies and receipt handles.
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


class _LineWriter:
    """structlog's output: each line written whole, under the stdlib handler's lock.

    structlog and the standard library (botocore, handlers that use ``logging``) write to the same
    stream from the event loop and from handler threads. Sharing the handler's lock, and writing
    a line in a single call, keeps every line whole.
    """

    def __init__(self, handler: logging.StreamHandler[TextIO]) -> None:
        self._handler = handler

    def msg(self, message: str) -> None:
        """Write one line."""
        with self._handler.lock or nullcontext():
            self._handler.stream.write(message + "\n")
            self._handler.stream.flush()

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


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
    handler = logging.StreamHandler(stream)
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
    # botocore and aiohttp are chatty at INFO; their warnings are what an operator needs.
    root.setLevel(max(_LEVELS[level], logging.WARNING))
