"""The fleet monitor's logic: read-back before a partition's first record, monitors dropped with their
partition, alerts published until the broker takes them. Real statistics records from the real request
handler; the topic is a list here (``tests/integration/test_fleet.py`` has the broker)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

import numpy as np
import pytest

from agent.alerting.fleet_monitor import FleetMonitor
from agent.alerting.incident_store import KafkaIncidentStore
from agent.models.registry import ModelRegistry
from agent.models.repository import ModelRepository
from agent.monitoring.incidents import IncidentManager, InMemoryIncidentStore
from agent.monitoring.observer import DriftObserver
from agent.retry import Backoff
from agent.serving.messages import OutgoingMessage
from schemas.alert import AlertKind, decode_alert
from tests.agent.monitoring.test_fleet import SETTINGS, STATS, batches, drifted, handler, observer
from tests.agent.monitoring.test_fleet import reference as reference


@pytest.fixture(scope="module")
def registry(model_repository: ModelRepository) -> ModelRegistry:
    r = ModelRegistry(model_repository.root)
    r.refresh()
    return r


@pytest.fixture(scope="module")
def records(registry: ModelRegistry, reference: np.ndarray) -> list[bytes]:
    """The statistics topic's one partition: a drift of x03 from request 20,000 (0.4 sd)."""
    worker = handler(registry, [observer(registry, IncidentManager(InMemoryIncidentStore()), ship=True)])
    out = []
    for batch in batches(drifted(reference, 40_000, 20_000, 0.4, seed=7)):
        out.extend(m.value for m in worker.handle(batch) if m.topic == STATS and m.value is not None)
    return out


def fleet(
    registry: ModelRegistry,
    topic: list[bytes],
    published: list[OutgoingMessage],
    fail: Callable[[], bool] = lambda: False,
) -> tuple[FleetMonitor, list[tuple[int, int]]]:
    reads: list[tuple[int, int]] = []

    async def publish(messages: list[OutgoingMessage]) -> None:
        if fail():
            raise ConnectionError("broker away")
        published.extend(messages)

    async def replay(
        partition: int, until: int, apply: Callable[[list[bytes]], None], first: int | None = None
    ) -> bool:
        reads.append((partition, until))
        apply(topic[first or 0 : until])
        return True

    monitor = DriftObserver(
        IncidentManager(InMemoryIncidentStore()), settings=SETTINGS, resolve=registry.resolve
    )
    return FleetMonitor(monitor, publish, "alerts", replay, backoff=Backoff(0.001, 0.002)), reads


def data_alerts(published: list[OutgoingMessage]) -> list[int]:
    alerts = [decode_alert(m.value) for m in published if m.value and not m.key.startswith(b"incident/")]
    return [int(a.evidence.extra["event_index"]) for a in alerts if a.kind is AlertKind.DATA]


async def test_a_new_host_reads_the_partition_back_then_alerts_once(
    registry: ModelRegistry, records: list[bytes]
) -> None:
    whole: list[OutgoingMessage] = []
    first, _ = fleet(registry, records, whole)
    first.assigned([0])
    for offset, value in enumerate(records):
        await first.handle(0, offset, value)
    [expected] = data_alerts(whole)

    # A host that takes over as the drift begins (its group committed up to `cut`, a record per batch
    # of 250 requests: up to request 20,000): one read-back, then live, and the same detection.
    cut = 80
    assert cut * 250 < expected
    published: list[OutgoingMessage] = []
    second, reads = fleet(registry, records, published)
    second.assigned([0])
    for offset in range(cut, len(records)):
        await second.handle(0, offset, records[offset])
    assert reads == [(0, cut)] and second.replayed == cut and second.records == len(records) - cut
    assert data_alerts(published) == [expected]


