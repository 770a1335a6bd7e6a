"""XGBoost and LightGBM through ``driftline package --module``: converted with onnxmltools, checked for
parity with their own library, served as the worker serves them."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from lightgbm import LGBMClassifier, LGBMRegressor
from sklearn.datasets import load_diabetes, load_iris, make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from xgboost import XGBClassifier, XGBRegressor

from agent.errors import ConfigurationError
from agent.models.package import load_package
from agent.models.repository import ModelRepository
from agent.packaging import boosting
from agent.packaging.builder import build_package
from agent.packaging.parity import PROBABILITY_TOLERANCE, VALUE_RELATIVE_TOLERANCE
from agent.packaging.training import TrainingResult, load_training_function

LIGHTGBM_EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "train_lightgbm.py"


def split(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    cut = int(len(X) * 0.75)
    return X[:cut], y[:cut], X[cut:], y[cut:]


def test_the_lightgbm_example_module(tmp_path: Path) -> None:
    result = load_training_function(str(LIGHTGBM_EXAMPLE))()
    built = build_package(result, name="credit-lgbm", version="1", repository=ModelRepository(tmp_path))
    m = built.manifest
    assert m.estimator == "lightgbm.sklearn.LGBMClassifier" and m.task == "binary_classification"
    assert m.feature_names == ("age", "income", "debt_ratio", "credit_lines", "late_payments", "utilization")
    assert m.hyperparameters["n_estimators"] == 150 and m.hyperparameters["num_leaves"] == 15
    assert set(m.versions.frameworks) == {"lightgbm", "onnxmltools"}
    assert "lightgbm" not in m.versions.packages()  # the worker does not need it, so no drift finding
    assert m.versions.opsets["ai.onnx.ml"] <= boosting.SKL2ONNX_MAX_ML_OPSET
    assert built.parity.passed and built.parity.rows == 600 and built.parity.label_mismatches == 0
    assert m.training.accuracy is not None and m.training.accuracy > 0.75

    # Served as the worker serves it (float32), it answers as LightGBM does on the values as given.
    X = np.asarray(result.X_holdout)
    with load_package(built.path) as model:
        served = model.predict(X.astype(np.float32))
        assert model.findings == ()
    assert served.probabilities is not None and served.labels is not None
    assert np.abs(served.probabilities - result.estimator.predict_proba(X)).max() <= PROBABILITY_TOLERANCE
    assert served.labels.tolist() == result.estimator.predict(X).tolist()


@pytest.mark.parametrize(
    "estimator",
    [
        XGBClassifier(n_estimators=30, max_depth=3, random_state=0),
        LGBMClassifier(n_estimators=30, num_leaves=7, random_state=0, verbose=-1),
    ],
    ids=["xgboost", "lightgbm"],
)
def test_multiclass_boosted_trees(tmp_path: Path, estimator: object) -> None:
    iris = load_iris()
    order = np.random.default_rng(0).permutation(len(iris.target))
    X_train, y_train, X_test, y_test = split(iris.data[order], iris.target[order])
    estimator.fit(X_train, y_train)  # type: ignore[attr-defined]
    names = [f"f{i}" for i in range(4)]
    result = TrainingResult(estimator, X_train, y_train, names, X_test, y_test)
    built = build_package(result, name="iris", version="1", repository=ModelRepository(tmp_path))
    m = built.manifest
    assert m.task == "multiclass_classification" and m.outputs.class_labels == (0, 1, 2)
    assert built.parity.passed and built.parity.max_abs_diff <= PROBABILITY_TOLERANCE
    assert m.reference.output.quantity == "max_probability"
    with load_package(built.path) as model:
        served = model.predict(X_test.astype(np.float32))
    assert served.probabilities is not None
    expected = estimator.predict_proba(X_test)  # type: ignore[attr-defined]
    assert np.abs(served.probabilities - expected).max() <= PROBABILITY_TOLERANCE


def test_boosted_trees_at_the_end_of_a_pipeline(tmp_path: Path) -> None:
    # Continuous features: a scaler computes in float64 in scikit-learn and in float32 in ONNX, so on
    # data with few distinct values (iris) a scaled value can land on either side of a threshold.
    X, y = make_classification(n_samples=1200, n_features=8, n_informative=5, random_state=1)
    X_train, y_train, X_test, y_test = split(X, y)
    pipeline = make_pipeline(StandardScaler(), XGBClassifier(n_estimators=40, max_depth=4, random_state=0))
    pipeline.fit(X_train, y_train)
    result = TrainingResult(pipeline, X_train, y_train, [f"x{i}" for i in range(8)], X_test, y_test)
    built = build_package(result, name="pipe", version="1", repository=ModelRepository(tmp_path))
    assert built.manifest.estimator == "sklearn.pipeline.Pipeline"
    assert set(built.manifest.versions.frameworks) == {"xgboost", "onnxmltools"}
    assert built.parity.passed and built.parity.rows == 300


@pytest.mark.parametrize(
    "estimator",
    [
        XGBRegressor(n_estimators=50, max_depth=3, random_state=0),
        LGBMRegressor(n_estimators=50, num_leaves=7, random_state=0, verbose=-1),
    ],
    ids=["xgboost", "lightgbm"],
)
def test_boosted_regressors(tmp_path: Path, estimator: object) -> None:
    data = load_diabetes()
    X_train, y_train, X_test, y_test = split(data.data, data.target)
    estimator.fit(X_train, y_train)  # type: ignore[attr-defined]
    result = TrainingResult(estimator, X_train, y_train, list(data.feature_names), X_test, y_test)
    built = build_package(result, name="sugar", version="1", repository=ModelRepository(tmp_path))
    m = built.manifest
    assert m.task == "regression" and m.training.mae is not None and m.training.r2 is not None
    assert built.parity.passed and built.parity.max_rel_diff <= VALUE_RELATIVE_TOLERANCE
    with load_package(built.path) as model:
        values = model.predict(X_test.astype(np.float32)).values
    assert values is not None
    expected = estimator.predict(X_test)  # type: ignore[attr-defined]
    assert np.abs(values - expected).max() <= VALUE_RELATIVE_TOLERANCE * np.abs(expected).max()


def test_a_scikit_learn_estimator_needs_no_converters_and_records_no_frameworks(tmp_path: Path) -> None:
    X, y = make_classification(n_samples=300, n_features=4, random_state=0)
    model = LogisticRegression().fit(X, y)
    assert boosting.frameworks_of(model) == ()
    assert boosting.prepare(model, {"": 21, "ai.onnx.ml": 5}) == {"": 21, "ai.onnx.ml": 5}
    assert not boosting.compares_in_float64(model)
    built = build_package(
        TrainingResult(model, X, y, ["a", "b", "c", "d"]),
        name="m",
        version="1",
        repository=ModelRepository(tmp_path),
    )
    assert built.manifest.versions.frameworks == {}


def test_frameworks_are_found_inside_a_pipeline() -> None:
    pipeline = make_pipeline(StandardScaler(), LGBMClassifier())
    assert boosting.frameworks_of(pipeline) == ("lightgbm",)
    assert boosting.compares_in_float64(pipeline)
    assert not boosting.compares_in_float64(XGBClassifier())
    opsets = boosting.prepare(pipeline, {"": 21, "ai.onnx.ml": 5})
    assert opsets == {"": 21, "ai.onnx.ml": boosting.SKL2ONNX_MAX_ML_OPSET}


def test_without_onnxmltools_the_build_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(boosting, "_registered", set())
    # A None entry in sys.modules makes the import fail as if the package were not installed.
    for name in [m for m in sys.modules if m == "onnxmltools" or m.startswith("onnxmltools.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "onnxmltools", None)  # type: ignore[arg-type]
    with pytest.raises(
        ConfigurationError, match=r"needs the 'build' extra \(.*\): pip install 'driftline\[build\]'"
    ):
        boosting.prepare(XGBClassifier(), {"": 21, "ai.onnx.ml": 3})
