"""Reliability of real ``driftline run`` workers against real services: faults survived, bad input
absorbed, nothing lost. Every test counts what went in and what came out.

* a worker killed (SIGKILL) mid-stream and restarted: every request predicted; the outcome join and the
  incidents come back from their changelogs; an ongoing drift is alerted once (also without fleet
  monitoring, killed as soon as its alert is on the topic);
* a broker restart mid-stream (a private broker: the shared one serves everybody else);
* InfluxDB unreachable during a drift (a TCP forwarder switched off and on): alerts and metrics written
  once it is back;
* webhook receivers that answer 500, time out or are down: retries with backoff, failures counted,
  the stream's throughput unchanged;
* a seeded hypothesis barrage of bad input: requests in = predictions out + dead letters, each dead
  letter with its reason, the worker still healthy;
* a worker at DEBUG with every secret set: none in its log, /metrics or answers; tampered and pickled
  packages refused; webhooks signed.

The README's "What driftline guarantees" rests on these; tests/agent/test_security.py and
tests/agent/test_bad_input.py hold the unit-level checks.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import pickle
import re
import shutil
import signal
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from influxdb_client import InfluxDBClient

from agent.alerting.sinks.kafka import alert_message
from agent.alerting.sinks.webhook import ID_HEADER, verify_signature
from agent.models.repository import ModelRepository
from agent.packaging.examples import classification_20
from schemas.alert import Alert, AlertKind, Severity
from schemas.events import DeadLetter, DeadLetterReason, Prediction
from tests.support.alerts import Received, WebhookReceiver, alerts_in, make_alert
from tests.support.bad_input import PREDICTION, ModelSpec, seeded_batch
from tests.support.kafka import (
    TopicReader,
    batch_producer,
    committed,
    create_topics,
    produce_batched,
    read_to_end,
    read_topic,
)
from tests.support.private_kafka import PrivateKafka
from tests.support.proxy import TcpProxy
from tests.support.services import InfluxEndpoint
from tests.support.worker import Topics, Worker, free_port

pytestmark = pytest.mark.integration

MODEL = "classification-20"
FEATURES = [f"x{i:02d}" for i in range(20)]
DRIFTING = "x03"
# Workers of these tests: no InfluxDB unless a test asks for it (the test command exports a token that
# every worker would otherwise pick up), and the inference-latency watch off: it watches this busy
# machine, not the stream.
QUIET = {"DRIFTLINE_INFLUX__TOKEN": "", "DRIFTLINE_MONITORING__LATENCY_THRESHOLD": "1e12"}
WEBHOOK_SECRET = "reliability-webhook-secret"


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    # The rows the test package's reference statistics come from (tests/support/models.py).
    return np.asarray(classification_20(n_estimators=10, n_samples=2000).X_reference, dtype=np.float64)


def stream(
    reference: np.ndarray, n: int, *, seed: int, drift_from: int | None = None, shift_sd: float = 1.5
) -> np.ndarray:
    """``n`` reference rows drawn with ``seed``; from row ``drift_from`` on, x03 moves up ``shift_sd``."""
    rng = np.random.default_rng(seed)
    rows = reference[rng.integers(0, len(reference), n)].copy()
    if drift_from is not None:
        rows[drift_from:, FEATURES.index(DRIFTING)] += shift_sd * reference[:, FEATURES.index(DRIFTING)].std()
    return rows


async def produce_paced(
    bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]], *, part: int, pause_s: float
) -> None:
    """Sends ``messages`` in parts of ``part``, ``pause_s`` apart: a stream still arriving."""
    producer = batch_producer(bootstrap)
    await producer.start()
    try:
        for i in range(0, len(messages), part):
            await produce_batched(bootstrap, topic, messages[i : i + part], producer=producer)
            await asyncio.sleep(pause_s)
    finally:
        await producer.stop()


def requests(rows: np.ndarray, first: int, prefix: str = "req") -> list[tuple[bytes, bytes]]:
    out = []
    for i, row in enumerate(rows, first):
        rid = f"{prefix}-{i}"
        body = {
            "request_id": rid,
            "model": MODEL,
            "features": dict(zip(FEATURES, map(float, row), strict=True)),
        }
        out.append((rid.encode(), json.dumps(body).encode()))
    return out


def prediction_ids(records: list) -> Counter[str]:  # type: ignore[type-arg]
    return Counter(Prediction.model_validate_json(r.value).request_id for r in records)


async def wait_for(
    condition: Callable[[], Awaitable[bool]], timeout: float, what: str, *workers: Worker
) -> None:
    """Polls ``condition`` until it holds; fails early if a worker died, and after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not await condition():
        for w in workers:
            assert w.process is not None and w.process.poll() is None, f"worker died:\n{w.log()}"
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g} s\n" + "\n".join(
            w.log() for w in workers
        )
        await asyncio.sleep(0.25)


class PredictionCounter:
    """Counts the predictions on a topic by request id, reading only what is new at each poll."""

    def __init__(self, reader: TopicReader) -> None:
        self.reader = reader
        self.counts: Counter[str] = Counter()
        self._seen = 0

    async def poll(self) -> Counter[str]:
        records = await self.reader.poll()
        for r in records[self._seen :]:
            self.counts[Prediction.model_validate_json(r.value).request_id] += 1
        self._seen = len(records)
        return self.counts

    def covers(self, ids: set[str]) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return ids <= (await self.poll()).keys()

        return check


