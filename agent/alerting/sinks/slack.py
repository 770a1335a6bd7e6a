"""Alerts as Slack messages, through a channel's incoming webhook, retried and spooled.

Each alert is one message (:func:`alert_message`) built from Block Kit blocks: a header (kind, subject,
model), the alert's one-line message, the fields a person triages by (model and version, kind, subject,
severity, detector, detection time), the evidence (reference against recent window, the detector's
statistic, the named extras), and a context line with the alert id. An incident that recovers gets a
short message too (:func:`recovery_message`, off with ``DRIFTLINE_SLACK__RECOVERIES=false``).

Every text is cut to Slack's documented limits (header 150 characters, section text 3,000, at most 10
fields of 2,000 each, at most 50 blocks) and escaped as ``mrkdwn`` wants (``&``, ``<``, ``>``), so
that no alert is refused for its content. A ``text`` is sent beside the blocks: it is what
notifications and screen readers show.

Delivery is :class:`~agent.alerting.sinks.delivery.DeliverySink`'s: ``send`` stores the message in the outbox
(``<data dir>/spool/slack``) and returns; 429 (Slack's rate limit, with ``Retry-After``) and 5xx are
retried with backoff, other 4xx (``invalid_blocks``, ``no_service``, ``channel_is_archived``) are final.
The webhook URL is the credential: logs name its host only, the outbox a hash of it.

Example:
    >>> from schemas import AlertKind, Evidence, Severity
    >>> alert = Alert.create(
    ...     model="breast-cancer", model_version="1", kind=AlertKind.DATA, detector="adwin",
    ...     subject="mean radius", severity=Severity.WARNING, message="mean radius drifted up by 0.8 std",
    ...     evidence=Evidence(shift_in_std=0.8, window_events=640),
    ...     detected_at=datetime(2026, 1, 1, tzinfo=UTC),
    ... )
    >>> message = alert_message(alert)
    >>> message["blocks"][0]["text"]["text"]
    'Data drift: mean radius (breast-cancer v1)'
    >>> [f["text"] for f in message["blocks"][4]["fields"]]
    ['*Shift (reference std)*\\n0.8', '*Window events*\\n640']
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Unpack

import orjson
from pydantic import SecretStr

from agent.alerting.sinks.base import Notify, Recovery
from agent.alerting.sinks.delivery import DeliveryOptions, DeliverySink, Request
from agent.errors import ConfigurationError
from schemas import Alert
from schemas.incident import IncidentReport

__all__ = [
    "MAX_BLOCKS",
    "MAX_FIELDS",
    "MAX_FIELD_CHARS",
    "MAX_HEADER_CHARS",
    "MAX_TEXT_CHARS",
    "SlackSink",
    "alert_message",
    "incident_message",
    "recovery_message",
]

MAX_HEADER_CHARS = 150
"""A header block's plain text."""
MAX_TEXT_CHARS = 3000
"""A section's text (and, by driftline's choice, the message's ``text``)."""
MAX_FIELDS = 10
"""Fields of one section."""
MAX_FIELD_CHARS = 2000
"""One field's text."""
MAX_BLOCKS = 50
"""Blocks of one message."""

_MAX_EVIDENCE_FIELDS = 3 * MAX_FIELDS

_SEVERITY_ICON = {
    "critical": ":red_circle:",
    "warning": ":large_orange_circle:",
    "info": ":large_blue_circle:",
}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _escape(text: str) -> str:
    # mrkdwn's three control characters; everything else is shown as is.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": _cut(text, MAX_HEADER_CHARS)}}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _cut(_escape(text), MAX_TEXT_CHARS)}}


def _fields(pairs: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """Sections of at most ``MAX_FIELDS`` ``*name*\\nvalue`` fields each."""
    fields = [
        {"type": "mrkdwn", "text": _cut(f"*{_escape(name)}*\n{_escape(value)}", MAX_FIELD_CHARS)}
        for name, value in pairs
    ]
    return [
        {"type": "section", "fields": fields[i : i + MAX_FIELDS]} for i in range(0, len(fields), MAX_FIELDS)
    ]


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(_escape(text), MAX_TEXT_CHARS)}]}


