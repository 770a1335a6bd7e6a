"""Conversion to ONNX and the recorded hyperparameters (agent/packaging/convert.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from agent.errors import PackageError, ParityError
from agent.models.package import load_package
from agent.models.repository import ModelRepository
from agent.packaging.boosting import compares_in_float64
from agent.packaging.builder import build_package
from agent.packaging.convert import MAX_ERROR_CHARS, convert, hyperparameters
from agent.packaging.parity import PROBABILITY_TOLERANCE, VALUE_RELATIVE_TOLERANCE, float32_uncertain
from agent.packaging.training import TrainingResult
from tests.agent.conftest import ExamplePackages


def test_graph_follows_the_serving_contract(example_packages: ExamplePackages) -> None:
    path = example_packages.classifier.path
    graph = onnx.load(path / "model.onnx")
    (graph_input,) = graph.graph.input
    assert graph_input.name == "input"
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = graph_input.type.tensor_type.shape.dim
    assert not dims[0].HasField("dim_value") and dims[1].dim_value == 30
    assert [o.name for o in graph.graph.output] == ["label", "probabilities"]
    assert "ZipMap" not in {node.op_type for node in graph.graph.node}
    m = example_packages.classifier.manifest
    assert (m.outputs.label, m.outputs.probabilities) == ("label", "probabilities")
    assert m.onnx_sha256 == hashlib.sha256((path / "model.onnx").read_bytes()).hexdigest()


def test_hyperparameters_are_json_safe() -> None:
    assert hyperparameters(LogisticRegression(C=np.float64(0.5)))["C"] == 0.5
    params = hyperparameters(make_pipeline(StandardScaler(), LogisticRegression(C=0.5)))
    assert params["steps"] == [
        ["standardscaler", "StandardScaler()"],
        ["logisticregression", "LogisticRegression(C=0.5)"],
    ]
    forest = hyperparameters(RandomForestClassifier(max_samples=float("nan")))
    assert forest["max_samples"] == "nan"


def _money(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Amounts in cents and small counts: values whose float32 rounding crosses a float64 bin edge."""
    rng = np.random.default_rng(seed)
    amount = np.round(rng.lognormal(3.5, 1.0, n), 2)
    count = rng.poisson(2.0, n).astype(np.float64)
    distance = np.round(rng.lognormal(1.5, 1.2, n), 1)
    logit = 0.9 * (np.log(amount) - 3.5) + 0.35 * (count - 2) + 0.5 * (np.log1p(distance) - 1.5)
    return np.column_stack([amount, count, distance]), logit + rng.logistic(size=n)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_hist_gradient_boosting_converts_and_answers_as_it_does(tmp_path: Path, task: str) -> None:
    """skl2onnx 1.20 under protobuf >= 5 could not build these trees' nodes (a bool among the ints of
    ``nodes_missing_value_tracks_true``), and the parity check then rounded the rows to float32
    first, which moves values across these models' float64 bin edges."""
    X, score = _money(8_000, 3)
    cut = 6_000
    if task == "classification":
        y = (score > 1.0).astype(np.int64)
        model = HistGradientBoostingClassifier(max_iter=60, random_state=0).fit(X[:cut], y[:cut])
    else:
        y = score
        model = HistGradientBoostingRegressor(max_iter=60, random_state=0).fit(X[:cut], y[:cut])
    assert compares_in_float64(model) and compares_in_float64(make_pipeline(StandardScaler(), model))
    # Rounded to float32 the rows get other answers from the estimator itself: the check must not
    # hold the graph to those.
    rounded = X[cut:].astype(np.float32).astype(np.float64)
    moved = (
        model.predict_proba(rounded) - model.predict_proba(X[cut:])
        if task == "classification"
        else (model.predict(rounded) - model.predict(X[cut:]))
    )
    assert np.abs(moved).max() > 1e-3
    result = TrainingResult(model, X[:cut], y[:cut], ["amount", "count", "distance"], X[cut:], y[cut:])
    built = build_package(result, name="hgb", version="1", repository=ModelRepository(tmp_path))
    assert built.parity.passed, built.parity
    # A few rows (amounts of 101.95 against a split at 101.94999999999999) sit within float32
    # rounding of a split: the graph answers those as float32 compares, and they are not compared.
    assert 0 < built.parity.rounding_rows <= 0.01 * built.parity.rows, built.parity
    compared = ~float32_uncertain(built.manifest.task, model, X[cut:])
    with load_package(built.path) as served:
        answers = served.predict(X[cut:].astype(np.float32))
    if task == "classification":
        assert answers.probabilities is not None
        diff = np.abs(answers.probabilities - model.predict_proba(X[cut:])).max(axis=1)
        assert diff[compared].max() <= PROBABILITY_TOLERANCE
    else:
        expected = model.predict(X[cut:])
        assert answers.values is not None
        diff = np.abs(answers.values - expected)
        assert diff[compared].max() <= VALUE_RELATIVE_TOLERANCE * np.abs(expected).max()
    assert diff[~compared].max() > 1e-3  # the rows left out are those the graph answers otherwise


def test_a_feature_finer_than_float32_stops_the_build(tmp_path: Path) -> None:
    """Seconds since 1970 are 128 s apart in float32: splits a minute apart cannot be served."""
    rng = np.random.default_rng(5)
    seconds = 1.7e9 + rng.integers(0, 86_400, 4_000).astype(np.float64)
    X = np.column_stack([seconds, rng.normal(size=4_000)])
    y = ((seconds % 3_600 < 1_800) ^ (X[:, 1] > 0)).astype(np.int64)
    model = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(X[:3_000], y[:3_000])
    result = TrainingResult(model, X[:3_000], y[:3_000], ["sent_at", "x"], X[3_000:], y[3_000:])
    with pytest.raises(ParityError, match=r"rows within float32 rounding of a split not compared.*timestamp"):
        build_package(result, name="clock", version="1", repository=ModelRepository(tmp_path))


class _Unconvertible(ClassifierMixin, BaseEstimator):
    """A fitted classifier skl2onnx has no converter for."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> _Unconvertible:
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return np.full((len(X), 2), 0.5)


def test_a_failed_conversion_names_the_estimator_in_a_bounded_message() -> None:
    X, score = _money(100, 1)
    model = _Unconvertible().fit(X, (score > 0).astype(np.int64))
    with pytest.raises(PackageError) as caught:
        convert(model, 3)
    message = str(caught.value)
    assert message.startswith("skl2onnx cannot convert _Unconvertible to ONNX: ")
    assert "--onnx" in message
    assert len(message) < MAX_ERROR_CHARS + 300, len(message)


def test_native_categorical_splits_are_refused_before_conversion() -> None:
    """skl2onnx converts them as numeric thresholds: the graph answered 0.87 apart from the model."""
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(size=2000), rng.integers(0, 6, 2000).astype(np.float64)])
    y = ((X[:, 1] == 3) | (X[:, 0] > 1)).astype(np.int64)
    model = HistGradientBoostingClassifier(max_iter=20, categorical_features=[1]).fit(X, y)
    with pytest.raises(PackageError, match=r"splits features by category.*one-hot encode"):
        convert(model, 2)
    # The same model without categorical_features converts (category indexes split as numbers).
    plain = HistGradientBoostingClassifier(max_iter=20).fit(X, y)
    assert convert(plain, 2).outputs.probabilities == "probabilities"
