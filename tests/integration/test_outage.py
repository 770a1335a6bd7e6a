"""A broker outage in the middle of a backlog, on a broker of the test's own (the shared one serves
every other test and must never go down).

On main a worker rode out a 75 s outage without losing a request, but its Kafka clients wrote 417,000
log lines meanwhile ("Unable connect to node", "Unable to update metadata", ...): an hour's outage
would fill a disk. Here the outage lasts longer than the clients' request timeout, so that produce
requests in flight time out and the loop rewinds, and the test counts both what was predicted and
what was logged.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from agent.models.repository import ModelRepository
from agent.packaging.examples import classification_20
from tests.integration.test_reliability import QUIET, PredictionCounter, requests, stream, wait_for
from tests.support.kafka import TopicReader, create_topics, produce_batched, read_to_end
from tests.support.private_kafka import PrivateKafka
from tests.support.worker import Topics, Worker

pytestmark = pytest.mark.integration

REQUEST_TIMEOUT_S = 5.0
OUTAGE_S = 15.0
MAX_LOG_LINES = 200
"""What the worker may log from the moment the broker goes down until it has caught up."""


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return np.asarray(classification_20(n_estimators=10, n_samples=2000).X_reference, dtype=np.float64)


@pytest.fixture
def private_kafka(tmp_path: Path) -> Iterator[PrivateKafka]:
    kafka = PrivateKafka(tmp_path / "private-kafka")
    try:
        yield kafka.up()
    finally:
        kafka.remove()


def _lines(worker: Worker) -> list[str]:
    return worker.log(10**9).splitlines()


def _cpu_s(worker: Worker) -> float:
    """CPU seconds the worker process has used (user + system), from /proc."""
    assert worker.process is not None
    fields = Path(f"/proc/{worker.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def test_a_broker_outage_in_a_backlog_loses_nothing_and_logs_a_bounded_amount(
    private_kafka: PrivateKafka,
    model_repository: ModelRepository,
    rows: np.ndarray,
    tmp_path: Path,
    unique: str,
) -> None:
    bootstrap = private_kafka.bootstrap
    topics = Topics.unique(unique)
    await create_topics(bootstrap, topics.all(), partitions=2)
    env = {**QUIET, "DRIFTLINE_KAFKA__REQUEST_TIMEOUT_MS": str(int(REQUEST_TIMEOUT_S * 1000))}
    worker = Worker(bootstrap, topics, f"outage-{unique}", model_repository.root, tmp_path, extra_env=env)
    worker.start()
    try:
        await asyncio.to_thread(worker.wait_ready)
        backlog = requests(stream(rows, 60_000, seed=1), 0)
        await produce_batched(bootstrap, topics.requests, backlog)

        async def serving() -> bool:
            return await asyncio.to_thread(worker.metric, "driftline_predictions_total") > 0

        await wait_for(serving, 30, "first predictions", worker)
        before = len(_lines(worker))
        served_at_down = await asyncio.to_thread(worker.metric, "driftline_predictions_total")
        down_at, cpu_at_down = time.monotonic(), _cpu_s(worker)
        await asyncio.to_thread(private_kafka.down)
        await asyncio.sleep(max(OUTAGE_S - (time.monotonic() - down_at), 0))
        assert worker.process is not None and worker.process.poll() is None, worker.log()
        cpu_down = _cpu_s(worker) - cpu_at_down
        await asyncio.to_thread(private_kafka.up)
        up_at = time.monotonic()
        ids = {k.decode() for k, _ in backlog}
        async with TopicReader(bootstrap, topics.predictions) as reader:
            await wait_for(PredictionCounter(reader).covers(ids), 120, "every request predicted", worker)
        caught_up = time.monotonic()
        during = _lines(worker)[before:]
    finally:
        code = worker.stop()
    assert code == 0, worker.log()
    counts = Counter(r.key.decode() for r in await read_to_end(bootstrap, topics.predictions) if r.key)
    assert set(counts) == ids
    # The worker said once that the broker went away and once that it came back.
    assert sum("Kafka unreachable" in line for line in during) == 1, during[:50]
    assert sum("Kafka reachable again" in line for line in during) == 1, during[-50:]
    common = Counter(line.split("] ", 3)[-1][:90] for line in during).most_common(8)
    print(
        f"broker outage: {up_at - down_at:.1f} s (request timeout {REQUEST_TIMEOUT_S:g} s), "
        f"{served_at_down:.0f} of {len(ids)} served when it went down, all predicted "
        f"{caught_up - up_at:.1f} s after it came back ({sum(counts.values()) - len(ids)} duplicates); "
        f"{len(during)} log lines meanwhile, most common: {common}; the worker used {cpu_down:.1f} s of CPU "
        "while the broker was down"
    )
    assert len(during) <= MAX_LOG_LINES, "\n".join(during[:300])
