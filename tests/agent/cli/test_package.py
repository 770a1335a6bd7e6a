from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agent.cli import main
from agent.cli.package import EXAMPLE_NAMES
from agent.models.repository import ModelRepository
from agent.packaging.examples import EXAMPLES
from tests.agent.conftest import ExamplePackages

EXAMPLE_TRAINING = Path(__file__).resolve().parents[3] / "examples" / "train_example.py"


def test_example_choices_match_the_examples() -> None:
    assert set(EXAMPLE_NAMES) == set(EXAMPLES)


def test_package_example_then_next_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "models"
    assert main(["package", "--example", "diabetes", "--repository", str(repo)]) == 0
    out, err = capsys.readouterr()
    assert f"built {repo / 'diabetes' / '1'} (GradientBoostingRegressor, regression, 10 features)" in out
    assert "parity passed on 111 holdout rows" in out
    for step in ("train", "convert", "verify", "stats", "write"):
        assert f"{step} ... " in err
    assert err.count(" s\n") == 5

    assert main(["package", "--example", "diabetes", "--repository", str(repo), "-q"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert ModelRepository(repo).versions("diabetes") == ["1", "2"]


def test_existing_version_needs_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["package", "--example", "diabetes", "--repository", str(tmp_path), "--version", "1.0", "-q"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 2
    assert "1.0: package already exists; pass --force" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0


def test_repository_defaults_to_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DRIFTLINE_SERVING__MODEL_REPOSITORY", str(tmp_path / "from-env"))
    assert main(["package", "--example", "diabetes", "--name", "sugar", "-q"]) == 0
    assert (tmp_path / "from-env" / "sugar" / "1" / "manifest.json").is_file()


def test_package_module_then_inspect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "models"
    assert main(["package", "--module", str(EXAMPLE_TRAINING), "--repository", str(repo), "-q"]) == 0
    package = repo / "train-example" / "1"
    assert "built" in capsys.readouterr().out

    assert main(["inspect", str(repo / "train-example")]) == 0  # a model's folder: its newest
    out = capsys.readouterr().out
    assert f"package     {package}" in out
    assert "model       train-example 1 (binary_classification)" in out
    assert "plan" in out and "categorical" in out and "impute(basic)" in out
    assert "smoke test  reference medians -> label" in out
    assert "findings    none" in out

    assert main(["inspect", str(package), "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert [f["name"] for f in manifest["features"]] == ["age", "monthly_spend", "plan"]


def test_inspect_lists_technical_drift(
    example_packages: ExamplePackages, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    package = tmp_path / "diabetes" / "1"
    shutil.copytree(example_packages.regressor.path, package)
    manifest = json.loads((package / "manifest.json").read_text())
    manifest["versions"]["skl2onnx"] = "0.1.0"
    (package / "manifest.json").write_text(json.dumps(manifest))
    assert main(["inspect", str(package)]) == 0
    assert "skl2onnx: built with 0.1.0, installed" in capsys.readouterr().out
    assert main(["inspect", str(package), "--strict"]) == 1


def test_inspect_reports_a_broken_package(
    example_packages: ExamplePackages, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    package = tmp_path / "diabetes" / "1"
    shutil.copytree(example_packages.regressor.path, package)
    (package / "model.onnx").write_bytes(b"\x08\x07garbage")
    assert main(["inspect", str(package)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"driftline inspect: error: {package / 'model.onnx'}: SHA-256 is")


@pytest.mark.parametrize(
    ("module", "message"),
    [
        ("model.pkl", "refusing to load a pickle file"),
        ("missing/train.py", "no such file"),
        ("no_such_module_anywhere", "cannot import it"),
    ],
)
def test_package_module_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], module: str, message: str
) -> None:
    args = ["package", "--module", module, "--name", "m", "--repository", str(tmp_path), "-q"]
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert ModelRepository(tmp_path).scan() == {}


def test_invalid_name_is_refused_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["package", "--example", "diabetes", "--name", "../up", "--repository", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert "invalid model name '../up'" in captured.err and "train ..." not in captured.err
