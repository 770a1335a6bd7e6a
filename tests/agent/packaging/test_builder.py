from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from sklearn import metrics
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from agent.errors import ConfigurationError, PackageError, ParityError
from agent.models.package import load_package, onnxruntime_max_opset
from agent.models.repository import ModelRepository
from agent.models.versions import installed_versions
from agent.packaging import write as writing
from agent.packaging.builder import build_package
from agent.packaging.convert import hyperparameters, target_opsets
from agent.packaging.parity import compare_predictions
from agent.packaging.training import TrainingResult, load_training_function
from agent.packaging.write import write_package
from schemas.manifest import CategoricalStatistics, MissingPolicy, NumericStatistics
from tests.agent.conftest import ExamplePackages

EXAMPLE_TRAINING = Path(__file__).resolve().parents[3] / "examples" / "train_example.py"


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*")]


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
    assert set(built.timings) == {"convert", "verify", "stats", "write"}


def test_classifier_reference_statistics(example_packages: ExamplePackages) -> None:
    m = example_packages.classifier.manifest
    X = np.asarray(example_packages.classifier_training.X_reference)
    radius = m.reference.features["mean radius"]
    assert isinstance(radius, NumericStatistics)
    assert radius.quantiles[50] == pytest.approx(np.median(X[:, 0]))
    assert (radius.min, radius.max) == (X[:, 0].min(), X[:, 0].max())
    assert radius.mean == pytest.approx(X[:, 0].mean()) and radius.missing_rate == 0.0
    output = m.reference.output
    assert output.quantity == "positive_probability" and output.statistics.count == 426
    assert output.label_frequencies is not None
    assert sum(output.label_frequencies.values()) == pytest.approx(1.0)


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


def test_versions_and_opsets_are_recorded(example_packages: ExamplePackages) -> None:
    versions = example_packages.classifier.manifest.versions
    assert {k: v for k, v in versions.packages().items()} == installed_versions()
    limit = onnxruntime_max_opset("ai.onnx")
    assert limit is not None and 1 <= versions.opsets["ai.onnx"] <= limit
    assert target_opsets()[""] <= limit


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


def nan_routing_forest() -> TrainingResult:
    # scikit-learn's forests learn where to send NaN; the ONNX tree ensemble does not, so rows with
    # a missing value get different probabilities: a conversion that must not be shipped.
    X, y = load_iris(return_X_y=True)
    X = X.copy()
    X[::4, 2] = np.nan
    estimator = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y)
    return TrainingResult(
        estimator, X, y, ["sl", "sw", "pl", "pw"], X, y, missing={"pl": MissingPolicy(action="allow")}
    )


def test_a_conversion_that_disagrees_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    with pytest.raises(ParityError) as caught:
        build_package(nan_routing_forest(), name="iris-nan", version="1", repository=repo)
    message = str(caught.value)
    assert "parity FAILED on 150 holdout rows" in message
    assert "label mismatches" in message and "max abs diff" in message
    assert "refusing to write the package" in message
    assert repo.scan() == {} and not (tmp_path / "iris-nan" / "1").exists()
    assert leftovers(tmp_path) == []


def test_the_same_model_passes_when_missing_values_are_rejected(tmp_path: Path) -> None:
    # With "reject", rows with NaN never reach the model, so they are not part of the check.
    result = nan_routing_forest()
    result = TrainingResult(**{**result.__dict__, "missing": {}})
    built = build_package(result, name="iris-nan", version="1", repository=ModelRepository(tmp_path))
    assert built.parity.rows == 150 - 38 and built.parity.passed
    assert built.manifest.reference.features["pl"].missing_rate == pytest.approx(38 / 150)


def test_regression_tolerance_is_relative() -> None:
    values = np.array([1000.0, -2.0, 0.5])

    def report(actual: Any) -> Any:
        return compare_predictions("regression", {"values": values}, {"values": np.asarray(actual)})

    assert report(values * (1 + 5e-5)).passed
    failed = report(values * (1 + 5e-4))
    assert not failed.passed and failed.max_rel_diff == pytest.approx(5e-4)
    assert failed.max_abs_diff == pytest.approx(0.5)
    assert not report([np.nan, -2.0, 0.5]).passed


# --- writing ----------------------------------------------------------------------------------


