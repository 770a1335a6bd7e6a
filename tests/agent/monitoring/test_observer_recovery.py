"""When a drift incident recovers: only once a full window of events after the detection is back to
normal, so that an ongoing drift keeps its incident open (and a restarted worker, whose detectors start
again from the reference, does not alert it a second time)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agent.models.repository import ModelRepository
from agent.monitoring.incidents import IncidentKey, InMemoryIncidentStore
from agent.monitoring.model_monitor import MonitorSettingsView
from agent.monitoring.observer import DriftObserver
from agent.packaging.examples import classification_20
from agent.serving.handler import Record, RequestHandler
from schemas.alert import Alert, Severity
from tests.support.alerts import alerts_in
from tests.support.handlers import observed_handler

MODEL = "classification-20"
NAMES = [f"x{i:02d}" for i in range(20)]
SETTINGS = MonitorSettingsView(latency_threshold=1e12)  # the machine's latency is not under test


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return np.asarray(classification_20(n_estimators=10, n_samples=2000).X_reference, dtype=np.float64)


def worker(root: Path, store: InMemoryIncidentStore) -> tuple[RequestHandler, DriftObserver]:
    """A worker's handler and monitor; workers built on one store share their incidents (as they do
    through the incidents topic, and as a restarted worker finds them)."""
    return observed_handler(root, settings=SETTINGS, store=store)


def request(i: int, row: np.ndarray) -> Record:
    body = {"request_id": f"r{i}", "model": MODEL, "features": dict(zip(NAMES, map(float, row), strict=True))}
    return Record("requests", i % 2, i, None, json.dumps(body).encode())


def run(handler: RequestHandler, rows: np.ndarray, first: int = 0) -> tuple[list[Alert], list[set[str]]]:
    """Feeds ``rows`` in batches of 100 (a worker's batches at a modest rate); returns the alerts and,
    after each batch, the open incidents."""
    alerts, open_after = [], []
    incidents = handler.observers[0].incidents  # type: ignore[attr-defined]
    for start in range(0, len(rows), 100):
        records = [request(i, row) for i, row in enumerate(rows[start : start + 100], first + start)]
        alerts += alerts_in(m.value for m in handler.handle(records) if m.topic == "alerts")
        open_after.append({f"{i.key.kind}/{i.key.subject}" for i in incidents.open_incidents()})
    return alerts, open_after


def test_an_ongoing_drift_keeps_its_incidents_open_across_a_restart_and_they_recover_after_it(
    model_repository: ModelRepository, reference: np.ndarray
) -> None:
    rng = np.random.default_rng(4)
    rows = reference[rng.integers(0, len(reference), 40_000)].copy()
    rows[1_000:12_000, 3] += 1.5 * reference[:, 3].std()  # x03 drifts from event 1,000 to 12,000
    store = InMemoryIncidentStore()
    first, _ = worker(model_repository.root, store)
    alerts, open_after = run(first, rows[:6_000])
    raised = {f"{a.kind.value}/{a.subject}": a.opened_at_event for a in alerts}
    severity = {f"{a.kind.value}/{a.subject}": a.severity for a in alerts}
    # The step moves x03 and, a little, the model's output (-0.3 reference sd) and which class it
    # predicts; the rows move to where the model is less sure, so its estimated error rises too.
    assert raised == {
        "data/x03": 1_100, "prediction/prediction": 1_500, "performance/estimated_error": 1_300,
        "prediction/predicted_class": 1_600,
    }, alerts  # fmt: skip
    [classes] = [a for a in alerts if a.subject == "predicted_class"]
    assert (classes.evidence.extra["measure"], classes.evidence.extra["category"]) == ("share", "0")
    assert classes.message.startswith(
        "share of class '0' among the predictions of classification-20/1 rose from 50%"
    )
    # All stay open while the drift goes on. They used to close one batch after they opened: the
    # window that judged the recovery still held the 1,000 events before the step.
    assert all(open_now == set(raised) for open_now in open_after[20:]), open_after

    # A restart: a new worker whose detectors start from the reference again, on the same incidents.
    # It sees the drift again; the open incidents keep it from alerting it twice. Only what is news
    # passes: x03's step, first measured over a segment that began before it (+0.98 sd, a warning),
    # is measured whole from the reference this time (+1.28 sd): critical, an escalation.
    second, observer = worker(model_repository.root, store)
    alerts, open_after = run(second, rows[6_000:], first=6_000)
    assert observer.incidents.suppressed + len(alerts) >= 2
    assert [(f"{a.kind.value}/{a.subject}", a.severity) for a in alerts] == [("data/x03", Severity.CRITICAL)]
    assert severity["data/x03"] is Severity.WARNING
    # The drift ends at event 12,000: the drift incidents recover within two windows (2 x 2,048
    # events); the estimated error's within two of its own windows of blocks (2 x 16,384 events: the
    # restarted worker's estimate saw the drift again at its start, and its window must first hold no
    # prediction from before that detection).
    drift_open = [{k for k in now if not k.startswith("performance/")} for now in open_after]
    back = drift_open.index(set()) * 100 + 6_000
    assert 12_000 < back <= 12_000 + 2 * 2_048, open_after
    estimated = observer.monitors()[0].estimated
    assert estimated is not None
    window = estimated.config.window_blocks * estimated.block_size
    back = open_after.index(set()) * 100 + 6_000
    assert back <= 12_000 + 2 * window, open_after
    assert open_after[-1] == set()
    assert not observer.incidents.is_open(IncidentKey(MODEL, "data", "x03"))


def predictions_and_outcomes(
    model_repository: ModelRepository, reference: np.ndarray, n: int
) -> tuple[RequestHandler, DriftObserver, dict[str, int], np.random.Generator]:
    """A worker that has served ``n`` requests, and the label it predicted for each."""
    rng = np.random.default_rng(1)
    rows = reference[rng.integers(0, len(reference), n)]
    handler, observer = worker(model_repository.root, InMemoryIncidentStore())
    handler.outcomes_topic = "outcomes"
    predicted = {}
    for start in range(0, len(rows), 100):
        records = [request(i, row) for i, row in enumerate(rows[start : start + 100], start)]
        for m in handler.handle(records):
            if m.topic == "p":
                body = json.loads(m.value)
                predicted[body["request_id"]] = int(body["label"])
    return handler, observer, predicted, rng


def send_outcomes(
    handler: RequestHandler, observer: DriftObserver, predicted: dict[str, int], flips: np.ndarray
) -> tuple[list[Alert], list[bool]]:
    """Outcomes that contradict the predictions where ``flips``, in batches of 100; the alerts, and
    whether the concept incident is open after each batch."""
    key = IncidentKey(MODEL, "concept", "error")
    alerts, open_after = [], []
    for start in range(0, len(flips), 100):
        records = [
            Record(
                "outcomes",
                i % 2,
                i,
                None,
                json.dumps(
                    {"request_id": f"r{i}", "model": MODEL, "label": predicted[f"r{i}"] ^ int(flips[i])}
                ).encode(),
            )
            for i in range(start, start + 100)
        ]
        alerts += alerts_in(m.value for m in handler.handle(records) if m.topic == "alerts")
        open_after.append(observer.incidents.is_open(key))
    return alerts, open_after


def test_a_concept_incident_closes_in_a_lull_and_the_next_rise_is_alerted_again(
    model_repository: ModelRepository, reference: np.ndarray
) -> None:
    # A quarter of the outcomes contradicted over 3,000-6,000 (a covariate shift the labels keep),
    # none over 6,000-9,000, then a quarter again (a label flip). At the package's 1 % error rate a
    # block is 800 outcomes, and the incident judged its recovery over its whole window of 64 of
    # them: 51,200 outcomes. It stayed open through the lull, and the flip was a reminder the gate
    # held. Over 2 blocks after the last detection (recovery_blocks), it closes in the lull and the
    # flip opens a new one.
    handler, observer, predicted, rng = predictions_and_outcomes(model_repository, reference, 14_000)
    flips = rng.random(14_000) < 0.25
    flips[:3_000] = flips[6_000:9_000] = False
    alerts, open_after = send_outcomes(handler, observer, predicted, flips)
    assert [a.kind.value for a in alerts] == ["concept", "concept"], [a.message for a in alerts]
    fired = [int(a.evidence.extra["event_index"]) for a in alerts]  # outcomes counted
    assert 3_000 <= fired[0] < 4_000 and 9_000 <= fired[1] < 10_000, fired
    closed = open_after.index(False, 40)
    assert 60 <= closed < 90 and open_after[-1], open_after


def test_a_concept_drift_keeps_its_incident_open_while_it_lasts(
    model_repository: ModelRepository, reference: np.ndarray
) -> None:
    handler, observer, predicted, rng = predictions_and_outcomes(model_repository, reference, 12_000)
    # The outcomes agree with every prediction for 3,000 events, then contradict a quarter of them
    # (the package's holdout error rate is 14%).
    flips = rng.random(12_000) < 0.25
    flips[:3_000] = False
    alerts, open_after = send_outcomes(handler, observer, predicted, flips)
    assert len(alerts) == 1
    opened = open_after.index(True)
    # Open from the alert to the end: it used to close after ~1,300 more outcomes, judged on a window
    # that still held the 3,000 error-free ones.
    assert 30 <= opened <= 40 and all(open_after[opened:]), open_after


def test_a_drift_reaching_the_worker_from_one_partition_first_is_alerted_once(
    model_repository: ModelRepository, reference: np.ndarray
) -> None:
    # x03 drifts from request 1,000 on; the worker reads partition 0 (even requests) up to request
    # 3,000 before partition 1 (odd ones) catches up: the stream it sees steps up, back to the
    # reference, and up again. One drift, one alert; its incident open to the end.
    rng = np.random.default_rng(3)
    rows = reference[rng.integers(0, len(reference), 6_000)].copy()
    rows[1_000:, 3] += 1.5 * reference[:, 3].std()
    order = [*range(0, 3_000, 2), *range(1, 3_000, 2), *range(3_000, 6_000)]
    handler, observer = worker(model_repository.root, InMemoryIncidentStore())
    alerts = []
    for start in range(0, len(order), 500):
        records = [request(i, rows[i]) for i in order[start : start + 500]]
        alerts += alerts_in(m.value for m in handler.handle(records) if m.topic == "alerts")
    assert sorted((a.kind.value, a.subject) for a in alerts) == [
        ("data", "x03"),
        ("performance", "estimated_error"),
        ("prediction", "predicted_class"),
        ("prediction", "prediction"),
    ]
    assert observer.incidents.is_open(IncidentKey(MODEL, "data", "x03"))


def test_a_concept_incident_recovers_when_the_error_falls_below_its_reference(
    model_repository: ModelRepository,
) -> None:
    # A regressor's outcomes are off by its reference MAE for 3,000 events, by three times it for the
    # next 1,500, then by a tenth of it: from event 4,500 on the model does better than on its holdout.
    # An error far below its reference is good news, yet it used to keep the incident open for good:
    # the recovery asked for the error back within 0.15 sd of the reference on either side, and by the
    # time the detection had settled, the window's error was far below it.
    from agent.packaging.examples import diabetes

    data = diabetes()
    names = list(data.feature_names)
    rng = np.random.default_rng(5)
    holdout = np.asarray(data.X_holdout, dtype=np.float64)
    rows = holdout[rng.integers(0, len(holdout), 24_000)]
    handler, observer = worker(model_repository.root, InMemoryIncidentStore())
    handler.outcomes_topic = "outcomes"
    predicted = {}
    for start in range(0, len(rows), 100):
        records = [
            Record(
                "requests",
                i % 2,
                i,
                None,
                json.dumps(
                    {
                        "request_id": f"r{i}",
                        "model": "diabetes",
                        "features": dict(zip(names, map(float, row), strict=True)),
                    }
                ).encode(),
            )
            for i, row in enumerate(rows[start : start + 100], start)
        ]
        for m in handler.handle(records):
            if m.topic == "p":
                body = json.loads(m.value)
                predicted[body["request_id"]] = float(body["value"])
    errors = observer.monitors()[0].errors
    assert errors is not None and errors.kind == "regression"
    # |N(0, s)| has mean s * sqrt(2 / pi): s gives errors of the reference MAE on average.
    scale = errors.reference_mean * np.sqrt(np.pi / 2) * np.repeat([1.0, 3.0, 0.1], [3_000, 1_500, 19_500])
    noise = rng.normal(size=len(rows)) * scale
    key = IncidentKey("diabetes", "concept", "error")
    alerts, open_after = [], []
    for start in range(0, len(rows), 100):
        records = [
            Record(
                "outcomes",
                i % 2,
                i,
                None,
                json.dumps(
                    {"request_id": f"r{i}", "model": "diabetes", "value": predicted[f"r{i}"] + noise[i]}
                ).encode(),
            )
            for i in range(start, start + 100)
        ]
        alerts += alerts_in(m.value for m in handler.handle(records) if m.topic == "alerts")
        open_after.append(observer.incidents.is_open(key))
    # One incident; its first detection measured the rise over a segment that began before it (a
    # warning), a later one measured it whole (critical): an escalation, published as news.
    concept = [(a.subject, a.severity) for a in alerts if a.kind.value == "concept"]
    assert concept == [("error", Severity.WARNING), ("error", Severity.CRITICAL)], concept
    opened = open_after.index(True)
    assert 30 <= opened < 45, open_after  # within the 1,500 events of the tripled error
    # Closed once a window of outcomes after the last detection is at or under the reference (the
    # regressor's error blocks are 4 x 32 outcomes, its window 64 of them: 8,192 outcomes).
    window = errors.config.window_blocks * errors.block_size
    closed = opened + open_after[opened:].index(False)
    assert 45 < closed <= 45 + 2 * window // 100 + 1, open_after
    assert not any(open_after[closed:]), open_after
