"""build_package end to end: the examples' manifests, categorical features, string labels, missing values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from agent.models.package import load_package
from agent.models.repository import ModelRepository
from agent.packaging.builder import build_package
from agent.packaging.training import TrainingResult, load_training_function
from schemas.manifest import CategoricalStatistics, MissingPolicy
from tests.agent.conftest import ExamplePackages
from tests.support.models import nan_routing_forest

EXAMPLE_TRAINING = Path(__file__).resolve().parents[3] / "examples" / "train_example.py"


# --- what the examples produce ----------------------------------------------------------------


def test_classifier_manifest(example_packages: ExamplePackages) -> None:
    built = example_packages.classifier
    m = built.manifest
    training = example_packages.classifier_training
    assert (m.name, m.version, m.task) == ("breast-cancer", "1", "binary_classification")
    assert m.estimator == "sklearn.ensemble._forest.RandomForestClassifier"
    assert m.feature_names == tuple(training.feature_names) and len(m.features) == 30
    assert m.feature_names[:2] == ("mean radius", "mean texture")
    assert all(f.type == "numeric" and f.missing.action == "reject" for f in m.features)
    assert m.outputs.class_labels == (0, 1)
    assert (m.training.rows, m.training.holdout_rows, m.training.evaluated_on) == (426, 143, "holdout")
    assert m.training.accuracy is not None and m.training.accuracy > 0.9
    assert m.training.roc_auc is not None and m.training.roc_auc > 0.95
    assert m.hyperparameters["n_estimators"] == 100 and m.hyperparameters["random_state"] == 0
    assert built.parity.passed and built.parity.label_mismatches == 0
    assert built.parity.max_abs_diff <= 1e-5
    assert set(built.timings) == {"convert", "verify", "explain", "stats", "write"}


def test_regressor_manifest(example_packages: ExamplePackages) -> None:
    m = example_packages.regressor.manifest
    assert m.task == "regression" and len(m.features) == 10
    assert m.outputs.value == "variable" and m.outputs.label is None
    assert m.training.mae is not None and m.training.r2 is not None and m.training.r2 > 0.2
    assert m.reference.output.quantity == "value" and m.reference.output.label_frequencies is None
    training = example_packages.regressor_training
    holdout = np.asarray(training.X_holdout, dtype=np.float32)
    expected_mae = metrics.mean_absolute_error(training.y_holdout, training.estimator.predict(holdout))
    assert m.training.mae == pytest.approx(expected_mae, rel=1e-4)


# --- categorical features, string labels, multiclass ------------------------------------------


def test_training_module_with_a_categorical_feature(tmp_path: Path) -> None:
    result = load_training_function(str(EXAMPLE_TRAINING))()
    built = build_package(result, name="churn", version="1", repository=ModelRepository(tmp_path))
    m = built.manifest
    plan = m.features[2]
    assert (plan.name, plan.type, plan.categories) == ("plan", "categorical", ("basic", "plus", "pro"))
    assert plan.missing == MissingPolicy(action="impute", value="basic")
    assert m.features[1].missing.action == "impute" and m.features[0].range == (18.0, 120.0)
    stats = m.reference.features["plan"]
    assert isinstance(stats, CategoricalStatistics) and set(stats.frequencies) == {"basic", "plus", "pro"}
    assert sum(stats.frequencies.values()) == pytest.approx(1.0)
    model = load_package(built.path)
    X = np.asarray(result.X_holdout, dtype=np.float32)
    np.testing.assert_array_equal(model.predict(X).labels, result.estimator.predict(X))


def test_multiclass_with_string_labels(tmp_path: Path) -> None:
    X, y = load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    order = np.random.default_rng(0).permutation(len(X))
    train, test = order[:110], order[110:]
    estimator = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X[train], names[train])
    result = TrainingResult(estimator, X[train], names[train], ["sl", "sw", "pl", "pw"], X[test], names[test])
    m = build_package(result, name="iris", version="1", repository=ModelRepository(tmp_path)).manifest
    assert m.task == "multiclass_classification"
    assert m.outputs.class_labels == ("setosa", "versicolor", "virginica")
    assert m.reference.output.quantity == "max_probability"
    assert set(m.reference.output.label_frequencies or {}) == {"setosa", "versicolor", "virginica"}
    expected_auc = metrics.roc_auc_score(
        names[test],
        estimator.predict_proba(X[test].astype(np.float32)),
        multi_class="ovr",
        average="macro",
    )
    assert m.training.roc_auc == pytest.approx(expected_auc, abs=1e-6)
    out = load_package(tmp_path / "iris" / "1").predict(X[test].astype(np.float32))
    assert out.labels is not None and list(out.labels[:3]) == list(estimator.predict(X[test][:3]))


# --- the parity gate --------------------------------------------------------------------------


def test_the_same_model_passes_when_missing_values_are_rejected(tmp_path: Path) -> None:
    # With "reject", rows with NaN never reach the model, so they are not part of the check.
    result = nan_routing_forest()
    result = TrainingResult(**{**result.__dict__, "missing": {}})
    built = build_package(result, name="iris-nan", version="1", repository=ModelRepository(tmp_path))
    assert built.parity.rows == 150 - 38 and built.parity.passed
    assert built.manifest.reference.features["pl"].missing_rate == pytest.approx(38 / 150)
