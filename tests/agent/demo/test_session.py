"""``driftline demo --package``: the demo on any model package, here one built from an ONNX file."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import main
from agent.demo.session import Demo
from agent.errors import ConfigurationError
from tests.support.services import ROOT

CREDIT = ROOT / "examples" / "credit"


@pytest.fixture(scope="module")
def credit_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """credit-mlp/1, built from the example ONNX file as the README says."""
    repo = tmp_path_factory.mktemp("packages")
    args = ["package", "--onnx", str(CREDIT / "mlp.onnx"), "--reference", str(CREDIT / "reference.csv")]
    args += ["--holdout", str(CREDIT / "holdout.csv"), "--label-column", "default"]
    assert main([*args, "--name", "credit-mlp", "--repository", str(repo), "-q"]) == 0
    return repo / "credit-mlp" / "1"


def demo_args(**overrides: object) -> argparse.Namespace:
    args: dict[str, object] = {"scenario": "demo", "model": "breast-cancer", "count": None, "rate": None}
    args |= {
        "seed": 0,
        "package": None,
        "data": None,
        "label_column": None,
        "feature": None,
        "shuffle": False,
    }
    return argparse.Namespace(**(args | overrides))


def test_the_schedule_shifts_the_first_numeric_feature_or_the_one_named(credit_package: Path) -> None:
    args = demo_args(package=credit_package, data=CREDIT / "holdout.csv", label_column="default")
    demo = Demo(args, sys.stdout)
    scenario, count = demo._scenario()
    assert count == 12_000 and demo.model_name == "credit-mlp"
    assert [(d.kind, d.feature) for d in scenario.drifts] == [
        ("covariate", "age"),
        ("concept", None),
        ("schema", None),
        ("garbage", None),
    ]
    scenario, _ = Demo(demo_args(**{**vars(args), "feature": "debt_ratio"}), sys.stdout)._scenario()
    assert scenario.drifts[0].feature == "debt_ratio"


def test_without_labels_there_is_no_concept_change(credit_package: Path) -> None:
    args = demo_args(package=credit_package, data=CREDIT / "holdout.csv")
    scenario, _ = Demo(args, sys.stdout)._scenario()
    assert [d.kind for d in scenario.drifts] == ["covariate", "schema", "garbage"]


def test_an_unknown_feature_is_named(credit_package: Path) -> None:
    args = demo_args(package=credit_package, data=CREDIT / "holdout.csv", feature="salary")
    with pytest.raises(
        ConfigurationError, match="--feature 'salary' is not a feature of credit-mlp/1: age, income"
    ):
        Demo(args, sys.stdout)._scenario()


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (["--package", "models/m/1"], "--package needs --data FILE.csv"),
        (["--data", "rows.csv", "--feature", "x"], "--data, --feature: only with --package"),
    ],
)
def test_package_options_go_together(
    given: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", *given]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.integration
async def test_the_demo_on_a_package_built_from_an_onnx_file(
    kafka_bootstrap: str, credit_package: Path, tmp_path: Path
) -> None:
    # InfluxDB is not needed here (test_evaluation.py's end-to-end run checks it): no token, not used.
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "INFLUXDB_TOKEN": "", "COLUMNS": "120"}
    command = [sys.executable, "-m", "agent.cli", "demo", "--count", "9000", "--rate", "450"]
    command += ["--package", str(credit_package), "--data", str(CREDIT / "holdout.csv")]
    command += ["--label-column", "default", "--dir", str(tmp_path / "demo")]
    proc = await asyncio.to_thread(
        subprocess.run, command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    out = proc.stdout
    assert proc.returncode == 0, f"{out[-6000:]}\n{proc.stderr[-3000:]}"
    assert f"serving credit-mlp/1 from {credit_package} (verified)" in out
    assert "every scripted drift was detected" in out
    assert re.search(
        r"\[ok\] covariate \+1\.5 sd on 'age', events 1,500-4,500\n +data alert on 'age'", out
    ), out
    assert "[ok] concept: 50% of labels changed, from event 5,250" in out
    assert out.count("  [ok] ") == 3 and "[MISSED]" not in out
    assert (tmp_path / "demo" / "demo.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "demo" / "models" / "credit-mlp" / "1" / "model.onnx").is_file()
