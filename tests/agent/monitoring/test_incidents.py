"""The incident gate's pure logic: keys, storms, cooldown reminders, recovery, shared state."""

from __future__ import annotations

import threading

import pytest

from agent.metrics import Metrics
from agent.monitoring.incidents import Incident, IncidentKey, IncidentManager, InMemoryIncidentStore
from schemas import AlertKind, Severity
from tests.support.alerts import make_alert


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_storm_is_one_alert(clock: Clock) -> None:
    metrics = Metrics()
    gate = IncidentManager(InMemoryIncidentStore(), cooldown_s=900, clock=clock, metrics=metrics)
    admitted = []
    for i in range(100):
        clock.now += 1.0
        admitted.append(gate.admit(make_alert(i)))
    assert admitted == [True] + [False] * 99
    assert (gate.admitted, gate.suppressed) == (1, 99)
    suppressed = metrics.registry.get_sample_value(
        "driftline_alerts_suppressed_total", {"model": "m", "kind": "data"}
    )
    assert suppressed == 99


def test_key_is_model_kind_subject_not_version_or_detector(clock: Clock) -> None:
    gate = IncidentManager(InMemoryIncidentStore(), clock=clock)
    assert gate.admit(make_alert(1))
    assert not gate.admit(make_alert(2, version="2"))  # a new version of the same model: same incident
    assert gate.admit(make_alert(3, subject="y"))
    assert gate.admit(make_alert(4, kind=AlertKind.PREDICTION))
    assert gate.admit(make_alert(5, model="other"))
    assert IncidentKey.of(make_alert(1)) == IncidentKey("m", "data", "x")
    assert [i.key.subject for i in gate.open_incidents()] == ["x", "y", "x", "x"]


def test_cooldown_reminds_once_per_period(clock: Clock) -> None:
    gate = IncidentManager(InMemoryIncidentStore(), cooldown_s=900, clock=clock)
    assert gate.admit(make_alert(0))
    clock.now += 899.9
    assert not gate.admit(make_alert(1))
    clock.now += 0.1  # exactly the cooldown since the opening alert
    assert gate.admit(make_alert(2))
    clock.now += 450
    assert not gate.admit(make_alert(3))  # the cooldown counts from the reminder, not from the opening
    clock.now += 450
    assert gate.admit(make_alert(4))
    (incident,) = gate.open_incidents()
    assert incident.alerts == 3
    assert incident.alert_id == make_alert(0).alert_id  # still the incident the first alert opened
    assert incident.last_alerted_at == clock.now


def test_recovery_rearms(clock: Clock) -> None:
    gate = IncidentManager(InMemoryIncidentStore(), cooldown_s=900, clock=clock)
    key = IncidentKey("m", "data", "x")
    assert gate.admit(make_alert(0))
    assert not gate.admit(make_alert(1))
    assert gate.recover(key)
    assert not gate.is_open(key)
    assert not gate.recover(key)  # nothing open: a no-op the monitor may call on every batch
    clock.now += 1
    assert gate.admit(make_alert(2))  # drifting again: a new incident, alerted at once
    assert gate.open_incidents()[0].alert_id == make_alert(2).alert_id
    assert not gate.admit(make_alert(3))


def test_recovering_one_key_leaves_the_others_open(clock: Clock) -> None:
    gate = IncidentManager(InMemoryIncidentStore(), clock=clock)
    gate.admit(make_alert(0, subject="x"))
    gate.admit(make_alert(0, subject="y"))
    gate.recover(IncidentKey("m", "data", "x"))
    assert gate.admit(make_alert(1, subject="x"))
    assert not gate.admit(make_alert(1, subject="y"))


def test_store_records_open_and_close(clock: Clock) -> None:
    store = InMemoryIncidentStore()
    gate = IncidentManager(store, clock=clock)
    gate.admit(make_alert(0))
    key = IncidentKey("m", "data", "x")
    alert = make_alert(0)
    expected = Incident(
        key, alert.alert_id, clock.now, clock.now, 1, group=alert.alert_id, version="1", detector="adwin",
        message=alert.message, event=0,
    )  # fmt: skip
    assert store.incidents[key] == expected
    assert Incident.from_json(expected.to_json()) == expected
    gate.recover(key)
    assert store.incidents == {}