def alert_keys(alerts: list[Alert]) -> Counter[tuple[str, str, str]]:
    """Alerts counted by incident key: (model, kind, subject)."""
    return Counter((a.model, a.kind.value, a.subject) for a in alerts)


def alerted(reader: TopicReader, key: tuple[str, str, str]) -> Callable[[], Awaitable[bool]]:
    """A :func:`wait_for` condition: an alert with incident ``key`` is on ``reader``'s topic."""

    async def check() -> bool:
        return key in alert_keys(alerts_in(r.value for r in await reader.poll()))

    return check


async def read_alerts(bootstrap: str, topic: str) -> list[Alert]:
    return alerts_in(r.value for r in await read_to_end(bootstrap, topic))


@pytest.fixture
async def topics(kafka_bootstrap: str, unique: str) -> Topics:
    """The worker's topics, unique to the test, with two partitions each."""
    t = Topics.unique(unique)
    await create_topics(kafka_bootstrap, t.all(), partitions=2)
    return t


async def test_worker_killed_mid_stream_restarts_from_its_changelogs(
    kafka_bootstrap: str,
    model_repository: ModelRepository,
    reference: np.ndarray,
    tmp_path: Path,
    topics: Topics,
    unique: str,
) -> None:
    bootstrap = kafka_bootstrap
    app_id = f"kill-{unique}"

    def worker() -> Worker:
        return Worker(bootstrap, topics, app_id, model_repository.root, tmp_path, extra_env=QUIET)

    first, second = worker().start(), worker()
    drift_key = (MODEL, AlertKind.DATA.value, DRIFTING)
    try:
        first.wait_ready()
        # Part 1, 3,000 requests, x03 drifting from request 1,000: the first worker alerts the drift.
        n1, n2 = 3_000, 6_000
        part1 = requests(stream(reference, n1, seed=3, drift_from=1_000), 0)
        await produce_batched(bootstrap, topics.requests, part1)
        async with (
            TopicReader(bootstrap, topics.predictions) as predictions,
            TopicReader(bootstrap, topics.alerts) as alerts_topic,
        ):
            out = PredictionCounter(predictions)
            ids1 = {k.decode() for k, _ in part1}
            await wait_for(out.covers(ids1), 60, "part 1 predicted", first)

            await wait_for(alerted(alerts_topic, drift_key), 30, "the drift alerted", first)
            incident = json.dumps(list(drift_key), separators=(",", ":")).encode()

            async def incident_recorded() -> bool:
                return any(r.key == incident for r in await read_to_end(bootstrap, f"{app_id}-incidents"))

            async def part1_committed() -> bool:
                offsets = await committed(bootstrap, f"{app_id}-serving")
                return sum(o for tp, o in offsets.items() if tp.topic == topics.requests) == n1

            # Part 1 is behind the kill for good: its offsets committed, its incident recorded. Its
            # outcomes can then only be joined through the join's changelog.
            await wait_for(incident_recorded, 30, "the incident on its topic", first)
            await wait_for(part1_committed, 30, "part 1 committed", first)
            labels = {
                (p := Prediction.model_validate_json(r.value)).request_id: p.label
                for r in predictions.records
            }

            # Part 2, 6,000 drifted requests sent in parts of 300 every 0.1 s; the first worker is killed
            # once it has served 1,500 of them, while the rest keep arriving.
            part2 = requests(stream(reference, n2, seed=4, drift_from=0), n1)

            sending = asyncio.create_task(
                produce_paced(bootstrap, topics.requests, part2, part=300, pause_s=0.1)
            )
            served = 0.0

            async def served_enough() -> bool:
                nonlocal served
                served = await asyncio.to_thread(first.metric, "driftline_predictions_total")
                return served >= n1 + 1_500

            await wait_for(served_enough, 60, "1,500 of part 2 served", first)
            assert first.stop(signal.SIGKILL) == -signal.SIGKILL
            killed_with_sent = len(await read_to_end(bootstrap, topics.requests))
            second.start()
            await asyncio.to_thread(second.wait_ready, 90)
            await sending

            # The outcomes of part 1, every one the opposite of its prediction: concept drift, joined
            # by the second worker to predictions the first one made.
            outcomes = [
                (
                    rid.encode(),
                    json.dumps({"request_id": rid, "model": MODEL, "label": 1 - int(label)}).encode(),
                )
                for rid, label in labels.items()
                if rid in ids1
            ]
            assert len(outcomes) == n1
            await produce_batched(bootstrap, topics.outcomes, outcomes)
            ids = ids1 | {k.decode() for k, _ in part2}
            await wait_for(out.covers(ids), 90, "every request predicted", second)
            concept_key = (MODEL, AlertKind.CONCEPT.value, "error")
            await wait_for(alerted(alerts_topic, concept_key), 60, "concept drift alerted", second)
            suppressed = await asyncio.to_thread(
                second.metric, "driftline_alerts_suppressed_total", model=MODEL, kind="data"
            )
    finally:
        first.stop()
        code = second.stop()
    log = second.log(10**7)
    assert code == 0, log[-3000:]

    counts = prediction_ids(await read_to_end(bootstrap, topics.predictions))
    assert set(counts) == ids, f"{len(ids - set(counts))} requests without a prediction"
    alerts = await read_alerts(bootstrap, topics.alerts)
    keys = alert_keys(alerts)
    # The drift began before the kill and went on after it: the second worker's detectors, which start
    # from the reference, saw it again, and the incident restored from its topic kept it quiet.
    assert keys[drift_key] == 1 and suppressed >= 1, (keys, suppressed)
    # Every other alert once too, except that one raised in the last batches before the SIGKILL may be
    # raised again by the restarted worker: more severe than its incident had been (an escalation is
    # published at once), or published apart from its incident's record. Seen once in a full run, for
    # the predicted class, whose share detection comes about 1,500 events after the step.
    assert all(n == 1 for key, n in keys.items() if key[1] in ("data", "concept")), keys
    assert all(n <= 2 for n in keys.values()), keys
    [concept] = [a for a in alerts if a.kind is AlertKind.CONCEPT]
    assert concept.source and {r.topic for r in concept.source} == {topics.outcomes}
    restored = [int(n) for n in re.findall(r"outcome join: restored (\d+) predictions of partition", log)]
    assert sum(restored) >= n1, restored
    assert re.search(r"incident store: restored [1-9]\d* records", log), log[-3000:]
    print(
        f"worker killed: {len(ids)} requests ({killed_with_sent} sent when killed after {served:.0f} "
        f"predictions), {sum(counts.values())} predictions ({sum(counts.values()) - len(ids)} duplicates); "
        f"join restored {sum(restored)} predictions; alerts {dict(keys)}; {suppressed:.0f} suppressed"
    )


