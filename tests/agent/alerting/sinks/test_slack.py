"""The Slack sink against a real local HTTP server that checks each message against Block Kit's schema
and limits."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from agent.alerting.sinks import Recovery
from agent.alerting.sinks.slack import SlackSink
from agent.errors import ConfigurationError
from agent.metrics import Metrics
from schemas import AlertKind, Evidence, Severity
from tests.support.alerts import eventually, incident_reports, make_alert
from tests.support.receivers import SlackReceiver

TOKEN = "XXXXSECRETTOKEN"


@pytest.fixture
async def slack() -> AsyncIterator[SlackReceiver]:
    r = await SlackReceiver().start()
    yield r
    await r.stop()


def make_sink(url: str, **kwargs: object) -> SlackSink:
    options: dict[str, object] = {
        "backoff_initial_s": 0.02,
        "backoff_max_s": 0.1,
        "timeout_s": 2.0,
        "rng": random.Random(1),
        **kwargs,
    }
    return SlackSink(SecretStr(url), **options)  # type: ignore[arg-type]


async def test_an_alert_is_a_block_kit_message_with_the_triage_fields(slack: SlackReceiver) -> None:
    metrics = Metrics()
    sink = make_sink(slack.url, metrics=metrics)
    await sink.start()
    alert = make_alert(model="breast-cancer", subject="mean radius", severity=Severity.CRITICAL)
    try:
        await sink.send(alert)
        await eventually(lambda: sink.stats.delivered == 1)
    finally:
        await sink.close()
    [got] = slack.received
    assert got.errors == [] and got.status == 200
    blocks = got.body["blocks"]
    assert blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Data drift: mean radius (breast-cancer v1)"},
    }
    fields = {f["text"].split("\n")[0]: f["text"].split("\n")[1] for b in blocks for f in b.get("fields", [])}
    assert fields["*Model*"] == "breast-cancer v1"
    assert fields["*Kind*"] == "data" and fields["*Subject*"] == "mean radius"
    assert fields["*Severity*"] == "critical" and fields["*Detector*"] == "adwin"
    # The evidence: reference against recent, the statistic, the extras.
    assert fields["*Reference mean*"] == "0.5" and fields["*Recent mean*"] == "0.73"
    assert fields["*Shift (reference std)*"] == "0.8" and fields["*Detector statistic*"] == "6.1"
    assert fields["*Window events*"] == "640" and fields["*p_value*"] == "0.001"
    assert alert.alert_id in slack.texts(got) and alert.message in got.body["text"]
    assert metrics.registry.get_sample_value("driftline_alerts_delivered_total", {"sink": "slack"}) == 1


async def test_every_limit_holds_for_an_outsized_alert(slack: SlackReceiver) -> None:
    huge = make_alert(
        subject="<script>&" + "s" * 400,
        message="a & b < c > d " * 1000,
    ).model_copy(
        update={"evidence": Evidence(shift_in_std=1.0, extra={f"x{i}<&>": "v" * 3000 for i in range(300)})}
    )
    sink = make_sink(slack.url)
    await sink.start()
    try:
        await sink.send(huge)
        await eventually(lambda: sink.pending == 0)
    finally:
        await sink.close()
    [got] = slack.received
    assert got.errors == [] and sink.stats.delivered == 1
    assert len(got.body["blocks"]) <= 50 and len(got.raw) < 100_000
    assert len(got.body["blocks"][0]["text"]["text"]) == 150
    assert "*More*\n272 values not shown" in SlackReceiver.texts(slack, got)  # 301 values, 29 shown
    assert got.body["blocks"][-1]["type"] == "context"  # the alert id survives the cut


async def test_recoveries_are_posted_unless_turned_off(slack: SlackReceiver) -> None:
    recovery = Recovery("m", "concept", "error", "a" * 32, opened_at=1000.0, closed_at=1000.0 + 750, alerts=3)
    on, off = make_sink(slack.url), make_sink(slack.url, recoveries=False)
    await on.start()
    await off.start()
    try:
        await off.recover(recovery)
        await on.recover(recovery)
        await eventually(lambda: on.stats.delivered == 1)
    finally:
        await on.close()
        await off.close()
    [got] = slack.received
    assert got.errors == []
    text = slack.texts(got)
    assert "Recovered: Concept drift on error (m)" in text and "12.5 min" in text and "a" * 32 in text


async def test_rate_limited_then_delivered_and_a_refusal_is_final() -> None:
    limited = await SlackReceiver(statuses=[429, 500, 0]).start()
    gone = await SlackReceiver(statuses=[410]).start()  # channel_is_archived
    retried, refused = make_sink(limited.url), make_sink(gone.url)
    await retried.start()
    await refused.start()
    try:
        await retried.send(make_alert())
        await refused.send(make_alert())
        await eventually(lambda: retried.pending == 0 and refused.pending == 0)
    finally:
        await retried.close()
        await refused.close()
        await limited.stop()
        await gone.stop()
    assert [g.status for g in limited.received] == [429, 500, 200]
    assert (retried.stats.delivered, retried.stats.retries) == (1, 2)
    assert len(gone.received) == 1 and (refused.stats.failed, refused.stats.retries) == (1, 0)


async def test_the_url_is_a_secret_logs_and_outbox_never_show_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = SlackReceiver(statuses=[503])
    await receiver.start()
    first = make_sink(receiver.url, max_attempts=50, drain_timeout_s=0.05, outbox_dir=tmp_path)
    with caplog.at_level(logging.DEBUG, logger="agent.alerting.sinks.slack"):
        await first.start()
        alert = make_alert(kind=AlertKind.PREDICTION, subject="prediction")
        await first.send(alert)
        await eventually(lambda: first.stats.retries >= 1)
        await first.close()
    [kept] = tmp_path.glob("*.json")
    assert TOKEN not in kept.read_text()
    assert TOKEN not in caplog.text and f"127.0.0.1:{receiver.port}" in caplog.text
    # The next start sends what the previous one left. A retry still on the wire from the first sink
    # is answered (503) or dropped by the restart, before the receiver starts accepting.
    await receiver.stop()
    receiver.statuses = [0]
    await receiver.start()
    second = make_sink(receiver.url, outbox_dir=tmp_path)
    try:
        await second.start()
        await eventually(lambda: second.stats.delivered == 1)
        await eventually(lambda: second.pending == 0)
    finally:
        await second.close()
        await receiver.stop()
    assert receiver.valid[-1].status == 200 and alert.alert_id in receiver.texts(receiver.valid[-1])
    assert list(tmp_path.glob("*.json")) == []


async def test_send_returns_at_once_while_slack_is_slow() -> None:
    receiver = await SlackReceiver(delay_s=0.5).start()
    sink = make_sink(receiver.url, concurrency=20)
    await sink.start()
    try:
        started = time.perf_counter()
        for i in range(20):  # twenty incidents: their messages go out concurrently
            await sink.send(make_alert(i, subject=f"x{i}"))
        elapsed = time.perf_counter() - started
        assert sink.stats.delivered == 0 and sink.pending == 20
        await sink.flush()
    finally:
        await sink.close()
        await receiver.stop()
    assert elapsed < 0.5 and sink.stats.delivered == 20


def test_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="DRIFTLINE_SLACK__WEBHOOK_URL"):
        SlackSink(SecretStr(""))
    with pytest.raises(ConfigurationError, match="slack URL #1") as info:
        SlackSink(SecretStr(f"ftp://hooks.slack.com/{TOKEN}"))
    assert TOKEN not in str(info.value)


async def test_an_incident_is_one_message_per_change(slack: SlackReceiver) -> None:
    sink = make_sink(slack.url, notify="incidents")
    await sink.start()
    opened, updated, resolved = incident_reports()
    try:
        await sink.send(make_alert())
        await sink.recover(Recovery("m", "data", "x05", "a", 1.0, 2.0))
        for report in (opened, updated, resolved):
            await sink.send_incident(report)
        await eventually(lambda: sink.stats.delivered == 3)
    finally:
        await sink.close()
    assert [m.errors for m in slack.received] == [[], [], []]
    texts = [slack.texts(m) for m in slack.received]
    assert "Opened: incident on m (1 alerts, warning)" in texts[0]
    assert "Updated: incident on m (2 alerts, critical)" in texts[1]
    assert "Resolved: incident on m (2 alerts, critical)" in texts[2]
    assert "Root cause*: data drift on 'x05' and 'x11' came first" in texts[2]
    assert "recovered data 'x11'" in texts[2] and resolved.incident_id in texts[2]
