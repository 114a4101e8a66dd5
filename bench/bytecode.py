"""The worker's modules compiled to bytecode, as a deployed worker has them.

The image compiles every module when it is built (``compileall`` in the Dockerfile), and pip
does the same when it installs the package from a wheel, so a deployed worker reads ``.pyc``
files at start-up. A source checkout installed in editable mode, run where
``PYTHONDONTWRITEBYTECODE`` is set, compiles all of its modules at every start instead: about
35 ms of CPU and 1.3 MB of peak RSS (the compiler's transient objects leave the heap
fragmented) that no deployed worker pays, and that the third-party libraries, compiled by pip,
do not pay either. The benchmarks call :func:`compile_worker` before they start a worker, so
that they measure the worker as it is deployed.
"""

from __future__ import annotations

import compileall
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def compile_worker(source: str | Path | None = None) -> None:
    """Write the ``.pyc`` files of the ``worker`` package under ``source`` (this checkout's by
    default); up-to-date files are left as they are. Python reads them whatever
    ``PYTHONDONTWRITEBYTECODE`` says: that variable only stops it from writing them."""
    package = Path(source or ROOT) / "worker"
    if not compileall.compile_dir(package, quiet=1):
        raise SystemExit(f"could not compile {package}")
