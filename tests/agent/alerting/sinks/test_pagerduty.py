"""The PagerDuty sink against a real local HTTP server that checks each event against the Events API
v2 schema and limits and keeps the alerts' state as PagerDuty does."""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from agent.alerting.sinks import Recovery
from agent.alerting.sinks.pagerduty import PagerDutySink, dedup_key
from agent.errors import ConfigurationError
from schemas import Alert, AlertKind, Severity
from tests.support.alerts import eventually, incident_reports, make_alert
from tests.support.receivers import PagerDutyReceiver

KEY = PagerDutyReceiver.routing_key


@pytest.fixture
async def pagerduty() -> AsyncIterator[PagerDutyReceiver]:
    r = await PagerDutyReceiver().start()
    yield r
    await r.stop()


def make_sink(url: str, routing_key: str = KEY, **kwargs: object) -> PagerDutySink:
    options: dict[str, object] = {
        "backoff_initial_s": 0.02,
        "backoff_max_s": 0.1,
        "timeout_s": 2.0,
        "rng": random.Random(1),
        "source": "prod",
        **kwargs,
    }
    return PagerDutySink(SecretStr(routing_key), url=url, **options)  # type: ignore[arg-type]


def recovery_of(alert: Alert, closed_at: float = 2000.0) -> Recovery:
    return Recovery(alert.model, str(alert.kind), alert.subject, alert.alert_id, 1000.0, closed_at, 1)


async def test_trigger_carries_the_schema_fields_and_the_evidence(pagerduty: PagerDutyReceiver) -> None:
    sink = make_sink(pagerduty.url, client_url="https://grafana.example.com/d/driftline")
    await sink.start()
    alert = make_alert(model="churn", subject="tenure", severity=Severity.CRITICAL)
    try:
        await sink.send(alert)
        await eventually(lambda: sink.stats.delivered == 1)
    finally:
        await sink.close()
    [got] = pagerduty.received
    assert got.errors == [] and got.status == 202
    event = got.body
    assert event["event_action"] == "trigger" and event["routing_key"] == KEY
    assert event["dedup_key"] == "prod/churn/data/tenure"
    payload = event["payload"]
    assert payload["severity"] == "critical" and payload["source"] == "prod"
    assert payload["summary"] == f"Data drift on churn v1, tenure: {alert.message}"
    assert (payload["component"], payload["group"], payload["class"]) == ("tenure", "churn", "data drift")
    details = payload["custom_details"]
    assert details["alert_id"] == alert.alert_id and details["detector"] == "adwin"
    assert details["evidence"] == {
        "reference_mean": 0.5,
        "reference_std": 0.29,
        "recent_mean": 0.73,
        "recent_std": 0.27,
        "shift_in_std": 0.8,
        "statistic": 6.1,
        "window_events": 640,
        "extra": {"p_value": 0.001, "window": "tumbling"},
    }
    assert event["client"] == "driftline" and event["client_url"].startswith("https://grafana")
    assert pagerduty.alerts == {"prod/churn/data/tenure": ["triggered"]}


async def test_each_severity_maps_to_one_of_pagerdutys_four(pagerduty: PagerDutyReceiver) -> None:
    sink = make_sink(pagerduty.url)
    await sink.start()
    try:
        for i, severity in enumerate(Severity):
            await sink.send(make_alert(i, subject=f"x{i}", severity=severity))
        await eventually(lambda: sink.pending == 0)
    finally:
        await sink.close()
    assert all(g.errors == [] for g in pagerduty.received)
    assert sorted(g.body["payload"]["severity"] for g in pagerduty.received) == [
        "critical",
        "info",
        "warning",
    ]


async def test_opened_reminded_recovered_reopened_is_one_alert_then_a_new_one(
    pagerduty: PagerDutyReceiver,
) -> None:
    sink = make_sink(pagerduty.url)
    await sink.start()
    opening = make_alert(1)
    try:
        await sink.send(opening)
        await sink.send(make_alert(900))  # a reminder: the incident is still open after the cooldown
        await sink.recover(recovery_of(opening))
        await sink.send(make_alert(5000))  # the drift is back: a new incident
        await eventually(lambda: sink.pending == 0)
    finally:
        await sink.close()
    assert [g.body["event_action"] for g in pagerduty.received] == [
        "trigger",
        "trigger",
        "resolve",
        "trigger",
    ]
    assert all(g.errors == [] and g.status == 202 for g in pagerduty.received)
    key = dedup_key("prod", "m", "data", "x")
    assert pagerduty.closed == [(key, ["triggered", "triggered", "resolved"])]
    assert pagerduty.alerts == {key: ["triggered"]} and pagerduty.dropped == []


async def test_a_resolve_never_overtakes_its_trigger() -> None:
    # PagerDuty answers the trigger 500 twice: the resolve, sent at once, waits until the trigger is in.
    receiver = await PagerDutyReceiver(statuses=[500, 429, 0]).start()
    sink = make_sink(receiver.url)
    await sink.start()
    alert = make_alert()
    try:
        await sink.send(alert)
        await sink.recover(recovery_of(alert))
        await eventually(lambda: sink.pending == 0)
    finally:
        await sink.close()
        await receiver.stop()
    assert [(g.body["event_action"], g.status) for g in receiver.received] == [
        ("trigger", 500),
        ("trigger", 429),
        ("trigger", 202),
        ("resolve", 202),
    ]
    assert receiver.closed == [(dedup_key("prod", "m", "data", "x"), ["triggered", "resolved"])]
    assert (sink.stats.delivered, sink.stats.retries, sink.stats.failed) == (2, 2, 0)


