"""The package's layers stay layers: the consume path never reaches into the operations.

``worker/consume`` (receive → run → extend → settle), ``worker/handlers`` (the adapters),
``worker/lambda_`` (Lambda's execution model) and the shared modules at the top must not import
``worker/ops`` (the command line, provisioning, DLQ tools, the demo, the local broker): what
runs every message cannot depend on what an operator runs now and then.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "worker"
OPERATIONS = "worker.ops"
BELOW_OPERATIONS = sorted(
    path
    for path in PACKAGE.rglob("*.py")
    if path.relative_to(PACKAGE).parts[0] not in {"ops", "examples", "__main__.py"}
)  # ``python -m worker`` is the command line's own entry point


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of its code (lazy imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


class TestLayers:
    """Who may import whom."""

    @pytest.mark.parametrize(
        "path", BELOW_OPERATIONS, ids=lambda path: str(path.relative_to(PACKAGE))
    )
    def test_no_module_below_the_operations_imports_them(self, path: Path) -> None:
        reaching = sorted(
            name
            for name in imported_modules(path)
            if name == OPERATIONS or name.startswith(f"{OPERATIONS}.")
        )
        assert reaching == [], f"{path.relative_to(PACKAGE)} imports {reaching}"

    def test_the_check_sees_an_import_of_the_operations(self, tmp_path: Path) -> None:
        module = tmp_path / "m.py"
        module.write_text("def f():\n    from worker.ops import cli\n")
        assert "worker.ops.cli" in imported_modules(module)

    def test_the_layers_are_there(self) -> None:
        for layer in ("consume", "handlers", "lambda_", "ops"):
            assert (PACKAGE / layer / "__init__.py").is_file()
        assert len(BELOW_OPERATIONS) > 20


# What `worker run` with a message handler has no use for, and each would cost it memory and
# start-up time: the DLQ tools, event filtering (imported where WORKER_FILTER_CRITERIA is set),
# Lambda's execution environments and their HTTP server, and aiohttp's web server.
NOT_FOR_RUN = (
    "worker.ops.dlq",
    "worker.ops.dlq_cli",
    "worker.handlers.filtering",
    "worker.lambda_.environments",
    "worker.lambda_.runtime_api",
    "worker.lambda_.http1",
    "aiohttp.web",
)


class TestWhatRunImports:
    """`worker run` imports what every run needs, and the rest only where it is used."""

    def test_the_run_path_leaves_the_rest_unimported(self) -> None:
        # A fresh interpreter: what this test process imported says nothing.
        probe = (
            "import json, sys\n"
            "from worker.ops import cli\n"
            "from worker.consume import worker\n"
            "print(json.dumps(sorted(sys.modules)))\n"
        )
        loaded = set(
            json.loads(
                subprocess.run(  # noqa: S603 -- our own interpreter and probe
                    [sys.executable, "-c", probe], capture_output=True, text=True, check=True
                ).stdout
            )
        )
        assert "worker.consume.runner" in loaded  # the probe does import the run path
        assert sorted(set(NOT_FOR_RUN) & loaded) == []
