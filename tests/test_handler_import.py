"""Where a ``message`` handler is imported from, and that it is imported before anything else."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from tests.support import REGION, Queues, depth, publish
from worker.errors import ConfigurationError
from worker.handlers.adapters import load_handler

# The console script, as users run it: unlike `python -m worker`, it does not put the current
# directory on the import path by itself.
WORKER = str(Path(sys.executable).parent / "worker")

HANDLER = """\
from pathlib import Path

def handle(message):
    Path("handled").write_text(message.body)
"""


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_") and k != "PYTHONPATH"}
    return {**env, "AWS_REGION": REGION, "WORKER_HTTP_PORT": "0", "WORKER_LOG_FORMAT": "json"}


async def _run(cwd: Path, queue: str, endpoint: str, *args: str) -> tuple[int, str]:
    """``worker run --handler myhandlers:handle`` by the console script in ``cwd``; (exit code,
    stderr)."""
    process = await asyncio.create_subprocess_exec(
        WORKER,
        "run",
        "--handler",
        "myhandlers:handle",
        "--queue",
        queue,
        "--endpoint-url",
        endpoint,
        *args,
        cwd=cwd,
        env=_environment(),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, err.decode()


class TestCurrentDirectory:
    """Without WORKER_HANDLER_PATH a handler next to you imports, as with ``python -m``."""

    def test_load_handler_finds_a_module_in_the_current_directory(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        (tmp_path / "first_hour_handlers.py").write_text(HANDLER, encoding="utf-8")
        monkeypatch.chdir(tmp_path)
        monkeypatch.setattr(sys, "path", list(sys.path))
        monkeypatch.delitem(sys.modules, "first_hour_handlers", raising=False)
        handler = load_handler("first_hour_handlers:handle")
        assert handler.__module__ == "first_hour_handlers"
        sys.modules.pop("first_hour_handlers", None)

    def test_a_module_named_like_the_worker_is_said_to_be_shadowed(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        (tmp_path / "worker.py").write_text(HANDLER, encoding="utf-8")
        monkeypatch.setattr(sys, "path", list(sys.path))
        with pytest.raises(ConfigurationError) as error:
            load_handler("worker:handle", tmp_path)
        (line,) = error.value.problems
        assert line.startswith("WORKER_HANDLER=worker:handle: worker has no attribute 'handle'")
        assert "worker is the worker's own package, imported instead of worker.py" in line

    def test_the_handler_path_wins_over_the_current_directory(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        elsewhere = tmp_path / "src"
        elsewhere.mkdir()
        (elsewhere / "first_hour_path.py").write_text(HANDLER, encoding="utf-8")
        monkeypatch.chdir(tmp_path)
        monkeypatch.setattr(sys, "path", list(sys.path))
        monkeypatch.delitem(sys.modules, "first_hour_path", raising=False)
        with pytest.raises(ConfigurationError, match="no module named 'first_hour_path'"):
            load_handler("first_hour_path:handle")
        assert load_handler("first_hour_path:handle", elsewhere).__module__ == "first_hour_path"
        sys.modules.pop("first_hour_path", None)

    @pytest.mark.slow
    async def test_worker_run_handles_with_a_module_of_the_current_directory(
        self, queues: Queues, tmp_path: Path
    ) -> None:
        (tmp_path / "myhandlers.py").write_text(HANDLER, encoding="utf-8")
        await publish(queues, "from the current directory")
        code, err = await _run(
            tmp_path, queues.queue_url, queues.endpoint_url, "--exit-when-idle", "1"
        )
        assert code == 0, err
        assert (tmp_path / "handled").read_text(encoding="utf-8") == "from the current directory"
        assert await depth(queues, queues.queue_url) == (0, 0)


class TestHandlerFirst:
    """A handler that cannot be imported is the first and only thing said, before any AWS call."""

    @pytest.mark.slow
    async def test_a_bad_handler_is_reported_without_reaching_aws(self, tmp_path: Path) -> None:
        # Nothing listens on port 9: reaching for the queue first would say "cannot read queue".
        code, err = await _run(tmp_path, "http://127.0.0.1:9/123456789012/q", "http://127.0.0.1:9")
        assert code == 2
        assert err.splitlines() == [
            "worker: configuration error: WORKER_HANDLER=myhandlers:handle: "
            "no module named 'myhandlers'"
        ]
