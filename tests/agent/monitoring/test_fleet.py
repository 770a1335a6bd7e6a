"""Fleet monitoring's pure half: workers that ship blocks, one monitor that runs the detectors on them.

Through the real request handler, a real model package and real statistics records (encoded and
decoded as they travel); only the Kafka topic between them is left out (the integration test
``tests/integration/test_fleet.py`` has it).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.models.registry import ModelRegistry
from agent.models.repository import ModelRepository
from agent.monitoring.blocks import Blocks
from agent.monitoring.columns import ColumnSet, column_detectors
from agent.monitoring.detectors import DriftConfig
from agent.monitoring.fleet import ModelStats, StatsPart, decode_stats, encode_stats
from agent.monitoring.incidents import IncidentKey, IncidentManager, InMemoryIncidentStore
from agent.monitoring.model_monitor import MonitorSettingsView
from agent.monitoring.observer import DriftObserver
from agent.packaging.examples import classification_20
from agent.serving.handler import Record, RequestHandler
from schemas.alert import Alert, AlertKind
from schemas.events import Outcome
from tests.support.alerts import alerts_in
from tests.support.models import recorded_as_built_with

MODEL = "classification-20"
SETTINGS = MonitorSettingsView(latency_threshold=1e12)
ALERTS, STATS = "alerts", "stats"
NAMES = [f"x{i:02d}" for i in range(20)]


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return np.asarray(classification_20(n_estimators=10, n_samples=2000).X_reference, dtype=np.float64)


def observer(
    registry: ModelRegistry,
    incidents: IncidentManager,
    *,
    ship: bool,
    worker: str = "w",
    settings: MonitorSettingsView = SETTINGS,
) -> DriftObserver:
    return DriftObserver(
        incidents, settings=settings, resolve=registry.resolve, ship_stats=ship, worker=worker
    )


def handler(registry: ModelRegistry, observers: list[DriftObserver]) -> RequestHandler:
    return RequestHandler(
        registry,
        predictions_topic="p",
        dead_letters_topic="d",
        max_event_bytes=65536,
        observers=observers,
        alerts_topic=ALERTS,
        stats_topic=STATS,
    )


def batches(rows: np.ndarray, size: int = 250) -> list[list[Record]]:
    """The requests in batches, each batch from one partition (0-3, round robin), offsets per partition."""
    out = []
    offsets = [0, 0, 0, 0]
    for b, start in enumerate(range(0, len(rows), size)):
        partition = b % 4
        records = []
        for i, row in enumerate(rows[start : start + size], start):
            body = {
                "request_id": f"r{i}",
                "model": MODEL,
                "features": dict(zip(NAMES, map(float, row), strict=True)),
            }
            records.append(Record("requests", partition, offsets[partition], None, json.dumps(body).encode()))
            offsets[partition] += 1
        out.append(records)
    return out


def drifted(reference: np.ndarray, n: int, change: int, shift_sd: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = reference[rng.integers(0, len(reference), n)].copy()
    rows[change:, 3] += shift_sd * reference[:, 3].std()
    return rows


def run_fleet(
    registry: ModelRegistry,
    parts: list[list[Record]],
    n_workers: int,
    route: Callable[[int], int],
    *,
    flush: bool = False,
) -> tuple[list[Alert], list[bytes], DriftObserver]:
    """``n_workers`` shipping observers (``w0``, ``w1``...; batch ``b`` to worker ``route(b)``) and one
    monitor observer that is fed every statistics record as it is published, in publication order.
    With ``flush``, a worker's timer runs after each of its batches (``flush_stats``): the records it
    ships apart from its batches, its own counts among them (``WORKER_STATS``), are fed too."""
    incidents = IncidentManager(InMemoryIncidentStore(), cooldown_s=3600)
    monitor = observer(registry, incidents, ship=False)
    halves = [observer(registry, incidents, ship=True, worker=f"w{i}") for i in range(n_workers)]
    workers = [handler(registry, [half]) for half in halves]
    alerts: list[Alert] = []
    records: list[bytes] = []

    def judge(value: bytes) -> None:
        records.append(value)
        alerts.extend(monitor.observe_stats(decode_stats(value)).alerts)

    for b, batch in enumerate(parts):
        for m in workers[route(b)].handle(batch):
            if m.topic == ALERTS:
                alerts.extend(alerts_in([m.value]))
            elif m.topic == STATS:
                assert m.key == MODEL.encode() and m.value is not None
                judge(m.value)
        if flush:
            for _, value in halves[route(b)].flush_stats(force=True):
                judge(value)
    return alerts, records, monitor


def of_model(records: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The model's statistics records among a worker's, without its own (WORKER_STATS)."""
    return [(key, value) for key, value in records if key == MODEL.encode()]