async def test_a_worker_killed_as_its_alert_goes_out_does_not_alert_the_drift_again_once_restarted(
    kafka_bootstrap: str,
    model_repository: ModelRepository,
    reference: np.ndarray,
    tmp_path: Path,
    topics: Topics,
    unique: str,
) -> None:
    # Without fleet monitoring a worker's detectors are its own, and start from the reference again after
    # a restart: they see an ongoing drift again, and only its incident, restored from the incidents
    # topic, keeps it quiet. The incident's record went out a few milliseconds after the alert (by the
    # incident store's producer), so a kill in between alerted the drift again; it now goes in the
    # alert's produce request. The kill comes as soon as the alert is on its topic. A step of 3 sd: its
    # first alert is critical already (from 1 sd), so the restarted worker's cannot be an escalation,
    # which is published at once (in CI a 1.5 sd step's first alert, a warning, was followed by a
    # critical one).
    env = {**QUIET, "DRIFTLINE_MONITORING__FLEET": "false"}
    app_id = f"killalert-{unique}"

    def worker() -> Worker:
        return Worker(kafka_bootstrap, topics, app_id, model_repository.root, tmp_path, extra_env=env)

    first, second = worker().start(), worker()
    drift_key = (MODEL, AlertKind.DATA.value, DRIFTING)
    part1 = requests(stream(reference, 4_000, seed=5, drift_from=1_000, shift_sd=3.0), 0)
    part2 = requests(stream(reference, 3_000, seed=6, drift_from=0, shift_sd=3.0), len(part1))
    sending: asyncio.Task[None] | None = None
    try:
        first.wait_ready()
        sending = asyncio.create_task(
            produce_paced(kafka_bootstrap, topics.requests, part1, part=200, pause_s=0.05)
        )
        async with TopicReader(kafka_bootstrap, topics.alerts) as alerts_topic:
            await wait_for(alerted(alerts_topic, drift_key), 60, "the drift alerted", first)
        assert first.stop(signal.SIGKILL) == -signal.SIGKILL
        await sending
        second.start()
        await asyncio.to_thread(second.wait_ready, 90)
        await produce_batched(kafka_bootstrap, topics.requests, part2)
        async with TopicReader(kafka_bootstrap, topics.predictions) as predictions:
            ids = {k.decode() for k, _ in part1 + part2}
            await wait_for(PredictionCounter(predictions).covers(ids), 90, "every request predicted", second)
        suppressed = await asyncio.to_thread(
            second.metric, "driftline_alerts_suppressed_total", model=MODEL, kind="data"
        )
    finally:
        if sending is not None:
            sending.cancel()
        first.stop()
        code = second.stop()
    assert code == 0, second.log()[-3000:]
    alerts = await read_alerts(kafka_bootstrap, topics.alerts)
    keys = alert_keys(alerts)
    # Seen again by the restarted worker's detectors, and kept quiet by the incident the first one
    # recorded with its alert. The alerts the step moves on the output may come again, more severe.
    lines = [
        line
        for worker_log in (first.log(10**7), second.log(10**7))
        for line in worker_log.splitlines()
        if "ALERT" in line or "incident store" in line or "Worker]: Ready" in line
    ]
    assert keys[drift_key] == 1 and suppressed >= 1, (keys, suppressed, lines)
    [drift] = [a for a in alerts if (a.model, a.kind.value, a.subject) == drift_key]
    assert drift.severity is Severity.CRITICAL, drift
    assert all(n <= 2 for n in keys.values()), keys
    assert re.search(r"incident store: restored [1-9]\d* records", second.log(10**7)), second.log()[-3000:]


