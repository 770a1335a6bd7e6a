"""``python -m agent.cli``: the ``driftline`` command without its console script (tests, the demo)."""

from __future__ import annotations

import sys

from agent.cli import main

sys.exit(main())
