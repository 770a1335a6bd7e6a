"""List recent incidents and drift alerts from InfluxDB, newest first.

The table shows the incidents (the alerts of one model that opened close together, each as its latest
notification left it: status, severity, alerts, root cause) and then the alerts; ``--incidents``
shows only the incidents (with their timelines as JSON under ``--json``). ``--json`` alone prints the
alerts, as before. Reads the ``driftline_incident`` and ``driftline_alert`` points the workers wrote
(same settings as ``driftline run``:
``DRIFTLINE_INFLUX__*`` or ``INFLUXDB_URL`` / ``INFLUXDB_TOKEN`` / ``INFLUXDB_ORG`` /
``INFLUXDB_BUCKET``). ``--since`` takes a duration (``90s``, ``30m``, ``1h``, ``2d``, ``1w``) or an ISO
time (``2026-01-01T12:00:00Z``; without a zone, UTC).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from agent.alerting.query import AlertRow, IncidentRow, query_alerts, query_incidents
from agent.errors import ConfigurationError
from agent.settings import Settings

__all__ = ["add_arguments", "format_incidents", "format_table", "parse_since", "run"]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_COLUMNS = ("time", "model", "version", "kind", "severity", "subject", "message")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="only this model's alerts")
    parser.add_argument(
        "--kind", choices=["data", "prediction", "concept", "technical", "performance"], help="only this kind"
    )
    parser.add_argument(
        "--since", default="24h", help="a duration back from now (30m, 1h, 2d) or an ISO time (default: 24h)"
    )
    parser.add_argument("--limit", type=int, default=50, help="most alerts to list (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    parser.add_argument(
        "--incidents", action="store_true", help="only the incidents (with --json: their timelines too)"
    )


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


_INCIDENT_COLUMNS = ("time", "model", "status", "severity", "alerts", "open", "root cause")


def format_incidents(rows: list[IncidentRow], out: TextIO, *, width: int = 70) -> None:
    """A fixed-width table of incidents; root causes longer than ``width`` are cut with an ellipsis.

    Example:
        >>> import sys
        >>> cause = "data drift on 'x05' came first, followed by prediction drift"
        >>> row = IncidentRow(datetime(2026, 1, 1, tzinfo=UTC), "m", "updated", "critical", "a1", 3, 2,
        ...                   cause, "grew", "", [], [])
        >>> format_incidents([row], sys.stdout, width=40)
        TIME                 MODEL  STATUS   SEVERITY  ALERTS  OPEN  ROOT CAUSE
        2026-01-01 00:00:00  m      updated  critical  3       2     data drift on 'x05' came first, followe…
    """

    def cells(row: IncidentRow) -> list[str]:
        cause = row.root_cause if len(row.root_cause) <= width else row.root_cause[: width - 1] + "…"
        when = row.time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        return [when, row.model, row.status, row.severity, str(row.alerts), str(row.open_alerts), cause]

    table = [[c.upper() for c in _INCIDENT_COLUMNS], *(cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(_INCIDENT_COLUMNS))]
    for line in table:
        out.write("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() + "\n")


def _json_row(row: AlertRow | IncidentRow) -> dict[str, Any]:
    data = asdict(row)
    data["time"] = row.time.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return data


def run(args: argparse.Namespace) -> int:
    settings = Settings().influx
    since = parse_since(args.since)
    if args.incidents or not args.json:
        incidents = query_incidents(settings, since=since, model=args.model, limit=args.limit)
        if args.incidents:
            if args.json:
                json.dump([_json_row(r) for r in incidents], sys.stdout, indent=2)
                sys.stdout.write("\n")
            elif incidents:
                format_incidents(incidents, sys.stdout)
            else:
                print(f"no incidents since {since.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC", file=sys.stderr)
            return 0
        if incidents:
            print("Incidents")
            format_incidents(incidents, sys.stdout)
            print("\nAlerts")
    rows = query_alerts(settings, since=since, model=args.model, kind=args.kind, limit=args.limit)
    if args.json:
        json.dump([_json_row(r) for r in rows], sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif rows:
        format_table(rows, sys.stdout)
    else:
        print(f"no alerts since {since.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC", file=sys.stderr)
    return 0
