"""Publish a stream of messages to Kafka: paced, batched, with delayed outcomes and a summary.

:func:`publish` sends every :class:`~producers.stream.Message` to the requests or outcomes topic by
its kind, keyed by request id, on the partition aiokafka's default partitioner would pick. Messages
are appended to one record batch per partition, and a batch goes to the producer when it is full or
its oldest message has waited ``linger_ms``; the batches' delivery futures are awaited a chunk at a
time, so the broker's acknowledgements (``acks=all``, idempotent, so a retried batch is not written
twice) never stall the loop message by message. ``rate`` paces the events (messages on the requests
topic) with a :class:`TokenBucket`; outcomes are held back ``outcome_delay_s`` of wall-clock time
after their request, and the run ends with every batch sent and acknowledged.

Example (not run here: it needs a broker)::

    import asyncio
    from producers import Progress, generate, publish

    summary = asyncio.run(publish(generate("demo", seed=1), rate=100, progress=Progress()))
    print(summary.format())
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TextIO

from producers.config import ProducerSettings, aiokafka_options
from producers.errors import PublishError
from producers.stream import EventStream, Message, MessageKind

__all__ = ["Progress", "PublishSummary", "TokenBucket", "publish"]

Clock = Callable[[], float]


class TokenBucket:
    """Paces events at ``rate`` per second on average, allowing bursts of up to ``burst`` events.

    :meth:`reserve` takes the tokens at once, going into debt if need be, and returns how long the
    caller should wait; an early or late wake-up is evened out by the next reservations.

    Parameters:
        rate: Events per second, above 0.
        burst: Most events sent back to back after an idle spell; default: 50 ms worth, at least 1.
        clock: Seconds from a monotonic clock.

    Example:
        >>> now = [0.0]
        >>> bucket = TokenBucket(rate=10, burst=2, clock=lambda: now[0])
        >>> [round(bucket.reserve(), 3) for _ in range(4)]
        [0.0, 0.0, 0.1, 0.2]
        >>> now[0] = 1.0  # idle for long: the bucket refills, but only up to the burst
        >>> [round(bucket.reserve(), 3) for _ in range(3)]
        [0.0, 0.0, 0.1]
    """

    def __init__(self, rate: float, burst: float | None = None, clock: Clock = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be above 0, got {rate}")
        self.rate = rate
        self.burst = max(1.0, rate / 20) if burst is None else burst
        self._clock = clock
        self._tokens = self.burst
        self._last = clock()

    def reserve(self, n: float = 1.0) -> float:
        """Takes ``n`` tokens; returns the seconds to wait before sending (0 if none)."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate) - n
        self._last = now
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


