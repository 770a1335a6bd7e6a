"""Estimated performance without labels, on seeded streams through the real handler and real packages.

Two logistic models of three standard-normal features, packaged with the real builder (so with the
calibration and the importances it measures on a holdout): in ``middle`` the decision boundary is at
x0's median (P(y=1) = sigmoid(4 x0 + 0.5 x1)), in ``edge`` it is at x0 = 1.5, where few rows are. x2
means nothing to either. Labels come from that same rule, so the calibration holds on the stream.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from agent.models.registry import ModelRegistry
from agent.models.repository import ModelRepository
from agent.monitoring.fleet import decode_stats
from agent.monitoring.incidents import IncidentKey, IncidentManager, InMemoryIncidentStore
from agent.monitoring.model_monitor import MonitorSettingsView
from agent.monitoring.observer import DriftObserver
from agent.packaging.builder import build_package
from agent.packaging.examples import EXAMPLES
from agent.packaging.training import TrainingResult
from agent.serving.handler import Record, RequestHandler
from agent.serving.messages import OutgoingMessage
from producers.scenarios import generate
from producers.stream import MessageKind
from schemas.alert import Alert, AlertKind
from tests.support.alerts import alerts_in
from tests.support.handlers import STATS, observed_handler

NAMES = ("x0", "x1", "x2")
ALERTS = "alerts"
OUTCOMES = "outcomes"
# Inference latency is the machine's, not the stream's (see test_observer.py).
SETTINGS = MonitorSettingsView(latency_threshold=1e12)
BOUNDARY = {"middle": 0.0, "edge": 1.5}


def probability(X: np.ndarray, boundary: float) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-(4.0 * (X[:, 0] - boundary) + 0.5 * X[:, 1]))))


def labelled(rng: np.random.Generator, n: int, boundary: float) -> tuple[np.ndarray, np.ndarray]:
    X = rng.normal(size=(n, 3))
    return X, (rng.random(n) < probability(X, boundary)).astype(int)


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    repository = ModelRepository(tmp_path_factory.mktemp("estimation-models"))
    for name, boundary in BOUNDARY.items():
        rng = np.random.default_rng(3)
        X, y = labelled(rng, 6000, boundary)
        X_holdout, y_holdout = labelled(rng, 3000, boundary)
        model = LogisticRegression().fit(X, y)
        result = TrainingResult(model, X, y, list(NAMES), X_holdout, y_holdout)
        build_package(result, name=name, version="1", repository=repository)
    return repository


def make_handler(root: Path) -> tuple[RequestHandler, DriftObserver]:
    return observed_handler(root, settings=SETTINGS, outcomes=True)


def requests(model: str, rows: np.ndarray, first: int = 0) -> Iterator[Record]:
    for i, row in enumerate(rows, first):
        body = {
            "request_id": f"r{i}",
            "model": model,
            "features": dict(zip(NAMES, map(float, row), strict=True)),
        }
        yield Record("requests", i % 4, i, None, json.dumps(body).encode())


def handled(
    handler: RequestHandler, records: Iterator[Record], batch: int = 500
) -> Iterator[OutgoingMessage]:
    """What ``handler`` answers to ``records``, handed to it in batches of ``batch``."""
    pending: list[Record] = []
    for record in records:
        pending.append(record)
        if len(pending) == batch:
            yield from handler.handle(pending)
            pending.clear()
    if pending:
        yield from handler.handle(pending)


def run(handler: RequestHandler, records: Iterator[Record], batch: int = 500) -> list[Alert]:
    return alerts_in(m.value for m in handled(handler, records, batch) if m.topic == ALERTS)


def test_the_packages_know_what_they_depend_on(repository: ModelRepository) -> None:
    registry = ModelRegistry(repository.root)
    registry.refresh()
    for served in registry.served():
        m = served.manifest
        assert m.calibration is not None and m.importance is not None
        importance = m.importance.values
        assert importance["x0"] > 0.8 and importance["x2"] < 0.02, importance


def test_a_shift_toward_the_boundary_raises_a_performance_alert_before_any_label(
    repository: ModelRepository,
) -> None:
    # 'edge': x0 moves up by 1.5 sd at event 20,000, to where the model is unsure; no outcome is sent
    # (the labels come later than the test lasts).
    handler, observer = make_handler(repository.root)
    rows = np.random.default_rng(8).normal(size=(40_000, 3))
    change = 20_000
    rows[change:, 0] += 1.5
    alerts = run(handler, requests("edge", rows))
    [performance] = [a for a in alerts if a.kind is AlertKind.PERFORMANCE]
    fired_at = int(performance.evidence.extra["event_index"])
    assert change < fired_at <= change + 1_000
    assert (
        performance.subject == "estimated_error" and performance.evidence.extra["metric"] == "estimated_error"
    )
    # The estimate is about what the labels would say: sigmoid(4 (x0 - 1.5)) with x0 ~ N(1.5, 1).
    shifted = rows[change:]
    p = probability(shifted, BOUNDARY["edge"])
    bayes = float(np.minimum(p, 1 - p).mean())
    assert performance.evidence.recent_mean == pytest.approx(bayes, abs=0.03)
    # It names the feature that moved, first, in its evidence (data) and its message.
    drivers = performance.evidence.drivers
    assert drivers and drivers[0].feature == "x0" and drivers[0].statistic == "mean"
    assert drivers[0].shift > 1.0 and drivers[0].importance > 0.8
    assert "likely drivers: x0 +" in performance.message
    # The prediction-drift alerts (the output, and which class is predicted) name it too; the data
    # alert is on x0 alone; no concept alert without outcomes.
    predictions = [a for a in alerts if a.kind is AlertKind.PREDICTION]
    assert sorted(a.subject for a in predictions) == ["predicted_class", "prediction"]
    assert all(a.evidence.drivers[0].feature == "x0" for a in predictions)
    # The classes' mix moved toward the rarer class: class 0's share fell.
    [classes] = [a for a in predictions if a.subject == "predicted_class"]
    assert (classes.evidence.extra["measure"], classes.evidence.extra["category"]) == ("share", "0")
    assert classes.message.startswith("share of class '0' among the predictions of edge/1 fell from 94%")
    assert {a.subject for a in alerts if a.kind is AlertKind.DATA} == {"x0"}
    assert not [a for a in alerts if a.kind is AlertKind.CONCEPT]
    points = {p.measurement: p for p in observer.metric_points()}
    assert points["driftline_performance"].fields["estimated_error"] == pytest.approx(bayes, abs=0.03)
    assert "realised_error" not in points["driftline_performance"].fields  # no label yet


def test_a_shift_on_a_feature_the_model_ignores_is_data_drift_only(repository: ModelRepository) -> None:
    handler, _ = make_handler(repository.root)
    rows = np.random.default_rng(9).normal(size=(40_000, 3))
    rows[20_000:, 2] += 1.0
    alerts = run(handler, requests("edge", rows))
    assert [(a.kind, a.subject) for a in alerts] == [(AlertKind.DATA, "x2")]


def test_the_important_feature_squeezed_to_the_boundary(repository: ModelRepository) -> None:
    # The case: 'middle' has its boundary at x0's median; x0's spread shrinks five-fold at
    # event 20,000 (its mean does not move) and the error goes from about 13 % to about 33 %.
    handler, observer = make_handler(repository.root)
    rng = np.random.default_rng(10)
    rows = rng.normal(size=(40_000, 3))
    change = 20_000
    rows[change:, 0] *= 0.2
    alerts = run(handler, requests("middle", rows))
    [performance] = [a for a in alerts if a.kind is AlertKind.PERFORMANCE]
    assert change < int(performance.evidence.extra["event_index"]) <= change + 1_000
    first = performance.evidence.drivers[0]
    assert (first.feature, first.statistic) == ("x0", "spread")
    # Read over the 256 events before the alert, a few of them from before the squeeze.
    assert 0.15 < first.shift < 0.4
    assert "likely drivers: x0 spread x0." in performance.message
    # Still open at the end: the estimate stays up while the squeeze lasts.
    assert observer.incidents.is_open(IncidentKey("middle", "performance", "estimated_error"))


def squeezed_with_labels(flipped: bool = False) -> tuple[np.ndarray, Iterator[Record]]:
    """'middle' with x0 squeezed five-fold from event 10,000, each request followed by its outcome,
    labelled by the model's own rule (or, ``flipped``, by the opposite rule from the squeeze on)."""
    rng = np.random.default_rng(12)
    rows = rng.normal(size=(20_000, 3))
    rows[10_000:, 0] *= 0.2
    y = (rng.random(len(rows)) < probability(rows, BOUNDARY["middle"])).astype(int)
    if flipped:
        y[10_000:] = 1 - y[10_000:]

    def with_outcomes() -> Iterator[Record]:
        for i, record in enumerate(requests("middle", rows)):
            yield record
            outcome = {"request_id": f"r{i}", "model": "middle", "label": int(y[i])}
            yield Record(OUTCOMES, i % 4, i, None, json.dumps(outcome).encode())

    return rows, with_outcomes()