def test_state_restored_from_store_is_not_alerted_again(clock: Clock) -> None:
    """A restarted worker (a new manager on the same store) keeps the incident open."""
    store = InMemoryIncidentStore()
    assert IncidentManager(store, clock=clock).admit(make_alert(0))
    clock.now += 60
    restarted = IncidentManager(store, clock=clock)
    assert restarted.is_open(IncidentKey("m", "data", "x"))
    assert not restarted.admit(make_alert(1))
    clock.now += 900
    assert restarted.admit(make_alert(2))  # the cooldown still counts from the original alert


def test_two_workers_share_incidents(clock: Clock) -> None:
    store = InMemoryIncidentStore()
    first, second = IncidentManager(store, clock=clock), IncidentManager(store, clock=clock)
    assert first.admit(make_alert(0))
    assert not second.admit(make_alert(7))  # the second worker sees the same drift: no second alert
    second.recover(IncidentKey("m", "data", "x"))
    assert first.admit(make_alert(9))  # the recovery one worker saw re-arms the other


def test_record_json_round_trip() -> None:
    incident = Incident(IncidentKey("m", "data", "mean radius"), "a" * 32, 1.5, 2.5, 3, severity="critical")
    assert Incident.from_json(incident.to_json()) == incident
    # A record written before the severity was stored reads as a warning.
    old = b'{"key":["m","data","x"],"alert_id":"a","opened_at":1.0,"last_alerted_at":1.0,"alerts":1}'
    assert Incident.from_json(old).severity == "warning"


def test_an_incident_keeps_the_highest_severity_of_its_alerts(clock: Clock) -> None:
    gate = IncidentManager(InMemoryIncidentStore(), cooldown_s=900, clock=clock)
    assert gate.admit(make_alert(1, severity=Severity.INFO))
    assert [i.severity for i in gate.open_incidents()] == ["info"]
    clock.now += 900
    assert gate.admit(make_alert(2, severity=Severity.CRITICAL))  # the reminder is worse
    assert [i.severity for i in gate.open_incidents()] == ["critical"]
    clock.now += 900
    assert gate.admit(make_alert(3, severity=Severity.WARNING))  # a milder reminder
    assert [i.severity for i in gate.open_incidents()] == ["critical"]


def test_an_escalation_is_published_before_the_cooldown_and_only_once(clock: Clock) -> None:
    gate = IncidentManager(InMemoryIncidentStore(), cooldown_s=900, clock=clock)
    assert gate.admit(make_alert(1, severity=Severity.WARNING))
    clock.now += 10
    assert not gate.admit(make_alert(2, severity=Severity.WARNING))  # a storm: held
    assert gate.admit(make_alert(3, severity=Severity.CRITICAL))  # worse: news at once
    clock.now += 10
    assert not gate.admit(make_alert(4, severity=Severity.CRITICAL))  # as bad as before: held
    assert not gate.admit(make_alert(5, severity=Severity.WARNING))
    assert gate.suppressed == 3 and gate.admitted == 2


def test_close_listeners_hear_each_close_once(clock: Clock) -> None:
    gate = IncidentManager(InMemoryIncidentStore(), cooldown_s=900, clock=clock)
    closed: list[tuple[str, float]] = []
    gate.on_close(lambda incident, at: closed.append((incident.alert_id, at)))
    gate.on_close(lambda incident, at: 1 / 0)  # a failing listener is logged, never raised
    alert = make_alert(1)
    assert gate.admit(alert)
    clock.now += 60
    assert gate.recover(IncidentKey.of(alert)) and not gate.recover(IncidentKey.of(alert))
    assert closed == [(alert.alert_id, clock.now)]


def test_cooldown_must_be_positive() -> None:
    with pytest.raises(ValueError, match="cooldown_s"):
        IncidentManager(InMemoryIncidentStore(), cooldown_s=0)


