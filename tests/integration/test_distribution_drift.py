"""Drift in the whole distribution through a real ``driftline run`` worker: a feature's spread narrows
and a categorical feature's mix changes while neither's typical value moves; the data alerts say so
(the measure, the reference and recent values) on the alerts topic and in InfluxDB."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np
import pytest
from influxdb_client import InfluxDBClient

from agent.models.repository import ModelRepository
from agent.packaging.builder import build_package
from agent.packaging.training import load_training_function
from schemas.alert import Alert, AlertKind
from tests.support.alerts import alerts_in
from tests.support.kafka import create_topics, produce, read_to_end
from tests.support.services import InfluxEndpoint
from tests.support.worker import Topics, Worker

pytestmark = pytest.mark.integration

EXAMPLE_TRAINING = Path(__file__).resolve().parents[2] / "examples" / "train_example.py"
PLANS = ["basic", "plus", "pro"]
N = 12_000
CHANGE = 4_000


READ = {
    "age": ("alert_id", "message", "extra_measure_text", "extra_spread_ratio"),
    "plan": ("alert_id", "message", "extra_measure_text", "extra_category_text", "extra_recent_value"),
}
"""The fields of each alert's InfluxDB row that the test reads."""


def influx_alerts(influx: InfluxEndpoint, model: str) -> dict[str, dict[str, object]]:
    """Each alert of ``model`` in InfluxDB, by subject: its fields pivoted into one row."""
    with InfluxDBClient(url=influx.url, token=influx.token, org=influx.org) as client:
        tables = client.query_api().query(
            f'from(bucket: "{influx.bucket}") |> range(start: -1h) '
            f'|> filter(fn: (r) => r._measurement == "driftline_alert" and r.model == "{model}") '
            '|> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")'
        )
        return {str(r.values["subject"]): r.values for table in tables for r in table.records}


async def test_a_narrower_spread_and_a_new_category_mix_are_alerted_with_what_changed(
    kafka_bootstrap: str, influx: InfluxEndpoint, tmp_path: Path, unique: str
) -> None:
    model = f"churn-{unique}"
    repository = ModelRepository(tmp_path / "models")
    build_package(
        load_training_function(str(EXAMPLE_TRAINING))(), name=model, version="1", repository=repository
    )
    topics = Topics.unique(unique)
    await create_topics(kafka_bootstrap, topics.all())
    worker = Worker(
        kafka_bootstrap,
        topics,
        f"distribution-{unique}",
        repository.root,
        tmp_path,
        extra_env={
            "INFLUXDB_URL": influx.url,
            "INFLUXDB_TOKEN": influx.token,
            "INFLUXDB_ORG": influx.org,
            "INFLUXDB_BUCKET": influx.bucket,
            # Inference latency is the machine's: a busy test machine must not add a technical alert.
            "DRIFTLINE_MONITORING__LATENCY_THRESHOLD": "1e12",
        },
    ).start()
    try:
        await asyncio.to_thread(worker.wait_ready)
        rng = np.random.default_rng(51)
        # The training module's distributions; from CHANGE on, age (uniform 18-80) is squeezed to half
        # its spread around its median (49) and the plan mix goes from thirds to 15/70/15.
        age, spend, plan = rng.uniform(18, 80, N), rng.gamma(2.0, 20.0, N), rng.integers(0, 3, N)
        age[CHANGE:] = 49.0 + 0.5 * (age[CHANGE:] - 49.0)
        plan[CHANGE:] = rng.choice(3, N - CHANGE, p=[0.15, 0.7, 0.15])
        messages = []
        for i in range(N):
            features = {"age": float(age[i]), "monthly_spend": float(spend[i]), "plan": PLANS[int(plan[i])]}
            body = {"request_id": f"r-{i}", "model": model, "features": features}
            messages.append((f"r-{i}".encode(), json.dumps(body).encode()))
        await produce(kafka_bootstrap, topics.requests, messages)

        def data_alerts() -> list[Alert]:
            return [a for a in alerts_in(r.value for r in records) if a.kind is AlertKind.DATA]

        deadline = time.monotonic() + 180
        while True:
            records = await read_to_end(kafka_bootstrap, topics.alerts)
            written = await asyncio.to_thread(influx_alerts, influx, model)
            # Whole rows: InfluxDB stores each field on its own, and a query made while a point is
            # written can see some of its fields and not yet the others (CI: a row without alert_id).
            whole = all(
                all(written.get(subject, {}).get(f) is not None for f in fields)
                for subject, fields in READ.items()
            )
            if whole or time.monotonic() > deadline:
                break
            assert worker.process is not None and worker.process.poll() is None, worker.log()
            await asyncio.sleep(1.0)
        # Read again: InfluxDB may have taken an alert published after the topic was last read.
        records = await read_to_end(kafka_bootstrap, topics.alerts)
    finally:
        code = worker.stop()
    assert code == 0, worker.log()[-3000:]

    # The alerts topic: one data alert per feature, each saying which measure moved and how much.
    by_subject = {a.subject: a for a in data_alerts()}
    assert set(by_subject) == {"age", "plan"}, worker.log()[-3000:]
    age_alert, plan_alert = by_subject["age"], by_subject["plan"]
    assert age_alert.evidence.extra["measure"] == "spread"
    assert age_alert.evidence.extra["spread_ratio"] == pytest.approx(0.5, abs=0.1)
    assert f"spread of feature 'age' of {model}/1 shrank" in age_alert.message
    assert (plan_alert.evidence.extra["measure"], plan_alert.evidence.extra["category"]) == ("share", "plus")
    assert plan_alert.evidence.extra["reference_value"] == pytest.approx(1 / 3, abs=0.03)
    # The share since the change point, within three standard errors of the 70 % sent over the events
    # it was read on (Page-Hinkley fires on the share within a few blocks: 32 events in one run).
    events = plan_alert.evidence.window_events
    assert events is not None and events >= 32
    error = (0.7 * 0.3 / events) ** 0.5
    assert plan_alert.evidence.extra["recent_value"] == pytest.approx(0.7, abs=3 * error)
    assert f"share of 'plus' in feature 'plan' of {model}/1 rose from 33% to" in plan_alert.message
    for alert in (age_alert, plan_alert):
        assert CHANGE <= int(alert.evidence.extra["event_index"]) < CHANGE + 1_000

    # InfluxDB has the same alerts, with the measure and its values as fields.
    age_row, plan_row = written["age"], written["plan"]
    assert (age_row["alert_id"], plan_row["alert_id"]) == (age_alert.alert_id, plan_alert.alert_id)
    assert age_row["extra_measure_text"] == "spread" and age_row["extra_spread_ratio"] == pytest.approx(
        age_alert.evidence.extra["spread_ratio"]
    )
    assert (plan_row["extra_measure_text"], plan_row["extra_category_text"]) == ("share", "plus")
    assert plan_row["extra_recent_value"] == pytest.approx(plan_alert.evidence.extra["recent_value"])
    assert plan_row["message"] == plan_alert.message
