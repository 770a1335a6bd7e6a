"""Incidents across kinds in a real ``driftline run`` worker: two features drift at once, and the webhook,
Slack and PagerDuty receivers (local servers that check each payload) see one incident, opened, updated
and resolved, carrying both data alerts and the prediction alert; InfluxDB, the alerts topic and
``driftline alerts`` show it too."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from agent.cli import main
from agent.models.repository import ModelRepository
from agent.packaging.examples import classification_20
from schemas.alert import AlertKind
from schemas.incident import IncidentReport
from tests.support.alerts import WebhookReceiver, alerts_in, incidents_in
from tests.support.kafka import create_topics, produce, read_to_end
from tests.support.receivers import PagerDutyReceiver, SlackReceiver
from tests.support.services import InfluxEndpoint
from tests.support.worker import Topics, Worker

pytestmark = pytest.mark.integration

SECRET = "whsec_aW5jaWRlbnQtdGVzdC1zZWNyZXQta2V5LTAwMDE="
MODEL = "classification-20"
NAMES = [f"x{i:02d}" for i in range(20)]


async def wait_until(condition: Callable[[], bool], worker: Worker, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert worker.process is not None and worker.process.poll() is None, worker.log()
        assert time.monotonic() < deadline, f"{what} within {timeout:g} s:\n{worker.log()[-4000:]}"
        await asyncio.sleep(0.5)


def drift_ids(reports: list[IncidentReport]) -> set[str]:
    """The incidents holding any alert but a technical one."""
    return {r.incident_id for r in reports if any(e.kind is not AlertKind.TECHNICAL for e in r.timeline)}


async def test_two_features_drifting_are_one_incident_for_every_receiver(
    kafka_bootstrap: str,
    influx: InfluxEndpoint,
    repository_copy: ModelRepository,
    tmp_path: Path,
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topics = Topics.unique(unique)
    await create_topics(kafka_bootstrap, topics.all(), partitions=4)
    receiver = await WebhookReceiver(SECRET).start()
    slack = await SlackReceiver().start()
    pagerduty = await PagerDutyReceiver().start()
    app_id = f"incidents-{unique}"
    worker = Worker(
        kafka_bootstrap,
        topics,
        app_id,
        repository_copy.root,
        tmp_path,
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
            # Inference latency is the machine's: a busy test machine must not add a technical alert.
            "DRIFTLINE_MONITORING__LATENCY_THRESHOLD": "1e12",
        },
    ).start()
    try:
        await asyncio.to_thread(worker.wait_ready)
        reference = np.asarray(classification_20(n_estimators=10, n_samples=2000).X_reference)
        rng = np.random.default_rng(1)
        # 48,000 calm events after the drift: the estimated error's incident (it joins the drift's)
        # closes once its window of 16,384 predictions is back at the holdout's level.
        rows = reference[rng.integers(0, len(reference), 70_000)].copy()
        for j in (3, 5):  # x03 and x05 move together from request 2,000 to 22,000, then come back
            # The output moves about 0.2 reference sd: a detection that is not clearly beyond the
            # alerting bound (0.15) is alerted from the blocks after it, which the step must outlast.
            rows[2_000:22_000, j] += 1.5 * reference[:, j].std()
        messages = []
        for i, row in enumerate(rows):
            body = {
                "request_id": f"r-{i}",
                "model": MODEL,
                "features": dict(zip(NAMES, map(float, row), strict=True)),
            }
            messages.append((f"r-{i}".encode(), json.dumps(body).encode()))
        await produce(kafka_bootstrap, topics.requests, messages)

        def notified() -> list[IncidentReport]:
            return [IncidentReport.model_validate_json(r.body) for r in receiver.received]

        def drift_resolved() -> bool:
            return any(r.status == "resolved" and r.incident_id in drift_ids(notified()) for r in notified())

        # x05's values beyond its reference range (the step carries 6.6 % of them there, windows of
        # 2,000 read 5.3-7.9 %: over the 5 % margin, never back under half of it) raise a technical
        # rate. It joins the drift's incident when x05's data drift opened first (the usual order: the
        # rate is alerted when its window closes), else it is an incident of its own. Either way every
        # incident resolves once the features come back.
        def all_resolved() -> bool:
            every = notified()
            done = {r.incident_id for r in every if r.status == "resolved"}
            return drift_resolved() and done == {r.incident_id for r in every}

        await wait_until(all_resolved, worker, 180, "resolved")
        await wait_until(lambda: len(slack.received) >= len(receiver.received), worker, 30, "Slack")
        await wait_until(lambda: len(pagerduty.received) >= len(receiver.received), worker, 30, "PagerDuty")
    finally:
        code = worker.stop()
        await receiver.stop()
        await slack.stop()
        await pagerduty.stop()
    log = worker.log(tail=200_000)
    assert code == 0, log[-3000:]

    # The webhook: one drift incident, opened once, updated as it grew, resolved once; every delivery
    # signed. x05's reference-range rate is in it, or beside it as a technical incident, opened and
    # resolved. Told apart by what they hold, not by which was notified first: the technical one is
    # raised by the worker that saw the rows, the drift by the model's monitor from the blocks it is
    # shipped.
    every = notified()
    assert len(drift_ids(every)) == 1, every
    reports = [r for r in every if r.incident_id in drift_ids(every)]
    technical = [r for r in every if r.incident_id not in drift_ids(every)]
    seen = [
        (r.status, r.incident_id, sorted({(e.kind.value, e.subject) for e in r.timeline})) for r in technical
    ]
    assert all(r.valid for r in receiver.received)
    statuses = [r.status for r in reports]
    assert statuses[0] == "opened" and statuses[-1] == "resolved", statuses
    assert statuses.count("opened") == 1 and statuses.count("resolved") == 1 and "updated" in statuses
    assert len({r.incident_id for r in reports}) == 1
    resolved = reports[-1]
    opened_alerts = {(e.kind, e.subject) for e in resolved.timeline if e.change == "opened"}
    if technical:
        assert [r.status for r in technical] == ["opened", "resolved"], seen
        assert {(e.kind, e.subject) for e in technical[-1].timeline} == {(AlertKind.TECHNICAL, "x05")}
    else:  # joined: the rate of the feature whose drift put its values there
        assert (AlertKind.TECHNICAL, "x05") in opened_alerts, opened_alerts
        assert "technical drift on 'x05'" in resolved.root_cause, resolved.root_cause
    # The predicted class's mix moves too, but near its detection threshold: whether it is alerted
    # depends on how the partitions' records interleave into blocks (CI saw it both ways).
    assert {
        (AlertKind.DATA, "x03"),
        (AlertKind.DATA, "x05"),
        (AlertKind.PREDICTION, "prediction"),
    } <= opened_alerts
    assert resolved.open_alerts == 0 and resolved.alerts == len(opened_alerts)
    assert "came first" in resolved.root_cause
    # No alert was POSTed on its own: receivers get the incident.
    assert {r.headers["webhook-id"] for r in receiver.received} == {r.notification_id for r in every}

    # Slack: a message per notification, each within Block Kit's limits.
    assert len(slack.received) == len(every) and all(m.errors == [] for m in slack.received)
    assert any("Resolved: incident on classification-20" in slack.texts(m) for m in slack.received)
    # PagerDuty: one alert per incident, triggered (and updated) then resolved.
    assert all(e.errors == [] for e in pagerduty.received)
    keys = {e.body["dedup_key"] for e in pagerduty.received}
    incidents = {resolved.incident_id} | {r.incident_id for r in technical}
    assert keys == {f"{app_id}/{MODEL}/incident/{i}" for i in incidents}
    assert len(pagerduty.closed) == len(incidents)
    assert all(closed[1][-1] == "resolved" for closed in pagerduty.closed)

    # The alerts topic has the alerts and the incidents' notifications side by side.
    values = [r.value for r in await read_to_end(kafka_bootstrap, topics.alerts)]
    alerts = alerts_in(values)
    assert {(a.kind, a.subject) for a in alerts} == opened_alerts | {(AlertKind.TECHNICAL, "x05")}
    # Each incident's notifications in the same order on both; the two incidents' deliveries may
    # interleave differently (the webhook keeps the order within an incident only).
    published = incidents_in(values)
    assert sorted(r.notification_id for r in published) == sorted(r.notification_id for r in every)
    for incident in {r.incident_id for r in every}:
        assert [r.notification_id for r in published if r.incident_id == incident] == [
            r.notification_id for r in every if r.incident_id == incident
        ]

    # InfluxDB, read back by `driftline alerts --incidents`.
    for var, value in (
        ("INFLUXDB_URL", influx.url), ("INFLUXDB_TOKEN", influx.token), ("INFLUXDB_ORG", influx.org),
        ("INFLUXDB_BUCKET", influx.bucket),
    ):  # fmt: skip
        monkeypatch.setenv(var, value)
    deadline = time.monotonic() + 30
    while True:
        got = await asyncio.to_thread(
            _incidents_listed, ["alerts", "--model", MODEL, "--incidents", "--json", "--since", "1h"]
        )
        mine = [i for i in got if i["incident_id"] == resolved.incident_id]
        if (mine and mine[0]["status"] == "resolved") or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
    assert mine and mine[0]["status"] == "resolved" and mine[0]["root_cause"] == resolved.root_cause


def _incidents_listed(argv: list[str]) -> list[dict[str, object]]:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    data: list[dict[str, object]] = json.loads(out.getvalue())
    return data
