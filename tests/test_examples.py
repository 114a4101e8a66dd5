"""What the docs tell users to run, run: the files of ``docs/examples/`` they show.

The docs show each of these files as it is (``tests/test_docs.py`` checks that); here they run:
the README's five commands against a ``worker local``, the example's unit tests under pytest,
the handlers of docs/handlers.md, the Dockerfile's references (``make deploy-check`` lints it
with hadolint, ``make image-test`` builds and runs it), and the console listings that show what a
command prints.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import re
import shlex
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from worker import MalformedMessageError, NonRetryableError
from worker.handlers.adapters import Handler, load_handler
from worker.ops.local import DEFAULT_PORT
from worker.testing import message, sqs_event

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = ROOT / "docs"
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _user_environment() -> dict[str, str]:
    """A shell of a user's: the worker's commands on PATH, none of the tests' settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("WORKER_", "AWS_")) and key != "PYTHONPATH"
    }
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


async def _run(
    argv: list[str], cwd: Path, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """A command of the docs, run in a user's shell in ``cwd``: its exit code, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env or _user_environment(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def _commands(script: str) -> list[str]:
    return [line for line in script.splitlines() if line.strip() and not line.startswith("#")]


@asynccontextmanager
async def _local_broker(command: str, port: int) -> AsyncIterator[str]:
    """``worker local`` as the first of the five commands starts it; what it printed."""
    argv = [*command.split(), "--port", str(port)]
    process = await asyncio.create_subprocess_exec(
        *argv,
        env=_user_environment(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    printed = ""
    try:
        while "export " not in printed:
            line = await asyncio.wait_for(process.stdout.readline(), 30)
            assert line, f"worker local ended: {printed}"
            printed += line.decode()
        yield printed
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


class TestFiveCommands:
    """The README's five commands, in a user's shell, in the directory of ``myhandlers.py``."""

    async def test_they_run_and_end_with_the_refused_order_in_the_dlq(self, tmp_path: Path) -> None:
        first, *rest = _commands((EXAMPLES / "five-commands.sh").read_text(encoding="utf-8"))
        assert first == "worker local"
        shutil.copy(EXAMPLES / "myhandlers.py", tmp_path)
        port = _free_port()
        async with _local_broker(first, port) as printed:
            # The line the README exports is the one worker local prints, at the default port.
            exported = next(line for line in rest if line.startswith("export WORKER_ENDPOINT"))
            assert exported.replace(str(DEFAULT_PORT), str(port)) in printed
            script = "\n".join(line.replace(str(DEFAULT_PORT), str(port)) for line in rest)
            shell = await asyncio.create_subprocess_exec(
                "bash",
                "-euo",
                "pipefail",
                "-c",
                script,
                cwd=tmp_path,
                env=_user_environment(),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(shell.communicate(), 90)
        assert shell.returncode == 0, err.decode()
        output = out.decode()
        assert "subscription  created" in output  # 2. provision
        assert "order o-1: charged 5" in output  # 4. the handler ran
        assert re.search(r"DLQ orders-dlq: 1 of about 1 messages", output)  # 5. what failed
        assert '{"order_id": "o-2", "amount": "lots"}' in output


class TestInvokeSnippet:
    """The README's ``worker invoke`` on the example handler prints what the README shows."""

    async def test_it_prints_the_error_document_shown(self, tmp_path: Path) -> None:
        block = re.search(r"```console\n\$ (worker invoke .*?)\n(.*?)```", README, re.DOTALL)
        assert block is not None
        command, shown = block.groups()
        shutil.copy(EXAMPLES / "myhandlers.py", tmp_path)
        code, out, _ = await _run(shlex.split(command), tmp_path)
        assert code == 1
        printed = json.loads(out)
        expected = json.loads(shown.replace("[ ... ]", "[]"))
        assert {k: v for k, v in printed.items() if k != "stackTrace"} == {
            k: v for k, v in expected.items() if k != "stackTrace"
        }
        assert "myhandlers.py" in printed["stackTrace"][0]


class TestExampleUnitTests:
    """``test_myhandlers.py``, the README's example of ``worker.testing``, passes under pytest."""

    async def test_they_pass(self) -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(EXAMPLES / "test_myhandlers.py"),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode == 0, out.decode()
        assert "3 passed" in out.decode()


class TestDockerfile:
    """The example Dockerfile builds on the image docs/deployment.md's build command tags."""

    def _instructions(self) -> list[tuple[str, str]]:
        text = (EXAMPLES / "Dockerfile").read_text(encoding="utf-8")
        lines = [line for line in text.splitlines() if line and not line.startswith("#")]
        return [(line.split()[0].upper(), line.split(maxsplit=1)[1]) for line in lines]

    def test_it_is_from_the_tag_the_build_command_gives(self) -> None:
        (base,) = [argument for kind, argument in self._instructions() if kind == "FROM"]
        deployment = (DOCS / "deployment.md").read_text(encoding="utf-8")
        assert f"```console\ndocker build -t {base} .\n```" in deployment

    def test_what_it_copies_is_there_and_comments_are_on_lines_of_their_own(self) -> None:
        for kind, argument in self._instructions():
            # A "#" after an instruction is not a comment in a Dockerfile: it is an argument.
            assert "#" not in argument, (kind, argument)
            if kind == "COPY":
                *sources, destination = argument.split()
                assert destination.endswith("/")
                assert all((EXAMPLES / source).exists() for source in sources)

    def test_its_handler_imports_from_what_it_copies(self, monkeypatch: pytest.MonkeyPatch) -> None:
        (setting,) = [argument for kind, argument in self._instructions() if kind == "ENV"]
        name, _, handler = setting.partition("=")
        assert name == "WORKER_HANDLER"
        monkeypatch.setattr(sys, "path", list(sys.path))
        monkeypatch.delitem(sys.modules, "myhandlers", raising=False)
        assert callable(load_handler(handler, EXAMPLES))
        sys.modules.pop("myhandlers", None)


def _example(name: str, monkeypatch: pytest.MonkeyPatch) -> Handler:
    """A handler of docs/examples/, imported as the worker imports it."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    module = name.partition(":")[0].partition(".")[0]
    monkeypatch.delitem(sys.modules, module, raising=False)
    handler = load_handler(name, EXAMPLES)
    sys.modules.pop(module, None)
    return handler


class TestAsyncHandler:
    """docs/handlers.md's ``async def`` handler: charges, refuses what is no order, needs JSON."""

    async def test_an_order_is_charged(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        handle = _example("async_handler:handle", monkeypatch)
        assert inspect.iscoroutinefunction(handle)
        await handle(message({"order_id": "o-1", "amount": 5}, sns=True))
        assert capsys.readouterr().out == "order o-1: charged 5\n"

    async def test_what_is_not_an_order_is_not_retried(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        handle = _example("async_handler:handle", monkeypatch)
        assert inspect.iscoroutinefunction(handle)
        with pytest.raises(NonRetryableError):
            await handle(message({"sku": "x"}))
        with pytest.raises(MalformedMessageError):
            await handle(message("not JSON"))


class TestLambdaFunction:
    """docs/handlers.md's Lambda function, run by the ``worker invoke`` command the page gives."""

    async def test_it_reports_the_record_it_could_not_process(self, tmp_path: Path) -> None:
        page = (DOCS / "handlers.md").read_text(encoding="utf-8")
        shown = re.search(r"`(worker invoke --handler lambda_function\.[^`]+)`", page)
        assert shown is not None
        command = shlex.split(shown.group(1))
        shutil.copy(EXAMPLES / "lambda_function.py", tmp_path)
        event = sqs_event(
            {"order_id": "o-1", "amount": 5}, {"order_id": "o-2", "amount": "lots"}, sns=True
        )
        file = command[command.index("--file") + 1]
        (tmp_path / file).write_text(json.dumps(event), encoding="utf-8")
        code, out, err = await _run(command, tmp_path)
        assert code == 0, err
        refused = event["Records"][1]["messageId"]
        assert json.loads(out) == {"batchItemFailures": [{"itemIdentifier": refused}]}


class TestConfigurationErrorListing:
    """docs/configuration.md's bad configuration prints the lines shown, and exits 2."""

    async def test_it_prints_one_line_per_problem(self, tmp_path: Path) -> None:
        page = (DOCS / "configuration.md").read_text(encoding="utf-8")
        block = re.search(r"```console\n\$ ((?:WORKER_\S+ )+worker run)\n(.*?)```", page, re.DOTALL)
        assert block is not None
        command, shown = block.groups()
        *assignments, program, subcommand = shlex.split(command)
        env = _user_environment()
        for assignment in assignments:
            name, _, value = assignment.partition("=")
            env[name] = value
        code, _, err = await _run([program, subcommand], tmp_path, env)
        assert code == 2
        assert err == shown