class Progress:
    """A progress line on a terminal (or every few seconds into a log): events, rate, elapsed.

    Parameters:
        stream: Where to write; a terminal gets one line rewritten in place.
        interval_s: Least time between updates; default 0.25 s on a terminal, 5 s otherwise.
        clock: Seconds from a monotonic clock.

    Example:
        >>> import io
        >>> now = [0.0]
        >>> out = io.StringIO()
        >>> progress = Progress(out, interval_s=1.0, clock=lambda: now[0])
        >>> now[0] = 0.5; progress.update(500, 400, 3)   # too soon: nothing written
        >>> now[0] = 2.0; progress.update(2000, 1900, 9)
        >>> print(out.getvalue(), end="")
        2,000 events (1,900 outcomes, 9 bad) | 1,000/s | 2.0 s
    """

    def __init__(
        self, stream: TextIO | None = None, interval_s: float | None = None, clock: Clock = time.monotonic
    ) -> None:
        self.stream = sys.stderr if stream is None else stream
        self._tty = self.stream.isatty()
        self.interval = interval_s if interval_s is not None else (0.25 if self._tty else 5.0)
        self._clock = clock
        self._written = False
        self.start()

    def start(self) -> None:
        """Restarts the elapsed time and the rate from now (when the first message goes out)."""
        self._started = self._last = self._clock()
        self._last_events = 0

    def update(self, events: int, outcomes: int, bad: int, *, force: bool = False) -> None:
        """Writes the line if ``interval_s`` has passed since the last one (or if ``force``)."""
        now = self._clock()
        if not force and now - self._last < self.interval:
            return
        rate = (events - self._last_events) / max(now - self._last, 1e-9)
        self._last, self._last_events = now, events
        line = (
            f"{events:,} events ({outcomes:,} outcomes, {bad:,} bad) | {rate:,.0f}/s | "
            f"{now - self._started:.1f} s"
        )
        if self._tty:
            self.stream.write("\r\x1b[2K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self._written = True

    def close(self) -> None:
        """Ends the rewritten line on a terminal."""
        if self._tty and self._written:
            self.stream.write("\n")
            self.stream.flush()


@dataclass(frozen=True)
class PublishSummary:
    """What a :func:`publish` run sent, all of it acknowledged by the brokers.

    Example:
        >>> print(PublishSummary(requests=980, outcomes=900, broken=15, garbage=5, drifts_applied=2,
        ...                      drifts_scheduled=3, sending_s=2.0, duration_s=3.5).format())
        requests 980, outcomes 900, bad messages 20 (15 broken, 5 garbage), drifts applied 2 of 3;
        1,000 events in 2.0 s: 500 events/s; all acknowledged after 3.5 s
    """

    requests: int
    """Valid requests."""
    outcomes: int
    broken: int
    """Requests that break the contract (see :class:`~producers.stream.MessageKind`)."""
    garbage: int
    """Undecodable messages on the requests topic."""
    drifts_applied: int
    """Scheduled drifts that changed at least one event (0 for a plain iterable of messages)."""
    drifts_scheduled: int
    sending_s: float
    """From the first event to the acknowledgement of the last one (and of the outcomes sent so far)."""
    duration_s: float
    """From the first event to the last acknowledgement, delayed outcomes included."""

    @property
    def events(self) -> int:
        """Messages on the requests topic."""
        return self.requests + self.broken + self.garbage

    @property
    def rate(self) -> float:
        """Events per second achieved while sending them."""
        return self.events / self.sending_s if self.sending_s > 0 else 0.0

    def format(self) -> str:
        return (
            f"requests {self.requests:,}, outcomes {self.outcomes:,}, bad messages "
            f"{self.broken + self.garbage:,} ({self.broken:,} broken, {self.garbage:,} garbage), "
            f"drifts applied {self.drifts_applied} of {self.drifts_scheduled};\n"
            f"{self.events:,} events in {self.sending_s:.1f} s: {self.rate:,.0f} events/s; "
            f"all acknowledged after {self.duration_s:.1f} s"
        )


# Below this, a wait is not worth a trip through the event loop: the bucket's debt carries it over
# to the next reservation, so skipping it changes when, not how many.
_MIN_SLEEP_S = 0.002
# Check the delivery futures at least this often, so that a slow paced run reports a broker error soon.
_CHECK_EVERY_S = 1.0


async def publish(
    messages: Iterable[Message],
    *,
    settings: ProducerSettings | None = None,
    rate: float = 0.0,
    outcome_delay_s: float = 0.0,
    progress: Progress | None = None,
    linger_ms: float = 20.0,
    max_batch_bytes: int = 1 << 20,
    chunk: int = 50_000,
    metadata_timeout_s: float = 30.0,
    producer_options: dict[str, Any] | None = None,
) -> PublishSummary:
    """Sends ``messages`` to Kafka and waits until every one is acknowledged.

    Parameters:
        messages: Typically an :class:`~producers.stream.EventStream` (then the summary also counts
            the drifts applied); any iterable of messages works.
        settings: Bootstrap servers, SASL/TLS and topic names; from the environment if ``None``.
        rate: Events per second (messages on the requests topic); 0 for as fast as possible.
        outcome_delay_s: Wall-clock time an outcome is held back after its request.
        progress: Where to report progress, if anywhere.
        linger_ms: Longest time a message waits for its batch to fill before the batch is sent.
        max_batch_bytes: Largest batch per partition (at most the broker's ``message.max.bytes``).
        chunk: Most messages sent but not yet acknowledged; beyond it, the run waits for the acks.
        metadata_timeout_s: How long to wait for the topics' metadata before giving up.
        producer_options: More ``AIOKafkaProducer`` keyword arguments, overriding the ones above.
    """
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    settings = ProducerSettings() if settings is None else settings
    where = settings.kafka.bootstrap_servers
    options: dict[str, Any] = {
        **aiokafka_options(settings.kafka),
        "acks": "all",
        # Idempotent, so that a batch the producer retries after a lost acknowledgement is not
        # written twice: a consumer counting the run's messages sees exactly what was sent.
        "enable_idempotence": True,
        "max_batch_size": max_batch_bytes,
        **(producer_options or {}),
    }
    producer = AIOKafkaProducer(**options)
    try:
        await producer.start()
    except (KafkaError, OSError) as exc:
        await producer.stop()
        raise PublishError(f"cannot reach Kafka at {where}: {exc!r}") from exc
    try:
        hashes = _KeyHashes()
        batches = [
            _Batches(producer, topic, await _partitions(producer, topic, where, metadata_timeout_s), hashes)
            for topic in (settings.topics.requests, settings.topics.outcomes)
        ]
        requests, outcomes = batches
        if progress is not None:
            progress.start()
        sender = _Sender(requests, outcomes, linger_ms / 1000, chunk, progress)
        counts, sending, duration = await sender.run(messages, rate, outcome_delay_s)
    except KafkaError as exc:
        raise PublishError(f"Kafka at {where} did not take the messages: {exc!r}") from exc
    finally:
        if progress is not None:
            progress.close()
        await producer.stop()
    stats = messages.stats if isinstance(messages, EventStream) else None
    return PublishSummary(
        requests=counts[MessageKind.REQUEST],
        outcomes=counts[MessageKind.OUTCOME],
        broken=counts[MessageKind.BROKEN],
        garbage=counts[MessageKind.GARBAGE],
        drifts_applied=stats.drifts_applied if stats is not None else 0,
        drifts_scheduled=len(stats.affected) if stats is not None else 0,
        sending_s=sending,
        duration_s=duration,
    )


class _TopicNotFoundYet(logging.Filter):
    """Drops aiokafka's ERROR "Topic X not found in cluster metadata" for one topic: a broker that
    creates topics on first use answers the first metadata request that way, which is no error."""

    def __init__(self, topic: str) -> None:
        super().__init__()
        self.topic = topic

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.args == (self.topic,) and "not found in cluster metadata" in str(record.msg))


