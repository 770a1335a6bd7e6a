"""The alerts topic keeps every alert, and a new app id does not send its history to the webhooks again.

On main the alerts topic was created with the broker's default retention (7 days) although the README
says it keeps every alert, and the alerts agent of a new app id read it from its beginning: every
retained alert went to every webhook once more.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from agent.alerting.sinks.kafka import alert_message
from agent.alerting.sinks.webhook import ID_HEADER
from agent.models.repository import ModelRepository
from schemas.alert import Alert
from tests.integration.test_reliability import QUIET, wait_for
from tests.support.alerts import WebhookReceiver, make_alert
from tests.support.kafka import create_topics, produce_batched
from tests.support.worker import Topics, Worker

pytestmark = pytest.mark.integration

SECRET = "alerts-topic-secret"


async def topic_config(bootstrap: str, topic: str) -> dict[str, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    [resource] = response.resources
    return {str(entry[0]): str(entry[1]) for entry in resource[4]}


async def test_the_alerts_topic_keeps_every_alert_and_the_join_topic_rolls_its_segments(
    kafka_bootstrap: str, model_repository: ModelRepository, tmp_path: Path, unique: str
) -> None:
    topics = Topics.unique(unique)  # not created here: the worker creates them
    env = {**QUIET, "DRIFTLINE_MONITORING__JOIN_TTL_S": "600"}
    worker = Worker(kafka_bootstrap, topics, f"keep-{unique}", model_repository.root, tmp_path, extra_env=env)
    worker.start()
    try:
        await asyncio.to_thread(worker.wait_ready)
        alerts = await topic_config(kafka_bootstrap, topics.alerts)
        predictions = await topic_config(kafka_bootstrap, topics.predictions)
        join = await topic_config(kafka_bootstrap, f"keep-{unique}-join-changelog")
    finally:
        assert worker.stop() == 0, worker.log()
    assert alerts["retention.ms"] == "-1" and predictions["retention.ms"] != "-1"
    # The join topic: twice the TTL kept, in segments of one TTL that retention can delete.
    assert (join["cleanup.policy"], join["retention.ms"], join["segment.ms"]) == (
        "delete",
        "1200000",
        "600000",
    )


async def test_a_new_app_id_does_not_send_the_alerts_of_before_its_first_start_to_the_webhooks(
    kafka_bootstrap: str, model_repository: ModelRepository, tmp_path: Path, unique: str
) -> None:
    topics = Topics.unique(unique)
    receiver = await WebhookReceiver(SECRET).start()
    env = {
        **QUIET,
        "DRIFTLINE_WEBHOOKS__URLS": json.dumps([receiver.url]),
        "DRIFTLINE_WEBHOOKS__SECRET": SECRET,
        "DRIFTLINE_INCIDENTS__NOTIFY": "alerts",  # the alerts are injected: each one is a delivery
    }

    def worker(app_id: str) -> Worker:
        return Worker(kafka_bootstrap, topics, app_id, model_repository.root, tmp_path, extra_env=env)

    def ids() -> set[str]:
        return {r.headers[ID_HEADER] for r in receiver.received}

    def received(*alerts: Alert) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return {a.alert_id for a in alerts} <= ids()

        return check

    async def publish(*alerts: Alert) -> None:
        messages = [alert_message(a, topics.alerts) for a in alerts]
        await produce_batched(kafka_bootstrap, topics.alerts, [(m.key, m.value) for m in messages])

    days_ago = datetime.now(UTC) - timedelta(days=3)
    # Alerts of another deployment that shared the topic, days ago.
    history = [make_alert(i, model=f"old-{unique}", subject=f"s{i}", detected_at=days_ago) for i in range(5)]
    await create_topics(kafka_bootstrap, [topics.alerts], partitions=1)
    app_id = f"alerts-{unique}"
    fresh = make_alert(99, model=f"new-{unique}", detected_at=datetime.now(UTC))
    first = worker(app_id).start()
    try:
        await asyncio.to_thread(first.wait_ready)
        await publish(*history, fresh)
        await wait_for(received(fresh), 30, "the new alert delivered", first)
        skipped = await asyncio.to_thread(first.metric, "driftline_alerts_before_first_start_total")
    finally:
        assert first.stop() == 0, first.log()
    assert ids() == {fresh.alert_id} and skipped == len(history)
    # The same app id again: its group has committed, so nothing is history any more (an alert that
    # comes late, detected a day ago, is delivered).
    late = make_alert(100, model=f"late-{unique}", detected_at=datetime.now(UTC) - timedelta(days=1))
    second = worker(app_id).start()
    try:
        await asyncio.to_thread(second.wait_ready)
        await publish(late)
        await wait_for(received(late), 30, "the late alert delivered", second)
    finally:
        code = second.stop()
        await receiver.stop()
    assert code == 0, second.log()
    assert ids() == {fresh.alert_id, late.alert_id}
