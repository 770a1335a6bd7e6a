"""Incidents across kinds through the real handler: one incident per cause, opened, grown, resolved."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from agent.models.registry import ModelRegistry
from agent.models.repository import ModelRepository
from agent.monitoring.grouping import IncidentGroups
from agent.monitoring.incidents import IncidentKey, IncidentManager, InMemoryIncidentStore
from agent.monitoring.model_monitor import MonitorSettingsView
from agent.monitoring.observer import DriftObserver
from agent.packaging.examples import classification_20
from agent.serving.handler import Record, RequestHandler
from schemas.alert import Alert, AlertKind, Severity
from schemas.incident import IncidentReport
from tests.support.alerts import alerts_in, incidents_in, make_alert

MODEL = "classification-20"
NAMES = [f"x{i:02d}" for i in range(20)]


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return np.asarray(classification_20(n_estimators=10, n_samples=2000).X_reference, dtype=np.float64)


class Clock:
    def __init__(self) -> None:
        self.now = 1_767_225_600.0

    def __call__(self) -> float:
        return self.now


def stream(root: Path, rows: np.ndarray, clock: Clock) -> tuple[list[Alert], list[IncidentReport]]:
    registry = ModelRegistry(root)
    registry.refresh()
    observer = DriftObserver(
        IncidentManager(InMemoryIncidentStore(), cooldown_s=3600, clock=clock),
        settings=MonitorSettingsView(latency_threshold=1e12),
        clock=clock,
    )
    handler = RequestHandler(
        registry, predictions_topic="p", dead_letters_topic="d", max_event_bytes=65536,
        observers=[observer], alerts_topic="alerts",
    )  # fmt: skip
    alerts, reports = [], []
    for start in range(0, len(rows), 500):
        clock.now += 5.0  # 100 events/s
        records = []
        for i, row in enumerate(rows[start : start + 500], start):
            features = dict(zip(NAMES, map(float, row), strict=True))
            body = {"request_id": f"r{i}", "model": MODEL, "features": features}
            records.append(Record("requests", i % 4, i, None, json.dumps(body).encode()))
        values = [m.value for m in handler.handle(records) if m.topic == "alerts"]
        alerts += alerts_in(values)
        reports += incidents_in(values)
    return alerts, reports


def test_two_features_drifting_at_once_are_one_incident(
    model_repository: ModelRepository, reference: np.ndarray
) -> None:
    rng = np.random.default_rng(1)
    rows = reference[rng.integers(0, len(reference), 60_000)].copy()
    for j in (3, 5):  # x03 and x05 move together from event 2,000 to 12,000
        rows[2_000:12_000, j] += 1.5 * reference[:, j].std()
    alerts, reports = stream(model_repository.root, rows, Clock())
    # The 1.5 sd step carries 8 % of x05's values beyond its reference range (a technical rate); it
    # changes which class the model predicts as well as its output, and moves rows to where the model
    # is less sure: its estimated error rises too, before any label.
    assert sorted((a.kind.value, a.subject) for a in alerts) == [
        ("data", "x03"), ("data", "x05"), ("performance", "estimated_error"),
        ("prediction", "predicted_class"), ("prediction", "prediction"), ("technical", "x05"),
    ]  # fmt: skip
    # One incident: opened by the first alert, updated as the others join, resolved once all recover;
    # the updates of one batch are one notification (events 2,000-2,499: x05 and the estimated error
    # joined x03). The range rate of x05 joins it too: one cause (it used to be an incident of its own).
    drift = [r for r in reports if r.incident_id == reports[0].incident_id]
    assert drift == reports
    assert [r.status for r in drift] == ["opened", "updated", "updated", "updated", "resolved"]
    opened, joined, technical, updated, resolved = drift
    assert opened.incident_id == alerts[0].alert_id
    assert opened.notification_id == f"{opened.incident_id}/opened"
    assert opened.change == "opened: data drift on 'x03'"
    assert joined.change == (
        "grew: data drift on 'x05'; grew by 1 alert: a rise of the estimated error on 'estimated_error'"
    )
    assert technical.change == "grew: technical drift on 'x05'"
    assert updated.change.startswith("grew: prediction drift on ")
    assert [r.alerts for r in drift] == [1, 3, 4, 6, 6] and [r.open_alerts for r in drift] == [1, 3, 4, 6, 0]
    assert len({r.notification_id for r in reports}) == 5
    assert resolved.resolved_at is not None and resolved.severity is Severity.CRITICAL
    # Its timeline: the six alerts opening (x03 first), then each recovering, in time order.
    timeline = [(e.change, e.kind.value, e.subject) for e in resolved.timeline]
    assert timeline[0] == ("opened", "data", "x03")
    assert sorted(timeline[:6]) == [
        ("opened", "data", "x03"), ("opened", "data", "x05"), ("opened", "performance", "estimated_error"),
        ("opened", "prediction", "predicted_class"), ("opened", "prediction", "prediction"),
        ("opened", "technical", "x05"),
    ]  # fmt: skip
    assert sorted(timeline[6:]) == [
        ("recovered", "data", "x03"), ("recovered", "data", "x05"),
        ("recovered", "performance", "estimated_error"),
        ("recovered", "prediction", "predicted_class"), ("recovered", "prediction", "prediction"),
        ("recovered", "technical", "x05"),
    ]  # fmt: skip
    assert [e.at for e in resolved.timeline] == sorted(e.at for e in resolved.timeline)
    assert {e.alert_id for e in resolved.timeline} == {a.alert_id for a in alerts}
    # Its root cause: the inputs came first, the output followed, and the features to look at.
    assert resolved.root_cause.startswith(
        "data drift on 'x03' and 'x05' came first, "
        "followed by a rise of the estimated error, technical drift on 'x05', prediction drift"
    )
    assert (
        "likely drivers: x03, x05" in resolved.root_cause or "likely drivers: x05, x03" in resolved.root_cause
    )
    assert resolved.model == MODEL and resolved.model_versions == ("1",)


def test_drifts_far_apart_are_separate_incidents(
    model_repository: ModelRepository, reference: np.ndarray
) -> None:
    rng = np.random.default_rng(2)
    # 30,000 calm events after each drift: the estimated error's incident closes only once its
    # window is back at the holdout's level.
    rows = reference[rng.integers(0, len(reference), 80_000)].copy()
    rows[2_000:10_000, 3] += 1.5 * reference[:, 3].std()
    rows[40_000:50_000, 7] += 1.5 * reference[:, 7].std()
    _, reports = stream(model_repository.root, rows, Clock())
    by_incident: dict[str, list[str]] = {}
    for r in reports:
        by_incident.setdefault(r.incident_id, []).append(r.status)
    assert len(by_incident) == 2
    for statuses in by_incident.values():
        assert statuses[0] == "opened" and statuses[-1] == "resolved" and statuses.count("opened") == 1


def test_a_second_worker_joins_the_incident_the_first_opened() -> None:
    clock = Clock()
    store = InMemoryIncidentStore()
    first = IncidentManager(store, clock=clock)
    second = IncidentManager(store, clock=clock)
    groups = [IncidentGroups(first, clock=clock), IncidentGroups(second, clock=clock)]
    data = make_alert(10, subject="x03")
    assert first.admit(data)
    groups[0].admitted(data)
    clock.now += 30
    performance = make_alert(
        20, kind=AlertKind.PERFORMANCE, subject="estimated_error", severity=Severity.CRITICAL
    )
    assert second.admit(performance)
    groups[1].admitted(performance)
    [opened] = groups[0].drain()
    [updated] = groups[1].drain()
    assert (opened.status, updated.status) == ("opened", "updated")
    assert updated.incident_id == opened.incident_id == data.alert_id
    assert [e.subject for e in updated.timeline] == ["x03", "estimated_error"]
    assert updated.timeline[0].message == data.message  # the first worker's alert, from the store
    assert updated.severity is Severity.CRITICAL
    # The first worker closes its part; the second closes the last one and resolves the incident.
    first.recover(IncidentKey.of(data))
    assert groups[0].drain() == []
    second.recover(IncidentKey.of(performance))
    [resolved] = groups[1].drain()
    assert resolved.status == "resolved" and resolved.incident_id == data.alert_id


def test_severity_rises_and_technical_alerts_stand_alone() -> None:
    clock = Clock()
    manager = IncidentManager(InMemoryIncidentStore(), cooldown_s=60, clock=clock)
    groups = IncidentGroups(manager, clock=clock)

    def admit(alert: Alert) -> None:
        if manager.admit(alert):
            groups.admitted(alert)

    admit(make_alert(1, subject="x"))
    admit(make_alert(2, kind=AlertKind.TECHNICAL, subject="onnxruntime"))
    clock.now += 61  # a reminder after the cooldown, now critical
    admit(make_alert(3, subject="x", severity=Severity.CRITICAL))
    clock.now += 61  # the same again: a reminder, no notification
    admit(make_alert(4, subject="x", severity=Severity.CRITICAL))
    reports = groups.drain()
    assert [(r.status, r.severity.value, r.timeline[-1].subject) for r in reports] == [
        ("opened", "warning", "x"), ("opened", "warning", "onnxruntime"), ("updated", "critical", "x"),
    ]  # fmt: skip
    assert reports[2].notification_id == f"{reports[0].incident_id}/severity/critical"
    assert reports[2].change == "severity warning -> critical: data drift on 'x'"
    assert reports[1].root_cause == "technical drift on 'onnxruntime' came first"


def test_an_alert_escalating_inside_a_critical_incident_is_news_before_its_cooldown() -> None:
    # A critical data alert opens the incident; a minute later the concept alert joins it as a warning
    # (the error rose from 1.9 % to 5 %); minutes later the labels flip and the error is 50 %: critical. The
    # incident was critical already, yet that is news: published at once, not after the cooldown.
    clock = Clock()
    manager = IncidentManager(InMemoryIncidentStore(), cooldown_s=900, clock=clock)
    groups = IncidentGroups(manager, clock=clock)

    def admit(alert: Alert) -> bool:
        admitted = manager.admit(alert)
        if admitted:
            groups.admitted(alert)
        return admitted

    assert admit(make_alert(1, subject="flavanoids", severity=Severity.CRITICAL))
    clock.now += 60
    assert admit(make_alert(2, kind=AlertKind.CONCEPT, subject="error"))
    clock.now += 60
    assert admit(make_alert(3, kind=AlertKind.CONCEPT, subject="error", severity=Severity.CRITICAL))
    clock.now += 60
    assert not admit(make_alert(4, kind=AlertKind.CONCEPT, subject="error", severity=Severity.CRITICAL))
    reports = groups.drain()
    assert [(r.status, r.severity.value) for r in reports] == [
        ("opened", "critical"), ("updated", "critical"), ("updated", "critical"),
    ]  # fmt: skip
    assert reports[2].change == "a rise of the error on 'error' is now critical (was warning)"
    assert reports[2].notification_id == f"{reports[0].incident_id}/severity/concept/error/critical"
    assert [e.change for e in reports[2].timeline] == ["opened", "opened", "severity"]
    assert manager.incident(IncidentKey("m", "concept", "error")).severity == "critical"


def test_the_group_window_bounds_what_joins() -> None:
    clock = Clock()
    manager = IncidentManager(InMemoryIncidentStore(), clock=clock, group_window_s=60)
    groups = IncidentGroups(manager, clock=clock)
    for event, subject in ((1, "a"), (2, "b")):
        alert = make_alert(event, subject=subject, detected_at=datetime.now(UTC))
        assert manager.admit(alert)
        groups.admitted(alert)
        clock.now += 61  # the next one opens after the window: an incident of its own
    assert [r.status for r in groups.drain()] == ["opened", "opened"]


def test_the_alerts_of_one_batch_are_one_notification_and_the_next_batch_another() -> None:
    # A noisy sensor moves every pixel of a digits model: dozens of alerts within seconds. The first
    # opens the incident at once; then each drain (a batch, in a worker) sends one update per
    # incident, naming every change it holds.
    clock = Clock()
    manager = IncidentManager(InMemoryIncidentStore(), clock=clock)
    groups = IncidentGroups(manager, clock=clock)
    for j in range(12):
        alert = make_alert(j, subject=f"px{j:02d}")
        assert manager.admit(alert)
        groups.admitted(alert)
    opened, grown = groups.drain()
    assert (opened.status, opened.alerts, opened.notification_id) == (
        "opened",
        1,
        f"{opened.incident_id}/opened",
    )
    assert (grown.status, grown.alerts) == ("updated", 12)
    assert grown.change == (
        "grew: data drift on 'px01'; grew by 10 alerts: data drift on 'px02', data drift on 'px03', "
        "data drift on 'px04' and 7 more"
    )
    assert grown.root_cause == (
        "data drift on 'px00', 'px01', 'px02', 'px03', 'px04' and 7 more features came first"
    )
    clock.now += 0.5
    critical = make_alert(20, kind=AlertKind.PREDICTION, subject="prediction", severity=Severity.CRITICAL)
    assert manager.admit(critical)
    groups.admitted(critical)
    more = make_alert(21, subject="px20")
    assert manager.admit(more)
    groups.admitted(more)
    [updated] = groups.drain()
    assert (updated.status, updated.alerts, updated.severity) == ("updated", 14, Severity.CRITICAL)
    assert updated.change == "grew: prediction drift on 'prediction'; grew by 1 alert: data drift on 'px20'"
    # Reports more than COALESCE_S apart between two drains stay apart.
    clock.now += 10
    for j, dt in ((30, 0.0), (31, 2.0)):
        clock.now += dt
        alert = make_alert(j, subject=f"px{j}")
        assert manager.admit(alert)
        groups.admitted(alert)
    assert [r.alerts for r in groups.drain()] == [15, 16]


def test_technical_rates_opening_together_are_one_incident_apart_from_the_drift() -> None:
    clock = Clock()
    manager = IncidentManager(InMemoryIncidentStore(), clock=clock)
    groups = IncidentGroups(manager, clock=clock)

    def admit(alert: Alert) -> str:
        assert manager.admit(alert)
        groups.admitted(alert)
        incident = manager.incident(IncidentKey.of(alert))
        assert incident is not None
        return incident.group_id

    drift = admit(make_alert(1, subject="px43"))
    ranges = {
        admit(
            make_alert(2 + j, kind=AlertKind.TECHNICAL, subject=f"px{j:02d}", detector="reference_range_rate")
        )
        for j in range(11)
    }
    clock.now += 5
    missing = admit(make_alert(20, kind=AlertKind.TECHNICAL, subject="px50", detector="missing_rate"))
    dependency = admit(
        make_alert(21, kind=AlertKind.TECHNICAL, subject="onnxruntime", detector="dependency_versions")
    )
    assert (
        len(ranges) == 1
        and ranges == {missing}
        and drift not in ranges
        and dependency not in ranges | {drift}
    )
    reports = groups.drain()
    rates = [r for r in reports if r.incident_id in ranges]
    assert [(r.status, r.alerts) for r in rates] == [("opened", 1), ("updated", 11), ("updated", 12)]
    assert rates[1].root_cause == (
        "technical drift on 'px00', 'px01', 'px02', 'px03', 'px04' and 6 more subjects came first"
    )