def test_with_labels_the_estimate_is_set_beside_the_realised_error(repository: ModelRepository) -> None:
    handler, observer = make_handler(repository.root)
    _, stream = squeezed_with_labels()
    alerts = run(handler, stream)
    [monitor] = observer.monitors()
    window = monitor.estimate_check.current()
    assert window.count == 2000
    assert window.realised == pytest.approx(0.33, abs=0.03)
    assert abs(window.gap) < 0.03
    [point] = [p for p in observer.metric_points() if p.measurement == "driftline_performance"]
    assert point.fields["realised_error"] == window.realised
    assert point.fields["estimate_gap"] == pytest.approx(window.gap)
    assert point.fields["estimate_abs_gap"] == pytest.approx(abs(window.gap))
    kinds = [a.kind for a in alerts]
    # The estimate saw it first: it needs no label. The concept alert names the same driver.
    assert kinds.index(AlertKind.PERFORMANCE) < kinds.index(AlertKind.CONCEPT)
    [concept] = [a for a in alerts if a.kind is AlertKind.CONCEPT]
    assert concept.evidence.drivers[0].feature == "x0"
    # The inputs explain the rise: as much was estimated for the same predictions. One incident.
    extra = concept.evidence.extra
    assert extra["unexplained_by_inputs"] == 0.0, concept.message
    assert abs(float(extra["realised_error_same"]) - float(extra["estimated_error_same"])) < 0.05
    assert "; the inputs explain it: " in concept.message
    incident = observer.incidents.incident
    groups = {incident(IncidentKey("middle", kind, subject)).group_id for kind, subject in [  # type: ignore[union-attr]
        ("performance", "estimated_error"), ("concept", "error")]}  # fmt: skip
    assert len(groups) == 1


