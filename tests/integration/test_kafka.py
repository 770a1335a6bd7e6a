"""A produce/consume round trip through the real broker with aiokafka."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition

pytestmark = pytest.mark.integration


async def test_round_trip_with_consumer_group_commit(kafka_bootstrap: str, unique: str) -> None:
    topic, group = f"roundtrip-{unique}", f"group-{unique}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    finally:
        await admin.close()

    sent = {f"key-{i}".encode(): f"value-{i}".encode() for i in range(300)}
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        batch = [await producer.send(topic, key=k, value=v) for k, v in sent.items()]
        await asyncio.gather(*batch)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    received: dict[bytes, bytes] = {}
    try:
        async with asyncio.timeout(60):
            while len(received) < len(sent):
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for r in records:
                        assert r.key is not None and r.value is not None
                        received[r.key] = r.value
        await consumer.commit()
        committed = {p: await consumer.committed(TopicPartition(topic, p)) for p in range(3)}
    finally:
        await consumer.stop()

    assert received == sent
    # Keys spread over all three partitions, and the committed offsets add up to what was sent.
    assert all(offset and offset > 0 for offset in committed.values())
    assert sum(o or 0 for o in committed.values()) == len(sent)
