"""The incident gate: one alert per incident, until it recovers or its cooldown has passed.

A detector that sees drift keeps seeing it on every batch until the stream is back to normal; without a
gate each of those batches would page someone. An *incident* is keyed by (model, kind, subject): the
first alert for a key opens it and is published; later alerts for the same key are suppressed until

* the monitor says the key has recovered (:meth:`IncidentManager.recover`), which closes the incident,
  so the next alert opens a new one; or
* ``cooldown_s`` has passed since the incident's last published alert: the drift is still there, and
  one reminder is published (the incident stays open).

The state lives in an :class:`IncidentStore`. :class:`KafkaIncidentStore` keeps it in a compacted topic
(one record per open incident, a tombstone when it closes) so that a restarted worker does not alert an
ongoing incident again, and tails that topic so that every worker of a deployment shares one view: a
second worker seeing the same drift does not alert either. The window in which two workers can both
open the same incident is the time the first one's record takes to reach the second (about a Kafka
round trip); receivers that must never see a duplicate drop it by ``(model, kind, subject)`` and time.

Wall-clock time (``time.time``) is used on purpose: incident times are shared between processes and
survive restarts, which a monotonic clock's are not.

Example:
    >>> from datetime import datetime, UTC
    >>> from schemas import Alert, AlertKind, Severity
    >>> now = [0.0]
    >>> gate = IncidentManager(InMemoryIncidentStore(), cooldown_s=900, clock=lambda: now[0])
    >>> def alert(event: int) -> Alert:
    ...     return Alert.create(
    ...         model="m", model_version="1", kind=AlertKind.DATA, detector="adwin", subject="x",
    ...         severity=Severity.WARNING, message="x drifted", opened_at_event=event,
    ...         detected_at=datetime(2026, 1, 1, tzinfo=UTC),
    ...     )
    >>> [gate.admit(alert(i)) for i in range(3)]  # a storm: only the first is published
    [True, False, False]
    >>> now[0] = 900.0  # still drifting after the cooldown: one reminder
    >>> gate.admit(alert(3)), gate.admit(alert(4))
    (True, False)
    >>> gate.recover(IncidentKey("m", "data", "x"))  # back to normal: the next drift alerts at once
    True
    >>> gate.admit(alert(5))
    True
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, NamedTuple, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, TopicPartition

from agent.errors import ServiceUnavailableError
from agent.metrics import Metrics
from schemas import Alert

__all__ = [
    "InMemoryIncidentStore",
    "Incident",
    "IncidentKey",
    "IncidentListener",
    "IncidentManager",
    "IncidentStore",
    "KafkaIncidentStore",
]

log = logging.getLogger(__name__)


class IncidentKey(NamedTuple):
    """What an incident is about: at most one is open per key."""

    model: str
    kind: str
    """An :class:`~schemas.AlertKind` value (``data``, ``prediction``, ``concept``, ``technical``)."""
    subject: str

    @classmethod
    def of(cls, alert: Alert) -> IncidentKey:
        """The key of the incident ``alert`` belongs to."""
        return cls(alert.model, str(alert.kind), alert.subject)


@dataclass(frozen=True)
class Incident:
    """An open incident, as stored: times are wall-clock seconds since the epoch."""

    key: IncidentKey
    alert_id: str
    """Id of the alert that opened it."""
    opened_at: float
    last_alerted_at: float
    """When its last alert (the opening one or a reminder) was admitted."""
    alerts: int = 1
    """Alerts published for it: the opening one plus reminders."""

    def to_json(self) -> bytes:
        data = asdict(self)
        data["key"] = list(self.key)
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Incident:
        data = json.loads(raw)
        return cls(
            key=IncidentKey(*data["key"]),
            alert_id=str(data["alert_id"]),
            opened_at=float(data["opened_at"]),
            last_alerted_at=float(data["last_alerted_at"]),
            alerts=int(data.get("alerts", 1)),
        )


IncidentListener = Callable[[IncidentKey, Incident | None], None]
"""Called with a key and its incident, or None when it closed."""


class IncidentStore(Protocol):
    """Where incidents are kept, and how changes made elsewhere (another worker) come in."""

    def attach(self, listener: IncidentListener) -> None:
        """Registers ``listener`` for changes this store did not make itself, including the ones
        restored at start."""

    def put(self, key: IncidentKey, incident: Incident | None) -> None:
        """Records ``incident`` (None: closed). Must not block: it is called from the serving loop."""

    async def start(self) -> None:
        """Restores the stored incidents (through the listeners) before returning."""

    async def stop(self) -> None:
        """Writes what is still pending and releases the store's clients."""


