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
    assert "parity passed on 111 holdout rows: max abs diff " in out  # a regressor has no labels
    for step in ("train", "convert", "verify", "explain", "stats", "write"):
        assert f"{step} ... " in err
    assert err.count(" s\n") == 6

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
    # The output's reference came from the holdout; the two numeric features have a reconstruction
    # (the categorical plan is left out).
    assert "(output on the holdout rows)" in out
    assert "multivar.   1 of 2 principal components of the numeric features kept" in out
    assert "holdout and cross fit)" in out
    # The calibration and the importances the package carries (issue 16), not only in --json.
    built = json.loads((package / "manifest.json").read_text())
    c = built["calibration"]
    assert f"calibration {c['method']} on {c['rows']} rows" in out
    assert f"estimated error {c['reference_error']:.1%} on the holdout" in out
    top = max(built["importance"]["values"].items(), key=lambda kv: kv[1])
    assert f"repeats: {top[0]} {top[1]:.3g}" in out

    assert main(["inspect", str(package), "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert [f["name"] for f in manifest["features"]] == ["age", "monthly_spend", "plan"]


STRING_CLASSES = """
import numpy as np
from sklearn.tree import DecisionTreeClassifier

from agent.packaging.training import TrainingResult


def train():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 2))
    noisy = X[:, 0] + 0.3 * rng.normal(size=400)  # some wrong answers: a calibration to fit
    y = np.array(["setosa", "versicolor", "virginica"])[np.digitize(noisy, [-0.4, 0.4])]
    tree = DecisionTreeClassifier(random_state=0).fit(X[:300], y[:300])
    return TrainingResult(tree, X[:300], y[:300], ["a", "b"], X[300:], y[300:])
"""


def test_a_tree_with_string_classes_packages_with_a_warning_and_inspects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # An iris-like decision tree: its labels are strings (inspect's smoke test read them as numpy
    # scalars and crashed), and its pure leaves are always sure (packaging warns what that means).
    module = tmp_path / "train_species.py"
    module.write_text(STRING_CLASSES)
    repo = tmp_path / "models"
    assert main(["package", "--module", str(module), "--name", "species", "--repository", str(repo)]) == 0
    err = capsys.readouterr().err
    assert "warning: the model is equally sure of 95% or more of its holdout predictions" in err
    assert main(["inspect", str(repo / "species")]) == 0
    out = capsys.readouterr().out
    assert "classes=['setosa', 'versicolor', 'virginica']" in out
    assert "smoke test  reference medians -> label 'versicolor', probabilities [0.0, 1.0, 0.0]" in out


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


EXAMPLES_DIR = EXAMPLE_TRAINING.parent
CREDIT = EXAMPLES_DIR / "credit"


def test_package_an_onnx_file_then_inspect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "models"
    args = ["package", "--onnx", str(CREDIT / "mlp.onnx"), "--reference", str(CREDIT / "reference.csv")]
    args += ["--holdout", str(CREDIT / "holdout.csv"), "--label-column", "default", "--repository", str(repo)]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert f"built {repo / 'mlp' / '1'} (onnx:skl2onnx, binary_classification, 6 features)" in out
    assert "parity passed on 600 holdout rows: 0 label mismatches, max abs diff 0" in out
    assert "  graph: input 'X' renamed 'input'\n" in out
    assert "  graph: ZipMap output 'output_probability' removed" in out
    assert "  holdout accuracy 0.7" in out
    for step in ("read", "verify", "explain", "stats", "write"):
        assert f"{step} ... " in err

    assert main(["inspect", str(repo / "mlp")]) == 0
    out = capsys.readouterr().out
    assert "estimator   onnx:skl2onnx" in out and "findings    none" in out
    assert "training    2000 rows, 600 holdout; accuracy 0.7" in out


def test_an_onnx_file_without_labels_has_no_scores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = (CREDIT / "reference.csv").read_text().splitlines()
    unlabelled = tmp_path / "reference.csv"
    unlabelled.write_text("\n".join(line.rsplit(",", 1)[0] for line in lines) + "\n")
    args = ["package", "--onnx", str(CREDIT / "mlp.onnx"), "--reference", str(unlabelled)]
    assert main([*args, "--name", "credit", "--repository", str(tmp_path), "-q"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    # No --holdout: a seeded 20 % of the 2000 reference rows is split off as the holdout, and said so
    # on stderr even with -q.
    assert "parity passed on 400 holdout rows" in out
    assert "warning: no --holdout: 400 of the 2000 reference rows (20%, seeded) are split off" in captured.err
    assert "  no scores: no labelled rows (name the label column with --label-column)" in out
    assert main(["inspect", str(tmp_path / "credit" / "1")]) == 0
    assert "training    1600 rows, 400 holdout; no scores (no labelled rows)" in capsys.readouterr().out
    # --no-holdout-split keeps every row in the reference, and warns that there is no holdout.
    assert main([*args, "--name", "credit", "--repository", str(tmp_path), "-q", "--no-holdout-split"]) == 0
    captured = capsys.readouterr()
    assert "parity passed on 2000 reference rows" in captured.out
    assert "warning: no holdout (--no-holdout-split, or too few reference rows to split)" in captured.err


def test_package_the_lightgbm_example(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = str(EXAMPLES_DIR / "train_lightgbm.py")
    assert (
        main(["package", "--module", module, "--name", "credit-lgbm", "--repository", str(tmp_path), "-q"])
        == 0
    )
    out = capsys.readouterr().out
    assert "(LGBMClassifier, binary_classification, 6 features)" in out
    assert "parity passed on 600 holdout rows: 0 label mismatches" in out
    assert main(["inspect", str(tmp_path / "credit-lgbm")]) == 0
    assert "; trained/converted with lightgbm 4." in capsys.readouterr().out


PICKLE_MESSAGE = (
    "refusing to load a pickle file: unpickling runs arbitrary code from the file, so a pickled or "
    "joblib-dumped model could take over the process that loads it. Convert the model to ONNX where it "
    "was trained (skl2onnx, onnxmltools, torch.onnx, tf2onnx) and bring the ONNX file: driftline package "
    "--onnx model.onnx --reference reference.csv"
)


@pytest.mark.parametrize(
    "given",
    [
        ["--onnx", "model.pkl", "--reference", "reference.csv"],
        ["--onnx", "model.PICKLE", "--reference", "reference.csv"],
        ["--module", "model.joblib"],
        ["--onnx", "model.onnx", "--reference", "reference.pkl"],
        ["--onnx", "model.onnx", "--reference", "reference.csv", "--holdout", "holdout.joblib"],
    ],
)
def test_pickles_are_refused_by_name_before_anything_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], given: list[str]
) -> None:
    # None of the files exist: the suffix alone is refused, with why and the supported way in.
    assert main(["package", *given, "--name", "m", "--repository", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    pickled = next(g for g in given if g.lower().endswith((".pkl", ".pickle", ".joblib")))
    assert err.startswith(f"driftline package: error: {pickled}: {PICKLE_MESSAGE}")
    assert ModelRepository(tmp_path).scan() == {}


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (["--onnx", "m.onnx"], "--onnx needs --reference FILE.csv"),
        (["--example", "diabetes", "--holdout", "h.csv"], "--holdout: only with --onnx"),
        (
            ["--module", "t.py", "--reference", "r.csv", "--label-column", "y"],
            "--reference, --label-column: only",
        ),
    ],
)
def test_onnx_options_go_together(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], given: list[str], message: str
) -> None:
    assert main(["package", *given, "--repository", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
