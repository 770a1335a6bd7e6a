"""The serving loop on the real broker: everything consumed is republished once and committed."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from aiokafka.structs import ConsumerRecord

from agent.streaming import OutgoingMessage, ServingLoop
from tests.support.kafka import committed, create_topics, produce_batched, read_to_end

pytestmark = pytest.mark.integration


class Echo:
    """Republishes each record to ``topic``, on its partition number; counts the batches it saw."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.batches = 0

    def handle(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> list[OutgoingMessage]:
        self.batches += 1
        return [OutgoingMessage(self.topic, r.key, r.value, r.partition) for r in records]


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
    handler = Echo(sink)
    options = {"bootstrap_servers": kafka_bootstrap}
    loop = ServingLoop(
        topics=[source],
        handler=handler,
        consumer_options=options,
        producer_options=options,
        group_id=group,
        batch_size=500,
        freeze_heap=False,
    )
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