def _number(value: float | int | str) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def _evidence(alert: Alert) -> list[tuple[str, str]]:
    e = alert.evidence
    named: list[tuple[str, float | int | None]] = [
        ("Reference mean", e.reference_mean),
        ("Reference std", e.reference_std),
        ("Recent mean", e.recent_mean),
        ("Recent std", e.recent_std),
        ("Shift (reference std)", e.shift_in_std),
        ("Detector statistic", e.statistic),
        ("Window events", e.window_events),
    ]
    pairs = [(name, _number(value)) for name, value in named if value is not None]
    pairs += [(str(name), _number(value)) for name, value in sorted(e.extra.items())]
    return pairs


def _time(at: datetime | float) -> str:
    moment = at if isinstance(at, datetime) else datetime.fromtimestamp(at, UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def alert_message(alert: Alert) -> dict[str, Any]:
    """The incoming-webhook payload for ``alert``: ``text`` and ``blocks``, within Slack's limits."""
    kind = str(alert.kind).capitalize()
    severity = str(alert.severity)
    title = f"{kind} drift: {alert.subject} ({alert.model} v{alert.model_version})"
    blocks: list[dict[str, Any]] = [
        _header(title),
        _section(f"{_SEVERITY_ICON.get(severity, '')} {alert.message}".strip()),
        *_fields(
            [
                ("Model", f"{alert.model} v{alert.model_version}"),
                ("Kind", str(alert.kind)),
                ("Subject", alert.subject),
                ("Severity", severity),
                ("Detector", alert.detector),
                ("Detected at", _time(alert.detected_at)),
            ]
        ),
    ]
    evidence = _evidence(alert)
    if len(evidence) > _MAX_EVIDENCE_FIELDS:  # three sections; the full alert is on the alerts topic
        left = len(evidence) - _MAX_EVIDENCE_FIELDS + 1
        evidence = [*evidence[: _MAX_EVIDENCE_FIELDS - 1], ("More", f"{left} values not shown")]
    if evidence:
        blocks.append(_section("*Evidence*: the recent window against the reference"))
        blocks.extend(_fields(evidence))
    blocks.append(_context(f"driftline alert {alert.alert_id}"))
    if len(blocks) > MAX_BLOCKS:  # only a huge ``extra`` gets here: keep the head and the id
        blocks = [*blocks[: MAX_BLOCKS - 1], blocks[-1]]
    text = _cut(
        f"[{severity}] {kind} drift on {alert.model}/{alert.subject}: {alert.message}", MAX_TEXT_CHARS
    )
    return {"text": _escape(text), "blocks": blocks}


def recovery_message(recovery: Recovery) -> dict[str, Any]:
    """The incoming-webhook payload saying that an incident recovered."""
    kind = recovery.kind.capitalize()
    minutes = max(0.0, recovery.closed_at - recovery.opened_at) / 60
    title = f"Recovered: {kind} drift on {recovery.subject} ({recovery.model})"
    blocks = [
        _header(title),
        *_fields(
            [
                ("Model", recovery.model),
                ("Kind", recovery.kind),
                ("Subject", recovery.subject),
                ("Open for", f"{minutes:.1f} min"),
                ("Alerts", str(recovery.alerts)),
                ("Recovered at", _time(recovery.closed_at)),
            ]
        ),
        _context(f"driftline incident opened by alert {recovery.opening_alert_id}"),
    ]
    text = f":white_check_mark: {kind} drift on {recovery.model}/{recovery.subject} recovered"
    return {"text": _cut(_escape(text), MAX_TEXT_CHARS), "blocks": blocks}


_STATUS_ICON = {"opened": ":rotating_light:", "updated": ":arrow_up:", "resolved": ":white_check_mark:"}
_TIMELINE_LINES = 15


def incident_message(report: IncidentReport) -> dict[str, Any]:
    """The incoming-webhook payload for an incident notification: what changed, the root cause, the
    timeline (its last 15 moments) and what changed around it."""
    status = report.status.capitalize()
    title = f"{status}: incident on {report.model} ({report.alerts} alerts, {report.severity})"
    lines = []
    for e in report.timeline[-_TIMELINE_LINES:]:
        where = f" at event {e.event:,}" if e.event is not None else ""
        lines.append(f"{_time(e.at)} {e.change} {e.kind} {e.subject!r} ({e.severity}){where}")
    left = len(report.timeline) - len(lines)
    if left > 0:
        lines.insert(0, f"({left} earlier moments not shown)")
    blocks: list[dict[str, Any]] = [
        _header(title),
        _section(f"{_STATUS_ICON.get(report.status, '')} {report.change}".strip()),
        _section(f"*Root cause*: {report.root_cause}"),
        *_fields(
            [
                ("Model", f"{report.model} v{', v'.join(report.model_versions)}"),
                ("Severity", str(report.severity)),
                ("Alerts", f"{report.alerts} ({report.open_alerts} open)"),
                ("Opened at", _time(report.opened_at)),
            ]
        ),
        _section("*Timeline*\n" + "\n".join(lines)),
    ]
    if report.context:
        blocks.append(_section("*Around it*\n" + "\n".join(report.context[:10])))
    blocks.append(_context(f"driftline incident {report.incident_id} ({report.notification_id})"))
    text = f"[{report.severity}] {status} incident on {report.model}: {report.root_cause}"
    return {"text": _cut(_escape(text), MAX_TEXT_CHARS), "blocks": blocks}


class SlackSink(DeliverySink):
    """Posts each alert (and each recovery) to a Slack incoming webhook; ``send`` never waits for Slack.

    Parameters:
        webhook_url: The incoming-webhook URL; it is the credential, never logged.
        recoveries: Also post a message when an incident recovers (``notify`` ``alerts`` or ``both``).
        notify: ``incidents``: one message per incident notification (opened, updated, resolved);
            ``alerts``: one per alert (and recovery); ``both``.
        **options: Delivery options of :class:`~agent.alerting.sinks.delivery.DeliverySink`.
    """

    name = "slack"
    outbox_setting = "DRIFTLINE_SLACK__OUTBOX_DIR"

    def __init__(
        self,
        webhook_url: SecretStr | str,
        *,
        recoveries: bool = True,
        notify: Notify = "alerts",
        **options: Unpack[DeliveryOptions],
    ) -> None:
        url = webhook_url.get_secret_value() if isinstance(webhook_url, SecretStr) else webhook_url
        if not url:
            raise ConfigurationError("the Slack webhook URL is empty (DRIFTLINE_SLACK__WEBHOOK_URL)")
        super().__init__([url], **options)
        self.recoveries = recoveries
        self.notify = notify

    async def send(self, alert: Alert) -> None:
        if self.notify == "incidents":
            return
        order = f"{alert.model}\x1f{alert.kind}\x1f{alert.subject}"
        await self.deliver(self.urls[0], orjson.dumps(alert_message(alert)), alert.alert_id, order)

    async def send_incident(self, report: IncidentReport) -> None:
        if self.notify == "alerts":
            return
        document = orjson.dumps(incident_message(report))
        await self.deliver(
            self.urls[0], document, report.notification_id, f"incident\x1f{report.incident_id}"
        )

    async def recover(self, recovery: Recovery) -> None:
        if not self.recoveries or self.notify == "incidents":
            return
        order = f"{recovery.model}\x1f{recovery.kind}\x1f{recovery.subject}"
        delivery_id = f"recovery of {recovery.opening_alert_id}"
        await self.deliver(self.urls[0], orjson.dumps(recovery_message(recovery)), delivery_id, order)

    def request(self, url: str, document: bytes, delivery_id: str) -> Request:
        return Request(document, {"Content-Type": "application/json"})
