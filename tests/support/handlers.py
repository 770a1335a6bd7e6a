"""A request handler with a drift observer, as a worker wires them, for tests of pure monitoring logic
that need no broker (the integration tests run real workers)."""

from __future__ import annotations

from pathlib import Path

from agent.models.registry import ModelRegistry
from agent.monitoring.incidents import IncidentManager, InMemoryIncidentStore
from agent.monitoring.model_monitor import MonitorSettingsView
from agent.monitoring.observer import DriftObserver
from agent.serving.handler import RequestHandler

ALERTS = "alerts"
OUTCOMES = "outcomes"
STATS = "stats"


def observed_handler(
    root: Path,
    observer: DriftObserver | None = None,
    *,
    settings: MonitorSettingsView | None = None,
    store: InMemoryIncidentStore | None = None,
    outcomes: bool = False,
    changelog: bool = False,
    stats: bool = False,
) -> tuple[RequestHandler, DriftObserver]:
    """The handler of the models in repository ``root``, with ``observer``, or by default a new one
    with ``settings`` behind an incident gate (cooldown an hour) over ``store``: handlers built on one
    store share their incidents, as workers do through the incidents topic. Alerts go to
    :data:`ALERTS`; with ``outcomes``, outcomes are read from :data:`OUTCOMES` (and joined at once, unless
    the observer persists its join); with ``changelog``, the join's records go to the topic ``log``; with
    ``stats``, a shipping observer's statistics records go to :data:`STATS`."""
    registry = ModelRegistry(root)
    registry.refresh()
    if observer is None:
        incidents = IncidentManager(store or InMemoryIncidentStore(), cooldown_s=3600)
        observer = DriftObserver(incidents, settings=settings or MonitorSettingsView())
    handler = RequestHandler(
        registry,
        predictions_topic="p",
        dead_letters_topic="d",
        max_event_bytes=65536,
        observers=[observer],
        outcomes_topic=OUTCOMES if outcomes else None,
        alerts_topic=ALERTS,
        changelog_topic="log" if changelog else None,
        stats_topic=STATS if stats else None,
    )
    return handler, observer