def influx_env(influx: InfluxEndpoint, url: str) -> dict[str, str]:
    return {
        "DRIFTLINE_INFLUX__URL": url,
        "DRIFTLINE_INFLUX__TOKEN": influx.token,
        "DRIFTLINE_INFLUX__ORG": influx.org,
        "DRIFTLINE_INFLUX__BUCKET": influx.bucket,
        "DRIFTLINE_INFLUX__METRICS_INTERVAL_S": "1",
        "DRIFTLINE_INFLUX__TIMEOUT_S": "2",
        "DRIFTLINE_INFLUX__RETRY_INITIAL_S": "0.2",
        "DRIFTLINE_INFLUX__RETRY_MAX_S": "1",
    }


def flux(influx: InfluxEndpoint, query: str) -> list[dict[str, Any]]:
    """Rows of a Flux query on the bucket (``query`` follows ``from(bucket) |> range(start: -1h)``)."""
    with InfluxDBClient(url=influx.url, token=influx.token, org=influx.org) as client:
        tables = client.query_api().query(f'from(bucket: "{influx.bucket}") |> range(start: -1h) {query}')
        return [record.values for table in tables for record in table.records]


async def test_influxdb_down_during_a_drift_gets_every_alert_and_metric_once_back(
    kafka_bootstrap: str,
    influx: InfluxEndpoint,
    model_repository: ModelRepository,
    reference: np.ndarray,
    tmp_path: Path,
    topics: Topics,
    unique: str,
) -> None:
    bootstrap = kafka_bootstrap
    app_id = f"influx-{unique}"
    target = urlsplit(influx.url)
    # The worker reaches InfluxDB through a forwarder that this test switches off and on: InfluxDB
    # "goes down" for this worker only.
    proxy = await TcpProxy(target.hostname or "127.0.0.1", target.port or 8086).start()
    started = datetime.now(UTC)
    env = {**QUIET, **influx_env(influx, f"http://127.0.0.1:{proxy.port}")}
    worker = Worker(bootstrap, topics, app_id, model_repository.root, tmp_path, extra_env=env).start()
    sink_rows = (
        f'|> filter(fn: (r) => r._measurement == "driftline_sink" and r.app == "{app_id}" '
        'and r.sink == "influx" and r._field == "alerts_spooled")'
    )

    def metric(name: str, **labels: str) -> Awaitable[float]:
        return asyncio.to_thread(worker.metric, name, **labels)

    try:
        await asyncio.to_thread(worker.wait_ready)

        async def metrics_written() -> bool:
            return bool(await asyncio.to_thread(flux, influx, sink_rows))

        await wait_for(metrics_written, 30, "metrics in InfluxDB before the outage", worker)
        await proxy.stop()
        down_at = datetime.now(UTC)

        # A drift while InfluxDB is unreachable: its alerts and the metrics go to the spool on disk.
        await produce_batched(
            bootstrap, topics.requests, requests(stream(reference, 3_000, seed=5, drift_from=1_000), 0)
        )

        async def records() -> int:
            # The alerts and their incident's notifications: the sink keeps both as it keeps alerts.
            return len(await read_to_end(bootstrap, topics.alerts))

        async def spooled() -> bool:
            alerts = await read_alerts(bootstrap, topics.alerts)
            return bool(alerts) and await metric("driftline_alerts_spooled_total", sink="influx") == (
                await records()
            )

        await wait_for(spooled, 60, "the drift's alerts spooled", worker)
        await asyncio.sleep(4.0)  # a few more metrics intervals with InfluxDB down
        alerts = await read_alerts(bootstrap, topics.alerts)
        ids = {a.alert_id for a in alerts}
        assert await metric("driftline_alerts_spooled_total", sink="influx") == await records()
        assert await metric("driftline_spool_bytes", sink="influx") > 0
        assert await metric("driftline_metric_points_total", sink="influx", outcome="spooled") > 0
        assert await metric("driftline_alerts_delivered_total", sink="influx") == 0
        alert_rows = '|> filter(fn: (r) => r._measurement == "driftline_alert" and r._field == "alert_id")'

        async def alerts_in_influx() -> set[str]:
            # Alert ids are deterministic and this stream is seeded: an earlier run wrote the same ids.
            rows = await asyncio.to_thread(flux, influx, alert_rows)
            return {r["_value"] for r in rows if r["_time"] >= started} & ids

        assert await alerts_in_influx() == set()

        await proxy.start()  # InfluxDB is back
        up_at = datetime.now(UTC)

        async def written_back() -> bool:
            return (
                await alerts_in_influx() == ids and await metric("driftline_spool_bytes", sink="influx") == 0
            )

        await wait_for(written_back, 60, "every spooled alert in InfluxDB", worker)
        # The metrics of the outage were written too, with the times they were taken.
        during = [
            r for r in await asyncio.to_thread(flux, influx, sink_rows) if down_at <= r["_time"] <= up_at
        ]
        assert len(during) >= 2, during
        delivered = await metric("driftline_alerts_delivered_total", sink="influx")
        assert delivered == await records()
        assert await metric("driftline_alerts_failed_total", sink="influx") == 0
        print(
            f"influx down {(up_at - down_at).total_seconds():.1f} s: {len(alerts)} alerts "
            f"({dict(alert_keys(alerts))}) spooled and written back; {len(during)} sink-counter points "
            "of the outage written"
        )
    finally:
        code = worker.stop()
        await proxy.stop()
    assert code == 0, worker.log()


