"""What an environment's output and error posts become: pure logic, no process.

The process-level behaviour (lines reaching the worker's stdout with their request id) is in
``test_lambda_environments``; these pin down the rules it relies on.
"""

from __future__ import annotations

import json

import pytest

from worker.lambda_.invocation import FunctionError
from worker.lambda_.logs import LineForwarder, OutputFormat

REQUEST = "5c5a0f86-6c3a-4e5b-9d0c-1b0f6c0e2a11"


class TestTextLines:
    """Lambda's text format: ``timestamp<TAB>request id<TAB>line``, once."""

    def test_a_plain_line_is_tagged(self) -> None:
        rendered = LineForwarder(OutputFormat.TEXT).render("hello", REQUEST)
        assert rendered.split("\t")[1:] == [REQUEST, "hello"]

    def test_a_line_that_mentions_the_request_id_is_tagged_too(self) -> None:
        rendered = LineForwarder(OutputFormat.TEXT).render(f"handling {REQUEST}", REQUEST)
        assert rendered.split("\t")[1:] == [REQUEST, f"handling {REQUEST}"]

    @pytest.mark.parametrize(
        "line",
        [
            pytest.param(f"[INFO]\t2026-12-06T10:00:00.000Z\t{REQUEST}\tready", id="python-ric"),
            pytest.param(f"2026-12-06T10:00:00.000Z\t{REQUEST}\tINFO\tready", id="node-ric"),
        ],
    )
    def test_a_runtime_s_own_line_keeps_its_request_id_once(self, line: str) -> None:
        assert LineForwarder(OutputFormat.TEXT).render(line, REQUEST) == line

    def test_a_line_outside_an_invocation_is_left_as_it_is(self) -> None:
        assert LineForwarder(OutputFormat.TEXT).render("init done", None) == "init done"


class TestJsonLines:
    """``AWS_LAMBDA_LOG_FORMAT=JSON``: objects with ``requestId``."""

    def test_a_plain_line_is_wrapped(self) -> None:
        rendered = json.loads(LineForwarder(OutputFormat.JSON).render("hello", REQUEST))
        assert (rendered["requestId"], rendered["message"]) == (REQUEST, "hello")


class TestErrorDocuments:
    """What a runtime posts to ``.../error`` and ``.../init/error``."""

    def test_lambda_s_error_document(self) -> None:
        body = json.dumps(
            {"errorType": "ValueError", "errorMessage": "bad", "stackTrace": ["  line 1"]}
        ).encode()
        assert FunctionError.from_document(body, None) == FunctionError(
            "ValueError", "bad", ["  line 1"]
        )

    def test_plain_text_is_kept_as_the_message(self) -> None:
        # A custom runtime's `curl -d "plain text error"`: what it said must reach the logs.
        error = FunctionError.from_document(b"plain text error\n", "Custom.Bad")
        assert error == FunctionError("Custom.Bad", "plain text error")

    def test_no_body_no_header(self) -> None:
        assert FunctionError.from_document(b"", None) == FunctionError("Runtime.Unknown", "")

    def test_a_json_value_that_is_not_an_object(self) -> None:
        error = FunctionError.from_document(b'["a", "b"]', None)
        assert error == FunctionError("Runtime.Unknown", '["a", "b"]')

    def test_a_huge_plain_body_is_cut(self) -> None:
        error = FunctionError.from_document(b"x" * 100_000, None)
        assert len(error.error_message) == 4096
