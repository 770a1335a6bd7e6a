"""An incident: the alerts of one model that opened close together, as one thing to act on.

One cause rarely raises one alert: a shifted input moves its feature (data drift), the model's output
(prediction drift) and its estimated error (performance), and later its real error (concept). The
worker groups them (:mod:`agent.monitoring.grouping`) and publishes an :class:`IncidentReport` on the
alerts topic, beside the alerts, each time the incident opens, grows (a new kind or subject joins),
changes severity, or resolves (every alert in it recovered). Receivers (webhooks, Slack, PagerDuty)
get those notifications instead of one per alert; InfluxDB keeps them as ``driftline_incident``.

A record on the alerts topic is an incident report when its JSON has ``"record_type": "incident"``;
:func:`decode_record` tells them apart.

Example:
    >>> from datetime import datetime, UTC
    >>> at = datetime(2026, 1, 1, tzinfo=UTC)
    >>> entry = TimelineEntry(at=at, change="opened", alert_id="a1", kind=AlertKind.DATA, subject="x05",
    ...                       severity=Severity.WARNING, detector="adwin", message="x05 drifted up")
    >>> report = IncidentReport(incident_id="a1", notification_id="a1/opened", status="opened",
    ...     change="opened: data drift on 'x05'", model="m", model_versions=("1",),
    ...     severity=Severity.WARNING, root_cause="data drift on 'x05'", opened_at=at, updated_at=at,
    ...     alerts=1, open_alerts=1, timeline=(entry,))
    >>> decode_record(encode_incident(report)) == report
    True
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict

from schemas.alert import Alert, AlertKind, Severity

__all__ = ["IncidentReport", "IncidentStatus", "TimelineEntry", "decode_record", "encode_incident"]

IncidentStatus = Literal["opened", "updated", "resolved"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TimelineEntry(_Frozen):
    """One moment of an incident: an alert that opened in it, rose in severity, or recovered."""

    at: AwareDatetime
    change: Literal["opened", "severity", "recovered"]
    alert_id: str
    """The alert that opened this part of the incident."""
    kind: AlertKind
    subject: str
    severity: Severity
    detector: str = ""
    message: str = ""
    model_version: str = ""
    event: int | None = None
    """Where in the worker's monitored stream of that model version it opened (its ``opened_at_event``)."""
    began: int | None = None
    """Where the change its detector saw most likely began, in the same count: the event less the
    events since the estimated change point (its ``window_events``)."""
    drivers: tuple[str, ...] = ()
    """The likely drivers its alert named, most likely first."""


class IncidentReport(_Frozen):
    """One notification about an incident: it opened, it was updated, or it resolved."""

    record_type: Literal["incident"] = "incident"
    schema_version: Literal["1"] = "1"
    incident_id: str
    """The id of the alert that opened it: stable for the incident's whole life."""
    notification_id: str
    """Deterministic per notification (``<incident>/opened``, ``<incident>/<alert id>``,
    ``<incident>/severity/<level>``, ``<incident>/resolved``): drop duplicates by it."""
    status: IncidentStatus
    change: str
    """What this notification is about, in words (``opened: data drift on 'x05'``, ``grew: ...``)."""
    model: str
    model_versions: tuple[str, ...]
    severity: Severity
    """The highest severity of its alerts."""
    root_cause: str
    """One line: what came first and what followed."""
    opened_at: AwareDatetime
    updated_at: AwareDatetime
    resolved_at: AwareDatetime | None = None
    alerts: int
    """Alerts (kind and subject) in it so far."""
    open_alerts: int
    """Of those, still open."""
    timeline: tuple[TimelineEntry, ...]
    context: tuple[str, ...] = ()
    """What else changed in the model's serving context around it (a new version, a library version,
    the worker's restart), nearest first."""


def encode_incident(report: IncidentReport) -> bytes:
    """The report's JSON, as published on the alerts topic and POSTed to webhooks."""
    return report.model_dump_json().encode()


def decode_record(raw: bytes | str) -> Alert | IncidentReport:
    """An alerts-topic record: an incident report if its JSON says ``"record_type": "incident"``, an
    alert otherwise; raises ``ValueError`` (pydantic's ``ValidationError``) if it is neither."""
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if isinstance(data, dict) and data.get("record_type") == "incident":
        return IncidentReport.model_validate(data)
    return Alert.model_validate(data)