def by_pair(b: int) -> int:
    """Two workers of a group: partitions 0 and 1 to one, 2 and 3 to the other."""
    return (b % 4) // 2


def data_alerts(alerts: list[Alert]) -> list[Alert]:
    return [a for a in alerts if a.kind is AlertKind.DATA]


def test_one_or_two_workers_raise_the_one_alert_at_the_same_total_event(
    model_repository: ModelRepository, reference: np.ndarray
) -> None:
    registry = ModelRegistry(model_repository.root)
    registry.refresh()
    change = 20_000
    parts = batches(drifted(reference, 40_000, change, 1.0, seed=5))
    one, _, _ = run_fleet(registry, parts, 1, lambda b: 0)
    # Two workers of a group: partitions 0 and 1 to one, 2 and 3 to the other.
    two, records, _ = run_fleet(registry, parts, 2, by_pair)
    [a1] = data_alerts(one)
    [a2] = data_alerts(two)
    assert a1.subject == a2.subject == "x03"
    e1, e2 = int(a1.evidence.extra["event_index"]), int(a2.evidence.extra["event_index"])
    assert change <= e1 <= change + 1_000
    # Within one block per worker: the monitor's blocks are the same events, cut by two accumulators.
    assert abs(e1 - e2) <= 2 * DriftConfig().block_size, (e1, e2)
    # The alert names where its blocks came from: the request offsets of every block since the change
    # point its detector saw (a record per batch of 250 requests here, all of one partition).
    assert a2.source and all(s.topic == "requests" for s in a2.source)
    assert sum(s.end - s.start + 1 for s in a2.source) >= int(a2.evidence.window_events or 0)
    slow, _, _ = run_fleet(registry, batches(drifted(reference, 40_000, change, 0.3, seed=5)), 2, by_pair)
    [a3] = data_alerts(slow)
    assert int(a3.evidence.window_events or 0) > 250  # a slower detection: its window spans records
    assert len({s.partition for s in a3.source}) >= 2, a3.source
    # A few records per batch, not per event.
    assert len(records) <= len(parts)


def test_the_worker_half_runs_no_detector_and_ships_every_completed_block(
    model_repository: ModelRepository, reference: np.ndarray
) -> None:
    registry = ModelRegistry(model_repository.root)
    registry.refresh()
    incidents = IncidentManager(InMemoryIncidentStore(), cooldown_s=3600)
    worker = observer(registry, incidents, ship=True)
    h = handler(registry, [worker])
    parts = batches(drifted(reference, 20_000, 5_000, 2.0, seed=6))
    messages = [m for batch in parts for m in h.handle(batch)]
    assert not [m for m in messages if m.topic == ALERTS]  # a strong drift, but no detector here
    stats = [decode_stats(m.value) for m in messages if m.topic == STATS and m.value is not None]
    features = [s.part("features") for s in stats]
    blocks = sum(p.blocks.counts.shape[0] for p in features if p is not None)
    assert blocks == 20_000 // DriftConfig().block_size
    assert sum(p.missing.sum() for p in features if p is not None and p.missing is not None) == 0
    assert all(s.model == MODEL and s.version == "1" and s.worker == "w" for s in stats)
    # Every request offset is covered by some record's sources.
    covered = {(t, p, o) for s in stats for t, p, a, b in s.sources for o in range(a, b + 1)}
    assert {(r.topic, r.partition, r.offset) for batch in parts for r in batch} <= covered
    assert worker.metric_points(join=False) == []  # its windows are the monitor's


