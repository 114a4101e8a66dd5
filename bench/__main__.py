"""``python -m bench``: every benchmark scenario, and the table (see :mod:`bench.run`)."""

from bench.run import main

raise SystemExit(main())
