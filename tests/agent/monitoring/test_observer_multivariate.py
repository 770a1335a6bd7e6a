"""Multivariate drift through the real request handler: a package built with a reconstruction, and
features that stop moving together while each keeps its own distribution."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.linear_model import LogisticRegression

from agent.models.package import load_package
from agent.models.repository import ModelRepository
from agent.monitoring.incidents import IncidentKey
from agent.monitoring.model_monitor import MonitorSettingsView
from agent.monitoring.observer import DriftObserver
from agent.packaging.builder import build_package
from agent.packaging.training import TrainingResult
from agent.serving.handler import Record, RequestHandler
from schemas.alert import Alert, AlertKind, Severity
from schemas.manifest import Reconstruction
from tests.support.alerts import alerts_in
from tests.support.handlers import observed_handler

MODEL = "pair"
NAMES = ("a", "b", "c")
# Inference latency is the machine's, not the stream's (see test_observer.py).
SETTINGS = MonitorSettingsView(latency_threshold=1e12)


def correlated(rng: np.random.Generator, n: int, rho: float) -> npt.NDArray[np.float64]:
    a, b, c = rng.standard_normal((3, n))
    return np.c_[a, rho * a + np.sqrt(1.0 - rho**2) * b, c]


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    """A classifier of ``c`` alone, beside a pair ``a``, ``b`` correlated 0.9, with a holdout."""
    rng = np.random.default_rng(0)
    X, X_holdout = correlated(rng, 4_000, 0.9), correlated(rng, 1_000, 0.9)
    y, y_holdout = (X[:, 2] > 0).astype(int), (X_holdout[:, 2] > 0).astype(int)
    result = TrainingResult(LogisticRegression().fit(X, y), X, y, NAMES, X_holdout, y_holdout)
    repository = ModelRepository(tmp_path_factory.mktemp("multivariate"))
    build_package(result, name=MODEL, version="1", repository=repository)
    return repository


def run(handler: RequestHandler, rows: npt.NDArray[np.float64]) -> list[Alert]:
    alerts = []
    for start in range(0, len(rows), 500):
        records = []
        for i, row in enumerate(rows[start : start + 500], start):
            body = {
                "request_id": f"r{i}",
                "model": MODEL,
                "features": dict(zip(NAMES, map(float, row), strict=True)),
            }
            records.append(Record("requests", i % 2, i, None, json.dumps(body).encode()))
        alerts += alerts_in(m.value for m in handler.handle(records) if m.topic == "alerts")
    return alerts


def worker(root: Path) -> tuple[RequestHandler, DriftObserver]:
    return observed_handler(root, settings=SETTINGS)


def test_features_that_stop_moving_together_are_alerted_as_such_and_recover(
    repository: ModelRepository,
) -> None:
    handler, observer = worker(repository.root)
    reconstruction = repository_manifest_reconstruction(repository)
    rng = np.random.default_rng(3)
    # Correlated for 6,000 events, independent (same marginals) for 10,000, correlated again.
    stream = np.r_[correlated(rng, 6_000, 0.9), correlated(rng, 10_000, 0.0), correlated(rng, 10_000, 0.9)]
    alerts = run(handler, stream)
    [alert] = alerts  # no feature, prediction or technical alert: only the pair's relation changed
    assert (alert.kind, alert.subject, alert.detector) == (
        AlertKind.DATA,
        "reconstruction_error",
        "page_hinkley_up",
    )
    assert alert.evidence.extra["event_index"] == 6_079 and alert.opened_at_event == 6_500
    assert alert.message.startswith("features of pair/1 move together differently (reconstruction error +")
    assert "page_hinkley_up fired at event 6079" in alert.message
    # The evidence carries the error's reference (from the holdout) and its recent value.
    e = alert.evidence
    assert e.reference_mean == reconstruction.error.mean and e.reference_std == reconstruction.error.std
    assert e.recent_mean is not None and e.recent_mean > 2 * reconstruction.error.mean
    # Measured over the detection's own 64 events (2.95 sd; the batch's last events, beyond the
    # detection, said 3.1).
    assert e.shift_in_std is not None and e.shift_in_std > 2.5
    assert alert.severity is (Severity.CRITICAL if e.shift_in_std >= 3.0 else Severity.WARNING)
    assert f"recent mean {e.recent_mean:.3g} vs reference {e.reference_mean:.3g}" in alert.message
    assert e.extra["error_from"] == "holdout_and_cross_fit"
    # Back to moving together: the incident recovers.
    assert not observer.incidents.is_open(IncidentKey(MODEL, "data", "reconstruction_error"))
    # The metrics sinks see the column beside the features.
    points = [p for p in observer.metric_points() if p.measurement == "driftline_feature"]
    columns = {*NAMES, "prediction", "predicted_class", "reconstruction_error"}
    assert {p.tags["feature"] for p in points} == columns


def test_a_single_feature_shift_is_alerted_on_that_feature_not_also_as_a_relation(
    repository: ModelRepository,
) -> None:
    # Shifting a moves it away from b too, so the reconstruction error rises as well: a's own alert
    # already says what changed.
    handler, _ = worker(repository.root)
    rng = np.random.default_rng(4)
    stream = correlated(rng, 12_000, 0.9)
    stream[4_000:, 0] += 1.5
    alerts = run(handler, stream)
    assert {(a.kind.value, a.subject) for a in alerts} == {("data", "a")}


def repository_manifest_reconstruction(repository: ModelRepository) -> Reconstruction:
    with load_package(repository.package_dir(MODEL, "1")) as model:
        reconstruction = model.manifest.reference.reconstruction
    assert reconstruction is not None and reconstruction.features == NAMES
    return reconstruction


def test_a_second_milder_decorrelation_after_the_recovery_is_alerted(repository: ModelRepository) -> None:
    """Independent over 6,000-16,000, correlated again, then correlated 0.6 from 19,000. The first
    incident recovers only at 19,000 (ADWIN found the fall late, and a recovery waits a window after
    it), as the second change begins: the column restarts anchored on the reference, so that change
    is still a rise. A restart that took the blocks after it as the normal never alerted it."""
    handler, observer = worker(repository.root)
    rng = np.random.default_rng(5)
    stream = np.r_[
        correlated(rng, 6_000, 0.9),
        correlated(rng, 10_000, 0.0),
        correlated(rng, 3_000, 0.9),
        correlated(rng, 6_000, 0.6),
    ]
    alerts = [a for a in run(handler, stream) if a.subject == "reconstruction_error"]
    fired = [int(a.evidence.extra["event_index"]) for a in alerts]
    assert len(fired) == 2, fired
    assert 6_000 <= fired[0] < 6_500 and 19_000 <= fired[1] < 20_000, fired
    assert observer.incidents.is_open(IncidentKey(MODEL, "data", "reconstruction_error"))  # the second
