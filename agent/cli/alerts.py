"""List recent drift alerts from InfluxDB, newest first.

Reads the ``driftline_alert`` points the workers wrote (same settings as ``driftline run``:
``DRIFTLINE_INFLUX__*`` or ``INFLUXDB_URL`` / ``INFLUXDB_TOKEN`` / ``INFLUXDB_ORG`` /
``INFLUXDB_BUCKET``). ``--since`` takes a duration (``90s``, ``30m``, ``1h``, ``2d``, ``1w``) or an ISO
time (``2026-01-01T12:00:00Z``; without a zone, UTC).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from agent.errors import ConfigurationError, ServiceUnavailableError
from agent.settings import InfluxSettings, Settings

__all__ = ["AlertRow", "add_arguments", "build_query", "parse_since", "query_alerts", "run"]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_COLUMNS = ("time", "model", "version", "kind", "severity", "subject", "message")


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="only this model's alerts")
    parser.add_argument(
        "--kind", choices=["data", "prediction", "concept", "technical"], help="only this kind"
    )
    parser.add_argument(
        "--since", default="24h", help="a duration back from now (30m, 1h, 2d) or an ISO time (default: 24h)"
    )
    parser.add_argument("--limit", type=int, default=50, help="most alerts to list (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print a JSON array instead of a table")


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """The start time ``text`` means: ``now`` minus a duration, or an ISO time (UTC if no zone).

    Example:
        >>> now = datetime(2026, 1, 2, tzinfo=UTC)
        >>> parse_since("90m", now=now).isoformat()
        '2026-01-01T22:30:00+00:00'
        >>> parse_since("2026-01-01T12:00", now=now).isoformat()
        '2026-01-01T12:00:00+00:00'
    """
    now = now or datetime.now(UTC)
    match = _DURATION.match(text.strip().lower())
    if match:
        value, unit = float(match.group(1)), match.group(2)
        return now - timedelta(**{_UNITS[unit]: value})
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ConfigurationError(
            f"--since {text!r}: expected a duration (30m, 1h, 2d, 1w) or an ISO time (2026-01-01T12:00:00Z)"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


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


def format_table(rows: list[AlertRow], out: TextIO, *, width: int = 60) -> None:
    """A fixed-width table of ``rows``; messages longer than ``width`` are cut with an ellipsis."""

    def cells(row: AlertRow) -> list[str]:
        message = row.message if len(row.message) <= width else row.message[: width - 1] + "…"
        when = row.time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        return [when, row.model, row.version, row.kind, row.severity, row.subject, message]

    table = [[c.upper() for c in _COLUMNS], *(cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(_COLUMNS))]
    for line in table:
        out.write("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() + "\n")


def _json_row(row: AlertRow) -> dict[str, Any]:
    data = asdict(row)
    data["time"] = row.time.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return data


def run(args: argparse.Namespace) -> int:
    settings = Settings().influx
    since = parse_since(args.since)
    rows = query_alerts(settings, since=since, model=args.model, kind=args.kind, limit=args.limit)
    if args.json:
        json.dump([_json_row(r) for r in rows], sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif rows:
        format_table(rows, sys.stdout)
    else:
        print(f"no alerts since {since.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC", file=sys.stderr)
    return 0
