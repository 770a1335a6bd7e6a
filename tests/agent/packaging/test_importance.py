"""Permutation importance of the output: what the builder stores, and that it finds what the model uses."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from agent.packaging.importance import permutation_importance
from schemas.manifest import Manifest
from tests.agent.conftest import ExamplePackages


def test_a_classifier_that_reads_one_feature() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 4))

    def predict(rows: np.ndarray) -> dict[str, np.ndarray]:
        p = 1 / (1 + np.exp(-4 * rows[:, 2]))
        return {"probabilities": np.c_[1 - p, p]}

    imp = permutation_importance("binary_classification", predict, X, list("abcd"), fitted_on="holdout")
    assert imp.values == {"a": 0.0, "b": 0.0, "c": 1.0, "d": 0.0}
    assert (imp.rows, imp.repeats, imp.method) == (400, 3, "permutation_output")
    again = permutation_importance("binary_classification", predict, X, list("abcd"), fitted_on="holdout")
    assert again == imp


def test_a_constant_model_has_no_important_feature() -> None:
    X = np.random.default_rng(2).normal(size=(50, 2))
    imp = permutation_importance(
        "regression", lambda rows: {"values": np.zeros(len(rows))}, X, ["a", "b"], fitted_on="reference"
    )
    assert imp.values == {"a": 0.0, "b": 0.0}


def test_the_examples_rank_the_features_their_scenarios_shift(example_packages: ExamplePackages) -> None:
    cancer = example_packages.classifier.manifest.importance
    assert cancer is not None and cancer.fitted_on == "holdout" and cancer.rows == 143
    assert tuple(cancer.values) == example_packages.classifier.manifest.feature_names
    assert sum(cancer.values.values()) == pytest.approx(1.0)
    ranked = sorted(cancer.values, key=cancer.values.__getitem__, reverse=True)
    assert "worst radius" in ranked[:4]
    # 'mean texture' (the scenarios' second feature) matters far less than the top ones.
    assert cancer.values["mean texture"] < cancer.values[ranked[0]] / 2
    sugar = example_packages.regressor.manifest.importance
    assert sugar is not None and max(sugar.values, key=sugar.values.__getitem__) in ("bmi", "s5")


def test_a_manifest_refuses_importances_of_other_features(example_packages: ExamplePackages) -> None:
    data = example_packages.regressor.manifest.model_dump(mode="json")
    data["importance"]["values"] = {"x": 1.0}
    with pytest.raises(ValidationError, match="one entry per feature"):
        Manifest.model_validate(data)