def test_a_monitor_rebuilt_by_replay_goes_on_as_if_it_never_stopped(
    model_repository: ModelRepository, reference: np.ndarray
) -> None:
    registry = ModelRegistry(model_repository.root)
    registry.refresh()
    change = 20_000
    parts = batches(drifted(reference, 40_000, change, 0.4, seed=7))
    alerts, records, _ = run_fleet(registry, parts, 2, lambda b: (b % 4) // 2)
    [expected] = data_alerts(alerts)
    assert int(expected.evidence.extra["event_index"]) > change + 64
    # The monitor dies in the middle of the drift, before it is detected; its successor replays what
    # came before, then goes on.
    features = [decode_stats(r).part("features") for r in records]
    events = np.cumsum([0 if p is None else p.blocks.counts.shape[0] for p in features]) * 32
    cut = int(np.searchsorted(events, change + 64))
    successor = observer(registry, IncidentManager(InMemoryIncidentStore(), cooldown_s=3600), ship=False)
    for raw in records[:cut]:
        assert successor.observe_stats(decode_stats(raw), replay=True).alerts == []
    rest = [a for raw in records[cut:] for a in successor.observe_stats(decode_stats(raw)).alerts]
    [again] = data_alerts(rest)
    assert again.subject == expected.subject
    assert again.evidence.extra["event_index"] == expected.evidence.extra["event_index"]
    # Without the replay, the successor starts from the reference and sees the drift later.
    fresh = observer(registry, IncidentManager(InMemoryIncidentStore(), cooldown_s=3600), ship=False)
    late = [a for raw in records[cut:] for a in fresh.observe_stats(decode_stats(raw)).alerts]
    assert all(a.evidence.extra["event_index"] != expected.evidence.extra["event_index"] for a in late)


def empty_blocks(streams: int) -> Blocks:
    ints = np.zeros((1, streams), dtype=np.int64)
    return Blocks(
        ints, ints, ints, np.zeros((1, streams)), np.zeros((1, streams)), np.zeros(1, dtype=np.int64)
    )


def test_statistics_of_an_unknown_version_are_skipped(model_repository: ModelRepository) -> None:
    registry = ModelRegistry(model_repository.root)
    registry.refresh()
    monitor = observer(registry, IncidentManager(InMemoryIncidentStore(), cooldown_s=3600), ship=False)
    b = empty_blocks(2)
    stats = ModelStats(MODEL, "999", "w", (), (StatsPart("features", b),))
    assert monitor.observe_stats(stats).alerts == []
    assert monitor.monitors() == []
    # A known version with blocks of the wrong width: skipped, not raised.
    stats = ModelStats(MODEL, "1", "w", (), (StatsPart("features", b),))
    assert monitor.observe_stats(stats).alerts == []


def shipped_and_consumed(values: np.ndarray, workers: int) -> tuple[list[int], list[int]]:
    """Detections of one in-process set, and of a monitor fed the blocks of ``workers`` shipping sets
    that each take every ``workers``-th slice of 100 events."""

    def new() -> ColumnSet:
        config = DriftConfig()
        return ColumnSet(["x"], [column_detectors(config, 0.5, 12**-0.5, "both")], 32, 64, 0.5, 12**-0.5)

    local = new()
    own = [
        d.event_index for i in range(0, len(values), 100) for d in local.push(values[i : i + 100, None], None)
    ]
    shippers = [new() for _ in range(workers)]
    for s in shippers:
        s.ship()
    monitor = new()
    merged: list[int] = []
    for k, i in enumerate(range(0, len(values), 100)):
        s = shippers[k % workers]
        s.push(values[i : i + 100, None], None)
        blocks = s.take_blocks()
        if blocks is not None:
            merged.extend(d.event_index for d in monitor.consume(blocks))
    return own, merged


def test_consumed_blocks_detect_like_pushed_ones() -> None:
    rng = np.random.default_rng(8)
    values = rng.random(60_000)
    values[30_000:] = np.minimum(values[30_000:] + 0.5 * 12**-0.5, 1.0)
    own, one = shipped_and_consumed(values, 1)
    assert own == one and len(own) == 1  # one worker: bit-identical
    _, two = shipped_and_consumed(values, 2)
    assert len(two) == 1 and abs(two[0] - own[0]) <= 2 * 32 + 200  # two: one block each + a slice


def test_the_record_layout_is_checked() -> None:
    b = Blocks(
        np.array([[32]]),
        np.array([[3]]),
        np.array([[4]]),
        np.array([[1.0]]),
        np.array([[2.0]]),
        np.array([31]),
    )
    raw = encode_stats(ModelStats("m", "1", "w", (("t", 0, 1, 2),), (StatsPart("features", b),), 1.5))
    back = decode_stats(raw)
    assert back.event_time == 1.5 and back.part("features") is not None and back.n_blocks == 1
    with pytest.raises(ValueError, match="not a driftline statistics record"):
        decode_stats(b'{"json": 1}')
    with pytest.raises(ValueError, match="truncated"):
        decode_stats(raw[:-3])
    with pytest.raises(ValueError, match="after its last part"):
        decode_stats(raw + b"x")
    with pytest.raises(ValueError, match="bad header"):
        decode_stats(raw[:8] + b"!" + raw[9:])


def test_a_part_for_another_set_shape_is_refused_by_consume(tmp_path: Path) -> None:
    config = DriftConfig()
    columns = ColumnSet(["a", "b"], [column_detectors(config, 0.5, 0.3, "both")] * 2, 32, 64, 0.5, 0.3)
    b = empty_blocks(3)
    with pytest.raises(ValueError, match="3,"):
        columns.consume(b)


def test_a_host_killed_before_committing_the_record_that_alerted_alerts_no_second_time(
    model_repository: ModelRepository, reference: np.ndarray
) -> None:
    """The group's commit lags: the successor replays up to a few records before the one whose
    detection opened the incident (shared, still open), then reads them again live. Its rebuilt window, mostly
    from before the change, must not close the incident, and the detection it repeats is gated."""
    registry = ModelRegistry(model_repository.root)
    registry.refresh()
    parts = batches(drifted(reference, 40_000, 20_000, 0.4, seed=7))
    _, records, _ = run_fleet(registry, parts, 2, by_pair)
    incidents = IncidentManager(InMemoryIncidentStore(), cooldown_s=3600)
    first = observer(registry, incidents, ship=False)
    fired = next(
        i for i, raw in enumerate(records) if data_alerts(first.observe_stats(decode_stats(raw)).alerts)
    )
    key = IncidentKey(MODEL, AlertKind.DATA.value, "x03")
    assert incidents.is_open(key)
    successor = observer(registry, incidents, ship=False)
    committed = fired - 3  # the group commits every few seconds: a few records before the one that fired
    for raw in records[:committed]:
        successor.observe_stats(decode_stats(raw), replay=True)
    live = records[committed : fired + 20]
    again = [a for raw in live for a in successor.observe_stats(decode_stats(raw)).alerts]
    assert data_alerts(again) == [] and incidents.is_open(key)


def test_a_worker_ships_at_most_once_per_interval_and_flushes_what_it_held(
    model_repository: ModelRepository, reference: np.ndarray
) -> None:
    registry = ModelRegistry(model_repository.root)
    registry.refresh()
    worker = DriftObserver(
        IncidentManager(InMemoryIncidentStore()),
        settings=SETTINGS,
        resolve=registry.resolve,
        ship_stats=True,
        ship_interval_s=3600.0,
    )
    h = handler(registry, [worker])
    parts = batches(drifted(reference, 10_000, 0, 0.0, seed=9))
    shipped = [m.value for batch in parts for m in h.handle(batch) if m.topic == STATS and m.value]
    assert len(shipped) == 1  # the first batch's; the rest are held for an hour
    assert of_model(worker.flush_stats()) == []  # not an hour yet
    [held] = of_model(worker.flush_stats(force=True))
    stats = [decode_stats(v) for v in [*shipped, held[1]]]
    blocks = sum(p.blocks.counts.shape[0] for s in stats if (p := s.part("features")) is not None)
    assert blocks == 10_000 // 32
    # The held record names every batch's requests since the first record.
    covered = {(p, o) for s in stats for _, p, a, b in s.sources for o in range(a, b + 1)}
    assert {(r.partition, r.offset) for batch in parts for r in batch} <= covered


def test_a_concept_alert_names_the_outcomes_it_judged_not_the_requests_shipped_beside_them(
    model_repository: ModelRepository, reference: np.ndarray
) -> None:
    """A worker ships its request blocks and its error blocks in one record: each part says which
    records fed it, so the concept alert's source is outcome offsets only (found by the SIGKILL
    integration test, whose concept alert also named the requests of the record that fired it)."""
    registry = ModelRegistry(model_repository.root)
    registry.refresh()
    incidents = IncidentManager(InMemoryIncidentStore(), cooldown_s=3600)
    worker = observer(registry, incidents, ship=True)
    monitor = observer(registry, incidents, ship=False)
    h = handler(registry, [worker])
    alerts: list[Alert] = []

    def judge(raw: list[bytes]) -> None:
        for value in raw:
            alerts.extend(monitor.observe_stats(decode_stats(value)).alerts)

    parts = batches(drifted(reference, 8_000, 0, 0.0, seed=11))
    labels: dict[str, int] = {}
    for batch in parts:
        out = h.handle(batch)
        predictions = [json.loads(m.value or b"") for m in out if m.topic == "p"]
        labels.update((p["request_id"], int(p["label"])) for p in predictions)
        judge([m.value for m in out if m.topic == STATS and m.value])
    assert len(labels) == 8_000
    # Every outcome the opposite of its prediction, in batches of 250, each after a few more requests
    # (fewer than a block: their ranges wait for the worker's next record, which the outcomes send).
    later = batches(drifted(reference, 400, 0, 0.0, seed=12), size=10)
    wrong = [(rid, 1 - label) for rid, label in labels.items()]
    for b in range(0, len(wrong), 250):
        outcomes = [
            (
                Record("outcomes", 0, b + i, None, b""),
                Outcome(request_id=rid, model=MODEL, label=label),
            )
            for i, (rid, label) in enumerate(wrong[b : b + 250])
        ]
        judge(list(filter(None, (v for _, v in worker.observe_outcomes(outcomes).stats))))
        if later:
            judge([m.value for m in h.handle(later.pop(0)) if m.topic == STATS and m.value])
    [concept] = [a for a in alerts if a.kind is AlertKind.CONCEPT]
    assert concept.source and {s.topic for s in concept.source} == {"outcomes"}, concept.source
    # The worker that joined them shipped what had been estimated for them: every one wrong where
    # the model expected a few, which no input explains.
    extra = concept.evidence.extra
    assert extra["unexplained_by_inputs"] == 1.0 and extra["realised_error_same"] == 1.0, extra
    assert float(extra["estimated_error_same"]) < 0.1
    assert "the labels no longer follow the inputs as they did" in concept.message


@pytest.mark.parametrize("change", [8_000, 2_000])
def test_an_alert_from_a_record_of_many_batches_names_only_the_batches_of_its_window(
    model_repository: ModelRepository, reference: np.ndarray, change: int
) -> None:
    """A worker that held 40 batches for one record: the alert's source is the batches whose events its
    detector's window holds, not the record's whole range (each part says which events each batch fed);
    also when the detection is in the middle of a record holding more events than a window (2,000: the
    step is ~8,000 events before the record's end; seen with the Open Inference Protocol in CI)."""
    registry = ModelRegistry(model_repository.root)
    registry.refresh()
    incidents = IncidentManager(InMemoryIncidentStore(), cooldown_s=3600)
    worker = DriftObserver(
        incidents, settings=SETTINGS, resolve=registry.resolve, ship_stats=True, ship_interval_s=3600.0
    )
    monitor = observer(registry, incidents, ship=False)
    h = handler(registry, [worker])
    parts = batches(drifted(reference, 10_000, change, 1.0, seed=13))
    index = {(r.partition, r.offset): i for i, r in enumerate(r for batch in parts for r in batch)}
    shipped = [m.value for batch in parts for m in h.handle(batch) if m.topic == STATS and m.value]
    shipped += [value for _, value in of_model(worker.flush_stats(force=True))]
    assert len(shipped) == 2  # the first batch's record, then the 39 others' at once
    alerts = [a for value in shipped for a in monitor.observe_stats(decode_stats(value)).alerts]
    [alert] = data_alerts(alerts)
    assert alert.subject == "x03"
    named = [index[s.partition, o] for s in alert.source for o in range(s.start, s.end + 1)]
    # The batches since the detector's change point, a batch (250) or two before the step at most.
    assert change - 500 <= min(named) and max(named) >= change, (min(named), max(named))


def junk_batches(reference: np.ndarray, n: int, seed: int) -> list[list[Record]]:
    """Stationary requests in batches of 250 (partitions round robin), every 10th with an unknown
    field ``colour`` and every 10th (other) one with a string for x05 (a dead letter)."""
    rows = drifted(reference, n, n, 0.0, seed)
    out = []
    offsets = [0, 0, 0, 0]
    for b, start in enumerate(range(0, n, 250)):
        partition = b % 4
        records = []
        for i, row in enumerate(rows[start : start + 250], start):
            features: dict[str, object] = dict(zip(NAMES, map(float, row), strict=True))
            if i % 10 == 0:
                features["colour"] = "red"
            elif i % 10 == 5:
                features["x05"] = "n/a"
            body = {"request_id": f"j{i}", "model": MODEL, "features": features}
            records.append(Record("requests", partition, offsets[partition], None, json.dumps(body).encode()))
            offsets[partition] += 1
        out.append(records)
    return out


def test_two_workers_count_one_models_technical_rates_together_and_raise_one_alert_each(
    model_repository: ModelRepository, reference: np.ndarray
) -> None:
    # 10 % of the requests carry an unknown field and 10 % have a string for a number: the unknown
    # field's rates, the wrong type's and the dead letters' are over their margin (5 %). Each worker
    # counts its share and ships the counts; the model's monitor watches the sum, so each rate
    # raises one alert for the model, not one per worker (each worker used to watch its own share).
    registry = ModelRegistry(model_repository.root)
    registry.refresh()
    incidents = IncidentManager(InMemoryIncidentStore(), cooldown_s=3600)
    monitor = observer(registry, incidents, ship=False)
    halves = [observer(registry, incidents, ship=True) for _ in range(2)]
    workers = [handler(registry, [half]) for half in halves]
    from_workers: list[Alert] = []
    from_monitor: list[tuple[int, Alert]] = []
    records: list[bytes] = []
    served = 0
    for b, batch in enumerate(junk_batches(reference, 8_000, seed=8)):
        served += len(batch)
        for m in workers[by_pair(b)].handle(batch):
            if m.topic == ALERTS:
                from_workers.extend(alerts_in([m.value]))
            elif m.topic == STATS and m.value is not None:
                records.append(m.value)
                from_monitor.extend((served, a) for a in monitor.observe_stats(decode_stats(m.value)).alerts)
    # A batch's dead letters are counted after its record left: the workers' timer ships them.
    records += [value for half in halves for _, value in of_model(half.flush_stats(force=True))]
    assert [a for a in from_workers if a.kind is AlertKind.TECHNICAL] == []
    technical = sorted((a.detector, a.subject) for _, a in from_monitor if a.kind is AlertKind.TECHNICAL)
    # What one process serving the whole stream raises, once each (the unknown fields' rate closes
    # its first window before the name of its own does, as it does in one process).
    assert technical == [
        ("dead_letter_rate", "dead_letters"),
        ("unseen_field", "colour"),
        ("unseen_fields_rate", "unknown_fields"),
        ("wrong_type_rate", "x05"),
    ], technical
    # The model's window (2,000 requests) closed on the fleet's requests, not on one worker's.
    [at] = [at for at, a in from_monitor if a.subject == "colour"]
    assert at <= 2_250, at
    # What was shipped adds up to what was served.
    rates = [r for raw in records for r in decode_stats(raw).rates]
    assert sum(r.requests for r in rates) == 7_200 and sum(r.dead_letters for r in rates) == 800
    assert sum(r.unseen_fields.get("colour", 0) for r in rates) == 800
    assert sum(r.wrong_type.get("x05", 0) for r in rates) == 800


def test_outcomes_two_workers_could_not_join_raise_one_alert_for_the_model(
    model_repository: ModelRepository,
) -> None:
    # Each worker joins the outcomes of its own join partitions. 3,000 unjoinable outcomes each (request
    # ids nobody sent): alone, each worker's window of 2,000 closed over the margin and each raised
    # the alert, two for one cause. Counted and shipped, the model's monitor raises it once.
    registry = ModelRegistry(model_repository.root)
    registry.refresh()
    incidents = IncidentManager(InMemoryIncidentStore(), cooldown_s=3600)
    monitor = observer(registry, incidents, ship=False)
    # No grace: an outcome nobody can join is counted at once, not 60 s later.
    at_once = dataclasses.replace(SETTINGS, join_grace_s=0.0)
    halves = [observer(registry, incidents, ship=True, settings=at_once) for _ in range(2)]
    from_workers: list[Alert] = []
    from_monitor: list[Alert] = []
    for b in range(24):
        half = halves[b % 2]
        outcomes = [
            (
                Record("outcomes", b % 2, 250 * b + i, None, b""),
                Outcome(request_id=f"late-{b}-{i}", model=MODEL, label=0),
            )
            for i in range(250)
        ]
        observed = half.observe_outcomes(outcomes)
        from_workers.extend(observed.alerts)
        for _, value in [*observed.stats, *half.flush_stats(force=True)]:
            from_monitor.extend(monitor.observe_stats(decode_stats(value)).alerts)
    assert from_workers == []
    unjoined = [a for a in from_monitor if a.subject == "unjoined_outcomes"]
    assert len(unjoined) == 1, [(a.detector, a.subject) for a in from_monitor]
    [alert] = unjoined
    assert alert.kind is AlertKind.TECHNICAL and alert.evidence.recent_mean == 1.0
    # The monitor quotes no join's counts: the outcomes were joined by both workers, not by it.
    assert "expired" not in alert.evidence.extra and "so far" not in alert.message
    assert "each worker's join counts those that expired or were evicted" in alert.message
    assert monitor.unjoined[MODEL].windows == 3  # 6,000 outcomes, in windows of 2,000


def test_requests_for_a_model_nobody_serves_raise_one_alert_for_the_fleet(
    model_repository: ModelRepository, reference: np.ndarray
) -> None:
    # Every 10th request names a model nobody serves. Each worker used to judge its own share, and
    # two workers whose windows closed together raised the alert twice (one run in three, through
    # real workers). Each now counts and ships; one monitor judges the fleet's requests.
    registry = ModelRegistry(model_repository.root)
    registry.refresh()
    parts = [
        [
            Record(r.topic, r.partition, r.offset, r.key, r.value.replace(MODEL.encode(), b"ghost"))
            if i % 10 == 0 and r.value is not None
            else r
            for i, r in enumerate(batch)
        ]
        for batch in batches(drifted(reference, 8_000, 8_000, 0.0, seed=15))
    ]
    alerts, records, monitor = run_fleet(registry, parts, 2, by_pair, flush=True)
    assert alerts == monitor.raised  # every alert the monitor's, none a worker's
    technical = [(a.model, a.subject) for a in alerts if a.kind is AlertKind.TECHNICAL]
    assert technical == [("*", "unknown_models")], technical
    # Both workers' counts, all of them: 800 of 8,000 requests.
    own = [stats for stats in map(decode_stats, records) if stats.model == "*"]
    assert {s.worker for s in own} == {"w0", "w1"}
    assert sum(r.unknown_model for s in own for r in s.rates) == 800
    assert sum(r.events for s in own for r in s.rates) == 8_000
    [alert] = [a for a in alerts if a.subject == "unknown_models"]
    assert alert.source and {s.topic for s in alert.source} == {"requests"}
    # A new host rebuilds the window by reading the records back, without alerting.
    monitor.forget("*", "*")
    assert not monitor.unknown_models.over
    assert all(monitor.observe_stats(s, replay=True).alerts == [] for s in own)
    assert monitor.unknown_models.over


def test_a_package_built_with_other_versions_is_alerted_once_for_the_fleet(
    repository_copy: ModelRepository, reference: np.ndarray
) -> None:
    # Both workers load the package with the same mismatch; each alerted it (with real workers, in
    # three runs of three, since both start together). Each now ships its findings in its first
    # record, and the model's monitor alerts each (package, installed version) once.
    recorded_as_built_with(repository_copy.root / MODEL / "1", onnxruntime="0.9.0")
    registry = ModelRegistry(repository_copy.root)
    registry.refresh()
    parts = batches(drifted(reference, 2_000, 2_000, 0.0, seed=16))
    alerts, records, monitor = run_fleet(registry, parts, 2, by_pair)
    assert alerts == monitor.raised  # every alert the monitor's, none a worker's
    shipped = [(s.worker, f[0]) for s in map(decode_stats, records) for f in s.findings]
    assert shipped == [("w0", "onnxruntime"), ("w1", "onnxruntime")]  # each in its first record
    [alert] = [a for a in alerts if a.detector == "dependency_versions"]
    assert alert.subject == "onnxruntime" and "built with onnxruntime 0.9.0" in alert.message
    # A new host reads the records back: it knows them, and alerts nothing.
    successor = observer(registry, IncidentManager(InMemoryIncidentStore()), ship=False)
    assert all(successor.observe_stats(decode_stats(raw), replay=True).alerts == [] for raw in records)
    [rebuilt] = successor.monitors()
    assert {package for package, _ in rebuilt.findings_heard} == {"onnxruntime"}


def test_rate_counts_travel_in_the_record_and_bad_ones_are_refused() -> None:
    from agent.monitoring.technical import RateCounts

    first = RateCounts(
        requests=250,
        missing={1: 2},
        out_of_range={1: 3},
        unseen_fields={"colour": 25},
        unknown_categories={2: 7},
        unknown_values={2: {"enterprise": 5, "trial": 2}},
    )
    second = RateCounts(
        dead_letters=5, wrong_type={"x05": 5}, checked=255, with_unseen=25, outcomes=9, unjoined=4
    )
    part = StatsPart("features", empty_blocks(2))
    raw = encode_stats(
        ModelStats(MODEL, "1", "w", (("requests", 0, 0, 254),), (part,), None, (first, second))
    )
    assert decode_stats(raw).rates == (first, second)
    found = ModelStats(MODEL, "1", "w", (), (part,), findings=(("numpy", "1.26.4", None, "missing"),))
    assert decode_stats(encode_stats(found)).findings == (("numpy", "1.26.4", None, "missing"),)
    assert decode_stats(encode_stats(ModelStats(MODEL, "1", "w", (), (part,)))).rates == ()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[4:8], "little")])

    def rewritten(header: dict[str, Any]) -> bytes:
        text = json.dumps(header).encode()
        return (
            raw[:4] + len(text).to_bytes(4, "little") + text + raw[8 + int.from_bytes(raw[4:8], "little") :]
        )

    header["rates"][1]["dead_letters"] = -1
    with pytest.raises(ValueError, match="rate count -1"):
        decode_stats(rewritten(header))
    # Categories named by another process are held to the encoder's bounds: 8 of them, 40 characters.
    header["rates"][1]["dead_letters"] = 5
    header["rates"][0]["unknown_values"] = {"2": {f"{i:03d}" + "x" * 60: 1 for i in range(30)}}
    named = decode_stats(rewritten(header)).rates[0].unknown_values[2]
    assert len(named) == 8 and sum(named.values()) == 30 and {len(v) for v in named} == {40}


