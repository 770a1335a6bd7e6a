"""The demo: what each scripted drift must raise, the delays, the summary, the plot, the webhook receiver
(unit tests on plain classes), and one short end-to-end run of ``driftline demo`` on the real services."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from agent.alerting.sinks.webhook import new_secret, signature_headers
from agent.demo.evaluation import (
    AlertTable,
    DemoRun,
    DemoSummary,
    EventLog,
    Expectation,
    SeenAlert,
    WebhookDelivery,
    WebhookReceiver,
    compress,
    delivered_alerts,
    evaluate,
    expectations,
    plot_demo,
    rolling_mean,
)
from agent.demo.session import Demo
from producers.scenarios import builtin_scenario
from producers.schedule import ScheduledDrift
from schemas.alert import Alert, AlertKind, OffsetRange, Severity
from tests.support.alerts import incident_reports
from tests.support.services import ROOT, InfluxEndpoint

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z: event i of the test logs is sent at T0 + i / 100


def make_alert(
    kind: AlertKind,
    subject: str,
    *,
    source: tuple[OffsetRange, ...] = (),
    detected_at: float = T0,
    detector: str = "page_hinkley_up",
) -> Alert:
    return Alert.create(
        model="breast-cancer",
        model_version="1",
        kind=kind,
        detector=detector,
        subject=subject,
        severity=Severity.WARNING,
        message=f"{subject} drifted",
        detected_at=datetime.fromtimestamp(detected_at, UTC),
        opened_at_event=int(detected_at),
        source=source,
    )


def sent_log(count: int = 1000, partitions: int = 4) -> EventLog:
    """Events round-robin over ``partitions`` partitions of topic ``req`` (outcomes on ``out``), sent at
    100 per second from T0."""
    log = EventLog(count, "run", "x")
    for i in range(count):
        partition, offset = i % partitions, i // partitions
        key = f"run-{i}".encode()
        log.add_request(
            "req", partition, offset, key, b'{"features": {"x": 1.0}}', int((T0 + i / 100) * 1000)
        )
        log.add_outcome("out", partition, offset, key, b'{"label": 0}')
    return log


def at(event: int, partitions: int = 4, topic: str = "req") -> OffsetRange:
    partition, offset = event % partitions, event // partitions
    return OffsetRange(topic=topic, partition=partition, start=offset, end=offset)


# --- schedule -> expectations -------------------------------------------------------------------


def test_demo_scenario_expects_data_alerts_a_concept_alert_and_dead_letters_only() -> None:
    expected = expectations(builtin_scenario("demo").drifts)
    assert [(e.kind, e.start, e.end, e.subject, e.alert_required) for e in expected] == [
        ("data", 2000, 6000, "worst radius", True),
        ("data", 2000, 6000, "worst concave points", True),
        ("concept", 7000, None, None, True),
        ("dead_letters", 500, None, None, False),
    ]
    assert "below twice the 5% alert margin" in expected[3].note
    # The estimated error rising with the covariate shift is its consequence, not an unscripted alert.
    performance = SeenAlert(make_alert(AlertKind.PERFORMANCE, "estimated_error"), 2303)
    assert expected[0].explains(performance) and not expected[2].explains(performance)
    # So is the error rising while the shifted rows keep their labels (a wine model's error went from
    # 1.9 % to 4.8 % under the shift), but not once the shift is over.
    assert expected[0].explains(SeenAlert(make_alert(AlertKind.CONCEPT, "error"), 4096))
    assert not expected[0].explains(SeenAlert(make_alert(AlertKind.CONCEPT, "error"), 6500))


def test_a_broken_share_of_twice_the_margin_requires_a_technical_alert() -> None:
    drifts = [ScheduledDrift(kind="schema", start=100, size=0.1)]
    assert expectations(drifts, rate_margin=0.05)[0].alert_required
    assert not expectations(drifts, rate_margin=0.06)[0].alert_required


def test_compress_scales_every_position_of_the_schedule() -> None:
    drifts = builtin_scenario("demo").drifts
    scaled = [ScheduledDrift(**d) for d in compress(drifts, 0.5)]
    assert [(d.kind, d.start, d.end) for d in scaled] == [
        ("covariate", 1000, 3000),
        ("covariate", 1000, 3000),
        ("concept", 3500, None),
        ("schema", 250, None),
        ("garbage", 250, None),
    ]
    assert [d.size for d in scaled] == [d.size for d in drifts]


def demo_args(**overrides: object) -> argparse.Namespace:
    args = {"scenario": "demo", "model": "breast-cancer", "count": None, "rate": None, "seed": 0}
    args |= {"package": None, "data": None, "label_column": None, "feature": None, "shuffle": False}
    args.update(overrides)
    return argparse.Namespace(**args)


def test_a_shorter_count_compresses_the_demo_schedule_and_the_default_keeps_it() -> None:
    scenario, count = Demo(demo_args(count=6000), sys.stdout)._scenario()
    assert count == 6000 and scenario.count == 6000
    assert [d.start for d in scenario.drifts] == [1000, 1000, 3500, 250, 250]
    full, count = Demo(demo_args(), sys.stdout)._scenario()
    assert count == 12_000 and full == builtin_scenario("demo")


def test_each_run_has_its_own_app_id_topics_and_request_ids() -> None:
    a, b = DemoRun.new(), DemoRun.new()
    assert a.app_id != b.app_id
    assert all(topic.startswith(a.app_id) for topic in a.topics.values())
    assert set(a.topics) == {"requests", "predictions", "outcomes", "alerts", "dead_letters"}


# --- where an alert was raised, and the delays -----------------------------------------------------


def test_an_alert_is_placed_at_the_last_event_of_its_batch_across_partitions() -> None:
    batch = (
        OffsetRange(topic="req", partition=1, start=500, end=502),  # events 2001, 2005, 2009
        OffsetRange(topic="req", partition=2, start=500, end=501),  # events 2002, 2006
    )
    log = sent_log(4000)
    assert log.place(make_alert(AlertKind.DATA, "x", source=batch)).event == 2009
    assert log.place(make_alert(AlertKind.DATA, "x", source=(at(7, topic="elsewhere"),))).event is None
    assert log.place(make_alert(AlertKind.CONCEPT, "error", source=(at(321, topic="out"),))).event == 321


def test_delays_count_from_the_first_drifted_event_in_events_and_seconds() -> None:
    log = sent_log()
    data = log.place(make_alert(AlertKind.DATA, "x", source=(at(243),), detected_at=T0 + 2.5))
    concept = log.place(
        make_alert(AlertKind.CONCEPT, "error", source=(at(720, topic="out"),), detected_at=T0 + 7.25)
    )
    expected = [
        Expectation("shift", "data", 200, 600, subject="x"),
        Expectation("labels", "concept", 700),
    ]
    detections = evaluate(expected, [concept, data], log)
    assert [(d.ok, d.delay_events, d.delay_s) for d in detections] == [(True, 43, 0.5), (True, 20, 0.25)]
    assert detections[0].alert == data and detections[1].alert == concept


def test_an_alert_before_the_drift_after_it_or_on_another_feature_is_no_detection() -> None:
    log = sent_log()
    early = log.place(make_alert(AlertKind.DATA, "x", source=(at(150),)))
    late = log.place(make_alert(AlertKind.DATA, "x", source=(at(650),)))
    other = log.place(make_alert(AlertKind.DATA, "y", source=(at(300),)))
    prediction = log.place(make_alert(AlertKind.PREDICTION, "prediction", source=(at(300),)))
    [d] = evaluate(
        [Expectation("shift", "data", 200, 600, subject="x")], [early, late, other, prediction], log
    )
    assert not d.ok and d.alert is None


def test_dead_letters_must_cover_every_bad_message() -> None:
    log = sent_log()
    bad = [510, 600, 777]
    expected = [Expectation("bad", "dead_letters", 500, alert_required=False, note="dead letters only")]
    for i in bad[:2]:
        log.add_dead_letter(f"run-{i}".encode())
    [missing_one] = evaluate(expected, [], log, bad_events=bad)
    assert not missing_one.ok and missing_one.detail.startswith("2 of 3 bad messages dead-lettered")
    log.add_dead_letter(b"run-777")
    [complete] = evaluate(expected, [], log, bad_events=bad)
    assert complete.ok and complete.detail == "3 of 3 bad messages dead-lettered; dead letters only"


def test_a_required_technical_alert_must_come_with_the_dead_letters() -> None:
    log = sent_log()
    for i in (510, 600):
        log.add_dead_letter(f"run-{i}".encode())
    expected = [Expectation("bad", "dead_letters", 500)]
    [without] = evaluate(expected, [], log, bad_events=[510, 600])
    assert not without.ok
    alert = log.place(
        make_alert(AlertKind.TECHNICAL, "dead_letters", source=(at(640),), detector="dead_letter_rate")
    )
    [with_alert] = evaluate(expected, [alert], log, bad_events=[510, 600])
    assert with_alert.ok and with_alert.delay_events == 140


def test_event_log_joins_predictions_and_outcomes_in_either_order() -> None:
    log = EventLog(3, "r", "x")
    log.add_outcome("out", 0, 0, b"r-0", b'{"label": 1}')
    log.add_prediction(b"r-0", b'{"label": 1, "probabilities": {"0": 0.1, "1": 0.9}}')
    log.add_prediction(b"r-1", b'{"label": 0, "probabilities": {"0": 0.7, "1": 0.3}}')
    log.add_outcome("out", 0, 1, b"r-1", b'{"label": 1}')
    log.add_prediction(b"other-2", b'{"label": 0, "probabilities": {"0": 0.7, "1": 0.3}}')
    assert log.error[:2].tolist() == [0.0, 1.0]
    assert np.isnan(log.error[2]) and log.predictions_seen == 2


# --- the summary ------------------------------------------------------------------------------------


def summary_of(detections: list[object], alerts: list[SeenAlert]) -> DemoSummary:
    return DemoSummary(
        run_id="r",
        events=1000,
        requests=985,
        outcomes=985,
        broken=10,
        garbage=5,
        predictions=985,
        dead_letters=15,
        alerts=alerts,
        detections=detections,  # type: ignore[arg-type]
        duration_s=150,
        rate=100,
    )


def test_summary_exits_0_when_everything_was_detected_and_names_what_was_missed() -> None:
    log = sent_log()
    data = log.place(make_alert(AlertKind.DATA, "x", source=(at(243),), detected_at=T0 + 2.5))
    noise = log.place(make_alert(AlertKind.DATA, "z", source=(at(100),)))
    expected = [
        Expectation("covariate +1.5 sd on 'x'", "data", 200, 600, subject="x"),
        Expectation("concept: 50% of labels changed", "concept", 700),
    ]
    summary = summary_of(evaluate(expected, [data, noise], log), [data, noise])
    assert summary.exit_code == 1
    assert summary.missed == ["concept: 50% of labels changed"]
    text = summary.format()
    assert "[ok] covariate +1.5 sd on 'x'" in text
    assert "data alert on 'x' (page_hinkley_up) at event 243 (+43 events, 0.5 s)" in text
    assert "[MISSED] concept: 50% of labels changed" in text
    assert "1 unscripted alert(s)" in text and "data 'z' (page_hinkley_up) at event 100" in text
    assert "file order" not in text  # a scenario's rows, not a file's
    assert text.endswith("MISSED: concept: 50% of labels changed")
    assert "finished in 2 min 30 s" in text

    summary = summary_of(evaluate(expected[:1], [data], log), [data])
    assert summary.exit_code == 0 and summary.format().endswith("every scripted drift was detected")


def test_unscripted_alerts_of_a_file_replayed_in_file_order_suggest_shuffling_it() -> None:
    log = sent_log()
    noise = log.place(make_alert(AlertKind.DATA, "z", source=(at(100),)))
    summary = replace(summary_of(evaluate([], [noise], log), [noise]), file_rows=500)
    assert "replayed in file order" in summary.format() and "--shuffle" in summary.format()
    assert "rows the model was trained on" not in summary.format()  # a data alert
    output = log.place(make_alert(AlertKind.PREDICTION, "prediction", source=(at(300),)))
    with_output = replace(summary, alerts=[noise, output])
    assert "rows the model was trained on" in with_output.format()
    shuffled = replace(summary, shuffled=True)
    assert "file order" not in shuffled.format()
    assert "replayed" not in replace(shuffled, file_rows=101).format()  # 1,000 events: under 10 times over
    small = replace(shuffled, file_rows=100).format()
    assert "the file's 100 rows were replayed 10 times over" in small and "about 0.10 reference sd" in small
    quiet = replace(summary_of(evaluate([], [], log), []), file_rows=500)
    assert "file order" not in quiet.format() and "trained on" not in quiet.format()  # nothing to explain


def test_alert_table_rows_fit_the_terminal() -> None:
    table = AlertTable(width=70, tz=UTC)
    alert = make_alert(AlertKind.CONCEPT, "error", detected_at=T0 + 3725)
    row = table.row(alert.model_copy(update={"message": "the error rose " * 10}))
    assert len(row) == 70 and row.startswith("01:02:05  breast-cancer  concept     error")
    assert row.endswith("…")


def test_rolling_mean_skips_unknown_values() -> None:
    values = np.array([np.nan, np.nan, 2.0, 4.0, np.nan, 6.0])
    assert rolling_mean(values, 4).tolist()[2:] == [2.0, 3.0, 3.0, 4.0]
    assert np.isnan(rolling_mean(values, 4)[:2]).all()


# --- the plot ---------------------------------------------------------------------------------------


def test_plot_writes_a_png_with_the_drifts_and_alerts(tmp_path: Path) -> None:
    scenario = builtin_scenario("demo")
    n = scenario.count
    rng = np.random.default_rng(0)
    log = EventLog(n, "r", "worst radius")
    log.feature[:] = rng.normal(16.0, 4.0, n) + np.where((np.arange(n) >= 2000) & (np.arange(n) < 6000), 7, 0)
    log.output[:] = rng.random(n)
    log.error[:] = rng.random(n) < np.where(np.arange(n) >= 7000, 0.5, 0.03)
    log.dead[500:] = rng.random(n - 500) < 0.015
    alerts = [
        SeenAlert(make_alert(AlertKind.DATA, "worst radius"), 2043),
        SeenAlert(make_alert(AlertKind.PREDICTION, "prediction"), 2101),
        SeenAlert(make_alert(AlertKind.PERFORMANCE, "estimated_error"), 2303),
        SeenAlert(make_alert(AlertKind.CONCEPT, "error"), 7147),
        SeenAlert(make_alert(AlertKind.TECHNICAL, "onnxruntime"), None),  # not placed: not drawn
    ]
    estimated = np.where((np.arange(n) >= 2000) & (np.arange(n) < 6000), 0.15, 0.03)

    def draw(name: str, with_estimate: bool) -> bytes:
        return plot_demo(
            tmp_path / "out" / name,
            log,
            scenario.drifts,
            alerts if with_estimate else [a for a in alerts if a.alert.kind is not AlertKind.PERFORMANCE],
            title="test",
            rate=100,
            references={"feature": 16.0, "output": 0.5, "error": 0.05, "dead": 0.05},
            estimated=estimated if with_estimate else None,
        ).read_bytes()

    data = draw("demo.png", True)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 50_000  # four panels of lines, not an empty canvas
    # The estimate, its alert and the note of how far ahead of the concept alert it came are drawn.
    assert data != draw("without.png", False)
    summary = DemoSummary("r", 1, 1, 1, 0, 0, 1, 0, alerts, [])
    assert summary.estimate_ahead() == (2303, 7147)
    assert (
        "the estimated error rose at event 2,303 (no label needed), 4,844 events before the first concept"
        in (summary.format())
    )


# --- the webhook receiver (a real local HTTP server) -----------------------------------------------


async def test_webhook_receiver_verifies_signatures() -> None:
    seen = []
    secret = new_secret()
    receiver = await WebhookReceiver(secret, seen.append).start()
    alert = make_alert(AlertKind.DATA, "x")
    body = alert.model_dump_json().encode()
    try:
        async with aiohttp.ClientSession() as session:
            now = int(time.time())
            good = signature_headers(secret, body, msg_id=alert.alert_id, timestamp=now)
            async with session.post(receiver.url, data=body, headers=good) as response:
                assert response.status == 204
            forged = signature_headers(new_secret(), body, msg_id=alert.alert_id, timestamp=now)
            async with session.post(receiver.url, data=body, headers=forged) as response:
                assert response.status == 401
            async with session.post(receiver.url, data=body + b" ", headers=good) as response:
                assert response.status == 401  # the body changed after signing
    finally:
        await receiver.stop()
    assert [(d.alert_id, d.verified, d.kind, d.subject) for d in seen] == [
        (alert.alert_id, True, "data", "x"),
        (alert.alert_id, False, "", ""),  # forged: signed with another secret
        (alert.alert_id, False, "", ""),
    ]
    assert receiver.deliveries == seen
    assert delivered_alerts(seen) == {alert.alert_id}  # the verified one only


async def test_webhook_receiver_reads_incident_notifications() -> None:
    seen: list[WebhookDelivery] = []
    secret = new_secret()
    receiver = await WebhookReceiver(secret, seen.append).start()
    reports = incident_reports()
    try:
        async with aiohttp.ClientSession() as session:
            for report in reports:
                body = report.model_dump_json().encode()
                headers = signature_headers(
                    secret, body, msg_id=report.notification_id, timestamp=int(time.time())
                )
                async with session.post(receiver.url, data=body, headers=headers) as response:
                    assert response.status == 204
    finally:
        await receiver.stop()
    assert [(d.kind, d.subject, d.incident) for d in seen] == [
        ("incident", status, reports[0].incident_id) for status in ("opened", "updated", "resolved")
    ]
    # Each alert is delivered in its incident's notifications, under their ids, not its own: the demo
    # waited for deliveries with the alerts' ids, and so 20 s at the end of every run, in vain.
    opened, grew = ({e.alert_id for e in r.timeline if e.change == "opened"} for r in reports[:2])
    assert len(opened) == 1 and len(grew) == 2
    assert not {d.alert_id for d in seen} & grew
    assert delivered_alerts(seen[:1]) == opened and delivered_alerts(seen) == grew
    summary = DemoSummary("r", 1, 1, 1, 0, 0, 1, 0, [], [], webhook=seen)
    assert (
        "3 deliveries, 3 signatures verified (1 incidents: 1 opened, 1 updated, 1 resolved)"
        in summary.format()
    )


# --- end to end -------------------------------------------------------------------------------------


@pytest.mark.integration
async def test_demo_end_to_end(kafka_bootstrap: str, influx: InfluxEndpoint, tmp_path: Path) -> None:
    # 9,000 events at 450/s (20 s): the compressed schedule still starts the concept change after the
    # error monitor's warm-up (see the --count help).
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "INFLUXDB_URL": influx.url,
        "INFLUXDB_TOKEN": influx.token,
        "INFLUXDB_ORG": influx.org,
        "INFLUXDB_BUCKET": influx.bucket,
        "COLUMNS": "120",
    }
    command = [sys.executable, "-m", "agent.cli", "demo", "--count", "9000", "--rate", "450"]
    proc = await asyncio.to_thread(
        subprocess.run,
        [*command, "--dir", str(tmp_path / "demo")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, f"{out[-6000:]}\n{proc.stderr[-3000:]}"
    assert out.rstrip().splitlines()[-1].startswith("Kafka and InfluxDB are still running")
    assert "every scripted drift was detected" in out
    assert out.count("  [ok] ") == 4 and "[MISSED]" not in out
    # The estimated error rose before any concept alert: before the labels said anything.
    assert re.search(
        r"estimate +the estimated error rose at event [\d,]+ \(no label needed\), [\d,]+ events before", out
    ), out
    # Receivers get each incident's notifications (opened, updated as it grows, resolved), not each alert.
    webhook = re.search(
        r"webhook +(\d+) deliveries, (\d+) signatures verified "
        r"\((\d+) incidents: (\d+) opened, (\d+) updated, (\d+) resolved\), (\d+) rejected",
        out,
    )
    assert webhook is not None, out
    deliveries, verified, incidents, opened, updated, resolved, rejected = map(int, webhook.groups())
    assert opened == incidents >= 1 and resolved <= incidents and deliveries == opened + updated + resolved
    alerts = int(re.search(r"alerts +(\d+)", out).group(1))  # type: ignore[union-attr]
    assert verified == deliveries >= 2 and rejected == 0 and alerts >= incidents
    assert f"InfluxDB      {alerts} of {alerts} alerts read back" in out
    assert "-> webhook: signature verified" in out  # printed live, as each delivery arrived
    png = tmp_path / "demo" / "demo.png"
    assert png.read_bytes().startswith(b"\x89PNG")
    # The drift report, printed beside the plot: the run's alerts and every column's distributions.
    report = tmp_path / "demo" / "report.html"
    assert re.search(r"^  report +\S*report\.html$", out, re.MULTILINE), out
    page = report.read_text()
    assert page.count('class="alert-row"') >= alerts and 'data-chart="timeline"' in page
    assert page.count('polyline class="recent"') >= 2  # recent values read before the topics were deleted
    # The run's topics are removed at the end: repeated demos do not pile up on the broker.
    run_id = re.search(r"driftline demo: run (\S+)", out).group(1)  # type: ignore[union-attr]
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        left = [t for t in await admin.list_topics() if run_id in t]
    finally:
        await admin.close()
    assert left == []
