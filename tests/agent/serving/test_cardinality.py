"""Everything a request can name has a bound: unknown model names, field names, model versions.

Hostile input used to grow the worker without bound: 20,000 requests naming 20,000 unknown models
took /metrics from 4 KB to 3.7 MB (one dead-letter label set per name), every unknown field name got
a watch of its own walked on every batch, and every model_version a request named was looked for on
disk and, if it existed, loaded for good. Each bound counts what it refused in
``driftline_names_refused_total``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from agent.metrics import Metrics
from agent.models.registry import ModelRegistry
from agent.models.repository import ModelRepository
from agent.monitoring.incidents import IncidentManager, InMemoryIncidentStore
from agent.monitoring.model_monitor import MonitorSettingsView
from agent.monitoring.observer import DriftObserver
from agent.packaging.examples import classification_20
from agent.serving.handler import Record, RequestHandler
from schemas.events import DeadLetter

MODEL = "classification-20"
FEATURES = [f"x{i:02d}" for i in range(20)]


def make_handler(
    root: Path, settings: MonitorSettingsView | None = None, **registry_options: int
) -> tuple[RequestHandler, DriftObserver, Metrics]:
    metrics = Metrics()
    registry = ModelRegistry(root, metrics=metrics, **registry_options)
    registry.refresh()
    observer = DriftObserver(
        IncidentManager(InMemoryIncidentStore(), cooldown_s=3600),
        settings=settings or MonitorSettingsView(latency_threshold=1e12),
        metrics=metrics,
    )
    handler = RequestHandler(
        registry,
        predictions_topic="p",
        dead_letters_topic="d",
        max_event_bytes=65536,
        metrics=metrics,
        observers=[observer],
        alerts_topic="alerts",
    )
    return handler, observer, metrics


def batch(bodies: list[dict[str, object]], first: int = 0) -> list[Record]:
    return [
        Record("requests", 0, first + i, f"r{first + i}".encode(), json.dumps(b).encode())
        for i, b in enumerate(bodies)
    ]


def refused(metrics: Metrics, what: str) -> float:
    return metrics.registry.get_sample_value("driftline_names_refused_total", {"what": what}) or 0.0


def rows(n: int, seed: int) -> np.ndarray:
    reference = np.asarray(classification_20(n_estimators=10, n_samples=2000).X_reference, dtype=np.float64)
    return reference[np.random.default_rng(seed).integers(0, len(reference), n)]


def test_unknown_model_names_add_no_label_to_the_metrics(model_repository: ModelRepository) -> None:
    handler, _, metrics = make_handler(model_repository.root)
    # A first window of them raises the worker's one alert on unknown models (and its counter).
    handler.handle(
        batch([{"request_id": f"w{i}", "model": f"warm-{i}", "features": {}} for i in range(2000)])
    )
    before = metrics.render()
    for start in range(0, 10_000, 500):
        out = handler.handle(
            batch(
                [
                    {"request_id": f"r{i}", "model": f"junk-{i}", "features": {}}
                    for i in range(start, start + 500)
                ]
            )
        )
        # Every request still gets its dead letter, naming the model it asked for.
        letters = [DeadLetter.model_validate_json(m.value) for m in out if m.topic == "d"]
        assert len(letters) == 500 and f"junk-{start}" in letters[0].detail
    after = metrics.render()
    assert len(after.splitlines()) == len(before.splitlines()), after.decode()[-2000:]
    assert b'driftline_dead_letters_total{model="",reason="unknown_model"} 12000.0' in after
    assert refused(metrics, "model") == 12_000
    assert (
        metrics.registry.get_sample_value("driftline_alerts_total", {"model": "*", "kind": "technical"}) == 1
    )
    # A served model's name keeps its label (a request it could not take: a missing feature).
    handler.handle(batch([{"request_id": "m", "model": MODEL, "features": {}}]))
    assert metrics.registry.get_sample_value(
        "driftline_dead_letters_total", {"reason": "missing_feature", "model": MODEL}
    )


def test_unknown_field_names_get_a_bounded_number_of_watches(model_repository: ModelRepository) -> None:
    settings = MonitorSettingsView(latency_threshold=1e12, rate_window_events=500, max_watched_fields=8)
    handler, observer, metrics = make_handler(model_repository.root, settings)
    data = rows(20_000, seed=1)
    sent = 0

    def send(extra: dict[int, str]) -> None:
        nonlocal sent
        bodies = []
        for i in range(500):
            features: dict[str, object] = dict(zip(FEATURES, map(float, data[sent + i]), strict=True))
            if i in extra:
                features[extra[i]] = 1.0
            bodies.append({"request_id": f"r{sent + i}", "model": MODEL, "features": features})
        out = handler.handle(batch(bodies, sent))
        assert sum(m.topic == "p" for m in out) == 500  # served all the same
        sent += 500

    # 10,000 requests, each with a field name of its own.
    for b in range(20):
        send({i: f"junk-{b * 500 + i}" for i in range(500)})
    [monitor] = observer.monitors()
    assert len(monitor.unseen) == 8
    # The first 8 names got a watch; the others were refused until a watch had been idle for a full
    # window (no hit in it): junk names seen once let their place go after their second window.
    assert 8 < 10_000 - refused(metrics, "field") < 10_000
    # A clean stream after it: every junk watch goes idle, and a new name takes a place at once.
    for _ in range(4):
        send({})
    before = refused(metrics, "field")
    send(dict.fromkeys(range(500), "session_id"))
    assert "session_id" in monitor.unseen and refused(metrics, "field") == before


def add_versions(root: Path, name: str, versions: list[str]) -> None:
    for version in versions:
        target = root / name / version
        shutil.copytree(root / name / "1", target)
        manifest = json.loads((target / "manifest.json").read_text())
        manifest["version"] = version
        (target / "manifest.json").write_text(json.dumps(manifest))


def test_versions_named_by_requests_are_loaded_up_to_a_bound(repository_copy: ModelRepository) -> None:
    root = repository_copy.root
    add_versions(root, "diabetes", ["2", "3", "4"])  # 4 is served; 1, 2, 3 only when named
    metrics = Metrics()
    registry = ModelRegistry(root, max_requested_versions=2, metrics=metrics)
    registry.refresh()
    assert registry.resolve("diabetes").version == "4"  # type: ignore[union-attr]
    assert registry.resolve("diabetes", "1") is not None and registry.resolve("diabetes", "2") is not None
    assert registry.resolve("diabetes", "3") is None
    assert "2 versions named by requests are loaded already" in registry.why_not("diabetes", "3")
    assert registry.resolve("diabetes", "3") is None  # remembered: not looked for again, not counted again
    assert refused(metrics, "version") == 1
    # Versions of a name no model has are not looked for at all (a request's words are not paths).
    assert registry.resolve("../../etc", "passwd") is None and not registry._absent
    # Absent versions of a served model are remembered, within a bound.
    for i in range(20_000):
        assert registry.resolve("diabetes", f"junk-{i}") is None
    assert len(registry._absent) <= 10_000
