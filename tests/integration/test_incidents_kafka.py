"""The incident gate on the real Kafka: state survives a restart and is shared between workers."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from agent.alerting.incident_store import KafkaIncidentStore
from agent.monitoring.incidents import IncidentKey, IncidentManager
from schemas import Alert, AlertKind, Severity

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
