"""Technical drift that used to raise no alert at all, each now within one window.

Measured on main: 5,000 requests in a row for a served model, every one dead-lettered for missing
features; 20,000 requests each carrying a different unknown field; 20,000 requests naming unknown
models: no alert for any of them. (The dead-letter rate divided by accepted requests, and was only
updated when a batch had one; each unknown field name was watched on its own; nothing watched the
worker's unknown models.)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from agent.models.registry import ModelRegistry
from agent.models.repository import ModelRepository
from agent.monitoring.incidents import IncidentManager, InMemoryIncidentStore
from agent.monitoring.model_monitor import MonitorSettingsView
from agent.monitoring.observer import DriftObserver
from agent.packaging.examples import classification_20
from agent.serving.handler import Record, RequestHandler
from schemas.alert import Alert, AlertKind
from tests.support.alerts import alerts_in

MODEL = "classification-20"
FEATURES = [f"x{i:02d}" for i in range(20)]


def make_handler(root: Path) -> RequestHandler:
    registry = ModelRegistry(root)
    registry.refresh()
    observer = DriftObserver(
        IncidentManager(InMemoryIncidentStore(), cooldown_s=3600),
        settings=MonitorSettingsView(latency_threshold=1e12),
        resolve=registry.resolve,
    )
    return RequestHandler(
        registry,
        predictions_topic="p",
        dead_letters_topic="d",
        max_event_bytes=65536,
        observers=[observer],
        alerts_topic="alerts",
    )


def run(handler: RequestHandler, bodies: list[dict[str, object]]) -> list[Alert]:
    alerts = []
    for start in range(0, len(bodies), 500):
        records = [
            Record("requests", 0, i, None, json.dumps(b).encode())
            for i, b in enumerate(bodies[start : start + 500], start)
        ]
        alerts += alerts_in(m.value for m in handler.handle(records) if m.topic == "alerts")
    return alerts


def rows(n: int) -> np.ndarray:
    reference = np.asarray(classification_20(n_estimators=10, n_samples=2000).X_reference, dtype=np.float64)
    return reference[np.arange(n) % len(reference)]


def key(alert: Alert) -> tuple[str, str, str]:
    return (alert.model, alert.kind.value, alert.subject)


def test_a_model_whose_requests_are_all_dead_lettered_raises_one_technical_alert(
    model_repository: ModelRepository,
) -> None:
    handler = make_handler(model_repository.root)
    # Every request misses x00: not one is accepted, and the model's monitor never saw a batch.
    bodies: list[dict[str, object]] = [
        {
            "request_id": f"r{i}",
            "model": MODEL,
            "features": dict(zip(FEATURES[1:], map(float, row[1:]), strict=True)),
        }
        for i, row in enumerate(rows(5000))
    ]
    [alert] = run(handler, bodies)
    assert key(alert) == (MODEL, "technical", "dead_letters")
    assert alert.evidence.recent_mean == 1.0 and alert.message.startswith(
        "100.0% of classification-20 requests"
    )


def test_requests_carrying_unknown_fields_whatever_their_names_raise_one_alert(
    model_repository: ModelRepository,
) -> None:
    handler = make_handler(model_repository.root)
    bodies: list[dict[str, object]] = [
        {
            "request_id": f"r{i}",
            "model": MODEL,
            "features": dict(zip(FEATURES, map(float, row), strict=True)) | {f"field-{i}": 1.0},
        }
        for i, row in enumerate(rows(20_000))
    ]
    [alert] = run(handler, bodies)
    assert key(alert) == (MODEL, "technical", "unknown_fields") and alert.kind is AlertKind.TECHNICAL
    assert alert.evidence.recent_mean == 1.0


def test_a_surge_of_requests_for_unknown_models_raises_one_worker_alert(
    model_repository: ModelRepository,
) -> None:
    handler = make_handler(model_repository.root)
    served = [
        {"request_id": f"s{i}", "model": MODEL, "features": dict(zip(FEATURES, map(float, row), strict=True))}
        for i, row in enumerate(rows(2000))
    ]
    junk = [{"request_id": f"r{i}", "model": f"junk-{i}", "features": {}} for i in range(20_000)]
    # A few stray names among served requests are no surge; 20,000 in a row are.
    stray = served[:1000] + junk[:20] + served[1000:]
    assert run(handler, stray) == []
    [alert] = run(handler, junk)
    assert key(alert) == ("*", "technical", "unknown_models") and alert.model_version == "*"
    assert "name a model (or version) it does not serve" in alert.message
