"""The producers package is what a team runs next to its application: it must not need the agent."""

from __future__ import annotations

import subprocess
import sys


def test_importing_every_producer_module_loads_no_agent_module() -> None:
    code = (
        "import sys, producers, producers.config, producers.datasets, producers.publish, "
        "producers.replay, producers.scenarios, producers.schedule, producers.stream\n"
        "print(sorted(m for m in sys.modules if m == 'agent' or m.startswith('agent.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_public_api_is_exported() -> None:
    import producers

    assert all(hasattr(producers, name) for name in producers.__all__)
    assert {"generate", "replay", "publish", "Scenario", "ScheduledDrift", "EventStream"} <= set(
        producers.__all__
    )
