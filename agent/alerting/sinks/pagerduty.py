"""Incidents as PagerDuty alerts through the Events API v2: ``trigger`` when one opens, ``resolve`` when it
recovers; retried and spooled.

An alert is a ``trigger`` event (:func:`trigger_event`); an incident that recovers is a ``resolve``
(:func:`resolve_event`). Both carry the incident's id as ``dedup_key`` (:func:`dedup_key`): driftline
keeps at most one incident open per (model, kind, subject) in a deployment, so that key, with the
deployment's ``source``, names the open incident. PagerDuty folds a reminder (an incident still open
after ``DRIFTLINE_INCIDENTS__COOLDOWN_S``, alerted again) into the alert it already has, resolves it
on recovery, and opens a new alert when the same drift comes back after that, as its documentation
says a trigger after a resolve does.

The payload follows PagerDuty's schema and limits: ``summary`` at most 1,024 characters, ``severity``
one of ``critical``, ``error``, ``warning``, ``info`` (driftline's three levels map to the namesakes;
``error`` is not used), ``dedup_key`` at most 255 characters, the alert's evidence and identity in
``custom_details``. The routing key is added to each attempt's body and never written to the outbox.

Delivery is :class:`~agent.alerting.sinks.delivery.DeliverySink`'s: 202 is delivered, 429 and 5xx are retried
with backoff, 400 (an invalid event) is final. A ``resolve`` is attempted only after the sink's
earlier events for the same incident ended, so it never overtakes the ``trigger`` it resolves.

Example:
    >>> from datetime import UTC, datetime
    >>> from schemas import AlertKind, Severity
    >>> alert = Alert.create(
    ...     model="breast-cancer", model_version="1", kind=AlertKind.DATA, detector="adwin",
    ...     subject="mean radius", severity=Severity.CRITICAL, message="mean radius drifted up",
    ...     detected_at=datetime(2026, 1, 1, tzinfo=UTC),
    ... )
    >>> event = trigger_event(alert, source="driftline")
    >>> event["event_action"], event["dedup_key"], event["payload"]["severity"]
    ('trigger', 'driftline/breast-cancer/data/mean radius', 'critical')
    >>> event["payload"]["summary"]
    'Data drift on breast-cancer v1, mean radius: mean radius drifted up'
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Unpack

import orjson
from pydantic import SecretStr

from agent.alerting.sinks.base import Notify, Recovery
from agent.alerting.sinks.delivery import DeliveryOptions, DeliverySink, Request
from agent.errors import ConfigurationError
from schemas import Alert, Severity
from schemas.incident import IncidentReport

__all__ = [
    "EVENTS_URL",
    "MAX_DEDUP_KEY_CHARS",
    "MAX_SUMMARY_CHARS",
    "SEVERITY",
    "PagerDutySink",
    "dedup_key",
    "incident_event",
    "resolve_event",
    "trigger_event",
]

log = logging.getLogger(__name__)

EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
MAX_SUMMARY_CHARS = 1024
MAX_DEDUP_KEY_CHARS = 255
SEVERITY: dict[Severity, str] = {
    Severity.CRITICAL: "critical",
    Severity.WARNING: "warning",
    Severity.INFO: "info",
}
"""driftline's severity -> PagerDuty's (``critical``, ``error``, ``warning``, ``info``)."""


def dedup_key(source: str, model: str, kind: str, subject: str) -> str:
    """The incident's id for PagerDuty: ``source/model/kind/subject``, or a SHA-256 of it where that
    is longer than 255 characters.

    Example:
        >>> dedup_key("prod", "churn", "concept", "error")
        'prod/churn/concept/error'
        >>> len(dedup_key("prod", "m", "data", "x" * 300))
        74
    """
    key = f"{source}/{model}/{kind}/{subject}"
    if len(key) <= MAX_DEDUP_KEY_CHARS:
        return key
    return "driftline:" + hashlib.sha256(key.encode()).hexdigest()


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def trigger_event(alert: Alert, *, source: str, client_url: str | None = None) -> dict[str, Any]:
    """The ``trigger`` event for ``alert``, without its ``routing_key``."""
    kind = str(alert.kind)
    summary = (
        f"{kind.capitalize()} drift on {alert.model} v{alert.model_version}, {alert.subject}: {alert.message}"
    )
    evidence = alert.evidence.model_dump(mode="json", exclude_none=True)
    if not evidence.get("extra"):
        evidence.pop("extra", None)
    details: dict[str, Any] = {
        "alert_id": alert.alert_id,
        "model": alert.model,
        "model_version": alert.model_version,
        "kind": kind,
        "subject": alert.subject,
        "detector": alert.detector,
        "severity": str(alert.severity),
        "message": alert.message,
        "evidence": evidence,
    }
    if alert.opened_at_event is not None:
        details["opened_at_event"] = alert.opened_at_event
    if alert.first_event_time is not None:
        details["first_event_time"] = alert.first_event_time.isoformat()
    if alert.source:
        details["source_offsets"] = [r.model_dump(mode="json") for r in alert.source]
    event: dict[str, Any] = {
        "event_action": "trigger",
        "dedup_key": dedup_key(source, alert.model, kind, alert.subject),
        "payload": {
            "summary": _cut(summary, MAX_SUMMARY_CHARS),
            "source": source,
            "severity": SEVERITY[alert.severity],
            "timestamp": alert.detected_at.isoformat(),
            "component": alert.subject,
            "group": alert.model,
            "class": f"{kind} drift",
            "custom_details": details,
        },
        "client": "driftline",
    }
    if client_url:
        event["client_url"] = client_url
    return event


def resolve_event(recovery: Recovery, *, source: str) -> dict[str, Any]:
    """The ``resolve`` event for an incident that recovered, without its ``routing_key``."""
    return {
        "event_action": "resolve",
        "dedup_key": dedup_key(source, recovery.model, recovery.kind, recovery.subject),
    }


def incident_event(report: IncidentReport, *, source: str, client_url: str | None = None) -> dict[str, Any]:
    """The event for an incident notification, without its ``routing_key``: a ``trigger`` when it opens
    or is updated (PagerDuty folds it into the alert it has, whose severity and details it updates), a
    ``resolve`` when it resolves. ``dedup_key`` is ``<source>/<model>/incident/<incident id>``."""
    key = dedup_key(source, report.model, "incident", report.incident_id)
    if report.status == "resolved":
        return {"event_action": "resolve", "dedup_key": key}
    summary = f"Incident on {report.model} ({report.alerts} alerts): {report.root_cause}"
    details: dict[str, Any] = {
        "incident_id": report.incident_id,
        "notification_id": report.notification_id,
        "status": report.status,
        "change": report.change,
        "root_cause": report.root_cause,
        "model": report.model,
        "model_versions": list(report.model_versions),
        "alerts": report.alerts,
        "open_alerts": report.open_alerts,
        "timeline": [e.model_dump(mode="json", exclude_defaults=True) for e in report.timeline],
    }
    if report.context:
        details["context"] = list(report.context)
    event: dict[str, Any] = {
        "event_action": "trigger",
        "dedup_key": key,
        "payload": {
            "summary": _cut(summary, MAX_SUMMARY_CHARS),
            "source": source,
            "severity": SEVERITY[report.severity],
            "timestamp": report.updated_at.isoformat(),
            "component": ", ".join(dict.fromkeys(e.subject for e in report.timeline))[:255],
            "group": report.model,
            "class": "drift incident",
            "custom_details": details,
        },
        "client": "driftline",
    }
    if client_url:
        event["client_url"] = client_url
    return event


class PagerDutySink(DeliverySink):
    """Sends a ``trigger`` per alert and a ``resolve`` per recovery to PagerDuty's Events API v2.

    Parameters:
        routing_key: The integration key (32 characters); never logged, never on disk.
        url: The Events API v2 endpoint.
        source: ``payload.source`` and the head of every ``dedup_key``: the deployment.
        client_url: A link shown with each alert, if any.
        notify: ``incidents``: one PagerDuty alert per incident across kinds (triggered when it opens,
            updated as it grows, resolved when it resolves); ``alerts``: one per (model, kind,
            subject), as each alert and recovery come; ``both``.
        **options: Delivery options of :class:`~agent.alerting.sinks.delivery.DeliverySink`.
    """

    name = "pagerduty"
    outbox_setting = "DRIFTLINE_PAGERDUTY__OUTBOX_DIR"

    def __init__(
        self,
        routing_key: SecretStr | str,
        *,
        url: str = EVENTS_URL,
        source: str = "driftline",
        client_url: str | None = None,
        notify: Notify = "alerts",
        **options: Unpack[DeliveryOptions],
    ) -> None:
        super().__init__([url], **options)
        self.notify = notify
        key = routing_key.get_secret_value() if isinstance(routing_key, SecretStr) else routing_key
        if not key:
            raise ConfigurationError("the PagerDuty routing key is empty (DRIFTLINE_PAGERDUTY__ROUTING_KEY)")
        if len(key) != 32:
            log.warning("pagerduty: the routing key is not 32 characters long; PagerDuty may refuse it")
        if not source:
            raise ConfigurationError("the PagerDuty source is empty (DRIFTLINE_PAGERDUTY__SOURCE)")
        self._routing_key = key
        self.source = source
        self.client_url = client_url

    async def send(self, alert: Alert) -> None:
        if self.notify == "incidents":
            return
        event = trigger_event(alert, source=self.source, client_url=self.client_url)
        await self.deliver(self.urls[0], orjson.dumps(event), f"trigger {alert.alert_id}", event["dedup_key"])

    async def send_incident(self, report: IncidentReport) -> None:
        if self.notify == "alerts":
            return
        event = incident_event(report, source=self.source, client_url=self.client_url)
        await self.deliver(
            self.urls[0], orjson.dumps(event), f"incident {report.notification_id}", event["dedup_key"]
        )

    async def recover(self, recovery: Recovery) -> None:
        if self.notify == "incidents":
            return
        event = resolve_event(recovery, source=self.source)
        delivery_id = f"resolve {recovery.opening_alert_id}"
        await self.deliver(self.urls[0], orjson.dumps(event), delivery_id, event["dedup_key"])

    def request(self, url: str, document: bytes, delivery_id: str) -> Request:
        event = {"routing_key": self._routing_key, **orjson.loads(document)}
        return Request(orjson.dumps(event), {"Content-Type": "application/json"})
