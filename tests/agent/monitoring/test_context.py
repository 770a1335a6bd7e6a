"""What changed around an incident: a new version swapped in, the libraries it was built with."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime

import numpy as np

from agent.models.registry import ModelRegistry
from agent.models.repository import ModelRepository
from agent.models.versions import DependencyFinding
from agent.monitoring.context import ServingContext
from agent.monitoring.incidents import IncidentManager, InMemoryIncidentStore
from agent.monitoring.model_monitor import MonitorSettingsView
from agent.monitoring.observer import DriftObserver
from agent.packaging.examples import classification_20
from agent.serving.handler import Record, RequestHandler
from schemas.alert import AlertKind, Severity
from schemas.incident import TimelineEntry
from tests.support.alerts import incidents_in

MODEL = "classification-20"
NAMES = [f"x{i:02d}" for i in range(20)]


def test_drift_after_a_new_version_names_the_swap(repository_copy: ModelRepository) -> None:
    reference = np.asarray(classification_20(n_estimators=10, n_samples=2000).X_reference)
    root = repository_copy.root / MODEL
    now = [1_767_225_600.0]
    registry = ModelRegistry(repository_copy.root)
    registry.refresh()
    observer = DriftObserver(
        IncidentManager(InMemoryIncidentStore(), clock=lambda: now[0]),
        settings=MonitorSettingsView(latency_threshold=1e12),
        clock=lambda: now[0],
        context=ServingContext("driftline 9.9", clock=lambda: now[0]),
    )
    handler = RequestHandler(
        registry, predictions_topic="p", dead_letters_topic="d", max_event_bytes=65536,
        observers=[observer], alerts_topic="alerts",
    )  # fmt: skip
    rng = np.random.default_rng(6)
    reports = []

    def send(rows: np.ndarray, first: int) -> None:
        for start in range(0, len(rows), 500):
            now[0] += 5.0
            records = []
            for i, row in enumerate(rows[start : start + 500], first + start):
                features = dict(zip(NAMES, map(float, row), strict=True))
                body = {"request_id": f"r{i}", "model": MODEL, "features": features}
                records.append(Record("requests", i % 4, i, None, json.dumps(body).encode()))
            values = [m.value for m in handler.handle(records) if m.topic == "alerts"]
            reports.extend(incidents_in(values))

    send(reference[rng.integers(0, len(reference), 5_000)], 0)  # version 1 serves 5,000 requests
    manifest = json.loads((root / "1" / "manifest.json").read_text())
    manifest["version"] = "2"
    shutil.copytree(root / "1", root / "2")
    (root / "2" / "manifest.json").write_text(json.dumps(manifest))
    assert registry.refresh().loaded
    rows = reference[rng.integers(0, len(reference), 10_000)].copy()
    rows[1_200:, 3] += 1.5 * reference[:, 3].std()  # 1,200 requests after version 2 came in, x03 drifts
    send(rows, 5_000)
    opened = reports[0]
    assert opened.status == "opened" and opened.model_versions == ("2",)
    first_line = opened.context[0]
    assert first_line.startswith("drift began ") and first_line.endswith(
        f" events after {MODEL}/2 replaced /1"
    )
    began = int(first_line.split()[2].replace(",", ""))
    assert 1_100 <= began <= 1_500, first_line  # the change point the detector estimated
    assert opened.root_cause.endswith(f"; {first_line}")
    assert any(line.startswith(f"{MODEL}/2 was packaged (its reference) ") for line in opened.context)
    assert any(
        line.startswith(f"before it, {MODEL}/1 from ") and "driftline 9.9" in line for line in opened.context
    )


def test_a_library_that_differs_and_a_swap_during_the_incident() -> None:
    now = [1_767_225_600.0]
    context = ServingContext("driftline 9.9, onnxruntime 1.20.0", clock=lambda: now[0])
    finding = DependencyFinding("onnxruntime", "1.19.2", "1.20.0", "minor")
    context.served("m", "3", packaged_at=datetime(2026, 1, 1, tzinfo=UTC), findings=[finding])
    start = now[0]
    now[0] += 3600
    context.served("m", "4", packaged_at=None, findings=())
    entry = TimelineEntry(
        at=datetime.fromtimestamp(start + 60, UTC), change="opened", alert_id="a", kind=AlertKind.DATA,
        subject="x", severity=Severity.WARNING, model_version="3", event=900,
    )  # fmt: skip
    assert context.lines("m", [entry]) == (
        "m/4 replaced /3 during the incident (2026-01-01 01:00 UTC)",
        "drift began 900 events after this worker (driftline 9.9, onnxruntime 1.20.0) started serving m/3",
        "m/3 was built with onnxruntime 1.19.2; the worker runs 1.20.0 (minor change)",
        "m/3 was packaged (its reference) 2026-01-01 00:00 UTC",
    )
    assert context.lines("other", [entry]) == ()
    assert [c.version for c in context.changes("m")] == ["3", "4"]


def test_a_bounded_history() -> None:
    context = ServingContext(keep=2)
    for version in "12345":
        context.served("m", version, packaged_at=None, findings=())
    context.served("m", "5", packaged_at=None, findings=())  # the same version again: no change
    assert [(c.version, c.replaced) for c in context.changes("m")] == [("4", "3"), ("5", "4")]
