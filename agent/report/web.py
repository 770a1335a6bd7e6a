"""``GET /report`` on a worker: the drift report of its models (``?model=NAME`` for one,
``&since=6h`` for the period), the same page ``driftline report`` writes."""

from __future__ import annotations

import time
from typing import Any

from agent.errors import ConfigurationError
from agent.models.registry import ModelRegistry
from agent.report.data import gather, parse_period
from agent.report.html import render
from agent.settings import Settings

__all__ = ["register_report_view"]


def register_report_view(app: Any, settings: Settings, registry: ModelRegistry) -> None:
    """Adds ``GET /report`` to a Faust app."""
    from faust import web

    @app.page("/report")
    class Report(web.View):
        async def get(self, request: web.Request) -> web.Response:
            name = request.query.get("model")
            served = registry.served() if name is None else [m for m in [registry.resolve(name)] if m]
            if name is not None and not served:
                return self.text(f"unknown model {name!r}\n", status=404)
            try:
                since = parse_period(request.query.get("since", "6h"))
            except ConfigurationError as exc:
                return self.text(f"{exc}\n", status=400)
            until = time.time()
            reports = [await gather(settings, m.manifest, since=since, until=until) for m in served]
            page = render(reports, generated_at=until)
            return self.bytes(page.encode(), content_type="text/html", status=200)
