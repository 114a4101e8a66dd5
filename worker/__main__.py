"""``python -m worker``: the same command line as ``worker``."""

from worker.cli import main

raise SystemExit(main())
