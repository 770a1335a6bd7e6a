"""``driftline produce`` (agent/produce_command.py), tested here beside the producers it drives."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from agent.cli import main
from producers.scenarios import SCENARIOS
from tests.support.kafka import read_topic


@pytest.fixture
def topics(monkeypatch: pytest.MonkeyPatch, unique: str) -> tuple[str, str]:
    requests, outcomes = f"cli-req-{unique}", f"cli-out-{unique}"
    monkeypatch.setenv("DRIFTLINE_TOPICS__REQUESTS", requests)
    monkeypatch.setenv("DRIFTLINE_TOPICS__OUTCOMES", outcomes)
    return requests, outcomes


@pytest.fixture
def no_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Points the producer at a closed port: a test passing with it sent nothing."""
    monkeypatch.setenv("DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")


def test_list_prints_every_scenario_schedule(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["produce", "scenario", "--list", "--model", "classification-20"]) == 0
    out = capsys.readouterr().out
    assert all(f"{name}: " in out for name in SCENARIOS)
    assert " 5000  end  covariate  abrupt  x05      +1 sd" in out


@pytest.mark.usefixtures("no_broker")
def test_replay_with_mismatching_columns_exits_2_naming_them(
    tmp_path: Path, package: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "rows.csv").write_text("age,colour,income\n1,red,2\n")
    code = main(["produce", "replay", str(tmp_path / "rows.csv"), "--package", str(package)])
    assert code == 2
    err = capsys.readouterr().err
    assert "driftline produce: error:" in err and "missing 'plan'; unexpected 'colour'" in err
    assert "Kafka" not in err


@pytest.mark.usefixtures("no_broker")
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["scenario"], "give a scenario NAME or --schedule FILE"),
        (["scenario", "windy"], "unknown scenario 'windy'"),
        (["scenario", "calm", "--model", "iris"], "unknown example model 'iris'"),
        (["scenario", "calm", "--outcome-share", "2"], "outcome share must be in [0, 1]"),
        (["scenario", "calm", "--count", "1"], "cannot reach Kafka at 127.0.0.1:1"),
    ],
)
def test_errors_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["produce", *argv, "--quiet"]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.integration
def test_scenario_run_prints_schedule_and_summary_and_sends_it_all(
    kafka_bootstrap: str,
    topics: tuple[str, str],
    unique: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS", kafka_bootstrap)
    argv = ["produce", "scenario", "demo", "--count", "2500", "--rate", "0", "--outcome-share", "0.4"]
    assert main([*argv, "--run-id", unique, "--seed", "3"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith("demo: 2500 events")
    assert lines[1].split() == ["from", "to", "kind", "shape", "feature", "size"]
    table = [line.split() for line in lines[2:8]]
    assert ["2000", "6000", "covariate", "abrupt", "worst", "radius", "+1.5", "sd"] in table
    assert ["2000", "6000", "covariate", "abrupt", "worst", "concave", "points", "+1.5", "sd"] in table
    assert "requests " in lines[-2] and "drifts applied 4 of 5;" in lines[-2]
    assert lines[-1].startswith("2,500 events in ")
    assert "2,500 events (" in err  # the final progress line

    requests = asyncio.run(read_topic(kafka_bootstrap, topics[0], 2500))
    assert len(requests) == 2500 and requests[0].key == f"{unique}-0".encode()
    outcomes_sent = int(lines[-2].split("outcomes ")[1].split(",")[0])
    outcomes = asyncio.run(read_topic(kafka_bootstrap, topics[1], outcomes_sent))
    assert len(outcomes) == outcomes_sent and 800 < outcomes_sent < 1200


@pytest.mark.integration
def test_replay_with_a_schedule_file(
    kafka_bootstrap: str,
    topics: tuple[str, str],
    tmp_path: Path,
    package: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS", kafka_bootstrap)
    (tmp_path / "rows.csv").write_text("plan,age,income,y\n" + "pro,40,2000,1\n" * 30)
    (tmp_path / "late.toml").write_text(
        '[[drifts]]\nkind = "covariate"\nstart = 20\nfeature = "age"\nsize = 1\n'
    )
    argv = ["produce", "replay", str(tmp_path / "rows.csv"), "--package", str(package)]
    argv += ["--label-column", "y", "--schedule", str(tmp_path / "late.toml"), "--count", "50", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("late: 50 events\n") and "requests 50, outcomes 50," in out

    requests = asyncio.run(read_topic(kafka_bootstrap, topics[0], 50))
    ages = sorted(json.loads(r.value)["features"]["age"] for r in requests)
    assert ages == [40.0] * 20 + [50.0] * 30  # +1 reference sd of age (10)
