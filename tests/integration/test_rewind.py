"""A produce that fails in the middle of a batch that raised an alert, against the real broker.

The alerts topic is created with a ``max.message.bytes`` smaller than an alert, so the broker refuses
the alert that a drift raises (MESSAGE_TOO_LARGE, not retried by the client): the serving loop's batch
fails and it rewinds. Once the topic takes normal records again, the alert must be published: the
detectors do not raise it a second time (their incident is open), so the loop re-sends it. In a fleet
the model's monitor raises the alert, and retries publishing it until the broker takes it.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from sklearn.datasets import load_breast_cancer

from agent.models.repository import ModelRepository
from schemas.alert import AlertKind
from schemas.events import Prediction
from tests.support.alerts import alerts_in, opening_alerts
from tests.support.kafka import create_topics, produce, read_topic
from tests.support.worker import Topics, Worker

pytestmark = pytest.mark.integration

DATA = load_breast_cancer()
NAMES = [str(n) for n in DATA.feature_names]
TOO_SMALL = 300  # bytes: a record batch holding one alert is about 1.5 KB


def request(i: int, row: np.ndarray) -> tuple[bytes, bytes]:
    features = dict(zip(NAMES, map(float, row), strict=True))
    body = {"request_id": f"r-{i}", "model": "breast-cancer", "features": features}
    return f"r-{i}".encode(), json.dumps(body).encode()


async def set_max_message_bytes(bootstrap: str, topic: str, value: int | None) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if value is None:
            await admin.alter_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic, configs={"max.message.bytes": "1048588"})]
            )
        else:
            await admin.create_topics(
                [
                    NewTopic(
                        topic,
                        num_partitions=1,
                        replication_factor=1,
                        topic_configs={"max.message.bytes": str(value)},
                    )
                ]
            )
    finally:
        await admin.close()


@pytest.mark.parametrize("fleet", [False, True], ids=["single-process", "fleet"])
async def test_an_alert_whose_produce_failed_is_published_after_the_rewind(
    kafka_bootstrap: str, repository_copy: ModelRepository, tmp_path: Path, unique: str, fleet: bool
) -> None:
    """Single-process, the serving loop publishes the alert with the batch and rewinds; in a fleet
    the model's monitor publishes it, and retries until the broker takes it."""
    topics = Topics.unique(unique)
    await create_topics(kafka_bootstrap, [t for t in topics.all() if t != topics.alerts], partitions=2)
    await set_max_message_bytes(kafka_bootstrap, topics.alerts, TOO_SMALL)
    env = {"DRIFTLINE_MONITORING__FLEET": str(fleet).lower()}
    worker = Worker(
        kafka_bootstrap, topics, f"rewind-{unique}", repository_copy.root, tmp_path, extra_env=env
    ).start()
    try:
        worker.wait_ready()
        rng = np.random.default_rng(9)
        n, change = 3000, 1000
        X = DATA.data[rng.integers(0, len(DATA.data), n)].copy()
        radius = NAMES.index("mean radius")
        X[change:, radius] += DATA.data[:, radius].std()
        await produce(kafka_bootstrap, topics.requests, [request(i, row) for i, row in enumerate(X)])

        # The batch that carries the alert fails, and the loop rewinds (again and again, while the
        # topic refuses the alert).
        retried = "alert records failed (MessageSizeTooLargeError" if fleet else "rewinding to reprocess it"
        deadline = time.monotonic() + 90
        while retried not in worker.log(tail=1_000_000):
            assert time.monotonic() < deadline, f"no failed produce and retry:\n{worker.log()}"
            await asyncio.sleep(0.2)
        assert "MessageSizeTooLarge" in worker.log(tail=1_000_000)

        await set_max_message_bytes(kafka_bootstrap, topics.alerts, None)
        records = await read_topic(kafka_bootstrap, topics.alerts, 1, timeout=90)
        alerts = {a.alert_id: a for a in alerts_in(r.value for r in records)}
        # One incident: its first alert may be a warning escalated to critical (news by design).
        data = opening_alerts(a for a in alerts.values() if a.kind is AlertKind.DATA)
        assert [a.subject for a in data] == ["mean radius"], [
            (a.severity.value, a.opened_at_event, a.message) for a in alerts.values()
        ] + [line for line in worker.log(tail=1_000_000).splitlines() if "ALERT" in line or "rewind" in line]

        # Every request was answered, however many times the rewinds made it be published: read on
        # past the duplicates until every id is there.
        wanted = {f"r-{i}" for i in range(n)}
        ids: set[str] = set()
        consumer = AIOKafkaConsumer(
            topics.predictions, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            deadline = time.monotonic() + 90
            while ids != wanted and time.monotonic() < deadline:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    ids.update(Prediction.model_validate_json(r.value).request_id for r in batch)
        finally:
            await consumer.stop()
        assert ids == wanted, f"{len(wanted - ids)} requests without a prediction"
    finally:
        worker.stop()
    assert "Traceback" not in worker.log(tail=1_000_000)
