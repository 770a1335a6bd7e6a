"""The incident gate on the real Kafka: state survives a restart and is shared between workers."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.structs import ConsumerRecord

from agent.alerting.incident_store import KafkaIncidentStore
from agent.monitoring.incidents import IncidentKey, IncidentManager
from agent.serving.loop import ServingLoop
from agent.serving.messages import OutgoingMessage
from schemas import Alert, AlertKind, Severity
from schemas.alert import encode_alert
from tests.support.kafka import create_topics, produce_batched, read_to_end

pytestmark = pytest.mark.integration

KEY = IncidentKey("breast-cancer", "data", "mean radius")


def make_alert(event: int) -> Alert:
    return Alert.create(
        model=KEY.model,
        model_version="1",
        kind=AlertKind.DATA,
        detector="adwin",
        subject=KEY.subject,
        severity=Severity.WARNING,
        message="mean radius drifted",
        opened_at_event=event,
        detected_at=datetime.now(UTC),
    )


async def start_worker(bootstrap: str, topic: str) -> IncidentManager:
    store = KafkaIncidentStore(topic, {"bootstrap_servers": bootstrap}, restore_timeout_s=10)
    manager = IncidentManager(store, cooldown_s=900)
    await store.start()
    return manager


def store_of(manager: IncidentManager) -> KafkaIncidentStore:
    assert isinstance(manager.store, KafkaIncidentStore)
    return manager.store


async def wait_for(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_restart_does_not_alert_again(kafka_bootstrap: str, unique: str) -> None:
    topic = f"incidents-{unique}"
    first = await start_worker(kafka_bootstrap, topic)
    try:
        assert first.admit(make_alert(100))
        assert not first.admit(make_alert(101))
    finally:
        await first.store.stop()  # writes what is pending before it returns

    restarted = await start_worker(kafka_bootstrap, topic)
    try:
        assert restarted.is_open(KEY)
        assert not restarted.admit(make_alert(102))  # the ongoing incident is not alerted again
        assert restarted.recover(KEY)
    finally:
        await restarted.store.stop()

    # The recovery was persisted too: after another restart the next drift alerts at once.
    again = await start_worker(kafka_bootstrap, topic)
    try:
        assert not again.is_open(KEY)
        assert again.admit(make_alert(103))
    finally:
        await again.store.stop()


async def test_topic_is_created_compacted(kafka_bootstrap: str, unique: str) -> None:
    topic = f"incidents-{unique}"
    worker = await start_worker(kafka_bootstrap, topic)
    await worker.store.stop()
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        configs = {name: value for name, value, *_ in response.resources[0][4]}
    finally:
        await admin.close()
    assert configs["cleanup.policy"] == "compact"


async def test_workers_share_incidents(kafka_bootstrap: str, unique: str) -> None:
    topic = f"incidents-{unique}"
    a = await start_worker(kafka_bootstrap, topic)
    b = await start_worker(kafka_bootstrap, topic)
    try:
        assert a.admit(make_alert(1))
        started = time.monotonic()
        await wait_for(lambda: b.is_open(KEY))
        seen_after = time.monotonic() - started
        assert not b.admit(make_alert(2))  # the second worker sees the same drift: no second alert

        b.recover(KEY)
        await wait_for(lambda: not a.is_open(KEY))
        assert a.admit(make_alert(3))  # the recovery seen by one worker re-arms the other
        await wait_for(lambda: b.is_open(KEY))
        assert not b.admit(make_alert(4))
    finally:
        await a.store.stop()
        await b.store.stop()
    # How long the race window is in which both could alert: a produce plus a fetch.
    assert seen_after < 5.0


async def test_records_published_by_another_producer_reach_other_workers_once(
    kafka_bootstrap: str, unique: str
) -> None:
    # The fleet monitor publishes the store's queued records with its alerts, through the app's
    # producer: the other worker applies them, the store's own writer does not write them again, and
    # their header keeps the store that queued them from applying them a second time.
    topic = f"incidents-{unique}"
    a = await start_worker(kafka_bootstrap, topic)
    b = await start_worker(kafka_bootstrap, topic)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        assert a.admit(make_alert(1))
        async with store_of(a).taken() as records:
            sent = [
                await producer.send(m.topic, m.value, key=m.key, headers=list(m.headers)) for m in records
            ]
            await asyncio.gather(*sent)
        await wait_for(lambda: b.is_open(KEY))
        assert not b.admit(make_alert(2))
        b.recover(KEY)
        await wait_for(lambda: not a.is_open(KEY))  # b's close, written by b's own writer
        # Each applied the other's record only.
        assert store_of(a).received == 1 and store_of(b).received == 1
    finally:
        await producer.stop()
        await a.store.stop()
        await b.store.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap)
    await consumer.start()
    try:
        end = await consumer.end_offsets([TopicPartition(topic, 0)])
    finally:
        await consumer.stop()
    assert end[TopicPartition(topic, 0)] == 2  # the opening, once, and the close


class Alerting:
    """A serving loop's handler: echoes its records, and raises one data alert through the incident
    gate at the record of offset 5, as the drift observer does."""

    def __init__(self, manager: IncidentManager, sink: str, alerts: str) -> None:
        self.manager, self.sink, self.alerts = manager, sink, alerts

    def handle(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> list[OutgoingMessage]:
        out = [OutgoingMessage(self.sink, r.key, r.value) for r in records]
        if any(r.offset == 5 for r in records):
            alert = make_alert(5)
            if self.manager.admit(alert):
                out.append(OutgoingMessage(self.alerts, alert.alert_id.encode(), encode_alert(alert)))
        return out


async def test_the_serving_loop_publishes_an_alerts_incident_record_with_the_alert(
    kafka_bootstrap: str, unique: str
) -> None:
    # Without fleet monitoring a worker's own alerts go out with its batches, and their incident
    # records went out a few milliseconds later through the store's producer: a worker killed in
    # between alerted the drift again once restarted. The loop's producer now sends the record too,
    # after the alert, in the batch's produce request.
    source, sink, alerts, topic = (f"{name}-{unique}" for name in ("in", "out", "alerts", "incidents"))
    await create_topics(kafka_bootstrap, [source, sink, alerts], partitions=1)
    await produce_batched(kafka_bootstrap, source, [(f"k{i}".encode(), b"v") for i in range(20)])
    manager = await start_worker(kafka_bootstrap, topic)
    client = {"bootstrap_servers": kafka_bootstrap}
    loop = ServingLoop(
        topics=[source],
        handler=Alerting(manager, sink, alerts),
        consumer_options=client,
        producer_options=client,
        group_id=f"loop-{unique}",
        resend_topics=[alerts],
        queued=store_of(manager),
        freeze_heap=False,
    )
    await loop.start()
    try:
        await wait_for(lambda: loop.stats.records_in == 20)
    finally:
        await loop.stop()
        await manager.store.stop()
    # 20 echoes, the alert and its incident record, all through the loop's producer.
    assert loop.stats.messages_out == 22
    assert store_of(manager).written == 1
    [alert] = await read_to_end(kafka_bootstrap, alerts)
    [record] = await read_to_end(kafka_bootstrap, topic)
    assert json.loads(record.key) == list(KEY) and record.value is not None
    assert [h for h, _ in record.headers] == ["driftline-writer"]
    # A worker started afterwards has the incident of that alert open, and does not alert it again.
    restarted = await start_worker(kafka_bootstrap, topic)
    try:
        incident = restarted.incident(KEY)
        assert incident is not None and incident.alert_id.encode() == alert.key
        assert not restarted.admit(make_alert(6))
    finally:
        await restarted.store.stop()
