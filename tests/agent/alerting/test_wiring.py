"""The alerts agent's logic without Faust running: decode, skip bad records, metrics, sinks from settings."""

from __future__ import annotations

import logging
import shlex
from collections.abc import Sequence

import faust
import pytest
from pydantic import SecretStr

from agent.alerting.sinks import Sink
from agent.alerting.sinks.influx import InfluxSink
from agent.alerting.sinks.pagerduty import PagerDutySink
from agent.alerting.sinks.slack import SlackSink
from agent.alerting.sinks.webhook import WebhookSink
from agent.alerting.wiring import AlertingService, build_sinks, wire_alert_sinks
from agent.errors import ConfigurationError
from agent.metrics import MetricPoint, Metrics
from agent.monitoring.incidents import IncidentKey, IncidentManager, InMemoryIncidentStore
from agent.settings import InfluxSettings, Settings, WebhookSettings
from schemas import Alert
from schemas.alert import encode_alert
from schemas.incident import IncidentReport, encode_incident
from tests.support.alerts import incident_reports, make_alert
from tests.support.receivers import PagerDutyReceiver
from tests.support.services import ROOT


class Collecting(Sink):
    name = "collecting"

    def __init__(self) -> None:
        super().__init__()
        self.alerts: list[Alert] = []
        self.incidents: list[IncidentReport] = []
        self.points: list[MetricPoint] = []

    async def send(self, alert: Alert) -> None:
        self.alerts.append(alert)
        self._count_delivered()

    async def send_incident(self, report: IncidentReport) -> None:
        self.incidents.append(report)

    async def send_metrics(self, points: Sequence[MetricPoint]) -> None:
        self.points.extend(points)


def settings(**groups: object) -> Settings:
    return Settings(_env_file=None, influx=InfluxSettings(token=None), **groups)  # type: ignore[arg-type]


def make_app(unique: str = "t") -> faust.App:
    return faust.App(f"alerting-{unique}", broker="kafka://127.0.0.1:9092", autodiscover=False)


async def test_valid_alert_is_fanned_out_bad_records_are_skipped(caplog: pytest.LogCaptureFixture) -> None:
    sink = Collecting()
    metrics = Metrics()
    wiring = wire_alert_sinks(make_app(), settings(), metrics, sinks=[sink])
    alert = make_alert()
    await wiring.handle(b"not json")
    await wiring.handle(b'{"schema_version": "1", "alert_id": "x"}')
    await wiring.handle(None)  # a tombstone
    await wiring.handle(encode_alert(alert))
    assert sink.alerts == [alert]
    assert (wiring.received, wiring.invalid) == (4, 2)
    assert metrics.registry.get_sample_value("driftline_alert_records_invalid_total") == 2
    assert "not a valid alert" in caplog.text


async def test_incident_notifications_on_the_alerts_topic_go_to_send_incident() -> None:
    sink = Collecting()
    wiring = wire_alert_sinks(make_app(), settings(), Metrics(), sinks=[sink])
    reports = incident_reports()
    for report in reports:
        await wiring.handle(encode_incident(report))
    await wiring.handle(b'{"record_type": "incident", "incident_id": "x"}')  # not a valid one
    assert sink.incidents == reports and sink.alerts == [] and wiring.invalid == 1


def test_receivers_get_incidents_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    hooks = WebhookSettings(urls=["http://127.0.0.1:9/hook"], secret=SecretStr("whsec_" + "A" * 32))
    [webhook] = [s for s in build_sinks(settings(webhooks=hooks)) if isinstance(s, WebhookSink)]
    assert webhook.notify == "incidents"
    monkeypatch.setenv("DRIFTLINE_INCIDENTS__NOTIFY", "both")
    monkeypatch.setenv("DRIFTLINE_INCIDENTS__GROUP_WINDOW_S", "60")
    chosen = Settings(_env_file=None, influx=InfluxSettings(token=None), webhooks=hooks)
    assert chosen.incidents.group_window_s == 60.0
    [webhook] = [s for s in build_sinks(chosen) if isinstance(s, WebhookSink)]
    assert webhook.notify == "both"


async def test_metrics_tick_writes_source_points_and_sink_counters(caplog: pytest.LogCaptureFixture) -> None:
    sink = Collecting()
    wiring = wire_alert_sinks(make_app(), settings(), Metrics(), sinks=[sink])
    await wiring.handle(encode_alert(make_alert()))
    wiring.metrics_source = lambda: [MetricPoint("driftline_throughput", {"events_per_s": 5.0})]
    await wiring.write_metrics()
    assert [p.measurement for p in sink.points] == ["driftline_throughput", "driftline_sink"]
    assert sink.points[1].tags["sink"] == "collecting"
    assert sink.points[1].tags["app"] == "driftline"
    assert sink.points[1].fields["alerts_delivered"] == 1

    def broken() -> list[MetricPoint]:
        raise RuntimeError("monitor bug")

    wiring.metrics_source = broken
    await wiring.write_metrics()  # the sinks' counters are still written
    assert [p.measurement for p in sink.points][-1] == "driftline_sink"
    assert "metrics source failed" in caplog.text


