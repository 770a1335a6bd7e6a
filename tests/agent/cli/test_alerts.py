"""``driftline alerts`` without a server: --since parsing, the Flux query, the table, clear errors."""

from __future__ import annotations

import io
import socket
from datetime import UTC, datetime

import pytest

from agent.alerting.query import AlertRow, build_query
from agent.cli import main
from agent.cli.alerts import format_table, parse_since
from agent.errors import ConfigurationError

NOW = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", datetime(2026, 1, 2, 11, 30, tzinfo=UTC)),
        ("1h", datetime(2026, 1, 2, 11, 0, tzinfo=UTC)),
        ("1.5h", datetime(2026, 1, 2, 10, 30, tzinfo=UTC)),
        ("2d", datetime(2025, 12, 31, 12, 0, tzinfo=UTC)),
        ("1w", datetime(2025, 12, 26, 12, 0, tzinfo=UTC)),
        ("45s", datetime(2026, 1, 2, 11, 59, 15, tzinfo=UTC)),
        ("2026-01-01T08:00:00Z", datetime(2026, 1, 1, 8, 0, tzinfo=UTC)),
        ("2026-01-01T10:00:00+02:00", datetime(2026, 1, 1, 8, 0, tzinfo=UTC)),
        ("2026-01-01", datetime(2026, 1, 1, tzinfo=UTC)),
    ],
)
def test_parse_since(text: str, expected: datetime) -> None:
    assert parse_since(text, now=NOW) == expected


def test_parse_since_rejects_nonsense() -> None:
    with pytest.raises(ConfigurationError, match="--since 'yesterday'"):
        parse_since("yesterday", now=NOW)


def test_query_escapes_filters() -> None:
    query = build_query("b", since=NOW, model='x") |> drop() //', kind="data", limit=3)
    assert 'r.model == "x\\") |> drop() //"' in query
    assert 'r.kind == "data"' in query
    assert "limit(n: 3)" in query
    assert "range(start: 2026-01-02T12:00:00.000000Z)" in query
    assert 'r.model == "a\\${b}"' in build_query("b", since=NOW, model="a${b}")


def test_table() -> None:
    rows = [
        AlertRow(
            time=datetime(2026, 1, 2, 11, 0, 5, tzinfo=UTC),
            model="breast-cancer",
            version="1",
            kind="data",
            severity="warning",
            subject="mean radius",
            detector="adwin",
            message="mean radius drifted up by 0.8 reference std " * 3,
            alert_id="a" * 32,
            evidence={"shift_in_std": 0.8},
        )
    ]
    out = io.StringIO()
    format_table(rows, out, width=20)
    header, line = out.getvalue().splitlines()
    assert header.split() == ["TIME", "MODEL", "VERSION", "KIND", "SEVERITY", "SUBJECT", "MESSAGE"]
    assert line.startswith("2026-01-02 11:00:05  breast-cancer  1        data  warning   mean radius  ")
    assert line.endswith("  mean radius drifted…")  # cut to 20 characters


def test_missing_token_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for var in ("INFLUXDB_TOKEN", "DRIFTLINE_INFLUX__TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DRIFTLINE_INFLUX__URL", "http://127.0.0.1:1")
    assert main(["alerts"]) == 2
    err = capsys.readouterr().err
    assert "no InfluxDB token for http://127.0.0.1:1" in err
    assert "INFLUXDB_TOKEN" in err


def test_unreachable_influx_names_the_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("DRIFTLINE_INFLUX__URL", url)
    monkeypatch.setenv("DRIFTLINE_INFLUX__TOKEN", "sekrit-token")
    assert main(["alerts", "--since", "1h"]) == 2
    err = capsys.readouterr().err
    assert f"InfluxDB at {url} cannot be reached" in err
    assert "sekrit-token" not in err
