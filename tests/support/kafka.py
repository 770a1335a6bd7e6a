"""Small aiokafka helpers for integration tests: create topics, produce, read a topic back, committed
offsets."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Collection, Iterable, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import ConsumerRecord, TopicPartition


async def create_topics(bootstrap: str, names: Iterable[str], partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names]
        )
    finally:
        await admin.close()


async def delete_topics_naming(bootstrap: str, suffixes: Collection[str]) -> int:
    """Deletes the topics whose names contain one of ``suffixes`` (the tests' random ones, so that a
    broker someone else uses too loses nothing of theirs); returns how many."""
    if not suffixes:
        return 0
    pattern = re.compile("|".join(map(re.escape, sorted(suffixes))))
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = sorted(t for t in await admin.list_topics() if pattern.search(t))
        for i in range(0, len(names), 200):
            await admin.delete_topics(names[i : i + 200], timeout_ms=60_000)
        return len(names)
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


async def read_until(
    bootstrap: str,
    topic: str,
    enough: Callable[[list[ConsumerRecord[bytes, bytes]]], bool],
    timeout: float = 60.0,
    what: str = "the records wanted",
) -> list[ConsumerRecord[bytes, bytes]]:
    """Reads ``topic`` from the beginning until ``enough(records so far)``; fails after ``timeout``.

    For what arrives late, such as an alert the model's monitor raises after the technical alerts a
    worker raised at once. Reads on for a short moment after, like :func:`read_topic`."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    out: list[ConsumerRecord[bytes, bytes]] = []
    try:
        try:
            async with asyncio.timeout(timeout):
                while not enough(out):
                    for batch in (await consumer.getmany(timeout_ms=500)).values():
                        out.extend(batch)
        except TimeoutError:
            raise AssertionError(f"{topic}: no {what} in {len(out)} records within {timeout:g} s") from None
        for batch in (await consumer.getmany(timeout_ms=1000)).values():
            out.extend(batch)
        return out
    finally:
        await consumer.stop()


def batch_producer(bootstrap: str) -> AIOKafkaProducer:
    """A producer for :func:`produce_batched` (start it, and stop it when done)."""
    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_batch_size=1024 * 1024)


async def produce_batched(
    bootstrap: str,
    topic: str,
    messages: Sequence[tuple[bytes | None, bytes | None]],
    *,
    producer: AIOKafkaProducer | None = None,
) -> list[tuple[int, int]]:
    """Sends every (key, value) in a few hand-built batches, many times faster than :func:`produce`
    (so that a worker finds a backlog); returns each message's (partition, offset), in order.

    Keys go to partitions as Kafka's default partitioner sends them (murmur2), so a request and its
    outcome share a partition number; messages without a key go round robin. ``producer``: a started
    :func:`batch_producer` to reuse (a stream sent in many small parts).
    """
    own = producer is None
    if producer is None:
        producer = batch_producer(bootstrap)
        await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        partitioner = DefaultPartitioner()
        by_partition: dict[int, list[int]] = {}
        for i, (key, _) in enumerate(messages):
            p = partitions[i % len(partitions)] if key is None else partitioner(key, partitions, partitions)
            by_partition.setdefault(p, []).append(i)
        where: list[tuple[int, int]] = [(-1, -1)] * len(messages)
        sends = []
        for partition, indices in by_partition.items():
            chunk: list[int] = []
            builder = producer.create_batch()
            for i in indices:
                key, value = messages[i]
                if builder.append(key=key, value=value, timestamp=None) is None:
                    sends.append((await producer.send_batch(builder, topic, partition=partition), chunk))
                    chunk, builder = [], producer.create_batch()
                    builder.append(key=key, value=value, timestamp=None)
                chunk.append(i)
            sends.append((await producer.send_batch(builder, topic, partition=partition), chunk))
        for future, chunk in sends:
            metadata = await future
            for n, i in enumerate(chunk):
                where[i] = (metadata.partition, metadata.offset + n)
        return where
    finally:
        if own:
            await producer.stop()


async def read_to_end(
    bootstrap: str, topic: str, timeout: float = 30.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` up to its end offsets as of the call: what has been written so far."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    tps = sorted(TopicPartition(topic, p["partition"]) for p in described["partitions"])
    assert tps, f"{topic}: no partitions"
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        out: list[ConsumerRecord[bytes, bytes]] = []
        async with asyncio.timeout(timeout):
            while any([await consumer.position(tp) < end[tp] for tp in tps]):
                for batch in (await consumer.getmany(*tps, timeout_ms=200)).values():
                    out.extend(r for r in batch if r.offset < end[TopicPartition(r.topic, r.partition)])
        return out
    finally:
        await consumer.stop()


async def committed(bootstrap: str, group: str) -> dict[TopicPartition, int]:
    """The offsets a consumer group has committed."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {tp: meta.offset for tp, meta in (await admin.list_consumer_group_offsets(group)).items()}
    finally:
        await admin.close()


class TopicReader:
    """Reads a topic from its beginning and keeps every record; each :meth:`poll` adds what arrived since.

    For tests that wait for thousands of records: a fresh :func:`read_topic` per check would read them
    all again each time. The consumer reconnects by itself when the broker comes back.
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.records: list[ConsumerRecord[bytes, bytes]] = []
        self._consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
        )

    async def __aenter__(self) -> TopicReader:
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def poll(self, timeout_ms: int = 200) -> list[ConsumerRecord[bytes, bytes]]:
        """Every record so far."""
        for batch in (await self._consumer.getmany(timeout_ms=timeout_ms)).values():
            self.records.extend(batch)
        return self.records

    async def at_least(self, count: int, timeout: float = 60.0) -> list[ConsumerRecord[bytes, bytes]]:
        """Every record so far, once there are at least ``count``; fails after ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                while len(await self.poll()) < count:
                    pass
        except TimeoutError:
            raise AssertionError(f"{len(self.records)} of {count} records within {timeout:g} s") from None
        return self.records
