"""The InfluxDB sink against the real InfluxDB 2.x: alerts and metrics read back with Flux, and no alert
lost while InfluxDB cannot be reached (a TCP forwarder stands between the sink and the server, so the
shared server keeps running for the other tests)."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from influxdb_client import InfluxDBClient
from pydantic import SecretStr

from agent.alerting.sinks.influx import InfluxSink
from agent.metrics import MetricPoint, Metrics
from schemas import Alert
from tests.support.alerts import eventually, make_alert
from tests.support.proxy import TcpProxy
from tests.support.services import InfluxEndpoint

pytestmark = pytest.mark.integration


@pytest.fixture
def client(influx: InfluxEndpoint) -> Iterator[InfluxDBClient]:
    with InfluxDBClient(url=influx.url, token=influx.token, org=influx.org) as c:
        yield c


def make_sink(influx: InfluxEndpoint, spool: Path, url: str | None = None, **kwargs: Any) -> InfluxSink:
    options: dict[str, Any] = {
        "timeout_s": 2.0,
        "retry_initial_s": 0.05,
        "retry_max_s": 0.2,
        "rng": random.Random(3),
        **kwargs,
    }
    return InfluxSink(
        url=url or influx.url,
        token=SecretStr(influx.token),
        org=influx.org,
        bucket=influx.bucket,
        spool_dir=spool,
        **options,
    )


def query_alerts(client: InfluxDBClient, bucket: str, model: str) -> list[dict[str, Any]]:
    tables = client.query_api().query(
        f'from(bucket: "{bucket}") |> range(start: -30d, stop: 30d) '
        f'|> filter(fn: (r) => r._measurement == "driftline_alert" and r.model == "{model}") '
        '|> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value") |> group() '
        '|> sort(columns: ["_time"])'
    )
    return [record.values for table in tables for record in table.records]


def alert_for(model: str, event: int = 1) -> Alert:
    # Recent, so that it sits inside the bucket's retention and the default query range.
    return make_alert(event, model=model, detected_at=datetime.now(UTC) - timedelta(seconds=event))


async def test_alert_written_and_read_back(
    influx: InfluxEndpoint, client: InfluxDBClient, unique: str, tmp_path: Path
) -> None:
    model = f"model-{unique}"
    alert = alert_for(model)
    metrics = Metrics()
    sink = make_sink(influx, tmp_path, metrics=metrics)
    await sink.start()
    try:
        await sink.send(alert)
    finally:
        await sink.close()
    assert (sink.stats.delivered, sink.stats.spooled) == (1, 0)
    (row,) = query_alerts(client, influx.bucket, model)
    assert row["_time"] == alert.detected_at
    assert {k: row[k] for k in ("model", "version", "kind", "severity", "detector", "subject")} == {
        "model": model,
        "version": "1",
        "kind": "data",
        "severity": "warning",
        "detector": "adwin",
        "subject": "x",
    }
    assert row["alert_id"] == alert.alert_id
    assert row["message"] == alert.message
    assert row["shift_in_std"] == 0.8
    assert row["window_events"] == 640
    assert row["extra_window_text"] == "tumbling"
    assert metrics.registry.get_sample_value("driftline_alerts_delivered_total", {"sink": "influx"}) == 1


async def test_metrics_batches(
    influx: InfluxEndpoint, client: InfluxDBClient, unique: str, tmp_path: Path
) -> None:
    sink = make_sink(influx, tmp_path)
    await sink.start()
    start = datetime.now(UTC) - timedelta(minutes=5)
    batches, per_batch = 20, 500
    try:
        started = time.perf_counter()
        for b in range(batches):
            await sink.send_metrics(
                [
                    MetricPoint(
                        "driftline_feature",
                        {"window_mean": i / per_batch, "events": i},
                        {"run": unique, "feature": f"f{i % 20}"},
                        start + timedelta(milliseconds=b * per_batch + i),
                    )
                    for i in range(per_batch)
                ]
            )
        took = time.perf_counter() - started
    finally:
        await sink.close()
    assert sink.stats.points_written == batches * per_batch
    tables = client.query_api().query(
        f'from(bucket: "{influx.bucket}") |> range(start: -1h) '
        f'|> filter(fn: (r) => r._measurement == "driftline_feature" and r.run == "{unique}" '
        'and r._field == "events") |> group() |> count()'
    )
    (count,) = [record.get_value() for table in tables for record in table.records]
    assert count == batches * per_batch
    print(f"influx: {batches * per_batch / took:,.0f} points/s in batches of {per_batch}")


async def test_down_then_back_loses_no_alert(
    influx: InfluxEndpoint, client: InfluxDBClient, unique: str, tmp_path: Path
) -> None:
    target = urlsplit(influx.url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 8086)  # not started: "down"
    model = f"model-{unique}"
    alerts = [alert_for(model, i) for i in range(1, 6)]
    metrics = Metrics()
    sink = make_sink(influx, tmp_path / "spool", url=f"http://127.0.0.1:{proxy.port}", metrics=metrics)
    await sink.start()
    try:
        for alert in alerts[:3]:
            await sink.send(alert)
        await sink.send_metrics([MetricPoint("driftline_throughput", {"events_per_s": 1.0}, {"run": unique})])
        assert not sink.healthy
        assert sink.stats.spooled == 3 and sink.stats.delivered == 0
        assert list((tmp_path / "spool").glob("*-alert.lp"))
        await eventually(lambda: sink.stats.retries >= 2, what="retries while InfluxDB is down")

        await proxy.start()  # InfluxDB is back
        await eventually(lambda: sink.healthy, what="spool written back")
        for alert in alerts[3:]:
            await sink.send(alert)  # written directly again
    finally:
        await sink.close()
        await proxy.stop()
    assert (sink.stats.delivered, sink.stats.spooled, sink.stats.failed) == (5, 3, 0)
    assert sink.stats.points_written == 1
    assert [r["alert_id"] for r in query_alerts(client, influx.bucket, model)] == [
        a.alert_id for a in reversed(alerts)
    ]
    assert not list((tmp_path / "spool").glob("*.lp"))
    assert metrics.registry.get_sample_value("driftline_spool_bytes", {"sink": "influx"}) == 0


async def test_spool_of_an_earlier_run_is_written_at_start(
    influx: InfluxEndpoint, client: InfluxDBClient, unique: str, tmp_path: Path
) -> None:
    model = f"model-{unique}"
    proxy = TcpProxy("127.0.0.1", 1)  # never started
    down = make_sink(influx, tmp_path, url=f"http://127.0.0.1:{proxy.port}", timeout_s=0.5)
    await down.start()
    await down.send(alert_for(model))
    await down.close()  # the worker stops (or crashes) with the alert still spooled
    assert down.stats.spooled == 1

    restarted = make_sink(influx, tmp_path)
    await restarted.start()
    try:
        await eventually(lambda: restarted.stats.delivered == 1, what="earlier spool written")
    finally:
        await restarted.close()
    assert len(query_alerts(client, influx.bucket, model)) == 1


async def test_rejected_point_is_counted_not_retried(
    influx: InfluxEndpoint, unique: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = make_sink(influx, tmp_path)
    await sink.start()
    try:
        await sink.send_metrics([MetricPoint(f"conflict_{unique}", {"v": 1.0})])
        await sink.send_metrics([MetricPoint(f"conflict_{unique}", {"v": "text"})])  # the field changes type
    finally:
        await sink.close()
    assert (sink.stats.points_written, sink.stats.points_dropped, sink.stats.retries) == (1, 1, 0)
    assert sink.healthy
    assert re.search(r"rejected 1 metrics points: HTTP 4\d\d", caplog.text)
    assert influx.token not in caplog.text