async def test_limits_hold_for_long_messages_and_subjects(pagerduty: PagerDutyReceiver) -> None:
    sink = make_sink(pagerduty.url)
    await sink.start()
    long = make_alert(subject="s" * 400, message="m" * 5000)
    try:
        await sink.send(long)
        await sink.recover(recovery_of(long))
        await eventually(lambda: sink.pending == 0)
    finally:
        await sink.close()
    trigger, resolve = pagerduty.received
    assert trigger.errors == [] and resolve.errors == []
    assert len(trigger.body["payload"]["summary"]) == 1024
    assert trigger.body["dedup_key"] == resolve.body["dedup_key"] and len(trigger.body["dedup_key"]) <= 255
    assert trigger.body["payload"]["custom_details"]["message"] == "m" * 5000  # the whole text is kept
    assert pagerduty.closed and not pagerduty.alerts


async def test_a_wrong_routing_key_is_refused_and_not_retried(pagerduty: PagerDutyReceiver) -> None:
    sink = make_sink(pagerduty.url, routing_key="W" * 32)
    await sink.start()
    try:
        await sink.send(make_alert())
        await eventually(lambda: sink.pending == 0)
    finally:
        await sink.close()
    [got] = pagerduty.received
    assert got.status == 400 and got.errors == ["routing_key is not this integration's key"]
    assert (sink.stats.failed, sink.stats.retries) == (1, 0)


async def test_the_routing_key_is_never_on_disk_or_in_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = PagerDutyReceiver(statuses=[503])
    await receiver.start()
    first = make_sink(receiver.url, max_attempts=50, drain_timeout_s=0.05, outbox_dir=tmp_path)
    alert = make_alert(kind=AlertKind.CONCEPT, subject="error")
    with caplog.at_level(logging.DEBUG, logger="agent.alerting.sinks.pagerduty"):
        await first.start()
        await first.send(alert)
        await first.recover(recovery_of(alert))
        await eventually(lambda: first.stats.retries >= 1)
        await first.close()
    kept = sorted(tmp_path.glob("*.json"))
    assert len(kept) == 2
    assert all(KEY not in p.read_text() for p in kept) and KEY not in caplog.text
    # The next start sends both, in their order. A retry the first sink had on the wire when it
    # closed may still reach the receiver: restart the receiver so that it is answered (503) or
    # dropped before the receiver starts accepting.
    await receiver.stop()
    receiver.statuses = [0]
    await receiver.start()
    second = make_sink(receiver.url, outbox_dir=tmp_path)
    try:
        await second.start()
        await eventually(lambda: second.stats.delivered == 2)
    finally:
        await second.close()
        await receiver.stop()
    assert [g.body["event_action"] for g in receiver.valid if g.status == 202] == ["trigger", "resolve"]
    assert receiver.closed == [("prod/m/concept/error", ["triggered", "resolved"])]
    assert list(tmp_path.glob("*.json")) == []


def test_configuration_errors(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigurationError, match="DRIFTLINE_PAGERDUTY__ROUTING_KEY"):
        PagerDutySink(SecretStr(""))
    with pytest.raises(ConfigurationError, match="DRIFTLINE_PAGERDUTY__SOURCE"):
        PagerDutySink(SecretStr(KEY), source="")
    with caplog.at_level(logging.WARNING, logger="agent.alerting.sinks.pagerduty"):
        PagerDutySink(SecretStr("short-KEY"))
    assert "not 32 characters" in caplog.text and "short-KEY" not in caplog.text


async def test_an_incident_is_one_pagerduty_alert_triggered_updated_resolved(
    pagerduty: PagerDutyReceiver,
) -> None:
    sink = make_sink(pagerduty.url, notify="incidents")
    await sink.start()
    opened, updated, resolved = incident_reports()
    try:
        await sink.send(make_alert())  # per-alert triggers are off
        await sink.recover(recovery_of(make_alert()))
        for report in (opened, updated, resolved):
            await sink.send_incident(report)
        await eventually(lambda: sink.stats.delivered == 3)
    finally:
        await sink.close()
    assert [e.errors for e in pagerduty.received] == [[], [], []]
    key = dedup_key("prod", "m", "incident", opened.incident_id)
    assert [e.body["event_action"] for e in pagerduty.received] == ["trigger", "trigger", "resolve"]
    assert {e.body["dedup_key"] for e in pagerduty.received} == {key}
    assert pagerduty.closed == [(key, ["triggered", "triggered", "resolved"])]
    second = pagerduty.received[1].body["payload"]
    assert second["severity"] == "critical" and second["summary"].startswith("Incident on m (2 alerts)")
    assert [e["subject"] for e in second["custom_details"]["timeline"]] == ["x05", "x11"]