def test_admit_is_thread_safe(clock: Clock) -> None:
    gate = IncidentManager(InMemoryIncidentStore(), clock=clock)
    results: list[bool] = []
    lock = threading.Lock()

    def storm(offset: int) -> None:
        for i in range(500):
            admitted = gate.admit(make_alert(offset + i))
            with lock:
                results.append(admitted)

    threads = [threading.Thread(target=storm, args=(n * 1000,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1
    assert len(results) == 2000


def test_a_features_rate_joins_its_data_drift_and_other_rates_keep_apart(clock: Clock) -> None:
    gate = IncidentManager(InMemoryIncidentStore(), clock=clock)

    def group(kind: AlertKind, subject: str, detector: str = "adwin") -> str:
        clock.now += 10.0
        assert gate.admit(make_alert(kind=kind, subject=subject, detector=detector))
        incident = gate.incident(IncidentKey("m", kind.value, subject))
        assert incident is not None
        return incident.group_id

    drift = group(AlertKind.DATA, "x05")
    # x05's values beyond its reference range: the same shift, the same incident.
    assert group(AlertKind.TECHNICAL, "x05", "reference_range_rate") == drift
    # Another feature's missing values are no part of it, nor do they join the rate that did.
    missing = group(AlertKind.TECHNICAL, "x07", "missing_rate")
    assert missing != drift
    assert group(AlertKind.TECHNICAL, "x09", "out_of_range_rate") == missing  # rates group as before
    assert group(AlertKind.TECHNICAL, "numpy", "dependency_versions") not in (drift, missing)


def test_a_features_data_drift_joins_its_rate_that_opened_first_when_no_drift_is_open(clock: Clock) -> None:
    gate = IncidentManager(InMemoryIncidentStore(), clock=clock)

    def group(kind: AlertKind, subject: str, detector: str = "adwin", model: str = "m") -> str:
        clock.now += 10.0
        assert gate.admit(make_alert(kind=kind, subject=subject, detector=detector, model=model))
        incident = gate.incident(IncidentKey(model, kind.value, subject))
        assert incident is not None
        return incident.group_id

    # x05's rate window closed just before its drift was detected: one incident all the same, and
    # the drifts that follow (the output it moves) join it through the feature's drift.
    rate = group(AlertKind.TECHNICAL, "x05", "reference_range_rate")
    assert group(AlertKind.DATA, "x05") == rate
    assert group(AlertKind.PREDICTION, "prediction") == rate
    # Another feature's drift does not join a rate that is not its own.
    other = group(AlertKind.TECHNICAL, "x01", "missing_rate", model="n")
    assert group(AlertKind.DATA, "x02", model="n") != other
    # With a drift open, a feature's later drift joins that drift, not its own earlier rate.
    first = group(AlertKind.DATA, "x03", model="k")
    rate_k = group(AlertKind.TECHNICAL, "x04", "reference_range_rate", model="k")
    assert rate_k != first
    assert group(AlertKind.DATA, "x04", model="k") == first


def test_a_rise_of_the_error_its_inputs_do_not_explain_is_an_incident_of_its_own(clock: Clock) -> None:
    gate = IncidentManager(InMemoryIncidentStore(), clock=clock)
    assert gate.admit(make_alert(kind=AlertKind.DATA, subject="x05"))
    drift = gate.open_incidents()[0].group_id

    def concept(unexplained: float, model: str) -> str:
        clock.now += 10.0
        alert = make_alert(kind=AlertKind.CONCEPT, subject="error", model=model)
        extra = {**alert.evidence.extra, "unexplained_by_inputs": unexplained}
        assert gate.admit(
            alert.model_copy(update={"evidence": alert.evidence.model_copy(update={"extra": extra})})
        )
        incident = gate.incident(IncidentKey(model, "concept", "error"))
        assert incident is not None
        return incident.group_id

    assert concept(1.0, "m") != drift  # the labels changed, whatever the inputs did meanwhile
    assert gate.admit(make_alert(model="n", kind=AlertKind.DATA, subject="x05"))
    other = gate.incident(IncidentKey("n", "data", "x05"))
    assert other is not None and concept(0.0, "n") == other.group_id  # explained: the drift's
