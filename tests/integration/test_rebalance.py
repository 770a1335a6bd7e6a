"""Real ``driftline run`` workers joining and leaving one consumer group while requests flow.

A rebalance runs the serving loop's listener in aiokafka's coordinator task, beside the loop: on main
it once drained the in-flight batches from both sides at once (``IndexError: pop from an empty deque``
in the listener, a batch dropped unawaited). Here worker A serves throughout while worker B joins and
leaves again and again, gracefully (SIGTERM) and not (SIGKILL), and the test counts every request id.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from agent.models.repository import ModelRepository
from agent.packaging.examples import classification_20
from tests.integration.test_reliability import QUIET, PredictionCounter, requests, stream, wait_for
from tests.support.kafka import TopicReader, batch_producer, create_topics, produce_batched, read_to_end
from tests.support.worker import Topics, Worker

pytestmark = pytest.mark.integration

# What a worker's log must never say: a listener that raised, a stop that failed, any traceback.
BROKEN = (
    "Traceback",
    "failed on_partitions_revoked",
    "failed on partition assignment",
    "Error while stopping",
)


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return np.asarray(classification_20(n_estimators=10, n_samples=2000).X_reference, dtype=np.float64)


async def test_workers_joining_and_leaving_while_requests_flow_lose_no_request(
    kafka_bootstrap: str, model_repository: ModelRepository, rows: np.ndarray, tmp_path: Path, unique: str
) -> None:
    bootstrap = kafka_bootstrap
    topics = Topics.unique(unique)
    await create_topics(bootstrap, topics.all(), partitions=4)
    app_id = f"churn-{unique}"

    def worker() -> Worker:
        return Worker(bootstrap, topics, app_id, model_repository.root, tmp_path, extra_env=QUIET)

    a = worker().start()
    bs: list[Worker] = []
    # 1,500 requests/s in parts of 150 every 0.1 s, for as long as the rounds last.
    sent: list[tuple[bytes, bytes]] = []
    stop_sending = asyncio.Event()

    async def send() -> None:
        producer = batch_producer(bootstrap)
        await producer.start()
        try:
            seed = 0
            while not stop_sending.is_set():
                part = requests(stream(rows, 150, seed=seed), len(sent), prefix="churn")
                await produce_batched(bootstrap, topics.requests, part, producer=producer)
                sent.extend(part)
                seed += 1
                await asyncio.sleep(0.1)
        finally:
            await producer.stop()

    rounds = [signal.SIGTERM, signal.SIGTERM, signal.SIGKILL, signal.SIGTERM]
    started = time.monotonic()
    try:
        await asyncio.to_thread(a.wait_ready)
        sending = asyncio.create_task(send())
        for sig in rounds:
            # B joins (a rebalance: A drains and hands over half of the partitions), serves a while,
            # and leaves (SIGTERM: another rebalance at once; SIGKILL: once its session times out).
            b = worker().start()
            bs.append(b)
            await asyncio.to_thread(b.wait_ready, 90)

            async def b_serves(b: Worker = b) -> bool:
                return await asyncio.to_thread(b.metric, "driftline_predictions_total") > 0

            await wait_for(b_serves, 60, "B serving", a, b)
            await asyncio.sleep(1.0)
            code = await asyncio.to_thread(b.stop, sig)
            assert code == (0 if sig == signal.SIGTERM else -signal.SIGKILL), b.log()
            assert a.process is not None and a.process.poll() is None, a.log()
        stop_sending.set()
        await sending
        ids = {k.decode() for k, _ in sent}
        async with TopicReader(bootstrap, topics.predictions) as reader:
            await wait_for(PredictionCounter(reader).covers(ids), 120, "every request predicted", a)
        took = time.monotonic() - started
    finally:
        stop_sending.set()
        code = a.stop()
        for b in bs:
            b.stop()
    assert code == 0, a.log()

    predicted = [r.key.decode() for r in await read_to_end(bootstrap, topics.predictions) if r.key]
    assert set(predicted) == ids
    logs = {f"A ({a.log_path.name})": a.log(10**8)} | {
        f"B{i} ({b.log_path.name})": b.log(10**8) for i, b in enumerate(bs)
    }
    broken = {(name, phrase) for name, text in logs.items() for phrase in BROKEN if phrase in text}
    assert not broken, {name: logs[name][-4000:] for name, _ in broken}
    # A's serving loop went through the rebalances: its first join, B's joins, B's leaves (a killed B's
    # leave may fall into the next B's join: its session times out while that one joins).
    assignments = logs[next(iter(logs))].count("serving: assigned")
    assert assignments >= 1 + len(rounds) + rounds.count(signal.SIGTERM), assignments
    print(
        f"churn: {len(rounds)} rounds ({', '.join(s.name for s in rounds)}) in {took:.0f} s; "
        f"{len(ids)} requests, {len(predicted)} predictions ({len(predicted) - len(ids)} duplicates); "
        f"A assigned partitions {assignments} times"
    )
