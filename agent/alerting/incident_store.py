"""Incidents in a compacted Kafka topic, shared by every worker of a deployment and kept across restarts.

The Kafka-backed :class:`~agent.monitoring.incidents.IncidentStore`: the incident gate itself is
monitoring's (:mod:`agent.monitoring.incidents`); this is its transport.

May import: :mod:`agent.monitoring.incidents`, :mod:`agent.serving.messages`, :mod:`agent.errors`,
:mod:`agent.kafka`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, TopicPartition

from agent.errors import ServiceUnavailableError
from agent.monitoring.incidents import Incident, IncidentKey, IncidentListener
from agent.retry import Backoff
from agent.serving.messages import OutgoingMessage

__all__ = ["KafkaIncidentStore"]

log = logging.getLogger(__name__)


class KafkaIncidentStore:
    """Incidents in a compacted Kafka topic: a record per open incident, keyed by its
    :class:`IncidentKey`, and a tombstone when it closes.

    ``start`` creates the topic (compacted, one partition: the volume is tiny and one partition keeps
    every reader's view in one order) if it is missing, reads it to its end within
    ``restore_timeout_s``, then keeps reading it in the background so that changes from other workers
    arrive. ``put`` only queues the record; a background task produces it. Each record carries the
    writer's id in a header so that a store skips its own records when they come back: applying them
    again could undo a newer local change for a moment.

    :meth:`taken` hands the queued records to a caller that publishes them itself, in one produce
    request with the alerts they belong to: the fleet monitor and the serving loop do, so that a
    worker killed the moment its alert is on the alerts topic has written the alert's incident too
    (written apart, by this store's own producer a few milliseconds later, the kill could land between
    the two, and the next host, or the worker restarted, alerted the drift again). It is a
    :class:`~agent.serving.messages.QueuedRecords`.

    Parameters:
        topic: The compacted incidents topic.
        client_options: aiokafka options (:func:`agent.kafka.aiokafka_options`).
        restore_timeout_s: Longest wait to read the topic to its end at start.
        replication_factor: Of the topic, when it is created.
    """

    _HEADER = "driftline-writer"

    def __init__(
        self,
        topic: str,
        client_options: dict[str, Any],
        *,
        restore_timeout_s: float = 10.0,
        replication_factor: int = 1,
    ) -> None:
        self.topic = topic
        self.restore_timeout_s = restore_timeout_s
        self.replication_factor = replication_factor
        self.restored = 0
        """Records applied while restoring at start."""
        self.received = 0
        """Records from other writers applied since."""
        self.written = 0
        self._options = client_options
        self._writer_id = uuid.uuid4().hex.encode()
        self._listeners: list[IncidentListener] = []
        self._pending: deque[tuple[IncidentKey, Incident | None]] = deque()
        self._sending = asyncio.Lock()
        """Held while a record is written, by this store's writer or by a :meth:`taken` caller: the
        records of one key reach the topic in the order they were put."""
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._start_lock = asyncio.Lock()
        self._started = False

    def attach(self, listener: IncidentListener) -> None:
        self._listeners.append(listener)

    @property
    def pending(self) -> int:
        """Records queued and not yet written; 0 until :meth:`start` has made sure of the topic (a
        producer of the app's own would create it, not compacted, where brokers create topics)."""
        return len(self._pending) if self._started else 0

    def put(self, key: IncidentKey, incident: Incident | None) -> None:
        self._pending.append((key, incident))
        loop = self._loop
        if loop is None:
            return  # not started yet: start() writes what queued up
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wakeup.set()
        else:
            loop.call_soon_threadsafe(self._wakeup.set)

    async def start(self) -> None:
        """Restores the topic into the listeners and starts tailing it. Idempotent: the app may start
        the store from more than one place, and only the first call does the work."""
        async with self._start_lock:
            if self._started:
                return
            await self._start()
            self._started = True

    async def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            await self._ensure_topic()
            self._producer = AIOKafkaProducer(**self._options, acks="all", linger_ms=5)
            await self._producer.start()
            self._consumer = AIOKafkaConsumer(**self._options, enable_auto_commit=False)
            await self._consumer.start()
            # Waits for the topic's metadata: a topic created a moment ago may not be in it yet.
            async with asyncio.timeout(self.restore_timeout_s):
                partitions = sorted(await self._producer.partitions_for(self.topic))
        except (KafkaError, OSError, TimeoutError) as exc:
            await self.stop()
            raise ServiceUnavailableError(
                f"incident store: Kafka did not answer for topic {self.topic!r}: {exc!r}"
            ) from exc
        consumer = self._consumer
        tps = [TopicPartition(self.topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.restore_timeout_s):
                while any([await consumer.position(tp) < end[tp] for tp in tps]):
                    batches = await consumer.getmany(*tps, timeout_ms=200)
                    self.restored += self._apply_records(batches, skip_own=False)
        except TimeoutError:
            log.error(
                "incident store: %s not read to its end within %g s (%d records so far); starting "
                "anyway, so an ongoing incident may be alerted once more",
                self.topic,
                self.restore_timeout_s,
                self.restored,
            )
        else:
            log.info(
                "incident store: restored %d records from %s in %.2f s",
                self.restored,
                self.topic,
                time.perf_counter() - started,
            )
        self._tasks = [
            asyncio.create_task(self._tail(tps), name="incident-store-tail"),
            asyncio.create_task(self._write(), name="incident-store-write"),
        ]
        if self._pending:
            self._wakeup.set()

    async def stop(self, drain_timeout_s: float = 5.0) -> None:
        """Writes what is pending (for at most ``drain_timeout_s``), then stops the clients. Idempotent."""
        self._started = False
        writer = self._tasks[1] if len(self._tasks) == 2 else None
        if writer is not None and self._pending and not writer.done():
            try:
                async with asyncio.timeout(drain_timeout_s):
                    while self._pending and not writer.done():
                        self._wakeup.set()
                        await asyncio.sleep(0.01)
            except TimeoutError:
                log.error("incident store: %d records not written at stop", len(self._pending))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def _ensure_topic(self) -> None:
        admin = AIOKafkaAdminClient(**self._options)
        await admin.start()
        try:
            if self.topic in set(await admin.list_topics()):
                return
            topic = NewTopic(
                self.topic,
                num_partitions=1,
                replication_factor=self.replication_factor,
                # segment.ms: compaction never touches the active segment; roll it hourly so that a
                # low-volume topic is compacted at all.
                topic_configs={"cleanup.policy": "compact", "segment.ms": str(3600 * 1000)},
            )
            response = await admin.create_topics([topic])
            for _, code, *_ in getattr(response, "topic_errors", ()):
                if code not in (0, 36):  # 36: TOPIC_ALREADY_EXISTS (another worker won the race)
                    raise ServiceUnavailableError(
                        f"incident store: creating topic {self.topic!r} failed with Kafka error code {code}"
                    )
            log.info("incident store: created compacted topic %s", self.topic)
        finally:
            await admin.close()

    def _apply_records(
        self, batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]], *, skip_own: bool
    ) -> int:
        applied = 0
        for records in batches.values():
            for record in records:
                if skip_own and (self._HEADER, self._writer_id) in (record.headers or ()):
                    continue
                try:
                    key = IncidentKey(*json.loads(record.key))
                    incident = None if record.value is None else Incident.from_json(record.value)
                except (ValueError, TypeError, KeyError) as exc:
                    log.warning("incident store: skipping a bad record at offset %d: %r", record.offset, exc)
                    continue
                for listener in self._listeners:
                    listener(key, incident)
                applied += 1
        return applied

    async def _tail(self, tps: list[TopicPartition]) -> None:
        consumer = self._consumer
        assert consumer is not None
        while True:
            try:
                batches = await consumer.getmany(*tps, timeout_ms=1000)
            except Exception as exc:  # the consumer reconnects by itself; keep tailing
                log.warning("incident store: reading %s failed: %r", self.topic, exc)
                await asyncio.sleep(1.0)
                continue
            self.received += self._apply_records(batches, skip_own=True)

    def _message(self, key: IncidentKey, incident: Incident | None) -> OutgoingMessage:
        return OutgoingMessage(
            self.topic,
            json.dumps(list(key), separators=(",", ":")).encode(),
            None if incident is None else incident.to_json(),
            headers=((self._HEADER, self._writer_id),),
        )

    @asynccontextmanager
    async def taken(self) -> AsyncIterator[list[OutgoingMessage]]:
        """The records queued so far, for the caller to publish within the ``async with`` block (a
        caller that may run before :meth:`start` checks :attr:`pending` first); they count as written
        when it ends without an error, and go back to the front of the queue when it raises.
        Meanwhile this store's writer waits (and a record it was writing is written first), so that
        no later record of a key can overtake them."""
        async with self._sending:
            taken = []
            while self._pending:  # put() may append from another thread meanwhile
                taken.append(self._pending.popleft())
            try:
                yield [self._message(key, incident) for key, incident in taken]
            except BaseException:
                self._pending.extendleft(reversed(taken))
                raise
            self.written += len(taken)

    async def _write(self) -> None:
        producer = self._producer
        assert producer is not None
        backoff = Backoff(0.1, 10.0)
        failures = 0
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                async with self._sending:
                    if not self._pending:
                        break  # taken meanwhile
                    message = self._message(*self._pending[0])
                    try:
                        await producer.send_and_wait(
                            message.topic, key=message.key, value=message.value, headers=list(message.headers)
                        )
                    except KafkaError as exc:
                        # Keep the record and retry: losing it only means a duplicate alert after a
                        # restart, but there is no reason to lose it.
                        log.warning("incident store: writing to %s failed (%r); retrying", self.topic, exc)
                        failures += 1
                    else:
                        failures = 0
                        self._pending.popleft()
                        self.written += 1
                        continue
                await asyncio.sleep(backoff.delay(failures))
