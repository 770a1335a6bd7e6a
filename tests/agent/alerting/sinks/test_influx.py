"""The InfluxDB sink without a server: line protocol, the spool, and spooling while unreachable."""

from __future__ import annotations

import random
import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from agent.alerting.sinks.influx import InfluxSink, Spool, alert_line, incident_line, metric_lines
from agent.errors import ConfigurationError
from agent.metrics import MetricPoint, Metrics
from tests.support.alerts import incident_reports, make_alert


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_alert_line() -> None:
    alert = make_alert(
        12_345,
        subject="mean radius",
        detected_at=datetime(2026, 1, 1, 12, 0, 0, 123_456, tzinfo=UTC),
        message="two\nlines",
    )
    line = alert_line(alert)
    head = "driftline_alert,detector=adwin,kind=data,model=m,severity=warning,subject=mean\\ radius,version=1"
    assert line.startswith(head + " ")
    fields, stamp = line[len(head) + 1 :].rsplit(" ", 1)
    assert stamp == "1767268800123456000"  # exact nanoseconds of detected_at
    assert f'alert_id="{alert.alert_id}"' in fields
    assert 'message="two lines"' in fields  # one point per line
    for expected in (
        "reference_mean=0.5",
        "shift_in_std=0.8",
        "statistic=6.1",
        "window_events=640i",
        "opened_at_event=12345i",
        "extra_p_value=0.001",
        'extra_window_text="tumbling"',
    ):
        assert expected in fields.split(","), expected
    assert "\n" not in line


def test_alert_line_carries_the_drivers_as_json() -> None:
    from agent.monitoring.attribution import explain
    from schemas.alert import Driver

    driver = Driver(feature="worst radius", statistic="mean", shift=1.4, importance=0.31, score=0.434)
    line = alert_line(explain(make_alert(1), [driver]))
    assert (
        'drivers="[{\\"feature\\":\\"worst radius\\",\\"statistic\\":\\"mean\\",'
        '\\"shift\\":1.4,\\"importance\\":0.31,\\"score\\":0.434}]"'
    ) in line
    assert "likely drivers: worst radius +1.4 sd (importance 0.31)" in line
    assert "drivers=" not in alert_line(make_alert(1))


def test_incident_line() -> None:
    *_, resolved = incident_reports()
    line = incident_line(resolved)
    head = "driftline_incident,model=m,severity=critical,status=resolved"
    assert line.startswith(head + " ")
    fields = line[len(head) + 1 :].rsplit(" ", 1)[0]
    for expected in ("alerts=2i", "open_alerts=0i", f'incident_id="{resolved.incident_id}"', 'versions="1"'):
        assert expected in fields.split(","), expected
    assert "root_cause=\"data drift on 'x05' and 'x11' came first\"" in fields
    assert '\\"change\\":\\"recovered\\"' in fields  # the timeline, as JSON


def test_metric_lines() -> None:
    points = [
        MetricPoint("driftline_throughput", {"events_per_s": 812, "ok": True}, {"model": "m"}),
        MetricPoint("driftline_feature", {"mean": 0.5}, {"feature": "a b"}, datetime(2026, 1, 1, tzinfo=UTC)),
        MetricPoint("empty", {}),
    ]
    lines = metric_lines(points, default_time_ns=42)
    assert lines == [
        "driftline_throughput,model=m events_per_s=812,ok=true 42",  # an int field is written as a float
        "driftline_feature,feature=a\\ b mean=0.5 1767225600000000000",
    ]


def test_spool_fifo_alerts_first_and_sealing(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=10_000)
    spool.open()
    assert spool.append("metrics", ["m1", "m2"]) == (True, 0)
    assert spool.append("alert", ["a1"]) == (True, 0)
    assert spool.append("alert", ["a2"]) == (True, 0)  # same (open) segment
    first = spool.oldest()
    assert first is not None and first.kind == "alert"
    assert spool.read(first) == ["a1", "a2"]
    spool.append("alert", ["a3"])  # the handed-out segment is sealed: a new one starts
    spool.remove(first)
    second = spool.oldest()
    assert second is not None and spool.read(second) == ["a3"]
    spool.remove(second)
    third = spool.oldest()
    assert third is not None and third.kind == "metrics" and spool.read(third) == ["m1", "m2"]
    spool.remove(third)
    assert spool.oldest() is None and spool.bytes == 0 and len(spool) == 0
    spool.close()


