"""The standalone Kafka alert sink publishes alerts that the alerts agent decodes back, keyed by id."""

from __future__ import annotations

import pytest

from agent.alerting.sinks.kafka import KafkaAlertSink
from agent.errors import SinkError
from schemas.alert import decode_alert
from tests.support.alerts import make_alert
from tests.support.kafka import create_topics, read_topic

pytestmark = pytest.mark.integration


async def test_publishes_alert_json_keyed_by_id(kafka_bootstrap: str, unique: str) -> None:
    topic = f"alerts-{unique}"
    await create_topics(kafka_bootstrap, [topic])
    sink = KafkaAlertSink(topic, {"bootstrap_servers": kafka_bootstrap})
    alerts = [make_alert(i) for i in range(3)]
    await sink.start()
    try:
        for alert in alerts:
            await sink.send(alert)
    finally:
        await sink.close()
    records = await read_topic(kafka_bootstrap, topic, 3)
    assert [(r.key, decode_alert(r.value or b"")) for r in records] == [
        (a.alert_id.encode(), a) for a in alerts
    ]
    assert sink.stats.delivered == 3


async def test_unreachable_kafka_is_a_sink_error() -> None:
    sink = KafkaAlertSink("t", {"bootstrap_servers": "127.0.0.1:1", "request_timeout_ms": 1000})
    with pytest.raises(SinkError, match="could not connect"):
        await sink.start()
