"""``python -m bench``: driftline against the naive agent and the machine's limits (see bench/run.py)."""

from __future__ import annotations

import sys

from bench.run import main

sys.exit(main())
