"""``driftline alerts`` lists what the InfluxDB sink wrote to the real InfluxDB; its filters work."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from agent.alerting.sinks.influx import InfluxSink
from agent.cli import main
from schemas import Alert, AlertKind, Severity
from tests.support.alerts import incident_reports, make_alert
from tests.support.services import InfluxEndpoint

pytestmark = pytest.mark.integration


@pytest.fixture
def influx_env(influx: InfluxEndpoint, monkeypatch: pytest.MonkeyPatch) -> Iterator[InfluxEndpoint]:
    for var in list(os.environ):
        if var.startswith("DRIFTLINE_INFLUX__"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("INFLUXDB_URL", influx.url)
    monkeypatch.setenv("INFLUXDB_TOKEN", influx.token)
    monkeypatch.setenv("INFLUXDB_ORG", influx.org)
    monkeypatch.setenv("INFLUXDB_BUCKET", influx.bucket)
    yield influx


async def write(influx: InfluxEndpoint, spool: Path, alerts: list[Alert]) -> None:
    sink = InfluxSink(
        url=influx.url,
        token=SecretStr(influx.token),
        org=influx.org,
        bucket=influx.bucket,
        spool_dir=spool,
    )
    await sink.start()
    try:
        for alert in alerts:
            await sink.send(alert)
    finally:
        await sink.close()
    assert sink.stats.delivered == len(alerts)


def listed(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, object]]:
    assert main(["alerts", "--json", *args]) == 0
    rows: list[dict[str, object]] = json.loads(capsys.readouterr().out)
    return rows


async def test_lists_and_filters(
    influx_env: InfluxEndpoint, unique: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, other = f"model-{unique}", f"other-{unique}"
    now = datetime.now(UTC).replace(microsecond=0)
    data = make_alert(1, model=model, subject="mean radius", detected_at=now - timedelta(minutes=1))
    concept = make_alert(
        2,
        model=model,
        kind=AlertKind.CONCEPT,
        subject="error",
        severity=Severity.CRITICAL,
        detected_at=now - timedelta(minutes=2),
    )
    old = make_alert(3, model=model, subject="old", detected_at=now - timedelta(hours=3))
    elsewhere = make_alert(4, model=other, detected_at=now - timedelta(minutes=1))
    await write(influx_env, tmp_path, [data, concept, old, elsewhere])

    rows = listed(capsys, "--model", model)
    assert [r["alert_id"] for r in rows] == [data.alert_id, concept.alert_id, old.alert_id]  # newest first
    first = rows[0]
    assert first["time"] == data.detected_at.isoformat().replace("+00:00", "Z")
    assert {
        k: first[k] for k in ("model", "version", "kind", "severity", "subject", "detector", "message")
    } == {
        "model": model,
        "version": "1",
        "kind": "data",
        "severity": "warning",
        "subject": "mean radius",
        "detector": "adwin",
        "message": data.message,
    }
    assert first["evidence"] == pytest.approx(
        {
            "reference_mean": 0.5,
            "reference_std": 0.29,
            "recent_mean": 0.73,
            "recent_std": 0.27,
            "shift_in_std": 0.8,
            "statistic": 6.1,
            "window_events": 640,
            "opened_at_event": 1,
            "extra_p_value": 0.001,
            "extra_window_text": "tumbling",
        }
    )

    assert [r["alert_id"] for r in listed(capsys, "--model", model, "--kind", "concept")] == [
        concept.alert_id
    ]
    assert [r["alert_id"] for r in listed(capsys, "--model", model, "--since", "1h")] == [
        data.alert_id,
        concept.alert_id,
    ]
    since = (now - timedelta(minutes=1, seconds=30)).isoformat()
    assert [r["alert_id"] for r in listed(capsys, "--model", model, "--since", since)] == [data.alert_id]
    assert [r["alert_id"] for r in listed(capsys, "--model", model, "--limit", "1")] == [data.alert_id]
    assert listed(capsys, "--model", f"nobody-{unique}") == []

    assert main(["alerts", "--model", model, "--since", "1h"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["TIME", "MODEL", "VERSION", "KIND", "SEVERITY", "SUBJECT", "MESSAGE"]
    assert len(table) == 3
    assert model in table[1] and "mean radius" in table[1] and "critical" in table[2]


def test_wrong_token_is_a_clear_error(
    influx_env: InfluxEndpoint, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("INFLUXDB_TOKEN", "not-the-token")
    assert main(["alerts"]) == 2
    err = capsys.readouterr().err
    assert f"InfluxDB at {influx_env.url} refused the token (HTTP 401)" in err
    assert "not-the-token" not in err


async def test_incidents_are_listed_as_their_latest_notification(
    influx_env: InfluxEndpoint, unique: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = f"model-{unique}"
    reports = incident_reports(model, start=time.time() - 300)
    sink = InfluxSink(
        url=influx_env.url,
        token=SecretStr(influx_env.token),
        org=influx_env.org,
        bucket=influx_env.bucket,
        spool_dir=tmp_path / "spool",
    )
    await sink.start()
    try:
        for report in reports:
            await sink.send_incident(report)
        await sink.send(make_alert(1, model=model, detected_at=datetime.now(UTC)))
    finally:
        await sink.close()
    assert sink.stats.points_written + sink.stats.delivered >= 1 and sink.stats.failed == 0

    assert main(["alerts", "--model", model, "--incidents", "--json"]) == 0
    [incident] = json.loads(capsys.readouterr().out)
    resolved = reports[-1]
    assert (incident["incident_id"], incident["status"], incident["severity"]) == (
        resolved.incident_id, "resolved", "critical",
    )  # fmt: skip
    assert (incident["alerts"], incident["open_alerts"]) == (2, 0)
    assert incident["root_cause"] == resolved.root_cause
    assert [e["change"] for e in incident["timeline"]] == ["opened", "opened", "recovered", "recovered"]

    assert main(["alerts", "--model", model, "--since", "1h"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Incidents" and out[1].split()[:4] == ["TIME", "MODEL", "STATUS", "SEVERITY"]
    assert "resolved" in out[2] and "data drift on 'x05' and 'x11' came first" in out[2]
    assert out[4] == "Alerts" and out[5].split()[0] == "TIME" and model in out[6]