def test_agent_timer_and_service_are_registered() -> None:
    app = make_app()
    wiring = wire_alert_sinks(app, settings(), Metrics(), sinks=[Collecting()])
    assert list(app.agents) == ["driftline.alert-sinks"]
    assert isinstance(wiring.service, AlertingService)
    assert app._children[0] is wiring.service  # started before Faust's own services
    assert len(app._app_tasks) == 1  # the metrics timer


def test_sinks_from_settings(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert build_sinks(settings()) == []
    assert "no InfluxDB token" in caplog.text

    both = build_sinks(
        Settings(
            _env_file=None,
            influx=InfluxSettings(token=SecretStr("t")),
            webhooks=WebhookSettings(urls=["http://127.0.0.1:9/hook"], secret=SecretStr("s")),
        )
    )
    assert [type(s) for s in both] == [InfluxSink, WebhookSink]
    influx = both[0]
    assert isinstance(influx, InfluxSink)
    assert influx.spool.directory.parts[-2:] == ("spool", "influx")


def test_webhook_urls_without_secret_fail_fast() -> None:
    with pytest.raises(ConfigurationError, match="DRIFTLINE_WEBHOOKS__SECRET"):
        build_sinks(settings(webhooks=WebhookSettings(urls=["http://127.0.0.1:9/hook"])))


def test_slack_and_pagerduty_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLINE_APP_ID", "fraud-prod")
    monkeypatch.setenv("DRIFTLINE_SLACK__WEBHOOK_URL", "https://hooks.slack.com/services/T0/B0/XXXX")
    monkeypatch.setenv("DRIFTLINE_SLACK__MAX_ATTEMPTS", "7")
    monkeypatch.setenv("DRIFTLINE_PAGERDUTY__ROUTING_KEY", PagerDutyReceiver.routing_key)
    monkeypatch.setenv("DRIFTLINE_PAGERDUTY__URL", "https://events.eu.pagerduty.com/v2/enqueue")
    sinks = build_sinks(Settings(_env_file=None, influx=InfluxSettings(token=None)))
    slack, pagerduty = sinks
    assert isinstance(slack, SlackSink) and isinstance(pagerduty, PagerDutySink)
    assert slack.max_attempts == 7 and slack.recoveries
    assert slack.outbox is not None and slack.outbox.directory.parts[-2:] == ("spool", "slack")
    assert pagerduty.source == "fraud-prod" and pagerduty.urls == [
        "https://events.eu.pagerduty.com/v2/enqueue"
    ]
    assert pagerduty.outbox is not None and pagerduty.outbox.directory.parts[-2:] == ("spool", "pagerduty")


async def test_an_incident_that_recovers_is_resolved_in_pagerduty() -> None:
    # The worker's path without Kafka: the gate admits an alert, the alerts agent hands it to the sinks,
    # the monitor's recovery closes the incident, and the closing worker tells the sinks.
    receiver = await PagerDutyReceiver().start()
    sink = PagerDutySink(PagerDutyReceiver.routing_key, url=receiver.url, source="prod")
    gate = IncidentManager(InMemoryIncidentStore())
    wiring = wire_alert_sinks(make_app(), settings(), Metrics(), incidents=gate, sinks=[sink])
    await wiring.fanout.start()
    alert = make_alert()
    try:
        assert gate.admit(alert)
        await wiring.handle(encode_alert(alert))
        assert gate.recover(IncidentKey.of(alert))
        assert not gate.recover(IncidentKey.of(alert))  # closed once: one resolve
        await wiring.service.recoveries_handed_over()
        await sink.flush()
    finally:
        await wiring.fanout.close()
        await receiver.stop()
    assert [(g.body["event_action"], g.status) for g in receiver.received] == [
        ("trigger", 202),
        ("resolve", 202),
    ]
    assert receiver.closed == [("prod/m/data/x", ["triggered", "resolved"])]


def test_the_readme_configurations_build_their_sinks(monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (ROOT / "README.md").read_text()
    for section in ("## Slack", "## PagerDuty"):
        block = readme[readme.index(section) :]
        block = block[block.index("```bash\n") + 8 :]
        for line in block[: block.index("```")].splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] == "export":  # the commented EU line is an alternative, not a default
                name, value = words[1].split("=", 1)
                monkeypatch.setenv(name, value)
    slack, pagerduty = build_sinks(settings())
    assert isinstance(slack, SlackSink) and slack.urls[0].startswith("https://hooks.slack.com/services/")
    assert isinstance(pagerduty, PagerDutySink) and pagerduty.source == "fraud-prod"
    assert pagerduty.urls == ["https://events.pagerduty.com/v2/enqueue"]
    assert pagerduty.client_url == "https://grafana.example.com/d/driftline"
