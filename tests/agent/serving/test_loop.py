"""The serving loop against a rebalance listener running beside it, as aiokafka runs it.

aiokafka calls the rebalance listener from its coordinator task while the loop's own task may be in the
middle of a batch. These tests put the two side by side with Kafka clients replaced by fakes whose
acknowledgements the test completes by hand, so that each interleaving happens exactly when the test
says (the real clients are exercised by tests/integration/test_streaming.py and the churn test in
tests/integration/test_reliability.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from agent.serving.handler import Record
from agent.serving.loop import ServingLoop, _Listener
from agent.serving.messages import OutgoingMessage

TP = TopicPartition("in", 0)


class Echo:
    """Republishes each record to ``out``; counts the batches and records it saw."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def handle(self, records: Sequence[Any], *, observe: bool = True) -> list[OutgoingMessage]:
        self.batches.append([r.offset for r in records])
        return [OutgoingMessage("out", r.key, r.value, 0) for r in records]


class FakeBatch:
    def __init__(self) -> None:
        self.messages: list[tuple[bytes | None, bytes | None]] = []
        self.headers: list[list[tuple[str, bytes]]] = []

    def append(
        self,
        *,
        key: bytes | None,
        value: bytes | None,
        timestamp: None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> object:
        self.messages.append((key, value))
        self.headers.append(headers or [])
        return object()

    def close(self) -> None:
        pass


class FakeProducer:
    """Every send_batch returns a future that the test resolves (an acknowledgement) or fails."""

    def __init__(self) -> None:
        self.acks: list[asyncio.Future[Any]] = []
        self.sent: list[tuple[str, FakeBatch]] = []

    def create_batch(self) -> FakeBatch:
        return FakeBatch()

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> asyncio.Future[Any]:
        ack = asyncio.get_running_loop().create_future()
        self.acks.append(ack)
        self.sent.append((topic, batch))
        return ack

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}


class FakeConsumer:
    """Hands out the batches the test queues; records commits and seeks."""

    def __init__(self) -> None:
        self.queued: list[list[Record]] = []
        self.commits: list[dict[TopicPartition, int]] = []
        self.seeks: list[tuple[TopicPartition, int]] = []

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Record]]:
        if not self.queued:
            await asyncio.sleep(min(timeout_ms, 5) / 1000)
        return {TP: self.queued.pop(0)} if self.queued else {}

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))


def records(first: int, n: int) -> list[Record]:
    return [Record("in", 0, o, f"k{o}".encode(), f"v{o}".encode()) for o in range(first, first + n)]


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.001)


