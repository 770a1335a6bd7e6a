"""Reading alerts back from InfluxDB: the ``driftline_alert`` points the workers' InfluxDB sink wrote.

``driftline alerts`` lists them and the demo's summary shows them; both call :func:`query_alerts`.

May import: :mod:`agent.errors`, :mod:`agent.settings`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agent.errors import ConfigurationError, ServiceUnavailableError
from agent.settings import InfluxSettings

__all__ = ["AlertRow", "build_query", "query_alerts"]


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


def _flux_string(value: str) -> str:
    # OSS 2.x has no query parameters: escape what a Flux string literal treats specially.
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${")
    return f'"{escaped}"'


def _flux_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def build_query(
    bucket: str, *, since: datetime, model: str | None = None, kind: str | None = None, limit: int = 50
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
        '  |> filter(fn: (r) => r._measurement == "driftline_alert")',
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
    from influxdb_client import InfluxDBClient
    from influxdb_client.rest import ApiException

    if settings.token is None or not settings.token.get_secret_value():
        raise ConfigurationError(
            f"no InfluxDB token for {settings.url}: set DRIFTLINE_INFLUX__TOKEN or INFLUXDB_TOKEN "
            "(scripts/services env prints the local one)"
        )
    if limit < 1:
        raise ConfigurationError("--limit must be at least 1")
    query = build_query(settings.bucket, since=since, model=model, kind=kind, limit=limit)
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
    return [_row(record.values) for table in tables for record in table.records]
