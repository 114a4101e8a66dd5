"""An execution environment's output, as Lambda gives it: each line with its request id.

On Lambda, whatever a function writes lands in CloudWatch beside the invocation's request id;
operators search by it. An environment here handles one invocation at a time, so every line it
writes while an invocation runs belongs to that invocation. The worker forwards each line to its
own standard output:

- ``text`` (Lambda's default): a line that already names the request id (the runtime's own
  logging format does) is forwarded as it is; any other gets Lambda's ``timestamp<TAB>request
  id<TAB>`` prefix;
- ``json`` (``AWS_LAMBDA_LOG_FORMAT=JSON``): a line that is a JSON object gains ``requestId``
  if it lacks one; any other line becomes ``{"timestamp", "level", "requestId", "message"}``.

Lines written outside an invocation (while the function initialises) carry no request id, as on
Lambda. A line that cannot be written (a closed or full output) is dropped and counted: the
function's logs are never on the path that settles a message.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from enum import StrEnum
from typing import BinaryIO


class OutputFormat(StrEnum):
    """``AWS_LAMBDA_LOG_FORMAT``: Lambda's two log formats."""

    TEXT = "text"
    JSON = "json"

    @classmethod
    def from_environment(cls, value: str | None) -> OutputFormat:
        """Read the variable as Lambda does: ``JSON`` (any case) or text."""
        return cls.JSON if (value or "").strip().lower() == "json" else cls.TEXT


def _timestamp() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


class LineForwarder:
    """Writes environments' lines to one output, each tagged with its invocation's request id."""

    def __init__(
        self,
        output_format: OutputFormat,
        stream: BinaryIO | None = None,
        on_drop: Callable[[], None] | None = None,
    ) -> None:
        self.format = output_format
        self._stream = stream
        self._on_drop = on_drop
        self.dropped = 0

    def line(self, raw: bytes, request_id: str | None) -> None:
        """Forward one line (without its newline)."""
        text = raw.rstrip(b"\r").decode("utf-8", errors="replace")
        out = self.render(text, request_id)
        try:
            stream = self._stream or sys.stdout.buffer
            stream.write(out.encode("utf-8") + b"\n")
            stream.flush()
        except (OSError, ValueError, AttributeError):
            self.dropped += 1
            if self._on_drop is not None:
                self._on_drop()

    def render(self, text: str, request_id: str | None) -> str:
        """The line as it reaches the worker's output."""
        if self.format is OutputFormat.JSON:
            return self._json(text, request_id)
        # The runtimes' own log lines carry the request id between tabs already
        # ("[INFO]\t<time>\t<request id>\t..."); a line that merely mentions it does not.
        if request_id is None or f"\t{request_id}\t" in text:
            return text
        return f"{_timestamp()}\t{request_id}\t{text}"

    @staticmethod
    def _json(text: str, request_id: str | None) -> str:
        if text.startswith("{"):
            try:
                document = json.loads(text)
            except ValueError:
                document = None
            if isinstance(document, dict):
                if request_id is None or "requestId" in document:
                    return text
                document["requestId"] = request_id
                return json.dumps(document, ensure_ascii=False)
        wrapped: dict[str, str] = {"timestamp": _timestamp(), "level": "INFO"}
        if request_id is not None:
            wrapped["requestId"] = request_id
        wrapped["message"] = text
        return json.dumps(wrapped, ensure_ascii=False)