def rate(predictions: list[Prediction]) -> float:
    """Predictions per second over the span of their prediction times."""
    times = sorted(p.predicted_at.timestamp() for p in predictions)
    return (len(times) - 1) / max(times[-1] - times[0], 1e-6)


async def test_failing_and_slow_webhooks_are_retried_and_counted_and_do_not_slow_the_stream(
    kafka_bootstrap: str,
    model_repository: ModelRepository,
    reference: np.ndarray,
    tmp_path: Path,
    topics: Topics,
    unique: str,
) -> None:
    bootstrap = kafka_bootstrap
    ok, slow, flaky = set(), set(), set()  # alert ids, by how the receiver treats them
    attempts: Counter[str] = Counter()

    def policy(request: Received) -> tuple[int, float]:
        alert_id = request.headers[ID_HEADER]
        attempts[alert_id] += 1
        if alert_id in slow:
            return 200, 2.0  # answers after the worker's 0.5 s timeout: every attempt times out
        if alert_id in flaky and attempts[alert_id] <= 2:
            return 500, 0.0  # fails twice, then recovers
        return 200, 0.0

    receiver = await WebhookReceiver(WEBHOOK_SECRET, policy=policy).start()
    down = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there: connection refused
    env = {
        **QUIET,
        "DRIFTLINE_WEBHOOKS__URLS": json.dumps([receiver.url, down]),
        "DRIFTLINE_WEBHOOKS__SECRET": WEBHOOK_SECRET,
        # Alerts are injected on the alerts topic: each one is a delivery (incidents: test_incidents.py).
        "DRIFTLINE_INCIDENTS__NOTIFY": "alerts",
        "DRIFTLINE_WEBHOOKS__TIMEOUT_S": "0.5",
        "DRIFTLINE_WEBHOOKS__MAX_ATTEMPTS": "3",
        "DRIFTLINE_WEBHOOKS__BACKOFF_INITIAL_S": "0.2",
        "DRIFTLINE_WEBHOOKS__BACKOFF_MAX_S": "1",
    }
    worker = Worker(
        bootstrap, topics, f"hooks-{unique}", model_repository.root, tmp_path, extra_env=env
    ).start()
    injected: list[Alert] = []

    def metric(name: str, **labels: str) -> Awaitable[float]:
        return asyncio.to_thread(worker.metric, name, **labels)

    async def settled() -> bool:
        # Every delivery (alert x URL) finished: delivered, or failed after its last attempt.
        done = await metric("driftline_alerts_delivered_total", sink="webhook")
        done += await metric("driftline_alerts_failed_total", sink="webhook")
        return done == 2 * len(injected)

    async def inject(into: set[str], n: int) -> None:
        alerts = [
            make_alert(
                len(injected) + i,
                model=f"hooks-{unique}",
                subject=f"s{len(injected) + i}",
                detected_at=datetime.now(UTC),
            )
            for i in range(n)
        ]
        injected.extend(alerts)
        into.update(a.alert_id for a in alerts)
        await produce_batched(
            bootstrap,
            topics.alerts,
            [(m.key, m.value) for m in map(alert_message, alerts, [topics.alerts] * n)],
        )

        async def first_attempts() -> bool:
            return all(attempts[a.alert_id] for a in alerts)

        await wait_for(first_attempts, 30, "the alerts' first attempts", worker)

    rates: dict[str, list[float]] = {"healthy": [], "slow": []}
    n, rounds = 20_000, 3
    backlogs = {
        (phase, round_): requests(stream(reference, n, seed=10 + round_), 0, prefix=f"{phase}{round_}")
        for round_ in range(rounds)
        for phase in rates
    }
    try:
        await asyncio.to_thread(worker.wait_ready)
        async with TopicReader(bootstrap, topics.predictions) as reader:
            for round_ in range(rounds):
                for phase, into in (("healthy", ok), ("slow", slow)):
                    # Alerts in flight to the receiver while the worker works through a backlog of
                    # requests; the test keeps still meanwhile (it shares the machine's two cores).
                    await inject(into, 10)
                    served = await metric("driftline_predictions_total")
                    await produce_batched(bootstrap, topics.requests, backlogs[phase, round_])

                    async def backlog_served() -> bool:
                        return await metric("driftline_predictions_total") >= served + n  # noqa: B023

                    await wait_for(backlog_served, 60, f"{phase} backlog served", worker)
                    if phase == "slow":  # the slow receiver really was slow while the backlog was served
                        assert not await settled()
                    records = await reader.at_least(served + n)
                    predictions = [Prediction.model_validate_json(r.value) for r in records[int(served) :]]
                    ids = f"{phase}{round_}-"
                    rates[phase].append(rate([p for p in predictions if p.request_id.startswith(ids)]))
                    await wait_for(settled, 60, "deliveries settled", worker)
            await inject(flaky, 3)
            await wait_for(settled, 60, "deliveries settled", worker)
        counters = {
            "delivered": await metric("driftline_alerts_delivered_total", sink="webhook"),
            "failed after the last attempt": await metric(
                "driftline_alerts_failed_total", sink="webhook", reason="attempts"
            ),
            "failed": await metric("driftline_alerts_failed_total", sink="webhook"),
            "retries": await metric("driftline_sink_retries_total", sink="webhook"),
        }
    finally:
        code = worker.stop()
        await receiver.stop()
    assert code == 0, worker.log()

    # Nothing but the injected alerts reached the alerts topic (the stream does not drift).
    assert {a.alert_id for a in await read_alerts(bootstrap, topics.alerts)} == {a.alert_id for a in injected}
    # The receiver: one attempt per healthy alert, three per slow (all timed out) and flaky (500, 500,
    # 200) alert, every one signed; the URL nobody listens on: three attempts per alert, all refused.
    assert all(r.valid for r in receiver.received)
    assert {a: attempts[a] for a in ok} == dict.fromkeys(ok, 1)
    assert {a: attempts[a] for a in slow | flaky} == dict.fromkeys(slow | flaky, 3)
    assert counters == {
        "delivered": len(ok) + len(flaky),
        "failed after the last attempt": len(slow) + len(injected),
        "failed": len(slow) + len(injected),
        "retries": 2 * (len(slow) + len(flaky) + len(injected)),
    }
    # Backoff: the second attempt waited at least half of 0.2 s, the third at least half of 0.4 s.
    for alert_id in flaky:
        times = [r.at for r in receiver.received if r.headers[ID_HEADER] == alert_id]
        assert times[1] - times[0] >= 0.1 and times[2] - times[1] >= 0.2, times
    # The stream does not wait for the webhooks: as fast with a slow receiver as with a healthy one
    # (median of three rounds each, which keeps this busy machine's outliers out on both sides: a
    # round that starts late and then drains in a burst reads fast, one that shares a core slow).
    ratio = statistics.median(rates["slow"]) / statistics.median(rates["healthy"])
    print(
        f"webhooks: {len(injected)} alerts x 2 URLs -> {counters}; predictions/s healthy "
        f"{[round(r) for r in rates['healthy']]}, slow {[round(r) for r in rates['slow']]}: ratio {ratio:.2f}"
    )
    assert ratio > 0.7, rates