class Harness:
    def __init__(self, handler: Echo | None = None, **options: Any) -> None:
        self.handler = handler or Echo()
        self.consumer = FakeConsumer()
        self.producer = FakeProducer()
        self.loop = ServingLoop(
            topics=["in"],
            handler=self.handler,
            consumer_options={},
            producer_options={},
            group_id="g",
            freeze_heap=False,
            **{"batch_max_wait_ms": 0, **options},
        )
        self.loop._consumer = self.consumer  # type: ignore[assignment]
        self.loop._producer = self.producer  # type: ignore[assignment]
        self.listener = _Listener(self.loop)

    async def __aenter__(self) -> Harness:
        self.task = asyncio.ensure_future(self.loop._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        # The loop must still be running: an exception in it would have ended it.
        assert not self.task.done(), self.task
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def test_a_revocation_while_the_loop_settles_a_batch_drains_each_batch_once() -> None:
    # Reported on main: the loop, over max_in_flight, awaits batch 1's acknowledgement; the listener's
    # drain awaits the same one. Both then popleft(): batch 2 left the queue unawaited, its failed
    # produce went unnoticed, and a later commit went past it.
    async with Harness(max_in_flight=1) as h:
        h.consumer.queued += [records(0, 10), records(10, 10)]
        await until(lambda: len(h.producer.acks) == 2)  # the loop now waits for batch 1's ack
        revoking = asyncio.ensure_future(h.listener.on_partitions_revoked({TP}))
        await asyncio.sleep(0.01)
        h.producer.acks[0].set_result(None)
        await asyncio.sleep(0.01)
        h.producer.acks[1].set_exception(KafkaError("batch 2 not acknowledged"))
        await asyncio.wait_for(revoking, 5)
        # Batch 1 committed; batch 2 never, and the consumer rewound to its first record.
        assert h.consumer.commits == [{TP: 10}]
        assert h.consumer.seeks == [(TP, 10)]
        assert h.loop.stats.rewinds == 1 and not h.loop._in_flight
    assert h.handler.batches == [list(range(10)), list(range(10, 20))]


async def test_records_fetched_before_a_revocation_are_not_handled_after_it() -> None:
    revoked: list[tuple[frozenset[TopicPartition], int]] = []
    # A batch fills for 200 ms: the revocation comes while the second batch waits for more records.
    async with Harness(batch_max_wait_ms=200) as h:

        async def on_revoked(partitions: frozenset[TopicPartition]) -> None:
            revoked.append((partitions, len(h.loop._in_flight)))

        h.loop.on_revoked = on_revoked
        h.consumer.queued.append(records(0, 10))
        await until(lambda: len(h.producer.acks) == 1)
        h.consumer.queued.append(records(10, 10))
        await until(lambda: not h.consumer.queued)
        revoking = asyncio.ensure_future(h.listener.on_partitions_revoked({TP}))
        await asyncio.sleep(0.3)  # the second batch is now complete, and waits for the listener
        h.producer.acks[0].set_result(None)
        await asyncio.wait_for(revoking, 5)
        await asyncio.sleep(0.05)
        # on_revoked ran with nothing in flight. The second batch was dropped, not published or
        # remembered for a partition this worker may no longer own: aiokafka restarts a new
        # assignment at its committed offset, 10, so it is read again.
        assert revoked == [(frozenset({TP}), 0)]
        assert h.consumer.commits == [{TP: 10}]
        assert h.handler.batches == [list(range(10))] and len(h.producer.acks) == 1


async def test_no_batch_is_handled_until_the_assigned_partitions_state_is_restored() -> None:
    restored = asyncio.Event()
    async with Harness() as h:

        async def on_assigned(partitions: frozenset[TopicPartition]) -> None:
            await restored.wait()  # a changelog being read back

        h.loop.on_assigned = on_assigned
        assigning = asyncio.ensure_future(h.listener.on_partitions_assigned({TP}))
        await asyncio.sleep(0.01)
        h.consumer.queued.append(records(0, 10))  # the first records of the new assignment
        await asyncio.sleep(0.05)
        assert h.handler.batches == [] and not h.loop.stats.joined
        restored.set()
        await asyncio.wait_for(assigning, 5)
        await until(lambda: len(h.handler.batches) == 1)
        assert h.loop.stats.joined and h.loop.stats.assigned == frozenset({TP})


class Gate(Echo):
    """Echo, plus an alert the first time it observes offset 5 (as the incident gate admits a drift
    once); records handed with ``observe=False`` are echoed but not observed."""

    def __init__(self) -> None:
        super().__init__()
        self.observed: list[int] = []

    def handle(self, records: Sequence[Any], *, observe: bool = True) -> list[OutgoingMessage]:
        out = super().handle(records)
        if observe:
            self.observed += [r.offset for r in records]
            if 5 in [r.offset for r in records] and self.observed.count(5) == 1:
                out.append(OutgoingMessage("alerts", b"alert-1", b"drift", 0))
        return out


async def test_an_alert_of_a_batch_whose_produce_failed_is_published_after_the_rewind() -> None:
    gate = Gate()
    async with Harness(max_in_flight=4, resend_topics=["alerts"]) as h:
        h.loop.handler = gate
        h.consumer.queued.append(records(0, 10))
        await until(lambda: len(h.producer.sent) == 2)  # out and alerts
        assert [t for t, _ in h.producer.sent] == ["out", "alerts"]
        # The batch's predictions are not acknowledged (its alert may or may not have been): rewind.
        h.producer.acks[0].set_exception(KafkaError("not acknowledged"))
        h.producer.acks[1].set_result(None)
        await until(lambda: h.loop.stats.rewinds == 1)
        assert h.consumer.seeks == [(TP, 0)]
        h.consumer.queued.append(records(0, 12))  # read again from offset 0, and two new records
        await until(lambda: len(h.producer.sent) == 4)
        for ack in h.producer.acks[2:]:
            ack.set_result(None)
        await until(lambda: bool(h.consumer.commits))
    # The alert went out again with the next batch (the gate made no new one: its incident is open),
    # and the records read again were not observed twice.
    assert [t for t, _ in h.producer.sent] == ["out", "alerts", "out", "alerts"]
    assert h.producer.sent[3][1].messages == [(b"alert-1", b"drift")]
    assert gate.observed == [*range(10), 10, 11]
    assert h.consumer.commits[-1] == {TP: 12}


class Queue:
    """Records queued beside the handler, as the incident store queues them (a QueuedRecords)."""

    def __init__(self) -> None:
        self.records: list[OutgoingMessage] = []

    @property
    def pending(self) -> int:
        return len(self.records)

    @asynccontextmanager
    async def taken(self) -> AsyncIterator[list[OutgoingMessage]]:
        taken, self.records = self.records, []
        try:
            yield taken
        except BaseException:
            self.records[:0] = taken
            raise


class Opener(Gate):
    """A Gate whose alert opens an incident: its record is queued, not returned with the batch."""

    def __init__(self, queue: Queue) -> None:
        super().__init__()
        self.queue = queue

    def handle(self, records: Sequence[Any], *, observe: bool = True) -> list[OutgoingMessage]:
        out = super().handle(records, observe=observe)
        if any(m.topic == "alerts" for m in out):
            writer = (("driftline-writer", b"w1"),)
            self.queue.records.append(OutgoingMessage("incidents", b"incident-1", b"open", headers=writer))
        return out


async def test_an_alerts_incident_record_goes_in_its_batchs_produce_request_and_again_after_a_rewind() -> (
    None
):
    # Written by the incident store's own producer a few milliseconds after the alert, the record was
    # lost to a worker killed in between, and the restarted worker alerted the drift again.
    queue = Queue()
    async with Harness(Opener(queue), max_in_flight=4, resend_topics=["alerts"], queued=queue) as h:
        h.consumer.queued.append(records(0, 10))
        await until(lambda: len(h.producer.sent) == 3)
        # After the alert, in the same send, with its header; taken from the queue.
        assert [t for t, _ in h.producer.sent] == ["out", "alerts", "incidents"]
        incidents = h.producer.sent[2][1]
        assert incidents.messages == [(b"incident-1", b"open")]
        assert incidents.headers == [[("driftline-writer", b"w1")]]
        assert queue.pending == 0
        # The predictions are not acknowledged: the alert and its incident record go out again.
        h.producer.acks[0].set_exception(KafkaError("not acknowledged"))
        for ack in h.producer.acks[1:]:
            ack.set_result(None)
        await until(lambda: h.loop.stats.rewinds == 1)
        h.consumer.queued.append(records(0, 12))
        await until(lambda: len(h.producer.sent) == 6)
        for ack in h.producer.acks[3:]:
            ack.set_result(None)
        await until(lambda: bool(h.consumer.commits))
    # The alert and its record, resent, go last, one right after the other.
    assert [t for t, _ in h.producer.sent] == ["out", "alerts", "incidents", "out", "alerts", "incidents"]
    assert h.producer.sent[5][1].messages == [(b"incident-1", b"open")]
    assert h.producer.sent[5][1].headers == [[("driftline-writer", b"w1")]]
    assert h.consumer.commits[-1] == {TP: 12}


class Openers(Echo):
    """An alert and its queued incident record at offsets 5 and 15."""

    def __init__(self, queue: Queue) -> None:
        super().__init__()
        self.queue = queue

    def handle(self, records: Sequence[Any], *, observe: bool = True) -> list[OutgoingMessage]:
        out = super().handle(records)
        for r in records:
            if r.offset in (5, 15):
                out.append(OutgoingMessage("alerts", f"alert-{r.offset}".encode(), b"drift", 0))
                self.queue.records.append(
                    OutgoingMessage("incidents", f"incident-{r.offset}".encode(), b"open")
                )
        return out


async def test_an_alert_and_its_record_wait_for_their_partitions_last_batches_to_have_gone() -> None:
    # aiokafka holds a partition's next batch until its last one has gone: the alert, handed over
    # first, left alone, and its record followed in the next produce request (a worker killed in
    # between, in CI, alerted the drift again once restarted).
    queue = Queue()
    async with Harness(Openers(queue), max_in_flight=4, resend_topics=["alerts"], queued=queue) as h:
        h.consumer.queued.append(records(0, 10))
        await until(lambda: len(h.producer.sent) == 3)
        h.consumer.queued.append(records(10, 10))
        await until(lambda: len(h.producer.sent) == 4)  # the second batch's predictions
        await asyncio.sleep(0.05)
        assert len(h.producer.sent) == 4  # its alert and record wait for the first ones to have gone
        for ack in h.producer.acks[:3]:
            ack.set_result(None)
        await until(lambda: len(h.producer.sent) == 6)
        for ack in h.producer.acks[3:]:
            ack.set_result(None)
        await until(lambda: h.consumer.commits[-1:] == [{TP: 20}])
    assert [t for t, _ in h.producer.sent] == ["out", "alerts", "incidents", "out", "alerts", "incidents"]
    assert h.producer.sent[5][1].messages == [(b"incident-15", b"open")]


async def test_a_batch_with_nothing_queued_does_not_take_the_queue() -> None:
    queue = Queue()
    taken = 0
    original = queue.taken

    def counting() -> Any:
        nonlocal taken
        taken += 1
        return original()

    queue.taken = counting  # type: ignore[method-assign]
    async with Harness(queued=queue) as h:
        h.consumer.queued.append(records(0, 3))
        await until(lambda: len(h.producer.sent) == 1)
        queue.records.append(OutgoingMessage("incidents", b"k", b"v"))  # queued by someone else
        h.consumer.queued.append(records(3, 3))
        await until(lambda: len(h.producer.sent) == 3)
    assert taken == 1
    assert [t for t, _ in h.producer.sent] == ["out", "out", "incidents"]


class Idler(Echo):
    """An Echo with idle work: one message the first time the loop finds nothing to read."""

    def __init__(self) -> None:
        super().__init__()
        self.pending = [OutgoingMessage("alerts", b"a", b"unjoined", 0)]
        self.idle_calls = 0

    def idle(self) -> list[OutgoingMessage]:
        self.idle_calls += 1
        pending, self.pending = self.pending, []
        return pending


async def test_an_idle_loop_publishes_what_its_handler_settles_with_time() -> None:
    # Outcomes past the join's grace were published only with the next batch, however late it came.
    idler = Idler()
    async with Harness(idler) as h:
        await until(lambda: len(h.producer.sent) == 1)
        topic, batch = h.producer.sent[0]
        assert (topic, batch.messages) == ("alerts", [(b"a", b"unjoined")])
        h.producer.acks[0].set_result(None)
        await until(lambda: idler.idle_calls >= 3)
        assert len(h.producer.sent) == 1 and h.consumer.commits == []  # nothing more; no offsets
        h.consumer.queued.append(records(0, 5))  # and batches go on as before
        await until(lambda: len(h.producer.sent) == 2)
        assert idler.batches == [[0, 1, 2, 3, 4]]
