"""``worker invoke``: a handler on one event, its response or its error, and the exit code."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import pytest

from tests.support import run_cli
from worker.ops.cli import main
from worker.testing import sqs_event

MESSAGE_HANDLERS = """\
import time
from worker import Message

def ok(message: Message) -> dict:
    print("printed by the handler")
    return {"order": message.json()["order_id"], "sns": message.sns is not None}

async def fails(message: Message) -> None:
    raise ValueError(f"cannot handle {message.body}")

def hangs(message: Message) -> None:
    time.sleep(60)

def not_a_number(message: Message) -> dict:
    return {"ratio": float("nan"), "limit": float("inf")}
"""

LAMBDA_FUNCTION = """\
import json

def handler(event, context):
    print("records:", len(event["Records"]))
    if event["Records"][0]["body"] == "fail":
        raise ValueError("asked to fail")
    return {
        "bodies": [record["body"] for record in event["Records"]],
        "function_name": context.function_name,
    }
"""


@pytest.fixture
def handlers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A directory of handlers under a module name of their own; the import path restored."""
    name = f"invoked_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(MESSAGE_HANDLERS, encoding="utf-8")
    (tmp_path / f"{name}_fn.py").write_text(LAMBDA_FUNCTION, encoding="utf-8")
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(tmp_path)
    return name


def invoke(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, object, str]:
    """Run ``worker invoke ARGS``; (exit code, stdout as JSON, stderr)."""
    code = main(["invoke", "--log-format", "json", *args])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out else None, err


class TestMessageHandler:
    """A ``message`` handler is called in this process with the Message the worker would build."""

    def test_the_response_is_printed_and_the_handlers_output_goes_to_stderr(
        self, handlers: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, out, err = invoke(
            capsys, "--handler", f"{handlers}:ok", "--body", '{"order_id": "o-1"}'
        )
        assert (code, out) == (0, {"order": "o-1", "sns": False})
        assert "printed by the handler" in err

    def test_a_failure_prints_lambdas_error_document_and_exits_1(
        self, handlers: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, out, _ = invoke(capsys, "--handler", f"{handlers}:fails", "--body", "x")
        assert code == 1
        assert isinstance(out, dict)
        assert (out["errorType"], out["errorMessage"]) == ("ValueError", "cannot handle x")
        # The trace starts at the handler, not in the worker's call machinery.
        assert f"{handlers}.py" in out["stackTrace"][0]

    def test_a_body_from_a_file_through_an_sns_envelope_as_one_json_document(
        self, handlers: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        body = tmp_path / "order.json"
        body.write_text('{"order_id": "o-2"}', encoding="utf-8")
        code, out, _ = invoke(
            capsys, "--handler", f"{handlers}:ok", "--file", str(body), "--sns", "--json"
        )
        assert code == 0
        assert isinstance(out, dict)
        assert out["status"] == "success"
        assert out["handler_type"] == "message"
        assert out["response"] == {"order": "o-2", "sns": True}

    @pytest.mark.parametrize("as_json", [False, True])
    def test_a_response_json_cannot_hold_is_printed_as_valid_json(
        self, handlers: str, capsys: pytest.CaptureFixture[str], as_json: bool
    ) -> None:
        flags = ["--json"] if as_json else []
        code = main(["invoke", "--handler", f"{handlers}:not_a_number", "--body", "x", *flags])
        out = capsys.readouterr().out

        def refuse(constant: str) -> None:
            raise AssertionError(f"{constant} is not JSON")

        document = json.loads(out, parse_constant=refuse)
        response = document["response"] if as_json else document
        assert code == 0
        assert response == "{'ratio': nan, 'limit': inf}"

    def test_a_missing_file_is_one_line_and_exit_2(
        self, handlers: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code = main(["invoke", "--handler", f"{handlers}:ok", "--file", "no-such-file.json"])
        _, err = capsys.readouterr()
        assert code == 2
        assert err.splitlines() == [
            "worker: configuration error: --file no-such-file.json: No such file or directory"
        ]

    def test_a_handler_that_cannot_be_imported_is_exit_2(
        self, handlers: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code = main(["invoke", "--handler", f"{handlers}_missing:ok", "--body", "x"])
        assert code == 2
        assert "no module named" in capsys.readouterr().err

    @pytest.mark.slow
    async def test_a_thread_past_its_budget_fails_as_a_timeout_and_the_command_ends(
        self, handlers: str, tmp_path: Path
    ) -> None:
        code, out, _ = await run_cli(
            "invoke",
            "--handler",
            f"{handlers}:hangs",
            "--handler-path",
            str(tmp_path),
            "--body",
            "x",
            env={"WORKER_MAX_PROCESSING_SECONDS": "1"},
        )
        assert code == 1
        assert json.loads(out)["errorType"] == "HandlerTimeoutError"


def invoke_lambda(
    capsys: pytest.CaptureFixture[str], handler: str, *args: str
) -> tuple[int, object, str]:
    """Run ``worker invoke --handler HANDLER --handler-type lambda ARGS``."""
    return invoke(capsys, "--handler", handler, "--handler-type", "lambda", *args)


@pytest.mark.slow
class TestLambdaHandler:
    """A ``lambda`` handler runs in one execution environment, as under ``worker run``."""

    def test_a_body_becomes_an_sqs_event_of_one_record(
        self, handlers: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, out, err = invoke_lambda(capsys, f"{handlers}_fn.handler", "--body", "hi")
        assert (code, out) == (0, {"bodies": ["hi"], "function_name": "local-function"})
        assert "records: 1" in err  # the function's output, with its request id
        assert '"lambda.report"' in err

    def test_an_event_file_as_sam_local_invoke_takes_it(
        self, handlers: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        event = tmp_path / "event.json"
        event.write_text(json.dumps(sqs_event("a", "b")), encoding="utf-8")
        code, out, _ = invoke_lambda(
            capsys, f"{handlers}_fn.handler", "--file", str(event), "--queue", "orders"
        )
        assert (code, out) == (0, {"bodies": ["a", "b"], "function_name": "orders"})

    def test_an_error_is_the_runtimes_error_document(
        self, handlers: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, out, _ = invoke_lambda(capsys, f"{handlers}_fn.handler", "--body", "fail", "--json")
        assert code == 1
        assert isinstance(out, dict)
        assert out["status"] == "error"
        assert out["error"]["errorType"] == "ValueError"
        assert out["error"]["errorMessage"] == "asked to fail"
        assert out["error"]["stackTrace"]

    def test_a_function_that_cannot_initialise_fails_with_its_init_error(
        self, handlers: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, out, _ = invoke_lambda(capsys, "no_such_module.handler", "--body", "x")
        assert code == 1
        assert isinstance(out, dict)
        assert out["errorType"] == "Runtime.ImportModuleError"

    def test_a_handler_path_that_is_not_a_directory_is_exit_2(
        self, handlers: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        missing = tmp_path / "missing"
        code, _, err = invoke_lambda(
            capsys, f"{handlers}_fn.handler", "--handler-path", str(missing), "--body", "x"
        )
        assert code == 2
        assert err.splitlines() == [
            f"worker: configuration error: WORKER_HANDLER_PATH={missing}: not a directory"
        ]

    def test_an_event_file_that_is_not_json_is_exit_2(
        self, handlers: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        event = tmp_path / "event.json"
        event.write_text("{not json", encoding="utf-8")
        code = main(
            [
                "invoke",
                "--handler",
                f"{handlers}_fn.handler",
                "--handler-type",
                "lambda",
                "--file",
                str(event),
            ]
        )
        assert code == 2
        assert "not a JSON event" in capsys.readouterr().err
