"""The drift observer on seeded streams through the real request handler and a real model package."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from agent.models.registry import ModelRegistry
from agent.models.repository import ModelRepository
from agent.monitoring.batch import ModelBatch, Observed
from agent.monitoring.incidents import IncidentKey, IncidentManager, InMemoryIncidentStore
from agent.monitoring.model_monitor import MonitorSettingsView
from agent.monitoring.observer import DriftObserver
from agent.monitoring.technical import RateWatch
from agent.packaging.examples import classification_20
from agent.serving.handler import Record, RequestHandler
from schemas.alert import Alert, AlertKind
from tests.support.alerts import alerts_in
from tests.support.handlers import observed_handler
from tests.support.models import recorded_as_built_with

MODEL = "classification-20"
# Inference latency is the machine's, not the stream's: these tests watch the drift detectors, and the
# latency watch has its own deterministic doctest (agent.monitoring.technical.LatencyWatch).
NO_LATENCY_WATCH = MonitorSettingsView(latency_threshold=1e12)
ALERTS = "alerts"


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    # The same rows the test package's reference statistics were taken from (tests/support/models.py).
    return np.asarray(classification_20(n_estimators=10, n_samples=2000).X_reference, dtype=np.float64)


def make_handler(
    root: Path, observer: DriftObserver | None = None, *, outcomes: bool = False
) -> tuple[RequestHandler, DriftObserver]:
    """The handler of ``root``'s models with ``observer`` (by default, one with the usual settings);
    with ``outcomes``, outcomes are read from the topic ``outcomes`` and joined at once."""
    return observed_handler(root, observer, outcomes=outcomes)


def send(
    handler: RequestHandler, topic: str, ids: range, body: Callable[[int], dict[str, object]]
) -> list[Alert]:
    """Events ``ids`` of ``MODEL`` on ``topic`` (request ids ``r<i>``, ``body(i)`` the rest), handled
    as one batch; the alerts they raised."""
    records = [
        Record(topic, 0, i, None, json.dumps({"request_id": f"r{i}", "model": MODEL, **body(i)}).encode())
        for i in ids
    ]
    return [a for m in handler.handle(records) if m.topic == ALERTS for a in alerts_in([m.value])]


def features_of(X: np.ndarray) -> Callable[[int], dict[str, object]]:
    """Request ``i``'s body: row ``i`` of ``X`` (cyclically) as ``MODEL``'s 20 features."""
    names = [f"x{i:02d}" for i in range(X.shape[1])]
    return lambda i: {"features": dict(zip(names, map(float, X[i % len(X)]), strict=True))}


def run(
    handler: RequestHandler, rows: np.ndarray, *, extra: dict[str, object] | None = None, batch: int = 500
) -> list[Alert]:
    names = [f"x{i:02d}" for i in range(rows.shape[1])]
    alerts = []
    for start in range(0, len(rows), batch):
        records = []
        for i, row in enumerate(rows[start : start + batch], start):
            features: dict[str, object] = dict(zip(names, map(float, row), strict=True))
            if extra and i % 10 == 0:
                features.update(extra)
            body = {"request_id": f"r{i}", "model": MODEL, "features": features}
            records.append(Record("requests", i % 4, i, None, json.dumps(body).encode()))
        for m in handler.handle(records):
            if m.topic == ALERTS:
                alerts.extend(alerts_in([m.value]))
    return alerts


def test_step_change_in_one_feature_alerts_on_that_feature_only(
    model_repository: ModelRepository, reference: np.ndarray
) -> None:
    handler, observer = make_handler(model_repository.root)
    rng = np.random.default_rng(11)
    live = reference[rng.integers(0, len(reference), 40_000)].copy()
    change = 20_000
    live[change:, 3] += 0.5 * reference[:, 3].std()
    alerts = run(handler, live)
    data = [a for a in alerts if a.kind is AlertKind.DATA]
    assert {a.subject for a in data} == {"x03"}
    [alert] = data
    fired_at = int(alert.evidence.extra["event_index"])
    # Detected within a stated delay: 2,000 events after the step (the calibrated median is ~200).
    assert change <= fired_at <= change + 2_000
    assert alert.evidence.shift_in_std == pytest.approx(0.5, abs=0.25)
    assert "x03" in alert.message and alert.source and alert.source[0].topic == "requests"
    # No technical alert: the stream is clean and the package matches the installed libraries.
    assert not [a for a in alerts if a.kind is AlertKind.TECHNICAL]
    # The metrics sinks see the shifted window too.
    points = observer.metric_points()
    shifts = {p.tags["feature"]: p.fields["shift_sd"] for p in points if p.measurement == "driftline_feature"}
    assert shifts["x03"] > 0.3 and abs(shifts["x00"]) < 0.3
    # And each stream's detectors' statistics, by family and measure: x03's ADWIN is the one that moved.
    statistics = {
        (p.tags["feature"], p.tags["detector"]): p.fields["statistic"]
        for p in points
        if p.measurement == "driftline_detector"
    }
    families = {"adwin", "page_hinkley"}
    x03 = {d for f, d in statistics if f == "x03"}
    assert x03 == families | {"adwin_spread", "adwin_tails"}  # spread and tails have ADWIN alone
    # The predicted class: its location and the share of class 0 (class 1's is its mirror), each with
    # both detectors.
    predicted = {d for f, d in statistics if f == "predicted_class"}
    assert predicted == families | {"adwin_share_0", "page_hinkley_share_0"}
    assert {f for f, _ in statistics} == set(shifts)
    assert abs(statistics["x03", "adwin"]) > abs(statistics["x00", "adwin"])


def test_no_alert_on_a_long_no_drift_stream(model_repository: ModelRepository, reference: np.ndarray) -> None:
    handler, observer = make_handler(model_repository.root)
    rng = np.random.default_rng(5)
    assert run(handler, reference[rng.integers(0, len(reference), 100_000)]) == []
    assert observer.raised == []


def test_dependency_findings_alert_once_at_load(
    repository_copy: ModelRepository, reference: np.ndarray
) -> None:
    recorded_as_built_with(repository_copy.root / MODEL / "1", onnxruntime="0.9.0", scikit_learn="0.1.0")
    handler, _ = make_handler(repository_copy.root)
    alerts = run(handler, reference[:1500])
    technical = sorted((a.subject, a.severity.value) for a in alerts if a.detector == "dependency_versions")
    assert technical == [("onnxruntime", "critical"), ("scikit-learn", "critical")]


def test_unseen_field_in_ten_percent_of_events_is_technical_drift(
    model_repository: ModelRepository, reference: np.ndarray
) -> None:
    handler, _ = make_handler(model_repository.root)
    alerts = run(handler, reference[np.arange(4000) % len(reference)], extra={"new_field": 1.0})
    [alert] = alerts
    assert (alert.kind, alert.detector, alert.subject) == (AlertKind.TECHNICAL, "unseen_field", "new_field")


def test_rate_watch_is_independent_of_batching() -> None:
    hits = np.random.default_rng(1).random(10_000) < 0.08
    results = []
    for batch in (1, 7, 1000):
        w = RateWatch(0.0, 0.05, 2000)
        fired = []
        for start in range(0, len(hits), batch):
            chunk = hits[start : start + batch]
            if w.update(int(chunk.sum()), len(chunk)) == "fire":
                fired.append(start)
        results.append(len(fired))
    assert results == [1, 1, 1]


def test_a_rate_near_its_threshold_fires_once_and_recovers_once() -> None:
    # Windows of 2,000 reading 7 %, 4.9 %, 7 %, 2 %: under the 5 % threshold for one window is not
    # back to normal (under 2.5 %); a plain threshold would have recovered and fired again.
    w = RateWatch(0.0, 0.05, 2000)
    assert [w.update(hits, 2000) for hits in (140, 98, 140, 40)] == ["fire", None, None, "recover"]
    assert w.recover_below == 0.025 and not w.over


@pytest.mark.parametrize("outcomes_first", [False, True], ids=["outcomes-after", "outcomes-first"])
def test_flipped_labelling_rule_in_the_outcomes_raises_concept_drift(
    model_repository: ModelRepository, outcomes_first: bool
) -> None:
    # outcomes-first: each batch's outcomes are read before their requests (a backlog of both topics,
    # or outcomes sent right after their requests): they wait for their predictions, and join them.
    trained = classification_20(n_estimators=10, n_samples=2000)
    X, y = np.asarray(trained.X_reference), np.asarray(trained.y_reference)
    observer = DriftObserver(
        IncidentManager(InMemoryIncidentStore(), cooldown_s=3600),
        persist_join=True,
        settings=NO_LATENCY_WATCH,
    )
    observer.join.n_partitions = 4  # the join topic's partitions (set on assignment in a worker)
    handler, _ = observed_handler(model_repository.root, observer, outcomes=True, changelog=True)
    names = [f"x{i:02d}" for i in range(20)]
    n, flip = 12_000, 6_000
    rows = np.arange(n) % len(X)
    alerts: list[Alert] = []
    join_log: dict[int, list[tuple[bytes | None, bytes | None]]] = {}  # the join topic, by partition

    def handle(records: list[Record]) -> None:
        written = []
        for m in handler.handle(records):
            if m.topic == ALERTS:
                alerts.extend(alerts_in([m.value]))
            elif m.topic == "log":
                assert m.partition is not None
                log = join_log.setdefault(m.partition, [])
                written.append(Record("log", m.partition, len(log), m.key, m.value))
                log.append((m.key, m.value))
        if written:  # what the join topic's owner consumes next
            handle(written)

    for start in range(0, n, 500):
        idx = range(start, start + 500)
        requests = [
            Record(
                "requests",
                i % 4,
                i,
                None,
                json.dumps(
                    {
                        "request_id": f"r{i}",
                        "model": MODEL,
                        "features": dict(zip(names, map(float, X[rows[i]]), strict=True)),
                    }
                ).encode(),
            )
            for i in idx
        ]
        # The rule flips at event 6,000: from then on the observed label is the opposite class. The
        # outcomes' producer partitions by a rule of its own: the join does not depend on it.
        outcomes = [
            Record(
                "outcomes",
                (i * 7 + 3) % 5,
                i,
                None,
                json.dumps(
                    {"request_id": f"r{i}", "model": MODEL, "label": int(y[rows[i]]) ^ (i >= flip)}
                ).encode(),
            )
            for i in idx
        ]
        for records in (outcomes, requests) if outcomes_first else (requests, outcomes):
            handle(records)
    concept = [a for a in alerts if a.kind is AlertKind.CONCEPT]
    assert len(concept) == 1 and concept[0].subject == "error"
    join = observer.join
    assert (join.matched, join.late, join.unmatched_outcomes, join.waiting) == (
        n,
        n if outcomes_first else 0,
        0,
        0,
    )
    fired_at = int(concept[0].evidence.extra["event_index"])
    assert flip <= fired_at <= flip + 1_000
    # The alert names where its outcomes were read, not their copies on the join topic.
    assert concept[0].source and {r.topic for r in concept[0].source} == {"outcomes"}
    assert not [a for a in alerts if a.kind in (AlertKind.DATA, AlertKind.PREDICTION)]
    # Every prediction and every outcome went to its request id's join partition.
    from agent.monitoring.join import OUTCOME_MARK, decode_batch

    where = {f"r{i}": observer.join.partition_of(f"r{i}") for i in range(n)}
    remembered = {
        rid: p
        for p, log in join_log.items()
        for _, v in log
        if v and v[:1] != OUTCOME_MARK
        for rid, _ in decode_batch(v)
    }
    copied = {
        json.loads(v[1:])["request_id"]: p
        for p, log in join_log.items()
        for _, v in log
        if v and v[:1] == OUTCOME_MARK
    }
    assert remembered == where and copied == where and len(set(where.values())) == 4
    assert observer.join.matched == n and len(observer.join) == 0
    # A replay of the join topic (a worker assigned a partition) leaves nothing waiting either.
    assert all(observer.restore_partition(p, log) == 0 for p, log in join_log.items())


def test_a_return_to_the_reference_recovers_instead_of_alerting(
    model_repository: ModelRepository, reference: np.ndarray
) -> None:
    handler, observer = make_handler(model_repository.root)
    rng = np.random.default_rng(21)
    live = reference[rng.integers(0, len(reference), 30_000)].copy()
    live[10_000:20_000, 3] += 1.0 * reference[:, 3].std()
    alerts = [a for a in run(handler, live) if a.kind is AlertKind.DATA]
    [alert] = alerts
    assert alert.subject == "x03" and "drifted up" in alert.message
    # The message's recent mean is the evidence's: the mean over the events the shift was measured
    # on, above the reference's as the direction says.
    recent = alert.evidence.extra["recent_value"]
    assert recent > alert.evidence.extra["reference_value"]
    assert f"recent mean {recent:.4g} over " in alert.message, alert.message
    # Back to normal: the incident is closed, so a new shift would alert again at once.
    assert not observer.incidents.is_open(IncidentKey(MODEL, "data", "x03"))


def test_a_drift_first_measured_under_the_bound_is_alerted_once_a_full_window_confirms_it(
    model_repository: ModelRepository, reference: np.ndarray
) -> None:
    # A 0.14 sd step on x03 (seed 21): x03's first detection measures 0.115 sd over the events since
    # its change point, under recovery_shift_sd (0.15), so it raises nothing, and the restarted
    # detectors take the step as normal. The full window after it measures the step above the
    # bound: the drift is alerted then, naming the detection (before, it was never alerted).
    from tests.agent.monitoring.test_fleet import batches, drifted, handler, observer

    registry = ModelRegistry(model_repository.root)
    registry.refresh()
    monitor = observer(registry, IncidentManager(InMemoryIncidentStore(), cooldown_s=3600), ship=False)
    serve = handler(registry, [monitor])
    raised: list[tuple[int, Alert]] = []
    fed = 0
    for batch in batches(drifted(reference, 16_000, 6_000, 0.14, seed=21)):
        fed += len(batch)
        for m in serve.handle(batch):
            if m.topic == "alerts":
                raised.extend((fed, a) for a in alerts_in([m.value]))
    x03 = [(at, a) for at, a in raised if a.kind is AlertKind.DATA and a.subject == "x03"]
    [(at, alert)] = x03
    detected = int(alert.evidence.extra["event_index"])
    bound = MonitorSettingsView().recovery_shift_sd
    assert detected > 6_000 and alert.evidence.shift_in_std is not None
    assert alert.evidence.shift_in_std >= bound
    # Raised once a full window (2,048 events) had passed since the detection, not with it.
    window = monitor.monitors()[0].features.columns.window_events
    assert at >= detected + window, (at, detected)
    assert monitor.monitors()[0].unconfirmed == {}


@pytest.mark.parametrize("lasting", [True, False], ids=["the-step-stays", "the-step-ends"])
def test_a_detection_not_clearly_beyond_the_bound_is_judged_on_the_blocks_after_it(
    model_repository: ModelRepository, reference: np.ndarray, lasting: bool
) -> None:
    # A 0.2 sd step on x03 from event 6,000 (seed 2): x03's first detection (event 6,879) measures
    # 0.216 sd over the 768 events ADWIN cut, over the bound (0.15) but by less than two of its
    # standard errors (2/sqrt(768) = 0.072), so it is not alerted with it. While the step stays, the
    # blocks after the detection put it clearly beyond the bound before a full window is in; if the
    # step ends right after the detection, those blocks are back at the reference and nothing is
    # alerted (before alert_margin_z, the detection alone alerted at 0.216 sd).
    from tests.agent.monitoring.test_fleet import batches, drifted, handler, observer

    registry = ModelRegistry(model_repository.root)
    registry.refresh()
    monitor = observer(registry, IncidentManager(InMemoryIncidentStore(), cooldown_s=3600), ship=False)
    serve = handler(registry, [monitor])
    rows = drifted(reference, 12_000, 6_000, 0.2, seed=2)
    if not lasting:
        rows[6_900:, 3] = drifted(reference, 12_000, 12_000, 0.0, seed=2)[6_900:, 3]
    raised: list[tuple[int, Alert]] = []
    fed = 0
    for batch in batches(rows):
        fed += len(batch)
        for m in serve.handle(batch):
            if m.topic == "alerts":
                raised.extend((fed, a) for a in alerts_in([m.value]))
    x03 = [(at, a) for at, a in raised if a.kind is AlertKind.DATA and a.subject == "x03"]
    assert monitor.monitors()[0].unconfirmed == {}
    if not lasting:
        assert x03 == []
        return
    [(at, alert)] = x03
    settings = MonitorSettingsView()
    window = monitor.monitors()[0].features.columns.window_events
    assert int(alert.evidence.extra["event_index"]) == 6_879
    assert 6_879 < at < 6_879 + window, at
    count, shift = alert.evidence.window_events, alert.evidence.shift_in_std
    assert count is not None and shift is not None and count < window
    assert shift - settings.alert_margin_z / count**0.5 >= settings.recovery_shift_sd


def clocked_observer(now: list[float]) -> DriftObserver:
    """An observer, and its incidents, on the clock ``now[0]`` (no latency watch)."""
    return DriftObserver(
        IncidentManager(InMemoryIncidentStore(), cooldown_s=3600, clock=lambda: now[0]),
        settings=NO_LATENCY_WATCH,
        clock=lambda: now[0],
    )


def test_outcomes_later_than_the_join_keeps_its_predictions_say_the_concept_monitor_is_blind(
    model_repository: ModelRepository,
) -> None:
    """Labels an hour late, against a 15-minute join: every outcome went unmatched, counted in a metric
    and nowhere else, and the concept monitor watched nothing while the team thought it was on."""
    trained = classification_20(n_estimators=10, n_samples=2000)
    X, y = np.asarray(trained.X_reference), np.asarray(trained.y_reference)
    now = [1_000_000.0]
    observer = clocked_observer(now)
    handler, _ = make_handler(model_repository.root, observer, outcomes=True)
    features = features_of(X)

    def label(i: int) -> dict[str, object]:
        return {"label": int(y[i % len(X)])}

    alerts: list[Alert] = []
    for start in range(0, 4_000, 500):  # predictions now, their labels an hour later
        alerts += send(handler, "requests", range(start, start + 500), features)
    now[0] += 3_600
    assert observer.join.expire() == 4_000  # as the worker does every 100 batches
    for start in range(0, 4_000, 500):
        alerts += send(handler, "outcomes", range(start, start + 500), label)
    # They wait for their predictions for a while (the join's grace: an outcome may be read ahead of
    # its request), and count as unmatched once it is over, at the next batch: all 4,000 in one
    # window of the unjoined rate, which closes with them.
    assert observer.join.waiting == 4_000 and alerts == []
    now[0] += 61
    alerts += send(handler, "requests", range(9_000, 9_500), features)
    assert observer.join.waiting == 0
    unjoined = [a for a in alerts if a.subject == "unjoined_outcomes"]
    assert len(unjoined) == 1, [(a.kind.value, a.subject) for a in alerts]
    alert = unjoined[0]
    assert alert.kind is AlertKind.TECHNICAL and alert.model == MODEL
    assert alert.message.startswith(f"100.0% of the last 4,000 outcomes of {MODEL} matched no prediction")
    assert "900 s" in alert.message and "JOIN_TTL_S" in alert.message
    assert "waits 60 s for it (DRIFTLINE_MONITORING__JOIN_GRACE_S)" in alert.message
    assert alert.evidence.extra["expired"] == 4_000.0  # every prediction expired unmatched
    key = IncidentKey(MODEL, AlertKind.TECHNICAL.value, "unjoined_outcomes")
    assert observer.incidents.is_open(key)
    # Labels within the join's time: they join, and the next window recovers the incident.
    for start in range(4_000, 8_000, 500):
        alerts += send(handler, "requests", range(start, start + 500), features)
        alerts += send(handler, "outcomes", range(start, start + 500), label)
    assert not observer.incidents.is_open(key)
    assert len([a for a in alerts if a.subject == "unjoined_outcomes"]) == 1
    # Outcomes naming models nobody serves keep no watch: junk names cost no memory.
    ghosts = [
        Record(
            "outcomes",
            0,
            i,
            None,
            json.dumps({"request_id": f"g{i}", "model": f"ghost-{i}", "label": 0}).encode(),
        )
        for i in range(500)
    ]
    before = observer.join.unmatched_outcomes
    handler.handle(ghosts)
    now[0] += 61
    send(handler, "requests", range(9_500, 10_000), features)
    assert observer.join.unmatched_outcomes == before + 500  # they reached the join, unmatched
    assert set(observer.unjoined) == {MODEL}


def test_outcomes_past_the_grace_on_an_idle_worker_are_counted_when_it_ends(
    model_repository: ModelRepository,
) -> None:
    """Outcomes whose predictions never come, and then no traffic: they were counted unmatched (and
    the unjoined-outcomes alert raised) only when the next batch came, minutes or days later. The
    serving loop asks the handler for its idle work when a poll returns nothing."""
    now = [1_000_000.0]
    observer = clocked_observer(now)
    handler, _ = make_handler(model_repository.root, observer, outcomes=True)
    trained = classification_20(n_estimators=10, n_samples=2000)
    alerts = send(handler, "requests", range(10_000, 10_500), features_of(np.asarray(trained.X_reference)))
    for start in range(0, 4_000, 500):  # labels of requests this worker never saw
        alerts += send(handler, "outcomes", range(start, start + 500), lambda i: {"label": 0})
    assert observer.join.waiting == 4_000 and alerts == []
    now[0] += 59  # within the grace: nothing to say yet
    assert handler.idle() == [] and observer.join.waiting == 4_000
    now[0] += 2
    idle = handler.idle()
    assert observer.join.waiting == 0 and observer.join.unmatched_outcomes == 4_000
    assert observer.metrics.outcomes.labels(result="unmatched")._value.get() == 4_000
    raised = [a for m in idle if m.topic == ALERTS for a in alerts_in([m.value])]
    assert [a.subject for a in raised] == ["unjoined_outcomes"], raised
    assert raised[0].message.startswith(f"100.0% of the last 4,000 outcomes of {MODEL} matched no prediction")
    assert handler.idle() == []  # said once


def test_a_second_label_change_after_the_error_recovered_alerts_at_once(
    model_repository: ModelRepository,
) -> None:
    """Every label wrong over outcomes 1,500-5,500, right again, every other one wrong from 9,000:
    the concept incident recovers in between and restarts the error's detectors, so the second
    change is alerted at its first block. Without the restart, Page-Hinkley's mean sat on the first
    change's level, above the second's, and nothing was alerted in the 3,000 outcomes after it."""
    trained = classification_20(n_estimators=10, n_samples=2000)
    X, y = np.asarray(trained.X_reference), np.asarray(trained.y_reference)
    observer = DriftObserver(
        IncidentManager(InMemoryIncidentStore(), cooldown_s=3600), settings=NO_LATENCY_WATCH
    )
    handler, _ = make_handler(model_repository.root, observer, outcomes=True)
    features = features_of(X)

    def label(i: int) -> dict[str, object]:
        # Every label wrong over 1,500-5,500; from 9,000 every other one (a milder change).
        flipped = 1_500 <= i < 5_500 or (i >= 9_000 and i % 2 == 0)
        return {"label": int(y[i % len(X)]) ^ flipped}

    alerts: list[Alert] = []
    recovered_between = False
    key = IncidentKey(MODEL, AlertKind.CONCEPT.value, "error")
    for start in range(0, 12_000, 250):
        ids = range(start, start + 250)
        alerts += send(handler, "requests", ids, features)
        alerts += send(handler, "outcomes", ids, label)
        if 5_500 <= start < 9_000 and not observer.incidents.is_open(key):
            recovered_between = True
    concept = [int(a.evidence.extra["event_index"]) for a in alerts if a.kind is AlertKind.CONCEPT]
    assert recovered_between
    assert len(concept) == 2, concept
    assert 1_500 <= concept[0] < 2_500 and 9_000 <= concept[1] < 10_000, concept


class _Timed:
    """The observer with each batch's inference time set to ``per_call_s`` plus ``per_row_s`` per
    row, on a clock that moves ``step_s`` per batch: the machine's own latency is not under test, what
    the watch makes of it is."""

    def __init__(self, worker: str = "") -> None:
        self.now = 0.0
        self.inner = DriftObserver(
            IncidentManager(InMemoryIncidentStore(), cooldown_s=3600),
            settings=MonitorSettingsView(latency_threshold=20.0),
            worker=worker,
            clock=lambda: self.now,
        )
        self.per_call_s = 0.0
        self.per_row_s = 10e-6
        self.step_s = 1.0

    def observe(self, batch: ModelBatch) -> Observed:
        self.now += self.step_s
        seconds = self.per_call_s + self.per_row_s * len(batch.records)
        return self.inner.observe(dataclasses.replace(batch, inference_seconds=seconds))

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_a_latency_alert_names_the_worker_whose_inference_got_slower(
    model_repository: ModelRepository, reference: np.ndarray
) -> None:
    timed = _Timed(worker="host-7/4242")
    handler, _ = observed_handler(model_repository.root, timed)  # type: ignore[arg-type]
    rows = reference[np.random.default_rng(17).integers(0, len(reference), 40_000)]
    alerts = run(handler, rows[:20_000], batch=250)  # 80 batches at 10 us per row
    timed.per_row_s = 40e-6  # 4x slower from here
    alerts += run(handler, rows[20_000:], batch=250)
    [latency] = [a for a in alerts if a.subject == "inference_latency"]
    assert latency.message.startswith(
        f"inference latency of {MODEL}/1 rose to 40.0 us per row, 4.0x its level at that batch size"
    )
    assert latency.message.endswith("on worker host-7/4242")
    assert latency.evidence.extra["worker"] == "host-7/4242"
    assert latency.evidence.extra["ratio_to_baseline"] == pytest.approx(4.0)


def test_latency_is_compared_at_the_same_batch_size_and_over_seconds_not_batches(
    model_repository: ModelRepository, reference: np.ndarray
) -> None:
    # A call costs 50 us plus 2 per row: 2.1 us per row in batches of 500, 52 in batches of one. A
    # worker that warmed up under load used to raise a latency alert 34 batches after the traffic
    # fell to one request per batch, with nothing slower.
    timed = _Timed()
    timed.per_call_s, timed.per_row_s = 50e-6, 2e-6
    handler, _ = observed_handler(model_repository.root, timed)  # type: ignore[arg-type]
    rows = reference[np.random.default_rng(18).integers(0, len(reference), 60_000)]
    alerts = run(handler, rows[:30_000], batch=500)  # 60 batches under load
    alerts += run(handler, rows[30_000:30_300], batch=1)  # the night: one request per batch
    assert not [a for a in alerts if a.subject == "inference_latency"]
    # A burst of slow batches within one second is not a slower machine either.
    timed.per_call_s, timed.step_s = 500e-6, 0.005
    alerts += run(handler, rows[30_300:30_500], batch=1)  # 200 batches 10x slower, in one second
    timed.per_call_s, timed.step_s = 50e-6, 1.0
    alerts += run(handler, rows[30_500:31_000], batch=1)
    assert not [a for a in alerts if a.subject == "inference_latency"]
    # A machine three times slower, for a minute: that is one.
    timed.per_call_s, timed.per_row_s = 150e-6, 6e-6
    alerts += run(handler, rows[31_000:31_060], batch=1)
    [latency] = [a for a in alerts if a.subject == "inference_latency"]
    assert latency.evidence.extra["ratio_to_baseline"] == pytest.approx(3.0)
