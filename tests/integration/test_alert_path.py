"""The alert path in a real ``driftline run`` worker: a record on the alerts topic reaches a signed webhook,
Slack, PagerDuty (local receivers that check each payload against the service's schema) and InfluxDB
through the Faust agent; a bad record is skipped; the metrics timer writes the sinks' counters."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from influxdb_client import InfluxDBClient

from agent.alerting.sinks.kafka import alert_message
from schemas import Alert
from tests.support.alerts import WebhookReceiver, make_alert
from tests.support.kafka import create_topics, produce
from tests.support.receivers import PagerDutyReceiver, SlackReceiver
from tests.support.services import InfluxEndpoint
from tests.support.worker import Topics, Worker

pytestmark = pytest.mark.integration

SECRET = "integration-secret"


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    r = await WebhookReceiver(SECRET).start()
    yield r
    await r.stop()


def influx_rows(influx: InfluxEndpoint, flux_filter: str) -> list[dict[str, object]]:
    with InfluxDBClient(url=influx.url, token=influx.token, org=influx.org) as client:
        tables = client.query_api().query(
            f'from(bucket: "{influx.bucket}") |> range(start: -1h) |> filter(fn: (r) => {flux_filter})'
        )
        return [record.values for table in tables for record in table.records]


async def wait_until(condition: object, worker: Worker, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):  # type: ignore[arg-type]
        assert worker.process is not None and worker.process.poll() is None, worker.log()
        assert time.monotonic() < deadline, f"{what} within {timeout:g} s:\n{worker.log()}"
        await asyncio.sleep(0.25)


async def test_alert_reaches_webhook_and_influx(
    kafka_bootstrap: str, influx: InfluxEndpoint, receiver: WebhookReceiver, unique: str, tmp_path: Path
) -> None:
    topics = Topics.unique(unique)
    await create_topics(kafka_bootstrap, topics.all())
    model = f"model-{unique}"
    alert = make_alert(7, model=model, detected_at=datetime.now(UTC))
    message = alert_message(alert, topics.alerts)
    await produce(kafka_bootstrap, topics.alerts, [(b"bad", b"{not an alert"), (message.key, message.value)])

    models = tmp_path / "models"
    models.mkdir()
    slack = await SlackReceiver().start()
    pagerduty = await PagerDutyReceiver().start()
    worker = Worker(
        kafka_bootstrap,
        topics,
        app_id=f"alerts-{unique}",
        models=models,
        workdir=tmp_path,
        extra_env={
            "INFLUXDB_URL": influx.url,
            "INFLUXDB_TOKEN": influx.token,
            "INFLUXDB_ORG": influx.org,
            "INFLUXDB_BUCKET": influx.bucket,
            "DRIFTLINE_WEBHOOKS__URLS": json.dumps([receiver.url]),
            "DRIFTLINE_WEBHOOKS__SECRET": SECRET,
            "DRIFTLINE_SLACK__WEBHOOK_URL": slack.url,
            "DRIFTLINE_PAGERDUTY__ROUTING_KEY": pagerduty.routing_key,
            "DRIFTLINE_PAGERDUTY__URL": pagerduty.url,
            "DRIFTLINE_INFLUX__METRICS_INTERVAL_S": "1",
            # Each alert as it comes (the incidents' notifications: test_incidents.py).
            "DRIFTLINE_INCIDENTS__NOTIFY": "alerts",
        },
    ).start()
    try:
        await wait_until(lambda: receiver.received, worker, 120, "the webhook received the alert")
        (got,) = receiver.received
        assert got.valid
        assert Alert.model_validate_json(got.body) == alert
        await wait_until(lambda: slack.received and pagerduty.received, worker, 30, "Slack and PagerDuty")
        [message] = slack.received
        assert message.errors == [] and message.status == 200 and alert.alert_id in slack.texts(message)
        [event] = pagerduty.received
        assert event.errors == [] and event.status == 202
        assert event.body["dedup_key"] == f"alerts-{unique}/{model}/data/x"  # source: the app id
        assert pagerduty.alerts == {event.body["dedup_key"]: ["triggered"]}

        await wait_until(
            lambda: influx_rows(influx, f'r._measurement == "driftline_alert" and r.model == "{model}"'),
            worker,
            30,
            "the alert in InfluxDB",
        )
        rows = influx_rows(
            influx,
            f'r._measurement == "driftline_alert" and r.model == "{model}" and r._field == "alert_id"',
        )
        assert [r["_value"] for r in rows] == [alert.alert_id]
        # The metrics timer writes each sink's counters: the webhook's delivery shows up.
        await wait_until(
            lambda: any(
                r["_value"] == 1
                for r in influx_rows(
                    influx,
                    f'r._measurement == "driftline_sink" and r.app == "alerts-{unique}" '
                    'and r.sink == "webhook" and r._field == "alerts_delivered"',
                )
            ),
            worker,
            30,
            "the sinks' counters in InfluxDB",
        )
    finally:
        code = worker.stop()
        await slack.stop()
        await pagerduty.stop()
    log = worker.log(tail=200_000)
    assert "not a valid alert" in log
    assert SECRET not in log and influx.token not in log
    assert slack.path not in log and pagerduty.routing_key not in log
    assert code == 0, log[-3000:]