def test_existing_package_needs_force(example_packages: ExamplePackages, tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    built = example_packages.regressor
    data = (built.path / "model.onnx").read_bytes()
    first = write_package(repo, built.manifest, data)
    (first / "stale-extra-file").write_text("from the old package")
    with pytest.raises(ConfigurationError, match="already exists; pass --force"):
        write_package(repo, built.manifest, data)
    again = write_package(repo, built.manifest, data, force=True)
    assert again == first and sorted(p.name for p in again.iterdir()) == ["manifest.json", "model.onnx"]
    assert leftovers(tmp_path) == []


def test_a_failed_write_leaves_nothing_behind(
    example_packages: ExamplePackages, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = example_packages.regressor
    real = writing._write_synced

    def fail_on_manifest(path: Path, data: bytes) -> None:
        if path.name == "manifest.json":
            raise OSError("disk full")
        real(path, data)

    monkeypatch.setattr(writing, "_write_synced", fail_on_manifest)
    repo = ModelRepository(tmp_path)
    with pytest.raises(OSError, match="disk full"):
        write_package(repo, built.manifest, (built.path / "model.onnx").read_bytes())
    assert repo.scan() == {} and leftovers(tmp_path) == []
    assert not (tmp_path / "diabetes" / "1").exists()


def test_bytes_must_match_the_manifest_digest(example_packages: ExamplePackages, tmp_path: Path) -> None:
    with pytest.raises(PackageError, match="does not match the model bytes"):
        write_package(ModelRepository(tmp_path), example_packages.regressor.manifest, b"other bytes")


# --- inputs from training modules -------------------------------------------------------------


def test_hyperparameters_are_json_safe() -> None:
    assert hyperparameters(LogisticRegression(C=np.float64(0.5)))["C"] == 0.5
    params = hyperparameters(make_pipeline(StandardScaler(), LogisticRegression(C=0.5)))
    assert params["steps"] == [
        ["standardscaler", "StandardScaler()"],
        ["logisticregression", "LogisticRegression(C=0.5)"],
    ]
    forest = hyperparameters(RandomForestClassifier(max_samples=float("nan")))
    assert forest["max_samples"] == "nan"


def test_inconsistent_training_results_are_configuration_errors(tmp_path: Path) -> None:
    result = nan_routing_forest()
    repo = ModelRepository(tmp_path)
    cases = [
        ({"categories": {"nope": ["a"]}}, r"categories names unknown features \['nope'\]"),
        ({"feature_names": ["a", "b", "c"]}, r"X_reference has shape \(150, 4\), expected \(n >= 1, 3\)"),
        ({"y_reference": np.zeros(3)}, "y_reference has 3 rows"),
        ({"categories": {"sl": ["a", "b"]}}, "feature 'sl': category indexes must be integers"),
        ({"missing": {"pl": MissingPolicy(action="impute", value=1.0)}, "categories": {"pl": ["x"]}}, "pl"),
    ]
    for change, message in cases:
        broken = TrainingResult(**{**result.__dict__, "missing": {}, **change})
        with pytest.raises(ConfigurationError, match=message):
            build_package(broken, name="bad", version="1", repository=repo)
    assert repo.scan() == {}


def test_training_function_must_return_a_training_result(tmp_path: Path) -> None:
    module = tmp_path / "wrong.py"
    module.write_text("def train():\n    return 42\n\ndef broken():\n    raise ValueError('no data')\n")
    with pytest.raises(ConfigurationError, match=r"train\(\) returned int, expected .*TrainingResult"):
        load_training_function(str(module))()
    with pytest.raises(ConfigurationError, match="has no function 'fit'"):
        load_training_function(str(module), "fit")
    with pytest.raises(ValueError, match="no data"):  # the user's own error stays theirs
        load_training_function(str(module), "broken")()
    with pytest.raises(ConfigurationError, match="no such file"):
        load_training_function(str(tmp_path / "missing.py"))
    with pytest.raises(ConfigurationError, match="cannot import it"):
        load_training_function("no_such_package.train")


def test_a_dotted_module_name_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "mytraining"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text((EXAMPLE_TRAINING.read_text()).replace("def train()", "def build()"))
    monkeypatch.syspath_prepend(str(tmp_path))
    result = load_training_function("mytraining.models", "build")()
    assert list(result.feature_names) == ["age", "monthly_spend", "plan"]


def test_a_tie_decided_the_other_way_is_not_a_mismatch() -> None:
    expected = {"labels": np.array(["a", "a"]), "probabilities": np.array([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]])}
    actual = {
        "labels": np.array(["b", "c"], dtype=object),
        "probabilities": np.array([[0.49999994, 0.50000006, 0.0], [0.49999994, 0.50000006, 0.0]]),
    }
    report = compare_predictions("multiclass_classification", expected, actual, class_labels=("a", "b", "c"))
    # Row 0 picked the other tied class; row 1 picked a class with probability 0: a real mismatch.
    assert (report.label_ties, report.label_mismatches, report.passed) == (1, 1, False)