def test_an_error_the_inputs_do_not_explain_is_said_so_and_is_an_incident_of_its_own(
    repository: ModelRepository,
) -> None:
    # The same squeeze, and the labels now follow the opposite rule: 67 % wrong where the model's
    # confidence says 33 %. The estimated error's incident is open when the concept alert comes, and
    # a change in P(y | x) is not its doing.
    handler, observer = make_handler(repository.root)
    _, stream = squeezed_with_labels(flipped=True)
    alerts = run(handler, stream)
    [concept] = [a for a in alerts if a.kind is AlertKind.CONCEPT]
    extra = concept.evidence.extra
    assert extra["unexplained_by_inputs"] == 1.0
    assert float(extra["realised_error_same"]) - float(extra["estimated_error_same"]) > 0.2
    assert "the labels no longer follow the inputs as they did" in concept.message
    performance = observer.incidents.incident(IncidentKey("middle", "performance", "estimated_error"))
    error = observer.incidents.incident(IncidentKey("middle", "concept", "error"))
    assert performance is not None and error is not None
    assert error.group_id != performance.group_id and error.group_id == concept.alert_id


# --- the bundled examples, under the scenario shifts -----------------------------------------------


@pytest.fixture(scope="module")
def examples(tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    repository = ModelRepository(tmp_path_factory.mktemp("example-models"))
    for name in ("breast-cancer", "classification-20"):
        build_package(EXAMPLES[name](), name=name, version="1", repository=repository)
    return repository


def window_gaps(root: Path, model: str, scenario: str) -> list[float]:
    """``estimated - realised`` over each window of 2,000 joined predictions of a 20,000-event run."""
    handler, observer = make_handler(root)
    pending: list[Record] = []
    gaps = []
    outcomes = 0
    for i, message in enumerate(generate(scenario, model=model, seed=0, count=20_000)):
        topic = OUTCOMES if message.kind is MessageKind.OUTCOME else "requests"
        pending.append(Record(topic, 0, i, message.key, message.value))
        if topic == OUTCOMES:
            outcomes += 1
            if outcomes % 2000 == 0:
                handler.handle(pending)
                pending.clear()
                window = observer.monitors()[0].estimate_check.current()
                assert window.count == 2000
                gaps.append(window.gap)
    return gaps


@pytest.mark.parametrize("scenario", ["calm", "covariate", "gradual", "recurring"])
def test_the_estimate_of_classification_20_is_within_3_points(
    examples: ModelRepository, scenario: str
) -> None:
    gaps = window_gaps(examples.root, "classification-20", scenario)
    worst = max(abs(g) for g in gaps)
    # gradual ramps x05 to +2 sd, beyond most of the holdout: the estimate lags the error there.
    assert worst <= (0.035 if scenario == "gradual" else 0.03), gaps


@pytest.mark.parametrize(
    ("scenario", "bound"), [("calm", 0.03), ("covariate", 0.03), ("gradual", 0.035), ("recurring", 0.03)]
)
def test_the_estimate_of_breast_cancer(examples: ModelRepository, scenario: str, bound: float) -> None:
    # Calibrated per predicted class on 569 rows (143 holdout, 426 training rows predicted out of
    # fold): within 3 points calm, covariate and recurring. Still too pessimistic rather than not: the
    # streams replay its training rows, which the forest knows by heart, and +1 sd of 'worst radius'
    # makes it less sure of rows it still gets right. gradual ramps it to +2 sd, beyond most of the
    # holdout: 3.1 points there.
    gaps = window_gaps(examples.root, "breast-cancer", scenario)
    assert max(abs(g) for g in gaps) <= bound, gaps
    assert min(gaps) > -0.01  # never optimistic


# --- a regressor's estimated error, from the error model in its package ----------------------------

REGRESSOR = "noisy"


def noisy_target(rng: np.random.Generator, X: np.ndarray) -> np.ndarray:
    """y = x0 + 2 x1 + noise whose spread is 0.2 + |x0|: the model errs more as |x0| grows. x2 means
    nothing to the target."""
    return np.asarray(X[:, 0] + 2 * X[:, 1] + rng.normal(size=len(X)) * (0.2 + np.abs(X[:, 0])))


def expected_mae(X: np.ndarray) -> float:
    """The MAE of the true regression line on rows ``X``: E|N(0, 1)| (0.2 + |x0|)."""
    return float(np.sqrt(2 / np.pi) * (0.2 + np.abs(X[:, 0])).mean())


@pytest.fixture(scope="module")
def regressors(tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    from sklearn.linear_model import LinearRegression

    repository = ModelRepository(tmp_path_factory.mktemp("regressor-models"))
    rng = np.random.default_rng(3)
    X, X_holdout = rng.normal(size=(6000, 3)), rng.normal(size=(3000, 3))
    y, y_holdout = noisy_target(rng, X), noisy_target(rng, X_holdout)
    result = TrainingResult(LinearRegression().fit(X, y), X, y, list(NAMES), X_holdout, y_holdout)
    build_package(result, name=REGRESSOR, version="1", repository=repository)
    return repository


def test_a_regressor_shifted_into_its_noisy_region_raises_a_performance_alert(
    regressors: ModelRepository,
) -> None:
    # x0 moves up by 1.5 sd at event 20,000, to where the noise is larger; no outcome is sent.
    handler, observer = make_handler(regressors.root)
    rows = np.random.default_rng(8).normal(size=(40_000, 3))
    change = 20_000
    rows[change:, 0] += 1.5
    alerts = run(handler, requests(REGRESSOR, rows))
    [performance] = [a for a in alerts if a.kind is AlertKind.PERFORMANCE]
    fired_at = int(performance.evidence.extra["event_index"])
    assert change < fired_at <= change + 1_000
    assert performance.evidence.extra["metric"] == "estimated_mae"
    assert f"the estimated mean absolute error of {REGRESSOR}/1 rose from 0.8" in performance.message
    # It fires on the first block after the change (128 predictions, a few from before it).
    assert performance.evidence.recent_mean > 1.3 * expected_mae(rows[:change])
    drivers = performance.evidence.drivers
    assert drivers and drivers[0].feature == "x0" and drivers[0].statistic == "mean"
    assert not [a for a in alerts if a.kind is AlertKind.CONCEPT]
    # Over the recent window it is about what the labels would say.
    truth = expected_mae(rows[change:])
    [point] = [p for p in observer.metric_points() if p.measurement == "driftline_performance"]
    assert point.fields["estimated_error"] == pytest.approx(truth, rel=0.1), truth
    assert "realised_error" not in point.fields


def test_a_regressor_shifted_on_a_feature_it_ignores_is_data_drift_only(regressors: ModelRepository) -> None:
    handler, _ = make_handler(regressors.root)
    rows = np.random.default_rng(9).normal(size=(40_000, 3))
    rows[20_000:, 2] += 1.0
    alerts = run(handler, requests(REGRESSOR, rows))
    assert [(a.kind, a.subject) for a in alerts] == [(AlertKind.DATA, "x2")]


def test_with_labels_a_regressors_estimate_is_beside_its_realised_mae(regressors: ModelRepository) -> None:
    handler, observer = make_handler(regressors.root)
    rng = np.random.default_rng(12)
    rows = rng.normal(size=(20_000, 3))
    rows[10_000:, 0] += 1.5
    y = noisy_target(rng, rows)

    def with_outcomes() -> Iterator[Record]:
        for i, record in enumerate(requests(REGRESSOR, rows)):
            yield record
            outcome = {"request_id": f"r{i}", "model": REGRESSOR, "value": float(y[i])}
            yield Record(OUTCOMES, i % 4, i, None, json.dumps(outcome).encode())

    alerts = run(handler, with_outcomes())
    [monitor] = observer.monitors()
    window = monitor.estimate_check.current()
    assert window.count == 2000
    assert window.realised == pytest.approx(expected_mae(rows[-2000:]), rel=0.1)
    # Estimated vs realised MAE over the last 2,000 joined predictions, all in the shifted region.
    assert abs(window.gap) < 0.1 * window.realised, window
    [point] = [p for p in observer.metric_points() if p.measurement == "driftline_performance"]
    assert point.fields["realised_error"] == window.realised
    assert point.fields["estimate_gap"] == pytest.approx(window.gap)
    kinds = [a.kind for a in alerts]
    assert kinds.index(AlertKind.PERFORMANCE) < kinds.index(AlertKind.CONCEPT)
    # The inputs explain the rise: its error model estimated about as much for the same predictions.
    [concept] = [a for a in alerts if a.kind is AlertKind.CONCEPT]
    assert concept.evidence.extra["unexplained_by_inputs"] == 0.0, concept.message
    assert "; the inputs explain it: an MAE of " in concept.message


def regressor_stream(seed: int, *, shift: float = 0.0, noise: float = 1.0) -> Iterator[Record]:
    """20,000 requests to the regressor with their outcomes, each after its request; from event
    10,000, x0 moves up by ``shift`` and the noise is ``noise`` times as large."""
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(20_000, 3))
    rows[10_000:, 0] += shift
    signal = rows[:, 0] + 2 * rows[:, 1]
    y = noisy_target(rng, rows)
    y[10_000:] = signal[10_000:] + (y[10_000:] - signal[10_000:]) * noise
    for i, record in enumerate(requests(REGRESSOR, rows)):
        yield record
        outcome = {"request_id": f"r{i}", "model": REGRESSOR, "value": float(y[i])}
        yield Record(OUTCOMES, i % 4, i, None, json.dumps(outcome).encode())


def fleet_alerts(
    root: Path, records: Iterator[Record], batch: int = 500
) -> tuple[list[Alert], IncidentManager]:
    """The alerts of a stream through a worker that ships its statistics, judged by the model's
    monitor (fleet monitoring, in process), and their incident gate."""
    incidents = IncidentManager(InMemoryIncidentStore(), cooldown_s=3600)
    worker = DriftObserver(incidents, settings=SETTINGS, ship_stats=True, ship_interval_s=0)
    handler, _ = observed_handler(root, worker, outcomes=True, stats=True)
    monitor = DriftObserver(incidents, settings=SETTINGS, resolve=handler.registry.resolve)
    alerts = [
        alert
        for message in handled(handler, records, batch)
        if message.topic == STATS and message.value
        for alert in monitor.observe_stats(decode_stats(message.value)).alerts
    ]
    return alerts, incidents


@pytest.mark.parametrize("fleet", [False, True], ids=["one-process", "fleet"])
@pytest.mark.parametrize(
    ("shift", "noise", "unexplained"),
    [(1.5, 1.0, False), (0.0, 3.0, True), (1.5, 3.0, True)],
    ids=["inputs-moved", "targets-noisier", "both"],
)
def test_a_regressors_concept_alert_says_whether_its_inputs_explain_the_rise(
    regressors: ModelRepository, fleet: bool, shift: float, noise: float, unexplained: bool
) -> None:
    # The realised MAE of the joined predictions beside what the error model estimated for them when
    # they were made: the noisier targets raise it (~0.8 to ~2.4) where no input moved, or beyond what
    # the shift explains (~1.4); a fleet's workers ship both sums to the model's monitor.
    stream = regressor_stream(21, shift=shift, noise=noise)
    if fleet:
        alerts, incidents = fleet_alerts(regressors.root, stream)
    else:
        handler, observer = make_handler(regressors.root)
        alerts, incidents = run(handler, stream), observer.incidents
    [concept] = [a for a in alerts if a.kind is AlertKind.CONCEPT]
    extra = concept.evidence.extra
    assert extra["unexplained_by_inputs"] == float(unexplained), concept.message
    realised, estimated = float(extra["realised_error_same"]), float(extra["estimated_error_same"])
    assert int(extra["same_predictions"]) >= 50
    if unexplained:
        assert realised > 1.5 * estimated, extra
        assert "the targets no longer follow the inputs as they did" in concept.message
        assert "estimated by its error model when it made them" in concept.message
        incident = incidents.incident(IncidentKey(REGRESSOR, "concept", "error"))
        assert incident is not None and incident.group_id == concept.alert_id  # an incident of its own
    else:
        assert abs(realised - estimated) < 0.25 * estimated, extra
        assert "; the inputs explain it: an MAE of " in concept.message
