"""The batched consume -> work -> produce -> commit loop used by options 4 and 5 of ``faust_options``.

One ``AIOKafkaConsumer`` (``getmany``), one ``AIOKafkaProducer`` (``create_batch``/``send_batch``),
offsets committed manually, and only for batches whose outputs the broker has acked
(at-least-once). The loop is pipelined: while a committer task awaits one batch's acks and
commits, the main task already consumes and processes the next one; ``max_inflight`` bounds how
many batches may be sent but not yet acked. A third task commits, one commit at a time, the newest
acked offsets, so neither the ack wait nor the commit round trip stalls the consume loop.

On rebalance, :class:`CommitOnRevoke` drains the in-flight batches (awaits their acks) and commits
them before the partitions go, so the next owner does not reprocess what we already published.
Records fetched for a partition we no longer own are dropped (the new owner reprocesses them:
duplicates, never loss).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError

from bench._work import build_output

__all__ = ["BatchLoop", "CommitOnRevoke", "PhaseTimers"]

log = logging.getLogger(__name__)


@dataclass
class PhaseTimers:
    """Seconds spent in each phase of the loop.

    The loop phases are thread CPU time (``time.thread_time``), not wall time: on a busy machine
    wall time inside a synchronous section also counts the time the process was preempted. An
    awaited call (getmany, send_batch) that yields to the event loop also counts the CPU of
    whatever other task ran meanwhile (aiokafka's fetcher/sender); they rarely yield when data
    is ready. The commit and ack waits are idle waits, overlapped with the loop: wall time.
    """

    getmany: float = 0.0  # CPU inside ``await consumer.getmany`` (mostly building ConsumerRecords)
    decode: float = 0.0  # orjson.loads of every record
    work: float = 0.0  # build the output dict + orjson.dumps
    produce: float = 0.0  # create_batch/append + await send_batch (enqueue only)
    commit: float = 0.0  # wall inside ``await consumer.commit`` (a broker round trip, mostly idle)
    ack_wait: float = 0.0  # wall the committer spent awaiting acks (idle, overlapped with the loop)
    getmany_wall: float = 0.0  # wall inside getmany: > CPU when the loop waits for fetched data
    slot_wait_wall: float = 0.0  # wall the loop waited for an in-flight slot (acks are the limit)
    batches: int = 0
    commits: int = 0
    extra: dict[str, float] = field(default_factory=dict)


class BatchLoop:
    """Pipelined getmany -> decode -> work -> send_batch loop with commit-after-ack."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        out_topic: str,
        target: int,
        *,
        max_records: int = 500,
        timeout_ms: int = 5,
        max_inflight: int = 4,
        on_first: Callable[[], None] | None = None,
        on_done: Callable[[], None] | None = None,
    ) -> None:
        self.consumer = consumer
        self.producer = producer
        self.out_topic = out_topic
        self.target = target
        self.max_records = max_records
        self.timeout_ms = timeout_ms
        self.on_first = on_first
        self.on_done = on_done
        self.timers = PhaseTimers()
        self.consumed = 0
        self.acked = 0
        self.committed: dict[TopicPartition, int] = {}
        self._inflight: deque[tuple[list[asyncio.Future[Any]], dict[TopicPartition, int], int]] = deque()
        self._slots = asyncio.Semaphore(max_inflight)
        self._has_work = asyncio.Event()
        self._lock = asyncio.Lock()
        self._commit_lock = asyncio.Lock()
        self._commit_wanted = asyncio.Event()
        self._pending: dict[TopicPartition, int] = {}
        self._done = asyncio.Event()

    async def run(self, deadline_s: float) -> None:
        """Consume until ``target`` outputs are acked and committed, or until ``deadline_s`` passes."""
        helpers = [asyncio.create_task(self._acker()), asyncio.create_task(self._committer())]
        try:
            await asyncio.wait_for(self._consume_loop(), timeout=deadline_s)
            await asyncio.wait_for(self._done.wait(), timeout=deadline_s)
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await self.drain()

    async def _consume_loop(self) -> None:
        t = self.timers
        perf = time.thread_time
        wall = time.perf_counter
        loads = orjson.loads
        consumer = self.consumer
        while self.consumed < self.target:
            t0, w0 = perf(), wall()
            batches = await consumer.getmany(timeout_ms=self.timeout_ms, max_records=self.max_records)
            t1 = perf()
            t.getmany += t1 - t0
            t.getmany_wall += wall() - w0
            if not batches:
                continue
            assignment = consumer.assignment()
            for tp, msgs in batches.items():
                if tp not in assignment:
                    continue  # revoked while fetched: the new owner reprocesses these
                if self.on_first is not None:
                    self.on_first()
                    self.on_first = None
                t1 = perf()
                reqs = [loads(m.value) for m in msgs]
                t2 = perf()
                outs = [build_output(r) for r in reqs]
                t3 = perf()
                w0 = wall()
                await self._slots.acquire()
                t.slot_wait_wall += wall() - w0
                t3b = perf()
                futs = await self._send(tp.partition, [m.key for m in msgs], outs)
                t4 = perf()
                t.decode += t2 - t1
                t.work += t3 - t2
                t.produce += t4 - t3b
                t.batches += 1
                self._inflight.append((futs, {tp: msgs[-1].offset + 1}, len(msgs)))
                self._has_work.set()
                self.consumed += len(msgs)

    async def _send(self, partition: int, keys: list[bytes | None], values: list[bytes]) -> list[Any]:
        # Outputs go to the same partition number as the input (co-partitioned topics), so one
        # batch per input partition; a batch that fills up (max_batch_size) is sent and a new one
        # started.
        producer = self.producer
        futs = []
        batch = producer.create_batch()
        for k, v in zip(keys, values, strict=True):
            if batch.append(key=k, value=v, timestamp=None) is None:
                futs.append(await producer.send_batch(batch, self.out_topic, partition=partition))
                batch = producer.create_batch()
                batch.append(key=k, value=v, timestamp=None)
        futs.append(await producer.send_batch(batch, self.out_topic, partition=partition))
        return futs

    async def _ack_head(self) -> None:
        futs, offsets, n = self._inflight[0]
        t0 = time.perf_counter()
        await asyncio.gather(*futs)
        self.timers.ack_wait += time.perf_counter() - t0
        self._inflight.popleft()
        self._slots.release()
        self._pending.update(offsets)
        self.acked += n
        if self.acked >= self.target and self.on_done is not None:
            # The measured window ends at the last ack; the commit that follows is bookkeeping.
            self.on_done()
            self.on_done = None
        self._commit_wanted.set()

    async def _commit_pending(self) -> None:
        async with self._commit_lock:
            if not self._pending:
                return
            offsets, self._pending = self._pending, {}
            t0 = time.perf_counter()
            try:
                await self.consumer.commit(offsets)
            except CommitFailedError as exc:
                # Group rebalanced under us: the new owner processes these records again.
                log.warning("commit of %r failed (%s); records will be reprocessed", offsets, exc)
                return
            finally:
                self.timers.commit += time.perf_counter() - t0
                self.timers.commits += 1
            self.committed.update(offsets)

    async def _acker(self) -> None:
        # Awaits acks in order and frees in-flight slots; never waits for a commit, so the commit
        # round trip does not stall the consume loop.
        while True:
            if not self._inflight:
                self._has_work.clear()
                await self._has_work.wait()
                continue
            async with self._lock:
                if self._inflight:
                    await self._ack_head()

    async def _committer(self) -> None:
        # One commit at a time, of the newest acked offsets: commits coalesce by themselves
        # when acks arrive faster than a commit round trip.
        while True:
            await self._commit_wanted.wait()
            self._commit_wanted.clear()
            await self._commit_pending()
            if self.acked >= self.target and not self._pending:
                self._done.set()

    async def drain(self) -> None:
        """Await every in-flight batch's acks and commit them (rebalance and shutdown path)."""
        async with self._lock:
            while self._inflight:
                await self._ack_head()
        await self._commit_pending()


class CommitOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """Commit what was already published before partitions are taken away."""

    def __init__(self) -> None:
        self.loop: BatchLoop | None = None

    async def on_partitions_revoked(self, revoked: Any) -> None:
        if self.loop is not None and revoked:
            await self.loop.drain()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        return None
