"""Fleet monitoring (issue 15) with real ``driftline run`` workers on the real broker, 4 partitions.

Every worker only sums its share of the stream into blocks and ships them to the statistics topic,
keyed by model; the worker assigned the model's partition of that topic runs the model's detectors
over every worker's blocks. So:

* one worker or two, the same seeded stream with a step on x03 raises one data alert, on x03, at
  about the same event of the model's merged block stream, and in a pair only one worker hosts the
  model's monitor;
* the host SIGKILLed in the middle of a drift: the survivor becomes the host, rebuilds the detectors
  by reading the statistics partition back, and the drift is alerted once, not zero times nor twice.
  Killed before the alert, the survivor raises it; killed right after it (before the group committed
  the record that fired), the survivor must neither close the open incident nor raise it again;
* a long stationary stream (200,000 events) through two workers raises no alert at all;
* an unknown field in 10 % of the requests, spread over two workers, raises one alert for the model,
  from the rates both workers counted, not one per worker; so do outcomes that match no prediction,
  which each worker joins for its own join partitions, and requests for a model nobody serves.

Workers progress side by side (requests paced below their rate): the merged order of the blocks, and
so where a detection lands, depends on it.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import TopicPartition

from agent.models.repository import ModelRepository
from agent.monitoring.detectors import DriftConfig
from agent.monitoring.fleet import ModelStats, decode_stats
from agent.packaging.examples import classification_20
from schemas.alert import Alert, AlertKind
from tests.integration.test_reliability import FEATURES, MODEL, QUIET, requests, wait_for
from tests.support.alerts import alerts_in, opening_alerts
from tests.support.kafka import batch_producer, committed, create_topics, produce_batched, read_to_end
from tests.support.models import recorded_as_built_with
from tests.support.worker import Topics, Worker

pytestmark = pytest.mark.integration

PARTITIONS = 4
BLOCK = DriftConfig().block_size
X03 = FEATURES.index("x03")
HOSTING = re.compile(r"fleet monitor: hosting statistics partition (\d+); read back (\d+) records")
COMMITTED = re.compile(
    r"hosting statistics partition (\d+); .* first live offset (\d+), the group's committed offset (\d+)"
)
ASSIGNED = re.compile(r"fleet monitor: assigned statistics partitions \[([\d, ]*)\]")
STEP_MOVES = {
    (AlertKind.PERFORMANCE, "estimated_error"),
    (AlertKind.PREDICTION, "prediction"),
    (AlertKind.PREDICTION, "predicted_class"),
}
"""What a step on x03 moves beside x03 itself: the estimated error and the model's output."""
DRIFT_KINDS = {AlertKind.DATA, AlertKind.PREDICTION, AlertKind.PERFORMANCE, AlertKind.CONCEPT}


def model_partition() -> int:
    """The statistics partition of the model: where Kafka's default partitioner (murmur2) puts its key."""
    partitions = list(range(PARTITIONS))
    return int(DefaultPartitioner()(MODEL.encode(), partitions, partitions))


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    # The rows the test package's reference statistics come from (tests/support/models.py).
    return np.asarray(classification_20(n_estimators=10, n_samples=2000).X_reference, dtype=np.float64)


