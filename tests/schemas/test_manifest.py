from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from schemas.manifest import (
    QUANTILE_PROBABILITIES,
    CategoricalStatistics,
    Feature,
    Manifest,
    NumericStatistics,
)


def numeric(values: list[float]) -> dict[str, Any]:
    return NumericStatistics.from_values(np.asarray(values)).model_dump()


def manifest_data() -> dict[str, Any]:
    """A small valid binary-classifier manifest, as JSON-ready data."""
    return {
        "schema_version": "1",
        "name": "churn",
        "version": "1.2",
        "task": "binary_classification",
        "estimator": "sklearn.linear_model._logistic.LogisticRegression",
        "features": [
            {"name": "age", "type": "numeric", "range": [18, 120]},
            {
                "name": "plan",
                "type": "categorical",
                "categories": ["basic", "pro"],
                "missing": {"action": "impute", "value": "basic"},
            },
        ],
        "outputs": {"label": "label", "probabilities": "probabilities", "class_labels": [0, 1]},
        "hyperparameters": {"C": 1.0, "penalty": "l2", "class_weight": None},
        "training": {"rows": 4, "holdout_rows": 0, "evaluated_on": "reference", "accuracy": 0.75},
        "reference": {
            "rows": 4,
            "features": {
                "age": numeric([20, 30, 40, 50]),
                "plan": CategoricalStatistics.from_indices(
                    np.array([0.0, 1.0, 1.0, np.nan]), ("basic", "pro")
                ).model_dump(),
            },
            "output": {
                "quantity": "positive_probability",
                "statistics": numeric([0.1, 0.4, 0.6, 0.9]),
                "label_frequencies": {"0": 0.5, "1": 0.5},
            },
        },
        "versions": {
            "python": "3.11.7",
            "numpy": "2.0.0",
            "scikit_learn": "1.5.0",
            "skl2onnx": "1.17.0",
            "onnx": "1.16.0",
            "onnxruntime": "1.18.0",
            "opsets": {"ai.onnx": 21, "ai.onnx.ml": 3},
        },
        "created_at": "2026-01-01T00:00:00Z",
        "onnx_sha256": "0" * 64,
    }


def test_valid_manifest_round_trips_through_json() -> None:
    manifest = Manifest.model_validate(manifest_data())
    again = Manifest.model_validate_json(manifest.model_dump_json())
    assert again == manifest
    assert manifest.feature_names == ("age", "plan")
    assert manifest.features[0].range == (18.0, 120.0)
    assert manifest.versions.packages()["scikit-learn"] == "1.5.0"


def test_json_schema_is_exported() -> None:
    schema = Manifest.model_json_schema()
    assert schema["properties"]["schema_version"]["const"] == "1"
    assert {"features", "reference", "versions", "onnx_sha256"} <= set(schema["required"])
    json.dumps(schema)  # plain JSON


def test_manifest_is_frozen() -> None:
    manifest = Manifest.model_validate(manifest_data())
    with pytest.raises(ValidationError, match="frozen"):
        manifest.name = "other"  # type: ignore[misc]