def test_spool_drops_oldest_metrics_never_alerts(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=100, segment_bytes=40)
    spool.open()
    line = "x" * 19  # 20 bytes with its newline
    assert spool.append("metrics", [line]) == (True, 0)  # segment 0
    assert spool.append("metrics", [line]) == (True, 0)  # segment 0, now 40 bytes
    assert spool.append("metrics", [line]) == (True, 0)  # segment 1
    assert spool.append("alert", [line, line]) == (True, 0)  # segment 2; 100 bytes: full
    assert spool.append("alert", [line]) == (True, 2)  # the oldest metrics (segment 0, 2 points) go
    assert spool.append("alert", [line]) == (True, 0)  # 100 bytes again
    assert spool.append("alert", [line]) == (True, 1)  # the last metrics segment goes
    assert spool.segments("metrics") == []
    assert spool.append("alert", [line]) == (False, 0)  # full of alerts: refused, nothing dropped
    assert spool.append("metrics", [line]) == (False, 0)
    assert sum(len(spool.read(s)) for s in spool.segments("alert")) == 5
    assert spool.bytes == 100


def test_spool_survives_restart_and_ignores_a_partial_line(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10_000)
    spool.open()
    spool.append("alert", ["a1"])
    spool.close()
    (segment,) = spool.segments()
    with segment.path.open("ab") as f:
        f.write(b"a2-torn-by-a-cr")  # a crash in the middle of an append
    again = Spool(tmp_path, max_bytes=10_000)
    again.open()
    (restored,) = again.segments()
    assert again.read(restored) == ["a1"]
    again.append("alert", ["a3"])
    assert [s.seq for s in again.segments()] == [0, 1]  # numbering continues
    again.close()


def test_spool_is_locked_to_one_worker(tmp_path: Path) -> None:
    first = Spool(tmp_path, max_bytes=10_000)
    first.open()
    with pytest.raises(ConfigurationError, match="in use by another worker"):
        Spool(tmp_path, max_bytes=10_000).open()
    first.close()
    Spool(tmp_path, max_bytes=10_000).open()


async def test_unreachable_influx_spools_alerts_and_metrics(tmp_path: Path) -> None:
    metrics = Metrics()
    sink = InfluxSink(
        url=closed_port_url(),
        token=SecretStr("t0ken"),
        org="o",
        bucket="b",
        spool_dir=tmp_path / "spool",
        timeout_s=1.0,
        retry_initial_s=0.01,
        retry_max_s=0.05,
        metrics=metrics,
        rng=random.Random(1),
    )
    await sink.start()
    alert = make_alert()
    try:
        await sink.send(alert)
        assert not sink.healthy
        await sink.send(make_alert(2))  # straight to the spool: no second timeout
        await sink.send_metrics([MetricPoint("driftline_throughput", {"events_per_s": 1.0})])
    finally:
        await sink.close()
    assert (sink.stats.delivered, sink.stats.spooled, sink.stats.points_spooled) == (0, 2, 1)
    assert sink.stats.retries >= 1
    kept = sorted(p.name for p in (tmp_path / "spool").glob("*.lp"))
    assert kept == ["000000000000-alert.lp", "000000000001-metrics.lp"]
    assert alert.alert_id in (tmp_path / "spool" / kept[0]).read_text()
    assert metrics.registry.get_sample_value("driftline_alerts_spooled_total", {"sink": "influx"}) == 2
    assert metrics.registry.get_sample_value("driftline_spool_bytes", {"sink": "influx"}) > 0


async def test_full_spool_counts_and_logs_the_alert(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sink = InfluxSink(
        url=closed_port_url(),
        token=SecretStr("t0ken"),
        org="o",
        bucket="b",
        spool_dir=tmp_path,
        retry_initial_s=10,
        retry_max_s=10,
        timeout_s=0.5,
    )
    sink.spool.max_bytes = 700  # room for one alert line only
    await sink.start()
    first, second = make_alert(1), make_alert(2)
    try:
        await sink.send(first)
        await sink.send(second)
    finally:
        await sink.close()
    assert (sink.stats.spooled, sink.stats.failed) == (1, 1)
    assert f"alert {second.alert_id} NOT stored" in caplog.text
    assert "t0ken" not in caplog.text


async def test_a_sink_whose_start_failed_does_not_touch_the_spool(tmp_path: Path) -> None:
    owner = Spool(tmp_path, max_bytes=10_000)
    owner.open()  # another worker holds the directory
    sink = InfluxSink(url=closed_port_url(), token=SecretStr("t"), org="o", bucket="b", spool_dir=tmp_path)
    with pytest.raises(ConfigurationError):
        await sink.start()
    await sink.send(make_alert())
    assert (sink.stats.failed, sink.stats.spooled) == (1, 0)
    assert list(tmp_path.glob("*.lp")) == []
    owner.close()


async def test_a_spooled_alert_is_fsynced_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An fsync per spooled alert on the event loop held the serving loop, which shares it.
    import os
    import threading

    fsynced_on: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        fsynced_on.append(threading.current_thread().name)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    sink = InfluxSink(
        url=closed_port_url(), token=SecretStr("t"), org="o", bucket="b", spool_dir=tmp_path, timeout_s=1.0
    )
    await sink.start()
    try:
        await sink.send(make_alert())
    finally:
        await sink.close()
    assert sink.stats.spooled == 1
    assert fsynced_on and threading.main_thread().name not in fsynced_on