async def test_a_seeded_barrage_of_bad_input_is_absorbed_and_every_event_accounted_for(
    kafka_bootstrap: str, model_repository: ModelRepository, tmp_path: Path, topics: Topics, unique: str
) -> None:
    bootstrap = kafka_bootstrap
    max_event_bytes = 4096
    # 400 events drawn by hypothesis, the same on every run (tests/support/bad_input.py): good requests,
    # duplicates of them, and every kind of bad input, each with the outcome the wire contract gives.
    cases = seeded_batch(ModelSpec.served_in(model_repository.root), max_event_bytes, 400)
    expected = Counter(c.expected for c in cases)
    assert set(expected) == {PREDICTION, *(r.value for r in DeadLetterReason)} - {"unknown_category"}, (
        expected
    )
    env = {**QUIET, "DRIFTLINE_SERVING__MAX_EVENT_BYTES": str(max_event_bytes)}
    worker = Worker(
        bootstrap, topics, f"junk-{unique}", model_repository.root, tmp_path, extra_env=env
    ).start()
    try:
        await asyncio.to_thread(worker.wait_ready)
        where = await produce_batched(
            bootstrap, topics.requests, [(f"case-{i}".encode(), c.value) for i, c in enumerate(cases)]
        )
        n_dead = len(cases) - expected[PREDICTION]
        dead = [
            DeadLetter.model_validate_json(r.value)
            for r in await read_topic(bootstrap, topics.dead_letters, n_dead)
        ]
        out = prediction_ids(await read_topic(bootstrap, topics.predictions, expected[PREDICTION]))
        # Still serving after it: one more good request is answered, and the worker is healthy.
        last = requests(stream(np.zeros((1, 20)), 1, seed=0), 0, prefix="after-barrage")
        await produce_batched(bootstrap, topics.requests, last)
        async with TopicReader(bootstrap, topics.predictions) as reader:
            await wait_for(PredictionCounter(reader).covers({"after-barrage-0"}), 30, "served after", worker)
        health = await asyncio.to_thread(worker.health)
        assert health is not None and health["http_status"] == 200, health
        metrics = await asyncio.to_thread(worker.metrics)
    finally:
        code = worker.stop()
    assert code == 0, worker.log()

    # Requests in = predictions out + dead letters, each record exactly one of them.
    assert len(dead) + sum(out.values()) == len(cases)
    case_at = {at: i for i, at in enumerate(where)}
    got = {case_at[d.partition, d.offset]: d for d in dead}
    assert len(got) == len(dead), "a record dead-lettered twice"
    wrong = {
        i: (cases[i].kind, cases[i].expected, d.reason.value, d.detail)
        for i, d in got.items()
        if d.reason.value != cases[i].expected
    }
    assert not wrong, wrong
    assert set(got) == {i for i, c in enumerate(cases) if c.expected != PREDICTION}
    assert all(
        d.key == f"case-{i}" and d.source_topic == topics.requests and d.detail for i, d in got.items()
    )
    assert out == Counter(c.request_id for c in cases if c.expected == PREDICTION)
    # /metrics counts the same.
    counted = Counter[str]()
    for (name, labels), value in metrics.items():
        if name == "driftline_dead_letters_total":
            counted[dict(labels)["reason"]] += int(value)
    assert counted == Counter({r: n for r, n in expected.items() if r != PREDICTION})
    total = sum(v for (name, _), v in metrics.items() if name == "driftline_predictions_total")
    assert total == expected[PREDICTION] + 1
    print(
        f"barrage: {len(cases)} events -> {sum(out.values())} predictions "
        f"({sum(out.values()) - len(out)} of them repeated request ids) + {len(dead)} dead letters "
        f"{dict(sorted(Counter(d.reason.value for d in dead).items()))}"
    )


