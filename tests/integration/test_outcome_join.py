"""Outcomes published by a librdkafka client are joined to predictions of requests published by another.

Requests go out as ``driftline produce`` sends them (murmur2 on the key, like Java clients); outcomes
through confluent-kafka's producer with its default partitioner (librdkafka's ``consistent_random``:
CRC-32 of the key). On main the join matched only within a partition number, and 74 % of such outcomes
(7,439 of 10,000) landed elsewhere and were counted unmatched.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Producer

from agent.models.repository import ModelRepository
from agent.monitoring.join import OUTCOME_MARK, decode_batch
from agent.packaging.examples import classification_20
from schemas.events import Prediction
from tests.integration.test_reliability import QUIET, requests, stream, wait_for
from tests.support.kafka import create_topics, produce_batched, read_to_end, read_topic
from tests.support.worker import Topics, Worker

pytestmark = pytest.mark.integration

MODEL = "classification-20"


def publish_with_librdkafka(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    failures: list[object] = []
    for key, value in messages:
        producer.produce(topic, value=value, key=key, on_delivery=lambda err, _: err and failures.append(err))
        producer.poll(0)
    assert producer.flush(30) == 0 and not failures, failures


async def test_outcomes_from_a_librdkafka_producer_are_all_joined(
    kafka_bootstrap: str, model_repository: ModelRepository, tmp_path: Path, unique: str
) -> None:
    topics = Topics.unique(unique)
    await create_topics(kafka_bootstrap, topics.all(), partitions=4)
    worker = Worker(
        kafka_bootstrap, topics, f"join-{unique}", model_repository.root, tmp_path, extra_env=QUIET
    )
    worker.start()
    reference = np.asarray(classification_20(n_estimators=10, n_samples=2000).X_reference, dtype=np.float64)
    n = 10_000
    try:
        await asyncio.to_thread(worker.wait_ready)
        sent = requests(stream(reference, n, seed=5), 0)
        where = await produce_batched(kafka_bootstrap, topics.requests, sent)
        request_partition = {k.decode(): p for (k, _), (p, _) in zip(sent, where, strict=True)}
        predicted = {
            (p := Prediction.model_validate_json(r.value)).request_id: p.label
            for r in await read_topic(kafka_bootstrap, topics.predictions, n)
        }
        assert set(predicted) == set(request_partition)
        outcomes = [
            (rid.encode(), json.dumps({"request_id": rid, "model": MODEL, "label": label}).encode())
            for rid, label in predicted.items()
        ]
        await asyncio.to_thread(publish_with_librdkafka, kafka_bootstrap, topics.outcomes, outcomes)

        async def all_joined() -> bool:
            joined = await asyncio.to_thread(worker.metric, "driftline_outcomes_total", result="joined")
            return joined >= n

        await wait_for(all_joined, 60, "every outcome joined", worker)
        unmatched = await asyncio.to_thread(worker.metric, "driftline_outcomes_total", result="unmatched")
    finally:
        code = worker.stop()
    assert code == 0, worker.log()
    # The outcomes really were partitioned otherwise: most sit on another partition number than
    # their request.
    placed = {
        r.key.decode(): r.partition for r in await read_to_end(kafka_bootstrap, topics.outcomes) if r.key
    }
    same = sum(placed[rid] == p for rid, p in request_partition.items())
    assert len(placed) == n and same < n / 2, same
    assert unmatched == 0
    print(
        f"outcome join: {n} outcomes from librdkafka's default partitioner, {same} on their request's "
        f"partition number ({Counter(placed.values())}), all {n} joined, {unmatched:.0f} unmatched"
    )


async def test_outcomes_read_before_their_predictions_wait_for_them_and_join(
    kafka_bootstrap: str, model_repository: ModelRepository, tmp_path: Path, unique: str
) -> None:
    # A backlog of both topics, outcomes sent right after their requests, as `driftline produce` does
    # (and as a worker that starts after its producers, or catches up after an outage, finds it). The
    # worker reads the two topics side by side, so many outcomes reach their join partition before
    # their predictions do: without the join's grace, 48 % of such outcomes went unmatched in the
    # README's first session, and an unjoined_outcomes alert opened for nothing.
    topics = Topics.unique(unique)
    await create_topics(kafka_bootstrap, topics.all(), partitions=4)
    app_id = f"ahead-{unique}"
    reference = np.asarray(classification_20(n_estimators=10, n_samples=2000).X_reference, dtype=np.float64)
    n = 8_000
    sent = requests(stream(reference, n, seed=6), 0)
    outcomes = [
        (key, json.dumps({"request_id": key.decode(), "model": MODEL, "label": 0}).encode())
        for key, _ in sent
    ]
    await produce_batched(kafka_bootstrap, topics.outcomes, outcomes)
    await produce_batched(kafka_bootstrap, topics.requests, sent)
    worker = Worker(kafka_bootstrap, topics, app_id, model_repository.root, tmp_path, extra_env=QUIET)
    worker.start()
    try:
        await asyncio.to_thread(worker.wait_ready)

        async def all_joined() -> bool:
            joined = await asyncio.to_thread(worker.metric, "driftline_outcomes_total", result="joined")
            return joined >= n

        await wait_for(all_joined, 90, "every outcome joined", worker)
        unmatched = await asyncio.to_thread(worker.metric, "driftline_outcomes_total", result="unmatched")
        alerts = [r.value for r in await read_to_end(kafka_bootstrap, topics.alerts)]
        log = await read_to_end(kafka_bootstrap, f"{app_id}-join-changelog")
    finally:
        code = worker.stop()
    assert code == 0, worker.log()
    assert unmatched == 0
    assert not [a for a in alerts if a and b"unjoined_outcomes" in a], alerts
    # The race really was run: on the join topic, outcomes' copies ahead of their predictions.
    predicted_at: dict[tuple[int, str], int] = {}
    copied_at: dict[tuple[int, str], int] = {}
    for r in log:
        if r.value is None:
            continue
        if r.value[:1] == OUTCOME_MARK:
            copied_at[r.partition, json.loads(r.value[1:])["request_id"]] = r.offset
        else:
            for rid, _ in decode_batch(r.value):
                predicted_at[r.partition, rid] = r.offset
    assert len(copied_at) == len(predicted_at) == n
    ahead = sum(copied_at[k] < predicted_at[k] for k in copied_at)
    assert ahead >= n // 10, ahead
    print(f"outcome join: {ahead} of {n} outcomes were read before their predictions; all joined")


async def test_outcomes_waiting_for_their_predictions_survive_a_restart(
    kafka_bootstrap: str, model_repository: ModelRepository, tmp_path: Path, unique: str
) -> None:
    # The outcomes come first and the worker stops before any of their requests: they wait on the
    # join topic. The next worker reads them back with the rest of the join's partitions, and they
    # join the predictions it then makes.
    topics = Topics.unique(unique)
    await create_topics(kafka_bootstrap, topics.all(), partitions=4)
    app_id = f"waiting-{unique}"
    reference = np.asarray(classification_20(n_estimators=10, n_samples=2000).X_reference, dtype=np.float64)
    n = 2_000
    sent = requests(stream(reference, n, seed=7), 0)
    body = {"model": MODEL, "label": 0}
    outcomes = [(key, json.dumps({"request_id": key.decode(), **body}).encode()) for key, _ in sent]

    def worker() -> Worker:
        return Worker(kafka_bootstrap, topics, app_id, model_repository.root, tmp_path, extra_env=QUIET)

    first = worker().start()
    try:
        await asyncio.to_thread(first.wait_ready)
        await produce_batched(kafka_bootstrap, topics.outcomes, outcomes)

        async def all_copied() -> bool:  # each outcome copied to the join topic, and read back there
            joins = await asyncio.to_thread(
                first.metric, "driftline_events_in_total", topic=f"{app_id}-join-changelog"
            )
            return joins >= n

        await wait_for(all_copied, 60, "every outcome on the join topic", first)
        unmatched_before = await asyncio.to_thread(
            first.metric, "driftline_outcomes_total", result="unmatched"
        )
    finally:
        assert first.stop() == 0, first.log()
    assert unmatched_before == 0  # waiting, not given up
    await produce_batched(kafka_bootstrap, topics.requests, sent)
    second = worker().start()
    try:
        await asyncio.to_thread(second.wait_ready)

        async def all_joined() -> bool:
            joined = await asyncio.to_thread(second.metric, "driftline_outcomes_total", result="joined")
            return joined >= n

        await wait_for(all_joined, 60, "every waiting outcome joined", second)
        unmatched = await asyncio.to_thread(second.metric, "driftline_outcomes_total", result="unmatched")
    finally:
        assert second.stop() == 0, second.log()
    assert unmatched == 0


async def test_outcomes_that_never_meet_their_predictions_are_reported_by_an_idle_worker(
    kafka_bootstrap: str, model_repository: ModelRepository, tmp_path: Path, unique: str
) -> None:
    # Labels of requests this deployment never served, and then no traffic. They wait out the join's
    # grace (3 s here) and count as unmatched then: before, an idle worker kept them waiting until
    # its next batch, and the unjoined-outcomes alert waited with them, however long that took.
    topics = Topics.unique(unique)
    await create_topics(kafka_bootstrap, topics.all(), partitions=4)
    env = {**QUIET, "DRIFTLINE_MONITORING__JOIN_GRACE_S": "3"}
    worker = Worker(kafka_bootstrap, topics, f"idle-{unique}", model_repository.root, tmp_path, extra_env=env)
    worker.start()
    reference = np.asarray(classification_20(n_estimators=10, n_samples=2000).X_reference, dtype=np.float64)
    n = 4_000
    try:
        await asyncio.to_thread(worker.wait_ready)
        served = requests(stream(reference, 500, seed=8), 0)  # the model's monitor exists
        await produce_batched(kafka_bootstrap, topics.requests, served)
        await read_topic(kafka_bootstrap, topics.predictions, len(served))
        body = {"model": MODEL, "label": 0}
        strangers = [
            (f"never-{i}".encode(), json.dumps({"request_id": f"never-{i}", **body}).encode())
            for i in range(n)
        ]
        await produce_batched(kafka_bootstrap, topics.outcomes, strangers)

        async def all_copied() -> bool:  # read, copied to the join topic and read back there: waiting
            joins = await asyncio.to_thread(
                worker.metric, "driftline_events_in_total", topic=f"idle-{unique}-join-changelog"
            )
            return joins >= n

        await wait_for(all_copied, 60, "every outcome on the join topic", worker)
        copied_at = time.monotonic()

        async def all_unmatched() -> bool:
            unmatched = await asyncio.to_thread(worker.metric, "driftline_outcomes_total", result="unmatched")
            return unmatched >= n

        await wait_for(all_unmatched, 30, "every outcome unmatched once its grace ended", worker)
        took = time.monotonic() - copied_at

        async def alerted() -> bool:
            return any(
                r.value and b"unjoined_outcomes" in r.value
                for r in await read_to_end(kafka_bootstrap, topics.alerts)
            )

        await wait_for(alerted, 30, "the unjoined-outcomes alert", worker)
        joined = await asyncio.to_thread(worker.metric, "driftline_outcomes_total", result="joined")
    finally:
        code = worker.stop()
    assert code == 0, worker.log()
    assert joined == 0
    print(
        f"outcome join: {n} outcomes with no prediction counted unmatched {took:.1f} s after they "
        "waited, with no traffic since"
    )
