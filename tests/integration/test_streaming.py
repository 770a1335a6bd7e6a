"""The serving loop on the real broker: everything consumed is republished once and committed."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from aiokafka.structs import ConsumerRecord

from agent.serving.loop import OutgoingMessage, ServingLoop
from tests.support.kafka import batch_producer, committed, create_topics, produce_batched, read_to_end

pytestmark = pytest.mark.integration


class Echo:
    """Republishes each record to ``topic``, on its partition number; counts the batches it saw."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.batches = 0

    def handle(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> list[OutgoingMessage]:
        self.batches += 1
        return [OutgoingMessage(self.topic, r.key, r.value, r.partition) for r in records]


def echo_loop(
    bootstrap: str, source: str, sink: str, group: str, *, batch_max_wait_ms: float = 5.0
) -> ServingLoop:
    """A serving loop on the real broker that republishes ``source`` to ``sink`` (its handler: Echo)."""
    client = {"bootstrap_servers": bootstrap}
    return ServingLoop(
        topics=[source],
        handler=Echo(sink),
        consumer_options=client,
        producer_options=client,
        group_id=group,
        batch_max_wait_ms=batch_max_wait_ms,
        freeze_heap=False,
    )


async def _until(condition, timeout: float) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(0.1)


async def test_offsets_are_committed_beside_the_loop_and_stop_commits_the_rest(
    kafka_bootstrap: str, unique: str
) -> None:
    source, sink, group = f"loop-in-{unique}", f"loop-out-{unique}", f"loop-{unique}"
    await create_topics(kafka_bootstrap, [source, sink], partitions=4)
    first = [(f"k{i}".encode(), f"v{i}".encode()) for i in range(20_000)]
    where = await produce_batched(kafka_bootstrap, source, first)
    loop = echo_loop(kafka_bootstrap, source, sink, group)
    handler = loop.handler
    assert isinstance(handler, Echo)
    await loop.start()
    try:
        # Commits run while the loop goes on: the group reaches the end without a stop or a rebalance.
        async def all_committed() -> bool:
            return sum((await committed(kafka_bootstrap, group)).values()) == len(first)

        await _until(all_committed, 60)
        assert loop.stats.records_in == len(first) and 1 <= loop.stats.commits <= handler.batches
        # Then a few more, and a stop as soon as their outputs are out: the stop commits them.
        second = [(f"k{i}".encode(), f"w{i}".encode()) for i in range(7)]
        where += await produce_batched(kafka_bootstrap, source, second)

        async def all_out() -> bool:
            return loop.stats.records_in == len(first) + len(second)

        await _until(all_out, 30)
    finally:
        await loop.stop()
    offsets = await committed(kafka_bootstrap, group)
    assert sum(offsets.values()) == len(first) + len(second)
    out = await read_to_end(kafka_bootstrap, sink)
    assert sorted(r.value for r in out) == sorted(v for _, v in first + second)  # each exactly once
    partition_of = {value: p for (_, value), (p, _) in zip(first + second, where, strict=True)}
    assert all(r.partition == partition_of[r.value] for r in out)


@pytest.mark.parametrize(("wait_ms", "batches"), [(1500.0, 1), (0.0, 3)])
async def test_a_batch_fills_for_batch_max_wait_ms_after_its_first_record(
    kafka_bootstrap: str, unique: str, wait_ms: float, batches: int
) -> None:
    source, sink, group = f"fill-in-{unique}", f"fill-out-{unique}", f"fill-{unique}"
    await create_topics(kafka_bootstrap, [source, sink], partitions=1)
    loop = echo_loop(kafka_bootstrap, source, sink, group, batch_max_wait_ms=wait_ms)
    handler = loop.handler
    assert isinstance(handler, Echo)
    await loop.start()
    try:

        async def assigned() -> bool:
            return bool(loop.stats.assigned)

        await _until(assigned, 30)
        producer = batch_producer(kafka_bootstrap)
        await producer.start()
        try:
            for i in range(3):  # three records 300 ms apart into an idle loop
                await produce_batched(kafka_bootstrap, source, [(b"k", f"v{i}".encode())], producer=producer)
                await asyncio.sleep(0.3)
        finally:
            await producer.stop()

        async def all_in() -> bool:
            return loop.stats.records_in == 3

        await _until(all_in, 30)
    finally:
        await loop.stop()
    # Waiting 1.5 s from the first record takes the next two into its batch; with no wait each
    # record is a batch of its own.
    assert handler.batches == loop.stats.batches == batches