class _CreatesMarker:
    """Unpickling this calls open(marker, "w"): proof that something unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def add_version(root: Path, name: str, version: str, model_onnx: bytes, *, record_digest: bool) -> None:
    """Version ``version`` of ``name``: version 1's package with another model.onnx; its manifest records
    the new file's digest if ``record_digest`` (a tamperer who edits the manifest too)."""
    staging = root / name / f".tmp-{version}"
    shutil.copytree(root / name / "1", staging)
    (staging / "model.onnx").write_bytes(model_onnx)
    manifest = json.loads((staging / "manifest.json").read_text())
    manifest["version"] = version
    if record_digest:
        manifest["onnx_sha256"] = hashlib.sha256(model_onnx).hexdigest()
    (staging / "manifest.json").write_text(json.dumps(manifest))
    staging.rename(root / name / version)


async def test_a_worker_keeps_its_secrets_serves_no_bad_package_and_signs_its_webhooks(
    kafka_bootstrap: str,
    influx: InfluxEndpoint,
    repository_copy: ModelRepository,
    tmp_path: Path,
    topics: Topics,
    unique: str,
) -> None:
    bootstrap = kafka_bootstrap
    root = repository_copy.root
    # breast-cancer/2: model.onnx changed after packaging. diabetes/2: a pickle named model.onnx, whose
    # payload would create a file if anything unpickled it, with its digest recorded in the manifest.
    original = (root / "breast-cancer" / "1" / "model.onnx").read_bytes()
    add_version(root, "breast-cancer", "2", b"\x08\x07" + original[2:], record_digest=False)
    marker = tmp_path / "unpickled"
    add_version(root, "diabetes", "2", pickle.dumps(_CreatesMarker(marker), protocol=4), record_digest=True)

    receiver = await WebhookReceiver(WEBHOOK_SECRET).start()
    password = f"sasl-password-{unique}"
    env = {
        **QUIET,
        **influx_env(influx, influx.url),
        "DRIFTLINE_WEBHOOKS__URLS": json.dumps([receiver.url]),
        "DRIFTLINE_WEBHOOKS__SECRET": WEBHOOK_SECRET,
        "DRIFTLINE_INCIDENTS__NOTIFY": "alerts",  # the alert below is injected on the alerts topic
        # Set, though this broker has no SASL listener: the protocol stays PLAINTEXT, so the password is
        # in the settings but no client uses it (tests/agent/test_security.py follows it to the clients).
        "DRIFTLINE_KAFKA__SASL_USERNAME": "driftline",
        "DRIFTLINE_KAFKA__SASL_PASSWORD": password,
    }
    secrets = {"SASL password": password, "InfluxDB token": influx.token, "webhook secret": WEBHOOK_SECRET}
    # At DEBUG: the most a worker ever logs.
    worker = Worker(bootstrap, topics, f"secrets-{unique}", root, tmp_path, extra_env=env, loglevel="debug")
    worker.start()
    alert = make_alert(1, model=f"secrets-{unique}", detected_at=datetime.now(UTC))
    try:
        health = await asyncio.to_thread(worker.wait_ready)
        assert health["models"] == ["breast-cancer/1", "classification-20/1", "diabetes/1"], health
        specs = ModelSpec.served_in(root)
        messages = []
        for model in ("breast-cancer", "diabetes"):
            for version in (None, "2"):
                rid = f"{model}-{version}"
                features = dict.fromkeys(specs[model].features, 0.1)
                body = {"request_id": rid, "model": model, "model_version": version, "features": features}
                messages.append((rid.encode(), json.dumps(body).encode()))
        await produce_batched(bootstrap, topics.requests, messages)
        served = {
            p.request_id: p.model_version
            for p in map(
                Prediction.model_validate_json,
                [r.value for r in await read_topic(bootstrap, topics.predictions, 2)],
            )
        }
        refused = {
            d.key: d
            for d in map(
                DeadLetter.model_validate_json,
                [r.value for r in await read_topic(bootstrap, topics.dead_letters, 2)],
            )
        }
        assert served == {"breast-cancer-None": "1", "diabetes-None": "1"}
        assert {k: d.reason.value for k, d in refused.items()} == {
            "breast-cancer-2": "unknown_model",
            "diabetes-2": "unknown_model",
        }
        assert "failed verification" in refused["breast-cancer-2"].detail
        assert "refusing to load a pickle file" in refused["diabetes-2"].detail

        # An alert: signed for the receiver, written to InfluxDB with the token.
        message = alert_message(alert, topics.alerts)
        await produce_batched(bootstrap, topics.alerts, [(message.key, message.value)])

        async def delivered() -> bool:
            influx_ids = await asyncio.to_thread(
                flux,
                influx,
                f'|> filter(fn: (r) => r._measurement == "driftline_alert" and r.model == "{alert.model}")',
            )
            return bool(receiver.received and influx_ids)

        await wait_for(delivered, 60, "the alert at the webhook and in InfluxDB", worker)
        status, bad = await asyncio.to_thread(worker.post, "/predict", b'{"model": "nope"}')
        assert status == 422
        texts = {
            "/metrics": (await asyncio.to_thread(worker.get, "/metrics"))[1].decode(),
            "/health": (await asyncio.to_thread(worker.get, "/health"))[1].decode(),
            "/predict answer": json.dumps(bad),
        }
    finally:
        code = worker.stop()
        await receiver.stop()
    texts["log"] = worker.log(10**9)
    assert code == 0, texts["log"][-3000:]
    assert not marker.exists(), "a pickle was unpickled"
    assert (
        "refusing to serve breast-cancer/2" in texts["log"] and "refusing to serve diabetes/2" in texts["log"]
    )
    [got] = receiver.received
    assert got.valid and Alert.model_validate_json(got.body) == alert
    assert verify_signature(WEBHOOK_SECRET, got.body, got.headers)
    assert not verify_signature("not-the-secret", got.body, got.headers)
    texts["webhook request"] = got.body.decode() + json.dumps(got.headers)
    leaks = {
        (what, where) for what, secret in secrets.items() for where, text in texts.items() if secret in text
    }
    assert not leaks, leaks
    print(
        f"secrets: none of {sorted(secrets)} in the DEBUG log ({len(texts['log']):,} characters), "
        "/metrics, /health, a 422 answer or the webhook request; tampered and pickled packages refused, "
        "nothing unpickled"
    )


