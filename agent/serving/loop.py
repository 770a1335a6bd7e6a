"""The serving hot loop: consume request batches, process them, publish the results, commit.

Why not a Faust agent: Faust's per-message path (an ``Event`` per record, acks, sensors) costs about
200 us of CPU per event, where aiokafka's ``getmany`` costs a few; with one core per worker that alone
caps a stock agent near 4.5k events/s (bench/FAUST_OPTIONS.md has the measurements). So the loop runs
as a :class:`mode.Service` inside the Faust app (started and stopped with it, next to its web server
and timers) but talks to Kafka through aiokafka directly:

* a batch is up to ``batch_size`` records: what ``getmany`` has, topped up by what arrives within
  ``batch_max_wait_ms`` of the first ones (0: no top-up, each batch is what one fetch brought);
* the :class:`BatchHandler` turns them into outgoing messages (predictions, dead letters, alerts);
  records queued beside it (``queued``: the incident records of the alerts it raised) follow them,
  in the same produce request, so that a worker killed once an alert is out has recorded its incident;
* outgoing messages are appended to one producer batch per topic-partition (``create_batch`` /
  ``send_batch``: one future per partition instead of one per message);
* offsets are committed only after every message produced for them is acknowledged (at least once).
  The next batch is processed while the previous one's acknowledgements are awaited, with at most
  ``max_in_flight`` batches outstanding. Commits run beside the loop, one at a time, each taking
  the newest acknowledged offsets: a commit is a round trip to the group coordinator (3-19 ms
  measured under load), and awaited in line it held the next batch back.

The loop owns its rebalances: before partitions are revoked the in-flight batches are drained and
committed, so the next owner starts where this one stopped. aiokafka runs the rebalance listener in
its coordinator's task, beside the loop, so one lock guards the pipeline (the in-flight batches, the
handler's state): the loop holds it from handing a batch to the handler until the batch is queued,
the listener while it drains and while the new partitions' state is restored, and the stop while it
drains. The loop never holds it while it waits for records. Records fetched before a rebalance and
not yet handled are dropped: aiokafka restarts every partition of a new assignment at its committed
offset, so they are read again by whoever owns them now. A failed produce (after the producer's own
retries) rewinds the consumer to the first uncommitted offset and the batch is processed again;
duplicates are recognisable by request id.

The consumer group is ``<app id>-serving``, not the Faust app's own group: Faust's assignor protocol
differs from aiokafka's, and Kafka refuses a group whose members disagree on the protocol.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import CommitFailedError, ConsumerStoppedError, KafkaError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import ConsumerRecord, TopicPartition
from mode import Service

from agent.serving.messages import OutgoingMessage, QueuedRecords, taken_if_pending

__all__ = ["BatchHandler", "LoopStats", "ServingLoop"]

log = logging.getLogger(__name__)


class BatchHandler(Protocol):
    """Turns one batch of consumed records into the messages to publish for them.

    A handler may also have ``idle() -> Iterable[OutgoingMessage]``: the loop calls it when a poll
    returns nothing, and publishes what it returns (what time alone settles, such as outcomes past
    the join's grace). Optional, so that a plain handler stays one method.
    """

    def handle(
        self, records: Sequence[ConsumerRecord[bytes, bytes]], *, observe: bool = True
    ) -> Iterable[OutgoingMessage]:
        """``observe=False``: the records were handled before (a rewind reads them again), so only
        their outputs are wanted, not another pass through the monitors and the join."""
        ...


@dataclass
class LoopStats:
    """Counters of the loop, for /metrics and /health."""

    batches: int = 0
    records_in: int = 0
    messages_out: int = 0
    commits: int = 0
    produce_failures: int = 0
    rewinds: int = 0
    assigned: frozenset[TopicPartition] = field(default_factory=frozenset)
    running: bool = False
    joined: bool = False
    """The consumer has joined its group at least once (an assignment, possibly empty, arrived)."""


@dataclass
class _InFlight:
    futures: list[asyncio.Future[Any]]
    offsets: dict[TopicPartition, int]  # next offset to consume, per partition
    first: dict[TopicPartition, int]  # first offset of the batch, per partition (for rewinds)
    resend: list[OutgoingMessage] = field(default_factory=list)  # sent again if this batch fails


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, loop: ServingLoop) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._loop.revoke(frozenset(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self._loop.assign(frozenset(assigned))


class ServingLoop(Service):
    """Consumes ``topics`` in micro-batches, publishes what ``handler`` makes of them, commits after acks.

    Parameters:
        topics: Topics to consume (requests, and later outcomes).
        handler: The plain-Python processing of a batch.
        consumer_options / producer_options: aiokafka client options (bootstrap, security).
        group_id: Consumer group shared by every worker of the deployment.
        batch_size: Most records per batch.
        batch_max_wait_ms: Longest wait for a batch to fill, from the arrival of its first records.
        max_in_flight: Batches whose acknowledgements may be outstanding at once.
        on_assigned / on_revoked: Awaited on every rebalance, holding the pipeline: ``on_revoked``
            after the in-flight batches are drained, ``on_assigned`` before the first batch.
        resend_topics: Messages to these topics (alerts) are published again after a rewind:
            the handler does not make them twice (an alert's incident is open by then).
        queued: Records queued beside the handler (the incident records of the alerts it raised),
            taken after each batch is handled and published in the batch's produce request after
            its messages; published again after a rewind, as alerts are.
    """

    def __init__(
        self,
        *,
        topics: Sequence[str],
        handler: BatchHandler,
        consumer_options: dict[str, Any],
        producer_options: dict[str, Any],
        group_id: str,
        batch_size: int = 500,
        batch_max_wait_ms: float = 5.0,
        max_in_flight: int = 4,
        on_batch: Callable[[int], None] | None = None,
        on_assigned: Callable[[frozenset[TopicPartition]], Awaitable[None]] | None = None,
        on_revoked: Callable[[frozenset[TopicPartition]], Awaitable[None]] | None = None,
        freeze_heap: bool = True,
        resend_topics: Iterable[str] = (),
        held: Callable[[], list[OutgoingMessage]] | None = None,
        queued: QueuedRecords | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.topics = list(topics)
        self.handler = handler
        self.group_id = group_id
        self.batch_size = batch_size
        self.batch_max_wait_ms = batch_max_wait_ms
        self.max_in_flight = max_in_flight
        self.on_batch = on_batch
        self.on_assigned = on_assigned
        self.on_revoked = on_revoked
        self.freeze_heap = freeze_heap
        self.stats = LoopStats()
        self._consumer_options = consumer_options
        self._producer_options = producer_options
        self._in_flight: deque[_InFlight] = deque()
        self.resend_topics = frozenset(resend_topics)
        self.held = held
        """What the handler held back from the batches it answered (a fleet worker's statistics
        between two records), published when the loop drains: at a stop and before a revocation."""
        self.queued = queued
        """Records to take after each batch and send with it (the incident store's)."""
        self._resend: list[OutgoingMessage] = []
        """Messages of failed batches to publish with the next one."""
        self._idle: Callable[[], Iterable[OutgoingMessage]] | None = getattr(handler, "idle", None)
        self._replay: dict[tuple[str, int], int] = {}
        """After a rewind: (topic, partition) -> the offset up to which records were handled already."""
        self._lock = asyncio.Lock()
        """Held by whoever touches the pipeline: the loop for a batch, a rebalance, the stop."""
        self._generation = 0
        """Counts revocations: records fetched in an earlier generation are not handled."""
        self._committable: dict[TopicPartition, int] = {}
        """Acknowledged offsets not yet handed to a commit."""
        self._committing: asyncio.Task[None] | None = None
        self._flushing = False
        self._partitioner = DefaultPartitioner()
        self._partitions: dict[str, list[int]] = {}
        self._last_sent: dict[tuple[str, int], asyncio.Future[Any]] = {}
        """Each topic-partition's last batch handed to the producer: acknowledged, it has gone."""
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None

    async def on_start(self) -> None:
        if self.freeze_heap:
            # The worker's start-up heap (Faust, aiokafka, ONNX Runtime, the loaded models: ~150k
            # objects) lives as long as the process, yet every full collection walks it again: a
            # 100-200 ms stall of the loop each time, which made most of the p99 latency
            # (bench/run.py, BENCHMARKS.md). Collected once and frozen, full collections only walk
            # what was created since. Objects are still freed by reference counting; only cycles
            # among the frozen ones are never collected, and start-up makes none worth keeping.
            gc.collect()
            gc.freeze()
        self._producer = AIOKafkaProducer(
            **self._producer_options,
            acks="all",
            # Batches are built by hand (create_batch); linger only matters for the few sends
            # that go through send().
            linger_ms=5,
            max_batch_size=512 * 1024,
        )
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            **self._consumer_options,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Kafka's default. 4 MiB drained a backlog no faster at driftline's rate (33k/s either
            # way) but held 17-54 MB more of fetched records (RSS with the outcome join full: 353-387
            # vs 333-336 MB); only the bare transport gained (178k vs 162k records/s).
            max_partition_fetch_bytes=1024 * 1024,
            # Range assignment gives a worker the same partition numbers of every topic (requests
            # and outcomes), which the outcome join needs; aiokafka's default is round robin.
            partition_assignment_strategy=(RangePartitionAssignor,),
        )
        await self._consumer.start()
        self._consumer.subscribe(self.topics, listener=_Listener(self))
        self.stats.running = True
        self.add_future(self._run())

    async def on_stop(self) -> None:
        self.stats.running = False
        try:
            # The loop may be in the middle of a batch: drain() waits for the lock, and once it has
            # drained the loop sees should_stop and publishes nothing more. The lock is released
            # before the consumer stops, which waits for a rebalance listener that may want it.
            await self.drain(commit=True)
        finally:
            if self._consumer is not None:
                await self._consumer.stop()
            if self._producer is not None:
                await self._producer.stop()

    async def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        loop = asyncio.get_running_loop()
        wait_s = self.batch_max_wait_ms / 1000
        while not self.should_stop:
            # Idle: wake up every 100 ms at most (stop, acknowledgements to settle). During a
            # rebalance aiokafka holds getmany until the new assignment is set, so what a call
            # returns belongs to the generation current when it returns.
            try:
                fetched = await consumer.getmany(timeout_ms=100, max_records=self.batch_size)
            except ConsumerStoppedError:
                return
            generation = self._generation
            if not fetched:
                async with self._lock:
                    if not self.should_stop and self._generation == generation:
                        # What time alone settles (outcomes past the join's grace), and the alerts
                        # of a failed batch: not left for the next batch, which may be long to come.
                        idle = list(self._idle()) if self._idle is not None else []
                        if idle or self._resend:
                            await self._publish([], idle)
                    await self._settle_done()
                continue
            records = [r for batch in fetched.values() for r in batch]
            # The batch fills for at most batch_max_wait_ms after its first records arrived: at
            # moderate rates a getmany returns a few dozen records, and every batch pays the same
            # fixed costs (an ONNX Runtime call, the monitors, a produce request per partition).
            deadline = loop.time() + wait_s
            while len(records) < self.batch_size and (left := deadline - loop.time()) > 0:
                try:
                    more = await consumer.getmany(
                        timeout_ms=max(int(left * 1000), 1), max_records=self.batch_size - len(records)
                    )
                except ConsumerStoppedError:
                    return
                if not more:
                    break
                if self._generation != generation:
                    # A rebalance came between the two calls: what came before is of the old
                    # assignment, this call's records of the new one.
                    generation, records = self._generation, []
                records.extend(r for batch in more.values() for r in batch)
            async with self._lock:
                if self.should_stop:
                    return  # stop drained what was published; these are read again after it
                if self._generation != generation:
                    continue  # revoked meanwhile: read again from the committed offsets
                await self._publish(records)
            if self.on_batch is not None:
                self.on_batch(len(records))

    async def _publish(
        self, records: list[ConsumerRecord[bytes, bytes]], extra: Sequence[OutgoingMessage] = ()
    ) -> None:
        outgoing = list(self._handle(records)) if records else []
        outgoing.extend(extra)
        # The incident records of the alerts just raised, after them in their produce request: a
        # worker killed once an alert is on its topic has recorded the alert's incident too, and does
        # not alert the drift again after its restart. (Before them, a kill between the two could
        # leave an open incident whose alert was never published.) Held only while they are handed to
        # the producer: their writer waits meanwhile.
        async with taken_if_pending(self.queued) as taken:
            sent = await self._queue_batch(records, outgoing, taken)
        if not sent:
            await self._rewind()
            return
        await self._settle_done()
        while len(self._in_flight) > self.max_in_flight:
            await self._settle_oldest()

    async def _queue_batch(
        self,
        records: list[ConsumerRecord[bytes, bytes]],
        outgoing: list[OutgoingMessage],
        taken: Sequence[OutgoingMessage] = (),
    ) -> bool:
        """Hands a batch's messages to the producer, after the failed batches' and before ``taken``;
        False if the producer refused them (the caller rewinds)."""
        resend, self._resend = self._resend, []
        again = [m for m in outgoing if m.topic in self.resend_topics] if self.resend_topics else []
        if resend:
            outgoing[:0] = resend
        if taken:
            outgoing.extend(taken)
        offsets: dict[TopicPartition, int] = {}
        first: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            first.setdefault(tp, r.offset)
            offsets[tp] = r.offset + 1
        batch = _InFlight([], offsets, first)
        if resend or again or taken:
            batch.resend = [*resend, *again, *taken]
        self._in_flight.append(batch)
        self.stats.batches += 1
        self.stats.records_in += len(records)
        # What must leave in one produce request: the alerts and the incident records they opened.
        together: frozenset[str] = frozenset()
        if taken or resend:
            together = self.resend_topics | {m.topic for m in (*resend, *taken)}
        try:
            self.stats.messages_out += await self._send(outgoing, batch.futures, together)
        except KafkaError as exc:
            # send_batch waits up to request_timeout_ms for room (the partition's previous batch to
            # go), then raises: the broker is away. This batch goes back with those in flight.
            self.stats.produce_failures += 1
            log.error("serving: publishing a batch failed (%r); rewinding to reprocess it", exc)
            return False
        return True

    def _handle(self, records: list[ConsumerRecord[bytes, bytes]]) -> Iterable[OutgoingMessage]:
        replay = self._replay
        if not replay:
            return self.handler.handle(records)
        # Read again after a rewind: what was handled before is published again but not monitored
        # or joined a second time.
        again: list[ConsumerRecord[bytes, bytes]] = []
        fresh: list[ConsumerRecord[bytes, bytes]] = []
        for r in records:
            (again if r.offset < replay.get((r.topic, r.partition), -1) else fresh).append(r)
        for r in fresh:  # past its mark: what follows of that partition is new too
            replay.pop((r.topic, r.partition), None)
        out = list(self.handler.handle(again, observe=False)) if again else []
        if fresh:
            out.extend(self.handler.handle(fresh))
        return out

    async def _send(
        self,
        outgoing: Iterable[OutgoingMessage],
        futures: list[asyncio.Future[Any]],
        together: frozenset[str] = frozenset(),
    ) -> int:
        """Appends ``outgoing`` to one producer batch per topic-partition and sends them; adds their
        acknowledgements to ``futures``; returns how many messages. The batches of the ``together``
        topics go last, one right after the other (those of :attr:`resend_topics` first), so that
        they leave in one produce request."""
        producer = self._producer
        assert producer is not None
        builders: dict[tuple[str, int], Any] = {}
        count = 0
        for message in outgoing:
            partition = message.partition
            partitions = self._partitions.get(message.topic) or await self._load_partitions(message.topic)
            if partition is None or partition not in partitions:
                # Same partition number as the request where the topics line up; else by key hash.
                partition = int(self._partitioner(message.key, partitions, partitions))
            key = (message.topic, partition)
            builder = builders.get(key)
            if builder is None:
                builder = builders[key] = producer.create_batch()
            headers = {"headers": list(message.headers)} if message.headers else {}
            if builder.append(key=message.key, value=message.value, timestamp=None, **headers) is None:
                # Full: ship it and start another for the same partition.
                futures.append(await self._send_batch(builder, key))
                builder = builders[key] = producer.create_batch()
                builder.append(key=message.key, value=message.value, timestamp=None, **headers)
            count += 1
        last = [(key, b) for key, b in builders.items() if key[0] in together] if together else []
        for key, builder in builders.items():
            if together and key[0] in together:
                continue
            # Closed, the batch is ready at once. aiokafka lets an open batch linger (linger_ms) for
            # send() calls to join it, and holds the partition's next send_batch until it has gone:
            # 5 ms more latency per batch, and a stalled loop when batches come often.
            builder.close()
            futures.append(await self._send_batch(builder, key))
        if last:
            # An alert and its incident record leave in one produce request when they are handed to
            # the producer with no wait between: their partitions must hold no batch still unsent
            # (aiokafka would hold the record's batch until it has gone, and the alert would leave
            # first, alone: a worker killed then had alerted with no incident recorded).
            waits = [f for key, _ in last if (f := self._last_sent.get(key)) is not None and not f.done()]
            if waits:
                await asyncio.wait(waits)
            last.sort(key=lambda item: item[0][0] not in self.resend_topics)  # alerts, then records
            for key, builder in last:
                builder.close()
                futures.append(await self._send_batch(builder, key))
        return count

    async def _send_batch(self, builder: Any, key: tuple[str, int]) -> asyncio.Future[Any]:
        assert self._producer is not None
        future: asyncio.Future[Any] = await self._producer.send_batch(builder, key[0], partition=key[1])
        self._last_sent[key] = future
        return future

    async def _load_partitions(self, topic: str) -> list[int]:
        assert self._producer is not None
        partitions = self._partitions[topic] = sorted(await self._producer.partitions_for(topic))
        return partitions

    async def _settle_done(self) -> None:
        while self._in_flight and all(f.done() for f in self._in_flight[0].futures):
            await self._settle_oldest()

    async def _settle_oldest(self) -> None:
        batch = self._in_flight[0]
        try:
            await asyncio.gather(*batch.futures)
        except KafkaError as exc:
            self.stats.produce_failures += 1
            log.error("serving: publishing a batch failed (%r); rewinding to reprocess it", exc)
            await self._rewind()
            return
        self._in_flight.popleft()
        self._committable.update(batch.offsets)
        self._start_commit()

    def _start_commit(self) -> None:
        """Starts a commit of the acknowledged offsets unless one is running (when it ends, the
        offsets acknowledged meanwhile go in the next)."""
        if self._flushing or not self._committable:
            return
        if self._committing is None or self._committing.done():
            offsets, self._committable = self._committable, {}
            self._committing = asyncio.ensure_future(self._commit(offsets))
            self._committing.add_done_callback(lambda _: self._start_commit())

    async def _flush_commits(self, attempts: int = 3) -> None:
        """Returns once every acknowledged offset is committed, or ``attempts`` commits failed (the
        records after the last commit are then read again by the next owner: duplicates, not loss)."""
        self._flushing = True  # commits are chained here now, not by the done callback
        try:
            if self._committing is not None:
                await asyncio.shield(self._committing)
            for _ in range(attempts):
                if not self._committable:
                    return
                offsets, self._committable = self._committable, {}
                await self._commit(offsets)
            if self._committable:
                log.error(
                    "serving: offsets %s not committed; those records will be read again", self._committable
                )
                self._committable = {}
        finally:
            self._flushing = False

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        consumer = self._consumer
        assert consumer is not None
        owned = consumer.assignment()
        offsets = {tp: o for tp, o in offsets.items() if tp in owned}
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
            self.stats.commits += 1
        except CommitFailedError as exc:
            # The group rebalanced under us; the new owner re-reads from the last commit.
            log.warning("serving: commit failed after a rebalance (%s); records will be re-read", exc)
        except KafkaError as exc:
            # E.g. the coordinator moved: keep the offsets for the next commit (newer ones win).
            log.warning("serving: commit failed (%r); retrying with the next one", exc)
            for tp, offset in offsets.items():
                if offset > self._committable.get(tp, -1):
                    self._committable[tp] = offset
            await asyncio.sleep(0.1)

    async def _rewind(self) -> None:
        """Drops the in-flight batches and seeks back to the first record not yet committed."""
        consumer = self._consumer
        assert consumer is not None
        start: dict[TopicPartition, int] = {}
        for batch in self._in_flight:
            for tp, offset in batch.first.items():
                start.setdefault(tp, offset)
            for tp, offset in batch.offsets.items():
                key = (tp.topic, tp.partition)
                self._replay[key] = max(self._replay.get(key, 0), offset)
            # Alerts among the lost messages: the handler does not make them again (their incident
            # is open), so they go out with the next batch. Those that did get through are sent
            # twice, with the same alert id.
            self._resend.extend(batch.resend)
        for batch in self._in_flight:
            await asyncio.gather(*batch.futures, return_exceptions=True)
        self._in_flight.clear()
        owned = consumer.assignment()
        for tp, offset in start.items():
            if tp in owned:
                consumer.seek(tp, offset)
        self.stats.rewinds += 1

    async def drain(self, *, commit: bool = True) -> None:
        """Waits for every in-flight batch and commits it (used at stop; a rebalance drains through
        :meth:`revoke`)."""
        async with self._lock:
            await self._drain(commit=commit)

    async def revoke(self, partitions: frozenset[TopicPartition]) -> None:
        """Before ``partitions`` are revoked: drains and commits, then runs ``on_revoked``, with no
        batch handled in between (called by the rebalance listener, in aiokafka's coordinator task)."""
        async with self._lock:
            self._generation += 1
            await self._drain(commit=True)
            self._replay.clear()  # the next owner's state is restored, not this worker's
            if self.on_revoked is not None:
                await self.on_revoked(partitions)

    async def assign(self, partitions: frozenset[TopicPartition]) -> None:
        """After ``partitions`` are assigned: runs ``on_assigned`` (the outcome join's restore) before
        the loop handles a batch of them."""
        log.info("serving: assigned %s", sorted((tp.topic, tp.partition) for tp in partitions))
        async with self._lock:
            if self.on_assigned is not None:
                await self.on_assigned(partitions)
            self.stats.assigned = partitions
            self.stats.joined = True

    def partitions_for(self, topic: str) -> set[int]:
        """The partition numbers of ``topic`` in the consumer's metadata (a subscribed topic's are
        known from the first assignment on)."""
        assert self._consumer is not None
        return set(self._consumer.partitions_for_topic(topic) or ())

    async def positions(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """Where the loop will go on reading each of ``partitions`` (assigned ones): their committed
        offsets, right after an assignment. For ``on_assigned``."""
        assert self._consumer is not None
        return {tp: await self._consumer.position(tp) for tp in partitions}

    async def _drain(self, *, commit: bool) -> None:
        # Published as a batch of no records. Unlike alerts, what the handler held is not sent again
        # if the broker refuses it (_publish logs it): a stop or a revocation does not wait for it.
        held = self.held() if self.held is not None else []
        if held or self._resend:
            await self._publish([], held)
        while self._in_flight:
            if commit:
                await self._settle_oldest()
            else:
                await asyncio.gather(*self._in_flight.popleft().futures, return_exceptions=True)
        if commit:
            await self._flush_commits()
        if self._resend:
            log.error(
                "serving: %d alert messages of a failed batch not published yet; "
                "they go out with the next batch, unless the worker stops now",
                len(self._resend),
            )
