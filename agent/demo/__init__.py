"""The demo (``driftline demo``): a scripted drift scenario through a real worker, its alerts, a PNG and
the drift report page.

Outside the worker's import graph: nothing in :mod:`agent.app`, :mod:`agent.serving`,
:mod:`agent.monitoring` or :mod:`agent.alerting` imports it. Its plot needs the ``demo`` extra
(matplotlib).

May import: anything in :mod:`agent` except :mod:`agent.cli`, and :mod:`producers`, :mod:`schemas`.
"""

from __future__ import annotations

__all__: list[str] = []