@pytest.fixture
def private_kafka(tmp_path: Path) -> Iterator[PrivateKafka]:
    kafka = PrivateKafka(tmp_path / "private-kafka")
    try:
        yield kafka.up()
    finally:
        kafka.remove()


async def test_broker_restart_mid_stream_loses_nothing(
    private_kafka: PrivateKafka,
    model_repository: ModelRepository,
    reference: np.ndarray,
    tmp_path: Path,
    unique: str,
) -> None:
    bootstrap = private_kafka.bootstrap
    topics = Topics.unique(unique)
    await create_topics(bootstrap, topics.all(), partitions=2)
    worker = Worker(
        bootstrap, topics, f"broker-{unique}", model_repository.root, tmp_path, extra_env=QUIET
    ).start()
    try:
        worker.wait_ready()
        before = requests(stream(reference, 20_000, seed=1), 0)
        await produce_batched(bootstrap, topics.requests, before)

        async def serving() -> bool:
            return worker.metric("driftline_predictions_total") > 0

        await wait_for(serving, 30, "first predictions", worker)
        served_before_down = worker.metric("driftline_predictions_total")
        down_at = time.monotonic()
        await asyncio.to_thread(private_kafka.down)
        served_at_down = worker.metric("driftline_predictions_total")
        await asyncio.sleep(3.0)
        assert worker.process is not None and worker.process.poll() is None, worker.log()
        await asyncio.to_thread(private_kafka.up)
        up_at = time.monotonic()
        after = requests(stream(reference, 2_000, seed=2), len(before))
        await produce_batched(bootstrap, topics.requests, after)
        ids = {k.decode() for k, _ in before + after}
        async with TopicReader(bootstrap, topics.predictions) as reader:
            out = PredictionCounter(reader)
            await wait_for(out.covers(ids), 120, "every request predicted", worker)
        recovered_at = time.monotonic()
        counts = prediction_ids(await read_to_end(bootstrap, topics.predictions))
        assert set(counts) == ids
        duplicates = sum(counts.values()) - len(ids)
        ready = worker.wait_ready(30)
        assert ready["kafka"] == "connected"
        print(
            f"broker restart: {len(ids)} requests, {sum(counts.values())} predictions "
            f"({duplicates} duplicates); "
            f"served {served_before_down:.0f} before and {served_at_down:.0f} by the end of `down` "
            f"({up_at - down_at:.1f} s down), all predicted {recovered_at - up_at:.1f} s after `up`"
        )
    finally:
        code = worker.stop()
    assert code == 0, worker.log()