def test_a_replay_rebuilds_the_rate_windows_without_alerting(
    model_repository: ModelRepository, reference: np.ndarray
) -> None:
    registry = ModelRegistry(model_repository.root)
    registry.refresh()
    incidents = IncidentManager(InMemoryIncidentStore(), cooldown_s=3600)
    parts = junk_batches(reference, 4_000, seed=9)
    alerts, records, _ = run_fleet(registry, parts, 2, by_pair)
    assert any(a.kind is AlertKind.TECHNICAL for a in alerts)
    successor = observer(registry, incidents, ship=False)
    for raw in records:
        assert successor.observe_stats(decode_stats(raw), replay=True).alerts == []
    [monitor] = successor.monitors()
    assert monitor.unseen["colour"].over and monitor.dead_letters.over
    assert incidents.open_incidents() == []  # the watches' state only: nothing opened or closed


def test_a_record_of_many_batches_closes_the_rate_windows_where_one_process_would(
    model_repository: ModelRepository, reference: np.ndarray
) -> None:
    # x05 beyond its reference range in 8 % of the requests from 2,000 to 12,000 (a +1.5 sd step),
    # then back. Shipped in records of 15,000 requests each, a window over a whole record would
    # measure under 5 % and miss it (seen in CI: a worker fast enough to hold that many in one
    # interval); the counts travel per quarter window, so the rate is alerted, and recovers, as in
    # one process.
    registry = ModelRegistry(model_repository.root)
    registry.refresh()
    rows = drifted(reference, 30_000, 30_000, 0.0, seed=1)
    rows[2_000:12_000, 5] += 1.5 * reference[:, 5].std()
    parts = batches(rows, 500)
    single = handler(registry, [observer(registry, IncidentManager(InMemoryIncidentStore()), ship=False)])
    alone = alerts_in(m.value for batch in parts for m in single.handle(batch) if m.topic == ALERTS)
    incidents = IncidentManager(InMemoryIncidentStore(), cooldown_s=3600)
    monitor = observer(registry, incidents, ship=False)
    half = observer(registry, IncidentManager(InMemoryIncidentStore()), ship=True)
    half.ship_interval_s = 1e9  # held until flushed: up to 30 batches per record
    worker = handler(registry, [half])
    fleet: list[Alert] = []
    sizes = []
    for b, batch in enumerate(parts, 1):
        shipped = [m.value for m in worker.handle(batch) if m.topic == STATS and m.value is not None]
        if b % 30 == 0:
            shipped += [value for _, value in of_model(half.flush_stats(force=True))]
        for value in shipped:
            stats = decode_stats(value)
            assert all(r.events <= 500 for r in stats.rates)  # a quarter window each
            sizes.append(sum(r.events for r in stats.rates))
            fleet.extend(monitor.observe_stats(stats).alerts)
    assert max(sizes) >= 14_500, sizes
    x05 = [(a.kind, a.detector, a.subject) for a in alone if a.kind is AlertKind.TECHNICAL]
    assert x05 == [(AlertKind.TECHNICAL, "reference_range_rate", "x05")]
    assert [(a.kind, a.detector, a.subject) for a in fleet if a.kind is AlertKind.TECHNICAL] == x05
    assert [i for i in incidents.open_incidents() if i.key.kind == "technical"] == []  # recovered
