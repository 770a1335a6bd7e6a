"""Reference statistics of a built package (agent/packaging/reference.py)."""

from __future__ import annotations

import numpy as np
import pytest

from schemas.manifest import NumericStatistics
from tests.agent.conftest import ExamplePackages


def test_classifier_reference_statistics(example_packages: ExamplePackages) -> None:
    m = example_packages.classifier.manifest
    X = np.asarray(example_packages.classifier_training.X_reference)
    radius = m.reference.features["mean radius"]
    assert isinstance(radius, NumericStatistics)
    assert radius.quantiles[50] == pytest.approx(np.median(X[:, 0]))
    assert (radius.min, radius.max) == (X[:, 0].min(), X[:, 0].max())
    assert radius.mean == pytest.approx(X[:, 0].mean()) and radius.missing_rate == 0.0
    output = m.reference.output
    # The output's reference is the model's output on its 143 holdout rows, not on its 426 training rows.
    assert output.quantity == "positive_probability" and output.statistics.count == 143
    assert output.rows_from == "holdout" and m.reference.rows == 426
    assert output.label_frequencies is not None
    assert sum(output.label_frequencies.values()) == pytest.approx(1.0)
