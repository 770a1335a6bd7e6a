"""A regressor's model of its absolute error: what the builder ships, and how loading verifies it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from sklearn.linear_model import LinearRegression

from agent.errors import CorruptModelError, DigestMismatchError, GraphMismatchError
from agent.models.package import load_package
from agent.models.repository import MANIFEST_FILE, ModelRepository
from agent.packaging.builder import BuiltPackage, build_package
from agent.packaging.error_model import ERROR_MODEL_FILE, MIN_ROWS, fit_error_model
from agent.packaging.training import TrainingResult
from schemas.manifest import ErrorModel, Manifest
from tests.agent.conftest import ExamplePackages

NAMES = ("x0", "x1", "x2")


def noisy(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """y = x0 + 2 x1 + noise whose spread grows with |x0|; x2 means nothing."""
    X = rng.normal(size=(n, 3))
    return X, X[:, 0] + 2 * X[:, 1] + rng.normal(size=n) * (0.2 + np.abs(X[:, 0]))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> BuiltPackage:
    rng = np.random.default_rng(3)
    X, y = noisy(rng, 4000)
    X_holdout, y_holdout = noisy(rng, 1000)
    result = TrainingResult(LinearRegression().fit(X, y), X, y, list(NAMES), X_holdout, y_holdout)
    repository = ModelRepository(tmp_path_factory.mktemp("error-model"))
    return build_package(result, name="noisy", version="1", repository=repository)


def test_the_package_ships_a_verified_error_model(built: BuiltPackage) -> None:
    e = built.manifest.error_model
    assert e is not None
    assert (e.file, e.inputs, e.fitted_on, e.rows, e.checked_rows) == (
        ERROR_MODEL_FILE,
        "features+prediction",
        "holdout",
        600,
        400,
    )
    assert (built.path / ERROR_MODEL_FILE).is_file()
    # It learnt where the error is: clearly better than a constant on the rows it was not fitted on.
    assert e.check_mae < 0.85 * e.constant_mae, e
    # Its mean estimate is about the realised MAE of those rows (E|noise| = 0.8 (0.2 + E|x0|) = 0.8).
    assert e.checked_error == pytest.approx(e.realised_mae, rel=0.1)
    assert e.reference_error == pytest.approx(0.8, rel=0.1)
    assert e.realised_mae == pytest.approx(0.8, rel=0.15)
    assert any(note.startswith("error model: fitted on 600") for note in built.notes)
    # The loaded package runs it: larger where |x0| is larger, at least 0, one per row.
    model = load_package(built.path)
    assert model.has_error_model and model.manifest.error_model == e
    rows = np.array([[0.0, 0.0, 0.0], [2.5, 0.0, 0.0], [-2.5, 0.0, 0.0]], dtype=np.float32)
    values = model.predict(rows).values
    assert values is not None
    expected = model.estimate_errors(rows, values)
    assert expected.shape == (3,) and (expected >= 0).all()
    assert expected[1] > 2 * expected[0] and expected[2] > 2 * expected[0], expected


def test_a_changed_error_model_is_refused(built: BuiltPackage, tmp_path: Path) -> None:
    copy = tmp_path / "noisy" / "1"
    copy.mkdir(parents=True)
    for f in built.path.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    data = bytearray((copy / ERROR_MODEL_FILE).read_bytes())
    data[-1] ^= 1
    (copy / ERROR_MODEL_FILE).write_bytes(bytes(data))
    with pytest.raises(DigestMismatchError, match="error model file was changed"):
        load_package(copy)
    (copy / ERROR_MODEL_FILE).unlink()
    with pytest.raises(CorruptModelError, match="error model file is missing"):
        load_package(copy)
    # The main graph in its place: the digest is the manifest's, but the graph reads 3 columns, not 4.
    model_bytes = (copy / "model.onnx").read_bytes()
    (copy / ERROR_MODEL_FILE).write_bytes(model_bytes)
    manifest = json.loads((copy / MANIFEST_FILE).read_text())
    manifest["error_model"]["sha256"] = manifest["onnx_sha256"]
    (copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(GraphMismatchError, match=r"must be \[None, 4\]"):
        load_package(copy)


def test_a_small_holdout_gets_no_error_model(example_packages: ExamplePackages) -> None:
    # The bundled diabetes regressor has 111 holdout rows: too few to fit one and check it.
    built = example_packages.regressor
    assert built.manifest.training.holdout_rows < MIN_ROWS
    assert built.manifest.error_model is None
    assert "error_model" not in built.manifest.model_dump(mode="json")
    assert built.notes == (
        "no error model: the holdout has 111 rows, fewer than the 200 needed to fit one on 60% and "
        "check it on the rest",
    )
    assert not load_package(built.path).has_error_model


def test_inspect_says_a_regressor_has_no_error_model_and_why(
    example_packages: ExamplePackages, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.cli import main

    assert main(["inspect", str(example_packages.regressor.path)]) == 0
    out = capsys.readouterr().out
    assert f"error model none (it needs {MIN_ROWS} labelled holdout rows" in out
    assert "no estimated error, no performance alerts" in out
    importance = example_packages.regressor.manifest.importance
    assert importance is not None
    first = max(importance.values, key=importance.values.__getitem__)
    assert f"importance  permutation output on 111 holdout rows, 3 repeats: {first} " in out


def test_an_error_that_does_not_depend_on_the_inputs_gets_no_model() -> None:
    rng = np.random.default_rng(4)
    X = rng.normal(size=(1000, 3))
    predicted = X[:, 0]
    fitted = fit_error_model(X, predicted + rng.normal(size=1000), predicted)
    assert fitted.entry is None and fitted.onnx_bytes is None
    assert "no better than a constant" in fitted.note


def test_the_manifest_keeps_the_error_model_for_regressors(example_packages: ExamplePackages) -> None:
    entry = ErrorModel(
        file="error_model.onnx",
        sha256="0" * 64,
        estimator="x.Y",
        inputs="features",
        rows=600,
        checked_rows=400,
        reference_error=1.0,
        reference_error_std=0.1,
        checked_error=1.0,
        realised_mae=1.0,
        check_mae=0.5,
        constant_mae=0.6,
    )
    data = example_packages.classifier.manifest.model_dump(mode="json")
    with pytest.raises(ValidationError, match="error_model is for regressors"):
        Manifest.model_validate({**data, "error_model": entry.model_dump()})
    for bad in ("model.onnx", "../model.onnx", "error_model.pkl"):
        with pytest.raises(ValidationError):
            ErrorModel.model_validate({**entry.model_dump(), "file": bad})


def test_a_regressor_brought_as_an_onnx_file_gets_one_from_its_labelled_holdout(tmp_path: Path) -> None:
    from agent.packaging.onnx_import import build_from_onnx
    from tests.agent.packaging.test_onnx_import import regressor_graph, save, write_csv

    # The handmade graph predicts x . (0, 1/3, 2/3); the truth adds noise that grows with |x0|.
    rng = np.random.default_rng(5)
    X_ref, X_held = rng.normal(size=(400, 3)), rng.normal(size=(1000, 3))
    truth = X_held @ (np.arange(3) / 3) + rng.normal(size=1000) * (0.2 + np.abs(X_held[:, 0]))
    built = build_from_onnx(
        save(regressor_graph(), tmp_path / "model.onnx"),
        write_csv(tmp_path / "reference.csv", X_ref),
        holdout=write_csv(tmp_path / "holdout.csv", X_held, [f"{v:.6f}" for v in truth]),
        label_column="y",
        name="imported",
        version="1",
        repository=ModelRepository(tmp_path / "models"),
    )
    e = built.manifest.error_model
    assert e is not None and (e.rows, e.checked_rows) == (600, 400) and e.check_mae < e.constant_mae
    assert built.notes[0].startswith("error model: fitted on 600 holdout rows")
    model = load_package(built.path)
    rows = np.array([[0.0, 0.0, 0.0], [2.5, 0.0, 0.0]], dtype=np.float32)
    values = model.predict(rows).values
    assert values is not None
    low, high = model.estimate_errors(rows, values)
    assert high > 2 * low
    # Without labelled holdout rows: none, and the package says why.
    again = build_from_onnx(
        save(regressor_graph(), tmp_path / "model.onnx"),
        write_csv(tmp_path / "reference.csv", X_ref),
        name="imported",
        version="2",
        repository=ModelRepository(tmp_path / "models"),
    )
    assert again.manifest.error_model is None
    assert again.notes == ("no error model: no labelled holdout rows (--holdout and --label-column)",)


def test_inspect_verifies_and_runs_the_error_model(
    built: BuiltPackage, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.cli import main

    assert main(["inspect", str(built.path)]) == 0
    out = capsys.readouterr().out
    e = built.manifest.error_model
    assert e is not None
    assert f"error model error_model.onnx sha256 {e.sha256} (verified), reads features+prediction" in out
    assert "fitted on 600 holdout rows, checked on 400" in out
    assert "estimated absolute error " in out


def test_a_feature_let_through_missing_still_gets_an_error_model(tmp_path: Path) -> None:
    """8 % of x2 missing (``allow``: the trees route NaN) used to mean no error model at all."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    from schemas.manifest import MissingPolicy

    rng = np.random.default_rng(8)
    X, y = noisy(rng, 4000)
    X_holdout, y_holdout = noisy(rng, 1000)
    for matrix in (X, X_holdout):
        matrix[rng.random(len(matrix)) < 0.08, 2] = np.nan
    model = HistGradientBoostingRegressor(max_iter=50, random_state=0).fit(X, y)
    result = TrainingResult(
        model, X, y, list(NAMES), X_holdout, y_holdout, missing={"x2": MissingPolicy(action="allow")}
    )
    built = build_package(result, name="gappy", version="1", repository=ModelRepository(tmp_path))
    entry = built.manifest.error_model
    assert entry is not None, built.notes
    assert entry.check_mae < entry.constant_mae
    with load_package(built.path) as served:
        rows = X_holdout[:200].astype(np.float32)
        values = served.predict(rows).values
        assert values is not None
        errors = served.estimate_errors(rows, values)
    gaps = np.isnan(rows[:, 2])
    assert gaps.any() and np.isfinite(errors).all()
    # Still an estimate of where the model errs: larger where |x0| is.
    wide = np.abs(X_holdout[:200, 0]) > 1
    assert errors[wide].mean() > 1.5 * errors[~wide].mean()
