"""The calibration of a classifier's confidence: what the builder stores, and what a manifest accepts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from agent.models.package import load_package
from agent.models.repository import ModelRepository
from agent.packaging.builder import build_package
from agent.packaging.calibration import (
    CONFIDENCE_DECIMALS,
    calibrate,
    constant_confidence_warning,
    correct_predictions,
    out_of_fold,
)
from agent.packaging.progress import Progress
from agent.packaging.training import TrainingResult
from schemas.manifest import Calibration, Manifest
from tests.agent.conftest import ExamplePackages


def test_the_example_classifier_carries_its_holdout_calibration(example_packages: ExamplePackages) -> None:
    built = example_packages.classifier
    c = built.manifest.calibration
    training = example_packages.classifier_training
    # 143 holdout rows (8 wrong) are few: the 426 training rows come in, each predicted by a copy of
    # the forest trained without it; and each predicted class has its own curve.
    assert c is not None and (c.method, c.rows, c.fitted_on) == (
        "isotonic_per_class",
        569,
        "holdout+out_of_fold",
    )
    assert c.per_class is not None and len(c.per_class) == 2
    model = load_package(built.path)
    probabilities = model.predict(np.asarray(training.X_holdout, dtype=np.float32)).probabilities
    assert probabilities is not None
    probabilities = probabilities.astype(np.float64)
    oof = out_of_fold(training.estimator, np.asarray(training.X_reference), training.y_reference)
    assert oof is not None and oof.probabilities.shape == (426, 2)
    # The stored pooled breakpoints answer as scikit-learn's isotonic regression fitted on those rows
    # does (within the float32 rounding of the served probabilities).
    confidence = np.r_[probabilities.max(axis=1), oof.probabilities.max(axis=1)].round(CONFIDENCE_DECIMALS)
    correct = np.r_[
        correct_predictions(training.y_holdout, probabilities, (0, 1)),
        correct_predictions(oof.y, oof.probabilities, (0, 1)),
    ]
    iso = IsotonicRegression(y_min=0.5, y_max=1.0, out_of_bounds="clip").fit(confidence, correct)
    grid = np.linspace(0.5, 1.0, 101)
    np.testing.assert_allclose(c.expected_error(grid), 1.0 - iso.predict(grid), atol=2e-3)
    # The reference estimated error is the served model's on its holdout: about its real error there
    # (8 wrong in 143: 5.6 %, give or take 2 points of sampling).
    accuracy = built.manifest.training.accuracy
    assert accuracy is not None and c.reference_error == pytest.approx(1.0 - accuracy, abs=0.02)
    assert 0.0 < c.reference_error_std < 0.5
    # The JSON carries it as plain numbers, and the loaded package reads it back the same.
    assert model.manifest.calibration == c


def test_the_breakpoints_are_scikit_learns_isotonic_regression() -> None:
    rng = np.random.default_rng(5)
    p = rng.uniform(0.0, 1.0, 3000)
    y = (rng.uniform(0.0, 1.0, 3000) < p).astype(int)
    probabilities = np.c_[1 - p, p]
    c = calibrate(y, {"probabilities": probabilities}, (0, 1), fitted_on="holdout")
    assert c is not None and c.method == "isotonic_per_class"
    correct = correct_predictions(y, probabilities, (0, 1))
    iso = IsotonicRegression(y_min=0.5, y_max=1.0, out_of_bounds="clip").fit(
        probabilities.max(axis=1).round(CONFIDENCE_DECIMALS), correct
    )
    grid = np.linspace(0.0, 1.0, 201)
    np.testing.assert_allclose(c.expected_error(grid), 1.0 - iso.predict(grid), atol=1e-12)
    # A calibrated model: the estimate is its real error rate, on average and where it is unsure.
    assert c.reference_error == pytest.approx(1.0 - correct.mean(), abs=0.005)
    assert c.expected_error(np.array([0.6]))[0] == pytest.approx(0.4, abs=0.05)


def test_a_class_the_model_is_surer_of_gets_its_own_curve() -> None:
    # Predictions of class 1 at 0.7 are right 95 % of the time; of class 0 at 0.7, 70 %.
    rng = np.random.default_rng(6)
    n = 4000
    predicted = rng.integers(0, 2, n)
    confidence = rng.uniform(0.55, 1.0, n)
    right = rng.random(n) < np.where(predicted == 1, np.minimum(confidence + 0.25, 1.0), confidence)
    y = np.where(right, predicted, 1 - predicted)
    p1 = np.where(predicted == 1, confidence, 1 - confidence)
    c = calibrate(y, {"probabilities": np.c_[1 - p1, p1]}, (0, 1), fitted_on="holdout")
    assert c is not None and c.per_class is not None
    at = np.array([0.7, 0.7])
    by_class = c.expected_error(at, predicted=np.array([0, 1]))
    assert by_class[0] == pytest.approx(0.3, abs=0.05) and by_class[1] == pytest.approx(0.05, abs=0.05)
    # Without the class: the pooled curve, in between.
    assert by_class[1] < c.expected_error(at)[0] < by_class[0]


def test_a_class_with_too_few_errors_keeps_the_pooled_curve() -> None:
    rng = np.random.default_rng(7)
    n = 1000
    p1 = rng.uniform(0.0, 1.0, n)
    y = (rng.random(n) < p1).astype(int)
    y[p1 > 0.5] = 1  # class 1 is never wrong: no curve of its own, which would say so forever
    c = calibrate(y, {"probabilities": np.c_[1 - p1, p1]}, (0, 1), fitted_on="holdout")
    assert c is not None and c.per_class is not None
    assert c.per_class[1] == c.curve and c.per_class[0] != c.curve


def test_a_regressor_has_no_calibration(example_packages: ExamplePackages) -> None:
    manifest = example_packages.regressor.manifest
    assert manifest.calibration is None and manifest.importance is not None
    data = manifest.model_dump(mode="json")
    assert "calibration" not in data
    with pytest.raises(ValidationError, match="calibration is for classifiers"):
        Manifest.model_validate({**data, "calibration": _calibration().model_dump()})


def test_nothing_to_calibrate_against() -> None:
    positive = np.linspace(0.55, 1.0, 50)
    p = np.c_[1 - positive, positive]
    assert calibrate(np.ones(50, dtype=int), {"probabilities": p}, (0, 1), fitted_on="holdout") is None
    few = p[:10]
    assert (
        calibrate(np.r_[np.ones(5), np.zeros(5)], {"probabilities": few}, (0, 1), fitted_on="holdout") is None
    )


def test_labels_the_model_does_not_know_are_left_out() -> None:
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert correct_predictions(["a", "b", "z"], p, ("a", "b")).tolist()[:2] == [1.0, 1.0]
    assert np.isnan(correct_predictions(["a", "b", "z"], p, ("a", "b"))[2])


def _calibration(**changes: object) -> Calibration:
    data: dict[str, object] = {
        "rows": 10,
        "fitted_on": "holdout",
        "confidence": (0.5, 0.8, 1.0),
        "correctness": (0.5, 0.9, 1.0),
        "reference_error": 0.1,
        "reference_error_std": 0.1,
    }
    return Calibration.model_validate({**data, **changes})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"confidence": (0.5, 0.5, 1.0)}, "strictly increasing"),
        ({"correctness": (0.9, 0.5, 1.0)}, "non-decreasing"),
        ({"correctness": (0.5, 1.0)}, "same number"),
        ({"confidence": (0.5, 0.8, 1.5)}, "less than or equal to 1"),
        ({"method": "pickle"}, "isotonic"),
    ],
)
def test_a_manifest_refuses_a_calibration_that_is_not_a_monotone_map(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        _calibration(**changes)


@pytest.mark.parametrize("classes", [2, 3])
def test_a_model_equally_sure_of_every_prediction_is_warned_about(tmp_path: Path, classes: int) -> None:
    # A decision tree grown to pure leaves answers every row with probability 1: its calibrated
    # estimate can only follow the mix of the classes it predicts. A logistic model's confidence varies.
    rng = np.random.default_rng(classes)
    X = rng.normal(size=(3000, 3))
    y = np.digitize(X[:, 0] + 0.8 * rng.normal(size=3000), np.linspace(-0.5, 0.5, classes - 1))
    warned = []
    for name, estimator in (
        ("tree", DecisionTreeClassifier(random_state=0)),
        ("logistic", LogisticRegression()),
    ):
        fitted = estimator.fit(X[:2000], y[:2000])
        result = TrainingResult(fitted, X[:2000], y[:2000], ["a", "b", "c"], X[2000:], y[2000:])
        progress = Progress(None)
        built = build_package(
            result, name=name, version="1", repository=ModelRepository(tmp_path), progress=progress
        )
        assert built.manifest.calibration is not None
        assert constant_confidence_warning(built.manifest) == (progress.warnings or [None])[0]
        warned += progress.warnings
    [warning] = warned
    assert warning.startswith("the model is equally sure of 95% or more of its holdout predictions")
    assert "(highest class probability 1," in warning
