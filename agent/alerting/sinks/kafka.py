"""Alerts on the alerts topic: JSON values keyed by alert id, one encoding for every producer.

The serving loop publishes alerts in the same producer batches as its predictions, through
:func:`alert_message` (so an alert is acknowledged before the offsets of the requests that raised it
are committed: at least once). :class:`KafkaAlertSink` is the same encoding behind the
:class:`~agent.alerting.sinks.base.Sink` contract, with its own producer, for tools and tests.

The value is the :class:`~schemas.Alert` as JSON (``schemas/json/alert.schema.json``); the key is the
alert id, so duplicates of one alert land on the same partition, next to each other.

Example:
    >>> from datetime import datetime, UTC
    >>> from schemas import Alert, AlertKind, Severity
    >>> alert = Alert.create(
    ...     model="m", model_version="1", kind=AlertKind.DATA, detector="adwin", subject="x",
    ...     severity=Severity.WARNING, message="x drifted", detected_at=datetime(2026, 1, 1, tzinfo=UTC),
    ... )
    >>> message = alert_message(alert, "driftline-alerts")
    >>> from schemas.alert import decode_alert
    >>> message.key == alert.alert_id.encode(), decode_alert(message.value) == alert
    (True, True)
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from agent.alerting.sinks.base import Sink
from agent.errors import SinkError
from agent.metrics import Metrics
from agent.serving.messages import OutgoingMessage
from schemas.alert import Alert, encode_alert
from schemas.incident import IncidentReport, encode_incident

__all__ = ["KafkaAlertSink", "alert_message"]


def alert_message(alert: Alert, topic: str) -> OutgoingMessage:
    """The outgoing message for ``alert`` on ``topic``, for the serving loop's producer batches."""
    return OutgoingMessage(topic=topic, key=alert.alert_id.encode(), value=encode_alert(alert))


class KafkaAlertSink(Sink):
    """Publishes each alert to the alerts topic with its own producer and waits for the acknowledgement.

    Parameters:
        topic: The alerts topic.
        client_options: aiokafka options (:func:`agent.kafka.aiokafka_options`).
        metrics: Prometheus counters, if given.
    """

    name = "kafka"

    def __init__(self, topic: str, client_options: dict[str, Any], *, metrics: Metrics | None = None) -> None:
        super().__init__(metrics=metrics)
        self.topic = topic
        self._options = client_options
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        producer = AIOKafkaProducer(**self._options, acks="all", linger_ms=5)
        try:
            await producer.start()
        except (KafkaError, OSError) as exc:
            await producer.stop()
            raise SinkError(f"kafka sink: could not connect for topic {self.topic!r}: {exc!r}") from exc
        self._producer = producer

    async def send(self, alert: Alert) -> None:
        if self._producer is None:
            raise SinkError("kafka sink: send() before start()")
        message = alert_message(alert, self.topic)
        try:
            await self._producer.send_and_wait(self.topic, key=message.key, value=message.value)
        except KafkaError as exc:
            self._count_failed("error")
            raise SinkError(
                f"kafka sink: alert {alert.alert_id} not published to {self.topic!r}: {exc!r}"
            ) from exc
        self._count_delivered()

    async def send_incident(self, report: IncidentReport) -> None:
        if self._producer is None:
            raise SinkError("kafka sink: send_incident() before start()")
        try:
            await self._producer.send_and_wait(
                self.topic, key=f"incident/{report.incident_id}".encode(), value=encode_incident(report)
            )
        except KafkaError as exc:
            self._count_failed("error")
            raise SinkError(
                f"kafka sink: incident {report.notification_id} not published to {self.topic!r}: {exc!r}"
            ) from exc
        self._count_delivered()

    async def flush(self) -> None:
        if self._producer is not None:
            await self._producer.flush()

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