def resampled(reference: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return reference[rng.integers(0, len(reference), n)].copy()


@dataclass
class Fleet:
    """Workers of one app (one consumer group) on topics of their own."""

    bootstrap: str
    topics: Topics
    app_id: str
    models: Path
    workdir: Path

    env: dict[str, str] = field(default_factory=dict)
    """Settings of every worker, beside QUIET's."""

    def __post_init__(self) -> None:
        self.workers: list[Worker] = []

    @property
    def stats_topic(self) -> str:
        return f"{self.app_id}-monitor-stats"

    def add(self) -> Worker:
        env = {**QUIET, **self.env}
        w = Worker(self.bootstrap, self.topics, self.app_id, self.models, self.workdir, extra_env=env)
        self.workers.append(w.start())
        return w

    def alive(self) -> list[Worker]:
        return [w for w in self.workers if w.process is not None and w.process.poll() is None]

    async def start(self, n: int) -> None:
        """``n`` workers, started together, ready, and sharing both groups' partitions."""
        await create_topics(self.bootstrap, self.topics.all(), partitions=PARTITIONS)
        for _ in range(n):
            self.add()
        for w in self.workers:
            await asyncio.to_thread(w.wait_ready, 90)
        await self.settled_assignment(60)

    async def settled_assignment(self, timeout: float) -> None:
        """Waits until the live workers split the requests' and the statistics' partitions between them
        (each worker's latest assignment, from its health and its log)."""
        workers = self.alive()

        async def split() -> bool:
            serving: list[set[str]] = []
            stats: list[set[int]] = []
            for w in workers:
                health = await asyncio.to_thread(w.health)
                if health is None:
                    return False
                serving.append(
                    {p for p in health["assigned_partitions"] if p.startswith(self.topics.requests)}
                )
                assigned = ASSIGNED.findall(w.log(10**8))
                if not assigned:
                    return False
                stats.append({int(p) for p in assigned[-1].split(",") if p.strip()})
            return all(
                all(parts) and sum(map(len, parts)) == PARTITIONS and len(set.union(*parts)) == PARTITIONS
                for parts in (serving, stats)
            )

        await wait_for(split, timeout, "the partitions split between the workers", *workers)

    async def send(
        self,
        rows: np.ndarray,
        first: int,
        *,
        chunk: int = 400,
        pause: float = 0.1,
        extra: Callable[[int], dict[str, object]] | None = None,
    ) -> list[tuple[int, int]]:
        """Sends ``rows`` as requests ``first``, ``first + 1``... in chunks of ``chunk`` every ``pause``
        s (below the workers' rate, so that they consume their partitions as they come, side by side);
        returns each request's (partition, offset). ``extra(i)``: more fields for request ``i``."""
        messages = requests(rows, first, prefix=self.app_id)
        if extra is not None:
            for j, (key, value) in enumerate(messages):
                added = extra(first + j)
                if added:
                    body = json.loads(value)
                    body["features"].update(added)
                    messages[j] = (key, json.dumps(body).encode())
        producer = batch_producer(self.bootstrap)
        await producer.start()
        where: list[tuple[int, int]] = []
        try:
            for start in range(0, len(messages), chunk):
                began = time.monotonic()
                where += await produce_batched(
                    self.bootstrap, self.topics.requests, messages[start : start + chunk], producer=producer
                )
                await asyncio.sleep(max(0.0, pause - (time.monotonic() - began)))
        finally:
            await producer.stop()
        return where

    async def processed(self, n_requests: int, timeout: float) -> None:
        """Waits until the serving group committed all ``n_requests`` requests, then until the workers
        shipped what they held back (``stats_interval_s``, 0.25 s), and until the app's group committed
        every statistics record: the model's monitor has seen every block shipped."""
        workers = self.alive()

        async def served() -> bool:
            offsets = await committed(self.bootstrap, f"{self.app_id}-serving")
            return sum(o for tp, o in offsets.items() if tp.topic == self.topics.requests) >= n_requests

        await wait_for(served, timeout, f"{n_requests} requests committed", *workers)
        await asyncio.sleep(1.0)  # four intervals: the timer has shipped what the last batches held
        ends = await end_offsets(self.bootstrap, self.stats_topic)

        async def monitored() -> bool:
            offsets = await committed(self.bootstrap, self.app_id)
            return all(offsets.get(tp, 0) >= end for tp, end in ends.items() if end)

        await wait_for(monitored, timeout, "every statistics record committed by the monitor", *workers)

    async def alerts(self) -> list[Alert]:
        return alerts_in(r.value for r in await read_to_end(self.bootstrap, self.topics.alerts))

    async def shipped(self) -> list[ModelStats]:
        """The statistics records of the model's partition, in order."""
        records = await read_to_end(self.bootstrap, self.stats_topic)
        return [decode_stats(r.value) for r in records if r.partition == model_partition() and r.value]

    def stop(self) -> list[int]:
        return [w.stop() for w in self.workers]

    def logs(self) -> list[str]:
        return [w.log(10**8) for w in self.workers]


async def end_offsets(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    """``topic``'s end offsets now."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    tps = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
    assert tps, f"{topic}: no partitions"
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


def hosts(logs: Sequence[str], partition: int) -> list[tuple[int, int]]:
    """(worker index, records read back) for every time a worker began hosting ``partition``."""
    return [
        (i, int(back))
        for i, log in enumerate(logs)
        for p, back in HOSTING.findall(log)
        if int(p) == partition
    ]


def kinds(alerts: Sequence[Alert]) -> list[tuple[str, str]]:
    return sorted((a.kind.value, a.subject) for a in alerts)


def monitor_lines(log: str) -> str:
    """A worker's log lines about the fleet monitor, its alerts and incidents: what a failure needs."""
    keep = ("fleet monitor", "ALERT", "incident", "generation")
    return "\n".join(line[:240] for line in log.splitlines() if any(k in line for k in keep))


def assert_clean(logs: Sequence[str]) -> None:
    """No worker logged a traceback or a statistics record it failed to handle."""
    for log in logs:
        for phrase in (
            "Traceback",
            "a statistics record failed",
            "statistics of ",
            "of statistics partition",
        ):
            assert phrase not in log, log[max(0, log.find(phrase) - 2000) : log.find(phrase) + 2000]


def events(stats: Sequence[ModelStats]) -> int:
    """Events in the features' blocks of ``stats``."""
    return BLOCK * sum(int(p.blocks.counts.shape[0]) for s in stats if (p := s.part("features")) is not None)


# --- 1. one worker or two, the same stream ---------------------------------------------------------------

N_STEP = 40_000
CHANGE = 24_000
"""The step: x03 up 1.0 reference sd from this request on, a chunk boundary of :meth:`Fleet.send` and a
block boundary of one worker's stream."""
CHUNK = 400


async def run_step(
    bootstrap: str, models: Path, workdir: Path, app_id: str, n_workers: int, rows: np.ndarray
) -> tuple[list[Alert], list[str], Topics, list[tuple[int, int]], int]:
    """The stream through ``n_workers`` fresh workers: the alerts topic once everything was monitored,
    the workers' logs, the topics, each request's (partition, offset), and the most events a statistics
    record carried."""
    fleet = Fleet(bootstrap, Topics.unique(app_id), app_id, models, workdir)
    try:
        await fleet.start(n_workers)
        where = await fleet.send(rows, 0, chunk=CHUNK)
        await fleet.processed(len(rows), 120)
        # Whatever the last blocks raised was published before their record's offset was committed.
        alerts = await fleet.alerts()
        shipped = await fleet.shipped()
    finally:
        codes = fleet.stop()
    logs = fleet.logs()
    assert codes == [0] * n_workers, [log[-3000:] for log in logs]
    assert_clean(logs)
    # Every worker shipped blocks of the model, all of its events but each one's last partial block.
    assert len({s.worker for s in shipped}) == n_workers
    assert len(rows) - n_workers * BLOCK < events(shipped) <= len(rows), events(shipped)
    return alerts, logs, fleet.topics, where, max(events([s]) for s in shipped)


async def test_one_worker_or_two_raise_the_one_alert_at_the_same_merged_event(
    kafka_bootstrap: str,
    model_repository: ModelRepository,
    reference: np.ndarray,
    tmp_path: Path,
    unique: str,
) -> None:
    rows = resampled(reference, N_STEP, seed=15)
    rows[CHANGE:, X03] += 1.0 * reference[:, X03].std()
    partition = model_partition()
    found: dict[int, Alert] = {}
    largest = 0
    for n_workers in (1, 2):
        started = time.monotonic()
        alerts, logs, topics, where, most = await run_step(
            kafka_bootstrap, model_repository.root, tmp_path / f"w{n_workers}", f"fleet{n_workers}-{unique}",
            n_workers, rows,
        )  # fmt: skip
        took = time.monotonic() - started
        print(f"{n_workers} worker(s), {took:.0f} s, records of up to {most} events: {kinds(alerts)}")
        largest = max(largest, most) if n_workers == 2 else largest
        # One data alert, on x03, and none later for it (the topic was read once every block had been
        # monitored). Another feature's is a false alarm: the model's budget (1 per 10^6 events) allows
        # one in about 25 runs of these 40,000 events, and the workers' interleaving decides which
        # runs (seen once in CI: x16, 13,000 events after the step, with two workers); more than one
        # is not the budget.
        # A warning that became critical is one incident's escalation (news by design), not a second
        # alert: counted as one.
        opened = opening_alerts(alerts)
        data = [a for a in opened if a.kind is AlertKind.DATA]
        assert [a.subject for a in data].count("x03") == 1 and len(data) <= 2, kinds(alerts)
        alert = found[n_workers] = next(a for a in data if a.subject == "x03")
        assert alert.model == MODEL
        # Beside it, what the step moves: the estimated error, and perhaps the model's output (its
        # alerts sit near their thresholds: seen and not seen with either number of workers). Each once.
        others = {(a.kind, a.subject) for a in opened if a.kind is not AlertKind.DATA}
        assert (AlertKind.PERFORMANCE, "estimated_error") in others, kinds(alerts)
        assert others <= STEP_MOVES, kinds(alerts)
        assert len(opened) == len({(a.kind, a.subject) for a in opened}), kinds(alerts)
        # The blocks that fired came with drifted requests: the alert's sources (the request offset
        # ranges of the blocks since its detector's change point, whichever worker cut them) hold
        # some, and nothing but requests.
        assert alert.source and {s.topic for s in alert.source} == {topics.requests}
        drifted = set(where[CHANGE:])
        assert any((s.partition, o) in drifted for s in alert.source for o in range(s.start, s.end + 1)), (
            alert.source
        )
        # One host of the model's monitor, the worker that raised the alerts.
        hosted = hosts(logs, partition)
        assert len(hosted) == 1, hosted
        raised = [i for i, log in enumerate(logs) if "ALERT data" in log]
        assert raised == [hosted[0][0]], (raised, hosted)
    e1, e2 = (int(found[n].evidence.extra["event_index"]) for n in (1, 2))
    print(f"event_index: 1 worker {e1}, 2 workers {e2}")
    # One worker: its blocks are the stream in order (the requests before the change are a whole number
    # of blocks, every one consumed before the first drifted one), and a 1 sd step fires within a block
    # or two of it (measured: the first or second drifted block, 24,031 or 24,063, in every run).
    assert CHANGE < e1 <= CHANGE + 4 * BLOCK, e1
    # Two workers: each one's last block before the change holds up to 31 calm events with drifted
    # ones (a block per worker), and the monitor merges the workers' statistics records in the order
    # they were published, each up to stats_interval_s of a worker's blocks: a record of the other
    # worker can land on either side (measured: 0, 32 and, once in CI, 384 apart).
    assert abs(e1 - e2) <= 2 * BLOCK + largest, (e1, e2, largest)


# --- 2. the host killed in the middle of a drift -----------------------------------------------------------

CLOSED_BY_SURVIVOR = f"incident closed: {MODEL}/data/x03"


@pytest.mark.parametrize(
    ("kill", "shift_sd"),
    [
        # A small shift, so that the monitor needs hundreds of drifted events to see it: 160-640 at
        # 0.3 sd in the in-process fleet (0.5 sd and more fire within three blocks), while the kill
        # comes once it has consumed and committed the first 128. Not smaller: CI once measured the
        # first detection of a 0.2 sd step at 0.148 sd, under the 0.15 sd alerting bound; that is
        # alerted a full window later now (README, "What it does not guarantee"), but this test is
        # about the kill, not about that.
        pytest.param("mid-drift", 0.3, id="mid-drift"),
        # As soon as the alert is on the topic: the record that fired is usually not committed yet, and
        # the survivor reads it again. It finds the incident open: its record went out in the alert's
        # produce request (written after it by the incident store's producer, a kill between the two
        # made the survivor alert again, which two test processes on two cores hit once).
        pytest.param("after-alert", 0.4, id="after-alert"),
    ],
)
async def test_the_monitors_host_killed_mid_drift_the_drift_is_alerted_once(
    kafka_bootstrap: str,
    model_repository: ModelRepository,
    reference: np.ndarray,
    tmp_path: Path,
    unique: str,
    record_property: Callable[[str, object], None],
    kill: str,
    shift_sd: float,
) -> None:
    app_id = f"fleetkill-{unique}"
    fleet = Fleet(kafka_bootstrap, Topics.unique(app_id), app_id, model_repository.root, tmp_path)
    partition = model_partition()
    calm, early, late = 8_000, 128 if kill == "mid-drift" else 4_000, 6_000
    rows = resampled(reference, calm + early + late, seed=16)
    rows[calm:, X03] += shift_sd * reference[:, X03].std()

    async def data_alerts() -> list[Alert]:
        return [a for a in await fleet.alerts() if a.kind is AlertKind.DATA]

    async def alerted() -> bool:
        return bool(await data_alerts())

    sending: asyncio.Task[list[tuple[int, int]]] | None = None
    consumed = 0
    try:
        await fleet.start(2)
        where = await fleet.send(rows[:calm], 0)
        await fleet.processed(calm, 60)
        [(host, _)] = hosts(fleet.logs(), partition)
        # The drift begins. The host is killed once the monitor has consumed (and committed) its first
        # blocks, or as soon as it published the alert; the survivor takes the model's partition over
        # once the dead member's session times out (no replacement needed).
        if kill == "mid-drift":
            where += await fleet.send(rows[calm : calm + early], calm)
            await fleet.processed(calm + early, 60)
            stats_end = await end_offsets(kafka_bootstrap, fleet.stats_topic)
            consumed = stats_end[TopicPartition(fleet.stats_topic, partition)]
            alerted_before = await data_alerts()
            assert fleet.workers[host].stop(signal.SIGKILL) == -signal.SIGKILL
        else:
            sending = asyncio.create_task(fleet.send(rows[calm : calm + early], calm, chunk=100, pause=0.05))
            await wait_for(alerted, 60, "the drift alerted", *fleet.workers)
            assert fleet.workers[host].stop(signal.SIGKILL) == -signal.SIGKILL
            alerted_before = await data_alerts()
            where += await sending
        where += await fleet.send(rows[calm + early :], calm + early)
        await fleet.processed(len(rows), 120)
        alerts = await fleet.alerts()
    finally:
        if sending is not None:
            sending.cancel()
        codes = fleet.stop()
    logs = fleet.logs()
    assert codes[1 - host] == 0, logs[1 - host][-3000:]
    case = "after the alert" if alerted_before else "before the alert"
    record_property("killed", case)
    hosted = hosts(logs, partition)
    print(f"host killed {case} ({kill}); alerts {kinds(alerts)}; hosts {hosted}")
    assert_clean(logs)
    # The killed host had hosted the model's monitor from its first record on (nothing to read back);
    # the survivor hosts it now, its detectors rebuilt from the records before its first new one: at
    # least those the killed host had committed (mid-drift: every record on the topic at the kill).
    assert sorted(hosted) == sorted([(host, 0), (1 - host, dict(hosted).get(1 - host, -1))]), hosted
    assert dict(hosted)[1 - host] > 0, hosted
    if kill == "mid-drift":
        assert dict(hosted)[1 - host] >= consumed, (hosted, consumed)
    # It read back up to where the killed host's group committed, read from the broker at the
    # assignment: records after that, even those Faust skipped, are handled live.
    [(_, first_live, group_committed)] = [
        c for c in COMMITTED.findall(logs[1 - host]) if int(c[0]) == partition
    ]
    assert int(first_live) == int(group_committed) == dict(hosted)[1 - host], logs[1 - host][-3000:]
    # The drift, alerted once (the topic read once every block had been monitored); beside it, at most
    # what the step moves (the estimated error rises by about a point: alerted in some runs), once.
    # (A warning that became critical is one incident's escalation, counted as one.)
    opened = opening_alerts(alerts)
    data = [a for a in opened if a.kind is AlertKind.DATA]
    # A survivor whose replay stopped before the record that fired once closed the still-open incident
    # on its first live record (a window rebuilt mostly from before the change) and alerted again.
    assert CLOSED_BY_SURVIVOR not in logs[1 - host], logs[1 - host][-3000:]
    assert [a.subject for a in data] == ["x03"], (kinds(alerts), [monitor_lines(log) for log in logs])
    assert {(a.kind, a.subject) for a in opened if a.kind is not AlertKind.DATA} <= STEP_MOVES, kinds(alerts)
    assert len(opened) == len({(a.kind, a.subject) for a in opened}), kinds(alerts)
    alert = data[0]
    event = int(alert.evidence.extra["event_index"])
    print(f"  x03 at merged event {event}")
    # Its blocks came with drifted requests; raised by the survivor, its event counts the blocks read
    # back (a monitor started afresh would count from 0).
    drifted = set(where[calm:])
    assert any((s.partition, o) in drifted for s in alert.source for o in range(s.start, s.end + 1))
    assert calm < event < len(rows), event
    raised = [i for i, log in enumerate(logs) if "ALERT data" in log]
    assert raised == ([host] if alerted_before else [1 - host]), raised


# --- 3. stationary -----------------------------------------------------------------------------------------


async def test_a_long_stationary_stream_through_two_workers_raises_no_drift_alert(
    kafka_bootstrap: str,
    model_repository: ModelRepository,
    reference: np.ndarray,
    tmp_path: Path,
    unique: str,
) -> None:
    app_id = f"fleetcalm-{unique}"
    # At the default budget (1 false alarm per 10**6 events for the model) 200,000 events hold one
    # chance alarm in about 18 % of runs: a test of "none" would fail that often while the fleet
    # works. At 0.1 per 10**6 about 2 % of runs hold one and 0.02 % two. So one alarm is allowed,
    # and two, which a fleet that doubled its monitors or misread merged blocks would raise, are not.
    env = {"DRIFTLINE_MONITORING__FALSE_ALARMS_PER_MILLION": "0.1"}
    fleet = Fleet(kafka_bootstrap, Topics.unique(app_id), app_id, model_repository.root, tmp_path, env)
    n = 200_000
    rows = resampled(reference, n, seed=17)
    started = time.monotonic()
    try:
        await fleet.start(2)
        # Unpaced: the order of the blocks does not matter to a stationary stream.
        await fleet.send(rows, 0, chunk=5_000, pause=0.0)
        await fleet.processed(n, 180)
        alerts = await fleet.alerts()
        shipped = await fleet.shipped()
    finally:
        codes = fleet.stop()
    logs = fleet.logs()
    assert codes == [0, 0], [log[-3000:] for log in logs]
    print(f"stationary: {n} events in {time.monotonic() - started:.0f} s; alerts {kinds(alerts)}")
    # The model's one monitor saw the blocks of both workers, every event but the last partial
    # block of each, and raised at most one chance drift alarm and nothing else (the rows are the
    # reference's).
    assert len({s.worker for s in shipped}) == 2
    assert n - 2 * BLOCK < events(shipped) <= n, events(shipped)
    assert len(hosts(logs, model_partition())) == 1, hosts(logs, model_partition())
    seen = [(a.kind.value, a.subject, a.message, a.source) for a in alerts]
    moves = [line for log in logs for line in log.splitlines() if "assigned" in line or "revoked" in line]
    assert len(opening_alerts(a for a in alerts if a.kind in DRIFT_KINDS)) <= 1, (seen, moves[-20:])
    assert not [a for a in alerts if a.kind not in DRIFT_KINDS], (seen, moves[-20:])
    assert_clean(logs)


# --- 4. a worker stopped between two statistics records -------------------------------------------------


async def test_a_worker_stopped_ships_the_blocks_it_held_back(
    kafka_bootstrap: str,
    model_repository: ModelRepository,
    reference: np.ndarray,
    tmp_path: Path,
    unique: str,
) -> None:
    """With an hour between records, a worker ships its first batch's blocks and holds every later
    one: stopped (SIGTERM), it ships them before it leaves, so the monitor loses none."""
    app_id = f"fleetheld-{unique}"
    env = {"DRIFTLINE_MONITORING__STATS_INTERVAL_S": "3600"}
    fleet = Fleet(kafka_bootstrap, Topics.unique(app_id), app_id, model_repository.root, tmp_path, env)
    n = 10_000
    try:
        await fleet.start(1)
        await fleet.send(resampled(reference, n, seed=19), 0, chunk=1_000)

        async def served() -> bool:
            offsets = await committed(kafka_bootstrap, f"{app_id}-serving")
            return sum(o for tp, o in offsets.items() if tp.topic == fleet.topics.requests) >= n

        await wait_for(served, 60, f"{n} requests committed", *fleet.alive())
        before = events(await fleet.shipped())
    finally:
        codes = fleet.stop()
    after = await fleet.shipped()
    assert codes == [0], fleet.logs()[0][-3000:]
    # Before the stop: one record, the first batch's blocks (a batch is at most 500 requests).
    assert before <= 500, before
    # After: every block of the model's stream, the one it had begun aside.
    assert n - BLOCK < events(after) <= n, (before, events(after))
    assert len(after) >= 2
    assert_clean(fleet.logs())


# --- 5. technical rates, counted by every worker and watched once ------------------------------------


async def test_two_workers_raise_one_alert_for_an_unknown_field_in_their_requests(
    kafka_bootstrap: str,
    model_repository: ModelRepository,
    reference: np.ndarray,
    tmp_path: Path,
    unique: str,
) -> None:
    app_id = f"fleetjunk-{unique}"
    fleet = Fleet(kafka_bootstrap, Topics.unique(app_id), app_id, model_repository.root, tmp_path)
    n = 8_000
    try:
        await fleet.start(2)
        await fleet.send(
            resampled(reference, n, seed=23),
            0,
            chunk=1_000,
            extra=lambda i: {"colour": "red"} if i % 10 == 0 else {},
        )
        await fleet.processed(n, 120)
        alerts = await fleet.alerts()
        shipped = await fleet.shipped()
    finally:
        codes = fleet.stop()
    logs = fleet.logs()
    assert codes == [0, 0], [log[-3000:] for log in logs]
    # Both workers counted their share of the requests and shipped the counts with their blocks.
    rates = [(s.worker, r) for s in shipped for r in s.rates]
    assert len({worker for worker, _ in rates}) == 2
    assert sum(r.requests for _, r in rates) == n
    assert sum(r.unseen_fields.get("colour", 0) for _, r in rates) == n // 10
    # One alert per rate for the model, from its one monitor (two workers used to raise two each).
    # (The unknown fields' rate alerts too only where its window closes before the name's own.)
    technical = sorted((a.detector, a.subject) for a in alerts if a.kind is AlertKind.TECHNICAL)
    assert ("unseen_field", "colour") in technical, kinds(alerts)
    assert len(technical) == len(set(technical)), technical
    assert set(technical) <= {("unseen_field", "colour"), ("unseen_fields_rate", "unknown_fields")}
    assert not [a for a in alerts if a.kind in DRIFT_KINDS], kinds(alerts)
    assert_clean(logs)


async def test_two_workers_raise_one_alert_for_outcomes_that_join_no_prediction(
    kafka_bootstrap: str,
    model_repository: ModelRepository,
    reference: np.ndarray,
    tmp_path: Path,
    unique: str,
) -> None:
    # Each worker joins the outcomes of the join partitions it owns. 6,000 outcomes whose request ids
    # nobody sent, about 3,000 per worker: each worker's own window of 2,000 used to close over the
    # margin and raise the alert, twice for one cause. Now each counts and ships, and the model's
    # monitor raises it once.
    app_id = f"fleetlate-{unique}"
    fleet = Fleet(kafka_bootstrap, Topics.unique(app_id), app_id, model_repository.root, tmp_path)
    # Outcomes that may have been read before their predictions wait for them (60 s by default):
    # these never will have one, so that they count at once.
    fleet.env["DRIFTLINE_MONITORING__JOIN_GRACE_S"] = "0"
    n_requests, n_outcomes = 2_000, 6_000
    try:
        await fleet.start(2)
        await fleet.send(resampled(reference, n_requests, seed=31), 0, chunk=500)
        await fleet.processed(n_requests, 120)
        outcomes = [
            (rid.encode(), json.dumps({"request_id": rid, "model": MODEL, "label": 0}).encode())
            for rid in (f"{app_id}-ghost-{i}" for i in range(n_outcomes))
        ]
        await produce_batched(kafka_bootstrap, fleet.topics.outcomes, outcomes)
        workers = fleet.alive()

        def unmatched() -> float:
            return sum(w.metric("driftline_outcomes_total", result="unmatched") for w in workers)

        async def all_read() -> bool:
            return await asyncio.to_thread(unmatched) >= n_outcomes

        await wait_for(all_read, 120, f"{n_outcomes} outcomes read at the join", *workers)
        per_worker = [w.metric("driftline_outcomes_total", result="unmatched") for w in workers]
        await fleet.processed(n_requests, 60)  # and every statistics record shipped since
        alerts = await fleet.alerts()
        shipped = await fleet.shipped()
    finally:
        codes = fleet.stop()
    logs = fleet.logs()
    assert codes == [0, 0], [log[-3000:] for log in logs]
    # Both workers joined a share of the outcomes, each more than a window's worth.
    assert all(n > 2_000 for n in per_worker), per_worker
    rates = [r for s in shipped for r in s.rates]
    assert sum(r.outcomes for r in rates) == n_outcomes and sum(r.unjoined for r in rates) == n_outcomes
    unjoined = [a for a in alerts if a.subject == "unjoined_outcomes"]
    assert len(unjoined) == 1, kinds(alerts)
    # The window closes with the shipped counts that carry it to 2,000 outcomes, and names them all.
    window = int(unjoined[0].evidence.window_events or 0)
    assert 2_000 <= window <= n_outcomes, unjoined[0].evidence
    assert unjoined[0].message.startswith(f"100.0% of the last {window:,} outcomes of {MODEL} matched no")
    assert not [a for a in alerts if a.kind in DRIFT_KINDS], kinds(alerts)
    assert_clean(logs)


async def test_two_workers_raise_one_alert_for_requests_to_a_model_nobody_serves(
    kafka_bootstrap: str,
    model_repository: ModelRepository,
    reference: np.ndarray,
    tmp_path: Path,
    unique: str,
) -> None:
    # Every 10th request names a model nobody serves. Each worker judged its own share, and when
    # their windows closed together (one run in three here) both raised the alert before either
    # saw the other's incident. Now each counts and ships, and one monitor judges the fleet's.
    app_id = f"fleetghost-{unique}"
    fleet = Fleet(kafka_bootstrap, Topics.unique(app_id), app_id, model_repository.root, tmp_path)
    n = 8_000
    messages = requests(resampled(reference, n, seed=41), 0, prefix=app_id)
    for j in range(0, n, 10):
        body = json.loads(messages[j][1])
        body["model"] = "ghost"
        messages[j] = (messages[j][0], json.dumps(body).encode())
    try:
        await fleet.start(2)
        await produce_batched(kafka_bootstrap, fleet.topics.requests, messages)
        await fleet.processed(n, 120)
        alerts = await fleet.alerts()
        records = await read_to_end(kafka_bootstrap, fleet.stats_topic)
    finally:
        codes = fleet.stop()
    logs = fleet.logs()
    assert codes == [0, 0], [log[-3000:] for log in logs]
    own = [decode_stats(r.value) for r in records if r.key == b"*" and r.value]
    assert len({s.worker for s in own}) == 2  # both workers counted and shipped
    assert sum(c.unknown_model for s in own for c in s.rates) == n // 10
    assert sum(c.events for s in own for c in s.rates) == n
    technical = [(a.model, a.subject) for a in alerts if a.kind is AlertKind.TECHNICAL]
    assert technical == [("*", "unknown_models")], kinds(alerts)
    assert_clean(logs)


async def test_two_workers_raise_one_alert_for_a_package_built_with_other_versions(
    kafka_bootstrap: str,
    repository_copy: ModelRepository,
    reference: np.ndarray,
    tmp_path: Path,
    unique: str,
) -> None:
    # Both workers load a package built with onnxruntime 0.9.0. Each alerted it as it loaded it, and
    # starting together neither saw the other's incident in time: two alerts in three runs of three.
    recorded_as_built_with(repository_copy.root / MODEL / "1", onnxruntime="0.9.0")
    app_id = f"fleetdep-{unique}"
    fleet = Fleet(kafka_bootstrap, Topics.unique(app_id), app_id, repository_copy.root, tmp_path)
    n = 4_000
    try:
        await fleet.start(2)
        await fleet.send(resampled(reference, n, seed=43), 0, chunk=1_000)
        await fleet.processed(n, 120)
        alerts = await fleet.alerts()
        shipped = await fleet.shipped()
    finally:
        codes = fleet.stop()
    logs = fleet.logs()
    assert codes == [0, 0], [log[-3000:] for log in logs]
    # Each worker shipped what it found, and the model's monitor alerted it once.
    assert sorted((s.worker, f[0]) for s in shipped for f in s.findings) == sorted(
        {(s.worker, "onnxruntime") for s in shipped}
    )
    assert len({s.worker for s in shipped}) == 2
    dependency = [a for a in alerts if a.detector == "dependency_versions"]
    assert [(a.subject, a.evidence.extra["built"]) for a in dependency] == [("onnxruntime", "0.9.0")]
    assert_clean(logs)