async def test_records_committed_but_never_handed_to_the_new_host_are_handled_live(
    registry: ModelRegistry, records: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    # Which record fires, for a monitor that never stopped.
    whole: list[OutgoingMessage] = []
    first, _ = fleet(registry, records, whole)
    first.assigned([0])
    fired = None
    for offset, value in enumerate(records):
        await first.handle(0, offset, value)
        if fired is None and data_alerts(whole):
            fired = offset
    [expected] = data_alerts(whole)
    assert fired is not None and fired > 2

    # The previous host committed up to the record that fires (it never handled it); across the
    # rebalance Faust skipped (and acknowledged) that record and the next, so the agent's first record
    # comes two later. The two are handled live, not read back silently: the alert is not lost.
    published: list[OutgoingMessage] = []
    second, reads = fleet(registry, records, published)
    second.assigned([0], {0: fired})
    for offset in range(fired + 2, len(records)):
        await second.handle(0, offset, records[offset])
    assert reads == [(0, fired), (0, fired + 2)]
    assert second.replayed == fired and second.records == len(records) - fired
    assert data_alerts(published) == [expected]
    assert f"offsets {fired}-{fired + 1} (2 records) were committed" in caplog.text


async def test_a_revoked_partition_drops_its_monitors_and_is_read_back_when_it_returns(
    registry: ModelRegistry, records: list[bytes]
) -> None:
    published: list[OutgoingMessage] = []
    host, reads = fleet(registry, records, published)
    host.assigned([0])
    await host.handle(0, 10, records[10])
    assert [m.name for m in host.observer.monitors()] == ["classification-20"]
    host.revoked([0])
    assert host.observer.monitors() == []
    host.assigned([0])
    await host.handle(0, 20, records[20])
    assert reads == [(0, 10), (0, 20)]
    assert host.observer.monitors()[0].features.n_events > 0
    health = host.stats()
    assert health["hosting"] == [0] and health["models"] == ["classification-20/1"]
    assert health["records"] == 2 and health["replayed"] == 30


async def test_an_alert_is_published_once_the_broker_takes_it(
    registry: ModelRegistry, records: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "agent.alerting.fleet_monitor")
    failures = iter([True, True, True])
    published: list[OutgoingMessage] = []
    host, _ = fleet(registry, records, published, fail=lambda: next(failures, False))
    host.assigned([0])
    for offset, value in enumerate(records):
        await asyncio.wait_for(host.handle(0, offset, value), 5)
    assert len(data_alerts(published)) == 1
    assert "failed (ConnectionError, attempt 1)" in caplog.text
    assert "published after 3 failures" in caplog.text


async def test_a_record_that_is_not_statistics_is_skipped(
    registry: ModelRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    published: list[OutgoingMessage] = []
    host, _ = fleet(registry, [], published)
    host.assigned([1])
    await host.handle(1, 0, b'{"not": "statistics"}')
    await host.handle(1, 1, None)
    assert published == [] and "not a driftline statistics record" in caplog.text


class StartedStore(KafkaIncidentStore):
    """A Kafka incident store that offers its queue as one that has made sure of its topic does (no
    broker here: its own writer never runs)."""

    @property
    def pending(self) -> int:
        return len(self._pending)


@pytest.mark.parametrize("started", [True, False], ids=["started", "not-started"])
async def test_the_incident_an_alert_opens_is_published_with_it(
    registry: ModelRegistry, records: list[bytes], started: bool
) -> None:
    # The incident store's records go out in the produce request of the alerts that opened them, so
    # that a host killed as soon as its alert is on the topic has recorded the incident as well (the
    # next host then does not alert the drift again). Before the store has made sure of its compacted
    # topic they wait for its writer: the app's producer would create the topic, not compacted.
    store = (StartedStore if started else KafkaIncidentStore)(
        "incidents", {"bootstrap_servers": "127.0.0.1:9"}
    )
    calls: list[list[OutgoingMessage]] = []

    async def publish(messages: list[OutgoingMessage]) -> None:
        calls.append(messages)

    async def replay(
        partition: int, until: int, apply: Callable[[list[bytes]], None], first: int | None = None
    ) -> bool:
        return True

    observer = DriftObserver(IncidentManager(store), settings=SETTINGS, resolve=registry.resolve)
    host = FleetMonitor(observer, publish, "alerts", replay, incidents=store)
    host.assigned([0])
    for offset, value in enumerate(records):
        await host.handle(0, offset, value)
    [call] = [c for c in calls if data_alerts([m for m in c if m.topic == "alerts"])]
    alerts = [m for m in call if m.topic == "alerts" and not (m.key or b"").startswith(b"incident/")]
    [alert] = [decode_alert(m.value) for m in alerts if m.value is not None]
    if not started:
        assert not [m for c in calls for m in c if m.topic == "incidents"] and store.written == 0
        async with store.taken() as queued:
            [record] = [m for m in queued if json.loads(m.key or b"")[-1] == "x03"]
        assert json.loads(record.value or b"")["alert_id"] == alert.alert_id
        return
    [record] = [m for m in call if m.topic == "incidents"]
    assert json.loads(record.key or b"") == ["classification-20", "data", "x03"]
    assert json.loads(record.value or b"")["alert_id"] == alert.alert_id
    assert [name for name, _ in record.headers] == ["driftline-writer"]  # its own store skips it
    assert store.written == sum(m.topic == "incidents" for c in calls for m in c) > 0
    async with store.taken() as left:
        assert left == []  # nothing left for the store's own writer