def mutated(path: str, value: Any) -> dict[str, Any]:
    data = manifest_data()
    *parents, last = path.split(".")
    target: Any = data
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("schema_version", "2", "schema_version"),
        ("extra_field", 1, "Extra inputs are not permitted"),
        ("name", "../evil", "name"),
        ("onnx_sha256", "abc", "onnx_sha256"),
        ("created_at", "2026-01-01T00:00:00", "timezone"),
        ("features.1.categories", KeyError, "needs its list of categories"),
        ("features.1.missing", {"action": "impute"}, "needs a value"),
        ("features.1.missing", {"action": "impute", "value": "gold"}, "not one of its categories"),
        ("features.0.missing", {"action": "impute", "value": "x"}, "must impute a number"),
        ("features.0.range", [5, 1], "range minimum is above its maximum"),
        ("features.1.name", "age", "feature names must be unique"),
        ("outputs.class_labels", [0, 1, 2], "binary classifier needs 2 class labels"),
        ("outputs.value", "variable", "no 'value'"),
        ("training.mae", 1.0, "not mae or r2"),
        ("training.accuracy", float("nan"), "finite number"),
        ("reference.output.quantity", "value", "positive_probability"),
        ("reference.features.age.quantiles", [1.0, 2.0], "quantiles needs 101 values"),
        ("reference.features.plan.kind", "numeric", "plan"),
    ],
)
def test_inconsistent_manifests_are_rejected(path: str, value: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Manifest.model_validate(mutated(path, value))


def test_a_model_evaluated_on_no_labelled_rows_has_no_scores() -> None:
    data = manifest_data()
    data["training"] = {"rows": 4, "holdout_rows": 0, "evaluated_on": "none"}
    assert Manifest.model_validate(data).training.accuracy is None
    data["training"]["accuracy"] = 0.75
    with pytest.raises(ValidationError, match="evaluated on no labelled rows reports no scores"):
        Manifest.model_validate(data)


def test_frameworks_are_recorded_but_not_compared_with_installed_versions() -> None:
    assert Manifest.model_validate(manifest_data()).versions.frameworks == {}  # older manifests
    data = manifest_data()
    data["versions"]["frameworks"] = {"lightgbm": "4.7.0", "onnxmltools": "1.16.0"}
    versions = Manifest.model_validate(data).versions
    assert versions.frameworks["lightgbm"] == "4.7.0" and "lightgbm" not in versions.packages()
    assert '"frameworks"' in Manifest.model_validate(data).model_dump_json()


def test_a_manifest_without_frameworks_is_written_as_the_previous_release_reads_it() -> None:
    # A worker of the previous release refuses unknown fields: no empty "frameworks" in its way.
    manifest = Manifest.model_validate(manifest_data())
    assert "frameworks" not in manifest.model_dump_json()
    assert Manifest.model_validate_json(manifest.model_dump_json()) == manifest


def test_an_unknown_category_policy_is_written_only_when_it_serves_them() -> None:
    # The default (reject) is left out, so that a worker of the previous release still reads it.
    manifest = Manifest.model_validate(manifest_data())
    assert manifest.features[1].unknown_category == "reject"
    assert "unknown_category" not in manifest.model_dump_json()
    data = mutated("features.1.missing", {"action": "allow"})
    data["features"][1]["unknown_category"] = "missing"
    served = Manifest.model_validate(data)
    assert '"unknown_category":"missing"' in served.model_dump_json()
    assert Manifest.model_validate_json(served.model_dump_json()) == served


@pytest.mark.parametrize(
    ("index", "missing", "message"),
    [
        (1, {"action": "reject"}, "serves unknown categories as missing values, but rejects missing"),
        (0, {"action": "allow"}, "numeric feature 'age' has no categories to be unknown"),
    ],
)
def test_an_unknown_category_policy_must_make_sense(
    index: int, missing: dict[str, str], message: str
) -> None:
    data = mutated(f"features.{index}.missing", missing)
    data["features"][index]["unknown_category"] = "missing"
    with pytest.raises(ValidationError, match=message):
        Manifest.model_validate(data)


def test_reference_must_follow_feature_order() -> None:
    data = manifest_data()
    data["reference"]["features"] = dict(reversed(data["reference"]["features"].items()))
    with pytest.raises(ValidationError, match="in feature order"):
        Manifest.model_validate(data)


def test_quantiles_are_101_points_from_min_to_max() -> None:
    values = np.random.default_rng(1).normal(10, 2, 5000)
    stats = NumericStatistics.from_values(values)
    assert len(stats.quantiles) == len(QUANTILE_PROBABILITIES) == 101
    assert stats.quantiles[0] == stats.min and stats.quantiles[-1] == stats.max
    assert list(stats.quantiles) == sorted(stats.quantiles)
    # Fine enough to map a value back to its percentile.
    for p in (0.05, 0.5, 0.9):
        assert stats.percentile(float(np.quantile(values, p))) == pytest.approx(p, abs=1e-9)


def test_percentile_of_a_value_many_rows_share_is_the_middle_of_its_run() -> None:
    stats = NumericStatistics.from_values(np.array([0.0] * 50 + [1.0] * 50))
    assert stats.percentile(0.0) == pytest.approx(0.245)
    assert stats.percentile(1.0) == pytest.approx(0.755)
    assert stats.percentile(0.5) == pytest.approx(0.5)
    assert stats.percentile(0.25) == pytest.approx(0.495)


def test_all_missing_column() -> None:
    stats = NumericStatistics.from_values(np.array([np.nan, np.nan]))
    assert (stats.count, stats.missing_rate, stats.mean, stats.quantiles) == (0, 1.0, None, ())
    with pytest.raises(ValueError, match="every value was missing"):
        stats.percentile(1.0)


def test_category_indexes_must_be_known() -> None:
    with pytest.raises(ValueError, match=r"integers in \[0, 2\)"):
        CategoricalStatistics.from_indices(np.array([0.0, 2.0]), ("a", "b"))
    feature = Feature(name="plan", type="categorical", categories=("basic", "pro"))
    with pytest.raises(ValueError, match="no category 'gold'"):
        feature.category_index("gold")
