"""Small aiokafka helpers for integration tests: create topics, produce, read a topic back."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import ConsumerRecord


async def create_topics(bootstrap: str, names: Iterable[str], partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names]
        )
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, messages: Iterable[tuple[bytes | None, bytes]]) -> int:
    """Sends every (key, value) and waits until all are acknowledged; returns how many."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, key=k, value=v) for k, v in messages]
        await asyncio.gather(*futures)
        return len(futures)
    finally:
        await producer.stop()


async def read_topic(
    bootstrap: str, topic: str, count: int, timeout: float = 60.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Reads ``topic`` from the beginning until ``count`` records arrived; fails after ``timeout``.

    Reads on for a short moment after ``count`` so that a test also sees records it did not expect.
    """
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    out: list[ConsumerRecord[bytes, bytes]] = []
    try:
        try:
            async with asyncio.timeout(timeout):
                while len(out) < count:
                    for batch in (await consumer.getmany(timeout_ms=500)).values():
                        out.extend(batch)
        except TimeoutError:
            raise AssertionError(f"{topic}: {len(out)} of {count} records within {timeout:g} s") from None
        for batch in (await consumer.getmany(timeout_ms=1000)).values():
            out.extend(batch)
        return out
    finally:
        await consumer.stop()