class InMemoryIncidentStore:
    """A store in process memory: for tests, and for a single worker that may re-alert after a restart.

    Several managers attached to one instance behave like workers sharing a Kafka store: each change
    one makes reaches the others' listeners at once.
    """

    def __init__(self) -> None:
        self.incidents: dict[IncidentKey, Incident] = {}
        self._listeners: list[IncidentListener] = []

    def attach(self, listener: IncidentListener) -> None:
        self._listeners.append(listener)
        for key, incident in self.incidents.items():
            listener(key, incident)

    def put(self, key: IncidentKey, incident: Incident | None) -> None:
        if incident is None:
            self.incidents.pop(key, None)
        else:
            self.incidents[key] = incident
        # The writer already applied its own change; every listener re-applying it is harmless.
        for listener in self._listeners:
            listener(key, incident)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class IncidentManager:
    """Decides whether an alert is published: one per open incident, reminders after ``cooldown_s``.

    Thread-safe: ``admit`` and ``recover`` may be called from the serving loop or from a worker thread,
    while the store's listener applies other workers' changes.

    Parameters:
        store: Where incidents persist (:class:`KafkaIncidentStore` in a worker).
        cooldown_s: An incident still open this long after its last alert is alerted again.
        clock: Wall-clock seconds; injected by tests.
        metrics: Counts suppressed alerts (``driftline_alerts_suppressed``), if given.
    """

    def __init__(
        self,
        store: IncidentStore,
        *,
        cooldown_s: float = 900.0,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        if cooldown_s <= 0:
            raise ValueError("cooldown_s must be positive")
        self.store = store
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._metrics = metrics
        self._open: dict[IncidentKey, Incident] = {}
        self._lock = threading.Lock()
        self.admitted = 0
        self.suppressed = 0
        store.attach(self._apply)

    def admit(self, alert: Alert) -> bool:
        """True if ``alert`` should be published: it opens an incident, or reminds of one after the
        cooldown. False while its incident is open and was alerted less than ``cooldown_s`` ago."""
        key = IncidentKey.of(alert)
        now = self._clock()
        with self._lock:
            current = self._open.get(key)
            if current is None:
                incident = Incident(key, alert.alert_id, opened_at=now, last_alerted_at=now)
            elif now - current.last_alerted_at >= self.cooldown_s:
                incident = replace(current, last_alerted_at=now, alerts=current.alerts + 1)
            else:
                self.suppressed += 1
                if self._metrics is not None:
                    self._metrics.alerts_suppressed.labels(model=key.model, kind=key.kind).inc()
                return False
            self._open[key] = incident
            self.admitted += 1
        self.store.put(key, incident)
        if current is None:
            log.info("incident opened: %s/%s/%s by alert %s", *key, alert.alert_id)
        else:
            age = now - current.opened_at
            log.info("incident %s/%s/%s still open after %.0f s: reminder %s", *key, age, alert.alert_id)
        return True

    def recover(self, key: IncidentKey) -> bool:
        """Closes the incident for ``key`` (the monitor saw the stream back to normal); the next alert
        for it is published at once. Returns whether an incident was open. Cheap when none is."""
        with self._lock:
            incident = self._open.pop(key, None)
        if incident is None:
            return False
        self.store.put(key, None)
        log.info("incident closed: %s/%s/%s after %.0f s", *key, self._clock() - incident.opened_at)
        return True

    def is_open(self, key: IncidentKey) -> bool:
        """Whether an incident for ``key`` is open (here or, as far as known, on another worker)."""
        with self._lock:
            return key in self._open

    def open_incidents(self) -> list[Incident]:
        """The open incidents, oldest first."""
        with self._lock:
            return sorted(self._open.values(), key=lambda i: i.opened_at)

    def _apply(self, key: IncidentKey, incident: Incident | None) -> None:
        with self._lock:
            if incident is None:
                self._open.pop(key, None)
            else:
                self._open[key] = incident


class KafkaIncidentStore:
    """Incidents in a compacted Kafka topic: a record per open incident, keyed by its
    :class:`IncidentKey`, and a tombstone when it closes.

    ``start`` creates the topic (compacted, one partition: the volume is tiny and one partition keeps
    every reader's view in one order) if it is missing, reads it to its end within
    ``restore_timeout_s``, then keeps reading it in the background so that changes from other workers
    arrive. ``put`` only queues the record; a background task produces it. Each record carries the
    writer's id in a header so that a store skips its own records when they come back: applying them
    again could undo a newer local change for a moment.

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
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._start_lock = asyncio.Lock()
        self._started = False

    def attach(self, listener: IncidentListener) -> None:
        self._listeners.append(listener)

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

    async def _write(self) -> None:
        producer = self._producer
        assert producer is not None
        backoff = 0.1
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                key, incident = self._pending[0]
                try:
                    await producer.send_and_wait(
                        self.topic,
                        key=json.dumps(list(key), separators=(",", ":")).encode(),
                        value=None if incident is None else incident.to_json(),
                        headers=[(self._HEADER, self._writer_id)],
                    )
                except KafkaError as exc:
                    # Keep the record and retry: losing it only means a duplicate alert after a restart,
                    # but there is no reason to lose it.
                    log.warning("incident store: writing to %s failed (%r); retrying", self.topic, exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 10.0)
                    continue
                backoff = 0.1
                self._pending.popleft()
                self.written += 1
