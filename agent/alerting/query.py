"""Reading alerts back from InfluxDB: the ``driftline_alert`` points the workers' InfluxDB sink wrote,
and the ``driftline_incident`` notifications of incidents across kinds.

``driftline alerts`` lists both and the demo's summary shows them; they call :func:`query_alerts` and
:func:`query_incidents`.

May import: :mod:`agent.errors`, :mod:`agent.settings`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agent.errors import ConfigurationError, ServiceUnavailableError
from agent.settings import InfluxSettings

__all__ = ["AlertRow", "IncidentRow", "build_query", "query_alerts", "query_incidents"]


@dataclass(frozen=True)
class AlertRow:
    """One alert as read back from InfluxDB."""

    time: datetime
    model: str
    version: str
    kind: str
    severity: str
    subject: str
    detector: str
    message: str
    alert_id: str
    evidence: dict[str, float | int | str]


@dataclass(frozen=True)
class IncidentRow:
    """An incident as its latest notification left it in InfluxDB."""

    time: datetime
    """When that notification was made."""
    model: str
    status: str
    """``opened``, ``updated`` or ``resolved``."""
    severity: str
    incident_id: str
    alerts: int
    open_alerts: int
    root_cause: str
    change: str
    opened_at: str
    timeline: list[dict[str, Any]]
    context: list[str]


def _flux_string(value: str) -> str:
    # OSS 2.x has no query parameters: escape what a Flux string literal treats specially.
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${")
    return f'"{escaped}"'


def _flux_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def build_query(
    bucket: str,
    *,
    since: datetime,
    model: str | None = None,
    kind: str | None = None,
    limit: int = 50,
    measurement: str = "driftline_alert",
) -> str:
    """The Flux query for alerts since ``since``, newest first, at most ``limit``.

    Example:
        >>> print(build_query("b", since=datetime(2026, 1, 1, tzinfo=UTC), model='m"x', limit=5))
        from(bucket: "b")
          |> range(start: 2026-01-01T00:00:00.000000Z)
          |> filter(fn: (r) => r._measurement == "driftline_alert")
          |> filter(fn: (r) => r.model == "m\\"x")
          |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")
          |> group()
          |> sort(columns: ["_time"], desc: true)
          |> limit(n: 5)
    """
    lines = [
        f"from(bucket: {_flux_string(bucket)})",
        f"  |> range(start: {_flux_time(since)})",
        f"  |> filter(fn: (r) => r._measurement == {_flux_string(measurement)})",
    ]
    if model:
        lines.append(f"  |> filter(fn: (r) => r.model == {_flux_string(model)})")
    if kind:
        lines.append(f"  |> filter(fn: (r) => r.kind == {_flux_string(kind)})")
    lines += [
        # One row per alert: its fields side by side (pivot works per series, i.e. per tag set).
        '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")',
        "  |> group()",
        '  |> sort(columns: ["_time"], desc: true)',
        f"  |> limit(n: {int(limit)})",
    ]
    return "\n".join(lines)


_NOT_EVIDENCE = frozenset(
    {"result", "table", "_start", "_stop", "_time", "_measurement", "message", "alert_id"}
    | {"model", "version", "kind", "severity", "subject", "detector"}
)


def _row(values: dict[str, Any]) -> AlertRow:
    evidence = {
        k: v for k, v in values.items() if k not in _NOT_EVIDENCE and v is not None and not k.startswith("_")
    }
    return AlertRow(
        time=values["_time"],
        model=str(values.get("model", "")),
        version=str(values.get("version", "")),
        kind=str(values.get("kind", "")),
        severity=str(values.get("severity", "")),
        subject=str(values.get("subject", "")),
        detector=str(values.get("detector", "")),
        message=str(values.get("message") or ""),
        alert_id=str(values.get("alert_id") or ""),
        evidence=evidence,
    )


def query_alerts(
    settings: InfluxSettings,
    *,
    since: datetime,
    model: str | None = None,
    kind: str | None = None,
    limit: int = 50,
    timeout_s: float = 10.0,
) -> list[AlertRow]:
    """Alerts from InfluxDB, newest first; raises a :class:`~agent.errors.DriftlineError` naming the URL
    when InfluxDB cannot be reached, the token is missing or refused, or the bucket does not exist."""
    query = build_query(settings.bucket, since=since, model=model, kind=kind, limit=limit)
    return [_row(values) for values in _records(settings, query, limit, timeout_s)]


def _incident_row(values: dict[str, Any]) -> IncidentRow:
    def listed(name: str) -> list[Any]:
        try:
            data = json.loads(values.get(name) or "[]")
        except ValueError:
            return []
        return data if isinstance(data, list) else []

    return IncidentRow(
        time=values["_time"],
        model=str(values.get("model", "")),
        status=str(values.get("status", "")),
        severity=str(values.get("severity", "")),
        incident_id=str(values.get("incident_id") or ""),
        alerts=int(values.get("alerts") or 0),
        open_alerts=int(values.get("open_alerts") or 0),
        root_cause=str(values.get("root_cause") or ""),
        change=str(values.get("change") or ""),
        opened_at=str(values.get("opened_at") or ""),
        timeline=[e for e in listed("timeline") if isinstance(e, dict)],
        context=[str(c) for c in listed("context")],
    )


def query_incidents(
    settings: InfluxSettings,
    *,
    since: datetime,
    model: str | None = None,
    limit: int = 50,
    timeout_s: float = 10.0,
) -> list[IncidentRow]:
    """Incidents notified since ``since``, each as its latest notification left it, newest first; errors
    as :func:`query_alerts`."""
    # Several notifications per incident: read a few times the limit, keep each one's newest.
    query = build_query(
        settings.bucket, since=since, model=model, limit=limit * 8, measurement="driftline_incident"
    )
    newest: dict[str, IncidentRow] = {}
    for values in _records(settings, query, limit, timeout_s):
        row = _incident_row(values)
        if row.incident_id not in newest or row.time > newest[row.incident_id].time:
            newest[row.incident_id] = row
    return sorted(newest.values(), key=lambda r: r.time, reverse=True)[:limit]


def _records(settings: InfluxSettings, query: str, limit: int, timeout_s: float) -> list[dict[str, Any]]:
    from influxdb_client import InfluxDBClient
    from influxdb_client.rest import ApiException

    if settings.token is None or not settings.token.get_secret_value():
        raise ConfigurationError(
            f"no InfluxDB token for {settings.url}: set DRIFTLINE_INFLUX__TOKEN or INFLUXDB_TOKEN "
            "(scripts/services env prints the local one)"
        )
    if limit < 1:
        raise ConfigurationError("--limit must be at least 1")
    try:
        with InfluxDBClient(
            url=settings.url,
            token=settings.token.get_secret_value(),
            org=settings.org,
            timeout=int(timeout_s * 1000),
        ) as client:
            tables = client.query_api().query(query)
    except ApiException as exc:
        status = int(exc.status or 0)
        if status in (401, 403):
            raise ConfigurationError(
                f"InfluxDB at {settings.url} refused the token (HTTP {status}); check INFLUXDB_TOKEN"
            ) from None
        if status == 404:
            raise ConfigurationError(
                f"InfluxDB at {settings.url}: org {settings.org!r} or bucket {settings.bucket!r} not found"
            ) from None
        detail = str(exc.body or exc.reason)[:300]
        raise ServiceUnavailableError(
            f"InfluxDB at {settings.url} failed the query (HTTP {status}): {detail}"
        ) from None
    except Exception as exc:  # urllib3 connection errors, timeouts, OS errors
        # The request's Authorization header is never part of these messages.
        raise ServiceUnavailableError(
            f"InfluxDB at {settings.url} cannot be reached ({type(exc).__name__}: {str(exc)[:200]}); "
            "is it running? (scripts/influxdb status)"
        ) from None
    return [record.values for table in tables for record in table.records]
