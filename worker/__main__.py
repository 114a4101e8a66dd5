"""``python -m worker``: the same command line as ``worker``."""

from worker.ops.cli import main

raise SystemExit(main())