async def _partitions(producer: Any, topic: str, where: str, timeout_s: float) -> list[int]:
    from aiokafka.errors import KafkaError

    # Asks for the metadata before the first message, so that a missing topic (on a broker that does
    # not create topics on first use) fails here, naming it, rather than as a timeout mid-run.
    quiet = _TopicNotFoundYet(topic)
    logger = logging.getLogger("aiokafka.cluster")
    logger.addFilter(quiet)
    try:
        async with asyncio.timeout(timeout_s):
            return sorted(await producer.partitions_for(topic))
    except (TimeoutError, KafkaError) as exc:
        raise PublishError(
            f"no metadata for topic {topic!r} from {where} within {timeout_s:g} s: does it exist? "
            "(`driftline run` creates its topics)"
        ) from exc
    finally:
        logger.removeFilter(quiet)


class _KeyHashes(dict[bytes, int]):
    """The default partitioner's murmur2 hash of each key, remembered for a while.

    aiokafka computes murmur2 in pure Python, the costliest step of a send; an outcome has the key
    of its request, so remembering the hash halves that cost (a dict hit costs no Python call). The
    hash, not the partition, is kept, so topics with different partition counts can share it.
    """

    def __init__(self, capacity: int = 1 << 17) -> None:
        from aiokafka.partitioner import murmur2

        super().__init__()
        self._murmur2 = murmur2
        self._capacity = capacity

    def __missing__(self, key: bytes) -> int:
        if len(self) >= self._capacity:
            self.clear()
        # As aiokafka's DefaultPartitioner (and the Java client) for a non-null key.
        value: int = self._murmur2(key) & 0x7FFFFFFF
        self[key] = value
        return value


class _Batches:
    """One open record batch per partition of a topic, handed to the producer as a whole.

    ``AIOKafkaProducer.send`` costs a coroutine, a future and a partition lookup per message; filling
    batches directly (``create_batch``/``send_batch``) is several times faster and leaves one
    delivery future per batch. The partition is the producer's own default (murmur2 of the key, as
    in the Java client), so a request and its outcome land on the same partition number.
    """

    def __init__(self, producer: Any, topic: str, partitions: list[int], hashes: _KeyHashes) -> None:
        self.producer = producer
        self.topic = topic
        self.partitions = partitions
        self.hashes = hashes
        self.open: dict[int, Any] = {}
        self.counts: dict[int, int] = {}
        self.oldest: float | None = None
        """When the oldest message of the open batches was added."""
        self.futures: list[asyncio.Future[Any]] = []
        self.in_flight = 0

    def partition_of(self, key: bytes) -> int:
        return self.partitions[self.hashes[key] % len(self.partitions)]

    async def add(self, key: bytes, value: bytes, now: float) -> None:
        partition = self.partitions[self.hashes[key] % len(self.partitions)]
        batch = self.open.get(partition)
        if batch is None:
            batch = self.open[partition] = self.producer.create_batch()
            self.counts[partition] = 0
        if batch.append(key=key, value=value, timestamp=None) is None:
            await self._submit(partition)
            batch = self.open[partition] = self.producer.create_batch()
            self.counts[partition] = 0
            if batch.append(key=key, value=value, timestamp=None) is None:
                raise PublishError(f"a message of {len(value)} bytes does not fit in a batch")
        self.counts[partition] += 1
        if self.oldest is None:
            self.oldest = now

    async def submit_all(self) -> None:
        for partition in list(self.open):
            await self._submit(partition)
        self.oldest = None

    async def _submit(self, partition: int) -> None:
        batch = self.open.pop(partition)
        batch.close()
        # Waits while the partition's previous batch is still queued: the producer's backpressure.
        self.futures.append(await self.producer.send_batch(batch, self.topic, partition=partition))
        self.in_flight += self.counts.pop(partition)

    async def wait_acknowledged(self) -> None:
        if self.futures:
            await asyncio.gather(*self.futures)
        self.futures.clear()
        self.in_flight = 0

    def check_failures(self) -> None:
        """Raises a failed delivery's error now, without waiting for the ones still in flight."""
        for future in self.futures:
            if future.done() and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]
        self.futures = [f for f in self.futures if not f.done()]


class _Sender:
    def __init__(
        self,
        requests: _Batches,
        outcomes: _Batches,
        linger_s: float,
        chunk: int,
        progress: Progress | None,
    ) -> None:
        self.requests = requests
        self.outcomes = outcomes
        self.linger_s = linger_s
        self.chunk = chunk
        self.progress = progress
        self.counts = dict.fromkeys(MessageKind, 0)

    async def run(
        self, messages: Iterable[Message], rate: float, outcome_delay_s: float
    ) -> tuple[dict[MessageKind, int], float, float]:
        clock = time.monotonic
        counts = self.counts
        requests, outcomes = self.requests, self.outcomes
        bucket = TokenBucket(rate) if rate > 0 else None
        held: deque[tuple[float, Message]] = deque()  # due times only grow: the delay is constant
        started = last_check = clock()
        linger = self.linger_s
        for message in messages:
            kind = message.kind
            now = clock()
            if kind is MessageKind.OUTCOME:
                if outcome_delay_s > 0:
                    held.append((now + outcome_delay_s, message))
                else:
                    await outcomes.add(message.key, message.value, now)
                    counts[kind] += 1
                continue
            if bucket is not None:
                wait = bucket.reserve()
                if wait > _MIN_SLEEP_S:
                    # Nothing should linger in a batch while the run sleeps.
                    await self._submit_all()
                    await asyncio.sleep(wait)
                    now = clock()
            if held and held[0][0] <= now:
                await self._release(held, now)
            await requests.add(message.key, message.value, now)
            counts[kind] += 1
            if (requests.oldest is not None and now - requests.oldest >= linger) or (
                outcomes.oldest is not None and now - outcomes.oldest >= linger
            ):
                await self._submit_all()
            if requests.in_flight + outcomes.in_flight >= self.chunk:
                await self._submit_all()
                await requests.wait_acknowledged()
                await outcomes.wait_acknowledged()
            elif now - last_check >= _CHECK_EVERY_S:
                requests.check_failures()
                outcomes.check_failures()
                last_check = now
            if self.progress is not None:
                self._report()
        await self._submit_all()
        await requests.wait_acknowledged()
        await outcomes.wait_acknowledged()
        sending = clock() - started
        while held:
            await self._submit_all()
            await asyncio.sleep(max(0.0, held[0][0] - clock()))
            await self._release(held, clock())
            if self.progress is not None:
                self._report()
        await self._submit_all()
        await requests.wait_acknowledged()
        await outcomes.wait_acknowledged()
        duration = clock() - started
        if self.progress is not None:
            self._report(force=True)
        return counts, sending, duration

    async def _submit_all(self) -> None:
        await self.requests.submit_all()
        await self.outcomes.submit_all()

    async def _release(self, held: deque[tuple[float, Message]], now: float) -> None:
        while held and held[0][0] <= now:
            message = held.popleft()[1]
            await self.outcomes.add(message.key, message.value, now)
            self.counts[MessageKind.OUTCOME] += 1

    def _report(self, *, force: bool = False) -> None:
        assert self.progress is not None
        counts = self.counts
        bad = counts[MessageKind.BROKEN] + counts[MessageKind.GARBAGE]
        events = counts[MessageKind.REQUEST] + bad
        self.progress.update(events, counts[MessageKind.OUTCOME], bad, force=force)
