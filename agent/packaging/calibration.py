"""Calibration of a classifier's confidence on its holdout, for estimating its error without labels.

At serving time each prediction's expected correctness (the calibrated probability of the class it
predicts) feeds an estimated-error column (:mod:`agent.monitoring.estimation`), as in NannyML's CBPE.
Here, at packaging time, the model's highest class probability on labelled rows it was not trained on
is mapped to whether the prediction was right with an isotonic regression (scikit-learn's, bounded
below by chance: ``1 / classes``), whose breakpoints go into the manifest as plain numbers
(:class:`~schemas.manifest.Calibration`): the worker interpolates them with numpy, and no fitted
object is ever pickled.

Two refinements, both still on rows the predicting model did not see:

- **More rows.** A small holdout has few wrong predictions (the bundled breast-cancer example: 8 in
  143), and an isotonic curve drawn through them is coarse. Under :data:`MAX_HOLDOUT_FOR_OUT_OF_FOLD`
  holdout rows the builder adds the training rows, each predicted by a copy of the model trained
  without it (:func:`out_of_fold`, five seeded folds): 569 rows instead of 143 there.
- **A curve per predicted class.** A model is often surer of one class than of another at the same
  confidence; each class with at least :data:`MIN_CLASS_ERRORS` wrong and right predictions gets its
  own curve.

The prediction counted is the arg-max of the probabilities, as the outcome join counts it.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> p = rng.uniform(0, 1, 2000)  # P(class 1) of a calibrated model
    >>> y = (rng.uniform(0, 1, 2000) < p).astype(int)
    >>> c = calibrate(y, {"probabilities": np.c_[1 - p, p]}, (0, 1), fitted_on="holdout")
    >>> c.method, c.rows, round(c.reference_error, 3)
    ('isotonic_per_class', 2000, 0.247)
    >>> c.expected_error(np.array([0.5, 0.75, 1.0])).round(2).tolist()
    [0.5, 0.23, 0.0]
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from schemas.manifest import Calibration, CalibrationCurve, Manifest

__all__ = [
    "CONFIDENCE_DECIMALS",
    "MAX_HOLDOUT_FOR_OUT_OF_FOLD",
    "MIN_CLASS_ERRORS",
    "MIN_ROWS",
    "SURE_SHARE",
    "OutOfFold",
    "calibrate",
    "constant_confidence_warning",
    "correct_predictions",
    "out_of_fold",
]

log = logging.getLogger(__name__)

MIN_ROWS = 20
"""Fewer labelled rows than this give no calibration: the estimate would be noise."""

CONFIDENCE_DECIMALS = 5
"""Confidences are rounded to this many decimals before the curves are fitted."""

MIN_CLASS_ERRORS = 5
"""A predicted class gets a curve of its own only with at least this many wrong (and right)
predictions among its rows: fewer, and its curve would say it is never wrong."""

MAX_HOLDOUT_FOR_OUT_OF_FOLD = 2000
"""Below this many holdout rows the builder adds the training rows' out-of-fold predictions (five
refits of the model): a small holdout has too few wrong predictions to draw a curve from."""


def correct_predictions(
    y: npt.ArrayLike, probabilities: npt.NDArray[Any], class_labels: Sequence[Any]
) -> npt.NDArray[np.float64]:
    """1.0 where the arg-max class of ``probabilities`` is ``y``, 0.0 where not, NaN where ``y`` is
    not one of ``class_labels`` (compared as text, as the outcome join compares them)."""
    index = {str(label): i for i, label in enumerate(class_labels)}
    truth = np.array([index.get(str(v), -1) for v in np.asarray(y).tolist()], dtype=np.int64)
    predicted = np.asarray(probabilities).argmax(axis=1)
    return np.where(truth < 0, np.nan, (predicted == truth).astype(np.float64))


def _isotonic(
    confidence: npt.NDArray[np.float64], correct: npt.NDArray[np.float64], floor: float
) -> CalibrationCurve:
    from sklearn.isotonic import IsotonicRegression

    # The predicted class is the likeliest one: below chance (1/classes) is the noise of the few rows
    # at the lowest confidences, not a model that is wrong more often than a coin.
    iso = IsotonicRegression(y_min=floor, y_max=1.0, increasing=True, out_of_bounds="clip")
    iso.fit(confidence, correct)
    x = np.clip(np.asarray(iso.X_thresholds_, dtype=np.float64), 0.0, 1.0)
    yk = np.clip(np.asarray(iso.y_thresholds_, dtype=np.float64), 0.0, 1.0)
    # Thresholds are strictly increasing once clipped too (the confidences are in [0, 1] already);
    # np.maximum.accumulate guards the last bit of rounding in the correctness.
    yk = np.maximum.accumulate(yk)
    return CalibrationCurve(confidence=tuple(float(v) for v in x), correctness=tuple(float(v) for v in yk))


SURE_SHARE = 0.95
"""A model counts as equally sure of every prediction when at least this share of its holdout outputs
sit at one confidence (see :func:`constant_confidence_warning`)."""


def constant_confidence_warning(manifest: Manifest) -> str | None:
    """What ``driftline package`` warns when a calibrated classifier is equally sure of (almost) every
    holdout prediction, as a decision tree with pure leaves is (its highest class probability is always
    1): the estimated error then moves only with the mix of the classes predicted, and a covariate
    shift that keeps the mix raises no performance alert. ``None`` otherwise.

    Read from the manifest's output reference (101 quantiles of the holdout's outputs): for a
    multiclass model its highest class probability, for a binary one the positive class's (all at 0
    or 1 means a confidence of 1)."""
    output = manifest.reference.output
    if manifest.calibration is None or output is None or output.quantity == "value":
        return None
    q = np.asarray(output.statistics.quantiles, dtype=np.float64)
    if output.quantity == "positive_probability":
        q = np.maximum(q, 1.0 - q)
    values, counts = np.unique(q.round(CONFIDENCE_DECIMALS), return_counts=True)
    if counts.max() < SURE_SHARE * q.size:
        return None
    confidence = float(values[counts.argmax()])
    return (
        f"the model is equally sure of {SURE_SHARE:.0%} or more of its holdout predictions (highest "
        f"class probability {confidence:g}, as a tree with pure leaves is): its estimated error moves "
        "only with the mix of the classes it predicts, and a shift of its inputs that keeps that mix "
        "raises no performance alert. A model whose confidence varies (a forest, leaves of several "
        "rows, a calibrated classifier) gives the estimate something to read."
    )


def calibrate(
    y: npt.ArrayLike,
    predicted: Mapping[str, npt.NDArray[Any]],
    class_labels: Sequence[Any],
    *,
    fitted_on: Literal["holdout", "reference"],
    out_of_fold: OutOfFold | None = None,
) -> Calibration | None:
    """The calibration of a classifier's confidence on labelled rows ``y`` with its ``predicted``
    probabilities (and the training rows' ``out_of_fold`` predictions, when given: more rows to fit
    on); ``None`` when there are fewer than :data:`MIN_ROWS` usable rows or every prediction was
    right (or every one wrong): nothing to calibrate against.

    With at least :data:`MIN_CLASS_ERRORS` wrong and right predictions of every class among
    :data:`MIN_ROWS` or more rows, each predicted class gets a curve of its own (``isotonic_per_class``);
    a class with fewer uses the pooled curve."""
    probabilities = np.asarray(predicted["probabilities"], dtype=np.float64)
    correct = correct_predictions(y, probabilities, class_labels)
    keep = ~np.isnan(correct)
    held_confidence = probabilities.max(axis=1)[keep]
    confidence, classes, correct = held_confidence, probabilities.argmax(axis=1)[keep], correct[keep]
    if out_of_fold is not None:
        oof_probabilities = np.asarray(out_of_fold.probabilities, dtype=np.float64)
        oof_correct = correct_predictions(out_of_fold.y, oof_probabilities, class_labels)
        oof_keep = ~np.isnan(oof_correct)
        confidence = np.r_[confidence, oof_probabilities.max(axis=1)[oof_keep]]
        classes = np.r_[classes, oof_probabilities.argmax(axis=1)[oof_keep]]
        correct = np.r_[correct, oof_correct[oof_keep]]
    if correct.size < MIN_ROWS or correct.min() == correct.max():
        return None
    # Served probabilities are float32 sums (a forest's votes: 0.57 comes out as 0.5699999 from one
    # session and 0.57 from another); unrounded, that noise splits ties and moves the curve's steps.
    confidence = confidence.round(CONFIDENCE_DECIMALS)
    floor = 1.0 / probabilities.shape[1]
    pooled = _isotonic(confidence, correct, floor)
    per_class: list[CalibrationCurve] = []
    for k in range(probabilities.shape[1]):
        rows = classes == k
        wrong = int((correct[rows] == 0).sum())
        if rows.sum() >= MIN_ROWS and min(wrong, int(rows.sum()) - wrong) >= MIN_CLASS_ERRORS:
            per_class.append(_isotonic(confidence[rows], correct[rows], floor))
        else:
            per_class.append(pooled)
    split = any(curve is not pooled for curve in per_class)
    calibration = Calibration(
        method="isotonic_per_class" if split else "isotonic",
        rows=int(correct.size),
        fitted_on="holdout+out_of_fold" if out_of_fold is not None else fitted_on,
        confidence=pooled.confidence,
        correctness=pooled.correctness,
        reference_error=0.0,
        reference_error_std=0.0,
        per_class=tuple(per_class) if split else None,
    )
    # The reference is the served model's own estimate on the rows given (the holdout's), not the
    # out-of-fold copies'.
    n_held = int(keep.sum())
    errors = calibration.expected_error(held_confidence, classes[:n_held])
    return calibration.model_copy(
        update={
            "reference_error": min(max(float(errors.mean()), 0.0), 1.0),
            "reference_error_std": float(errors.std()),
        }
    )


@dataclass(frozen=True)
class OutOfFold:
    """The training rows' labels and each row's class probabilities from a copy of the model trained
    without it."""

    y: npt.NDArray[Any]
    probabilities: npt.NDArray[np.float64]


def out_of_fold(
    estimator: Any, X: npt.NDArray[np.float64], y: npt.ArrayLike, *, folds: int = 5
) -> OutOfFold | None:
    """Cross-validated class probabilities of the training rows (``folds`` seeded stratified folds,
    each predicted by a clone of ``estimator`` fitted on the others); ``None`` when that cannot be
    done (a class too rare to stratify, an estimator that cannot be cloned or refitted)."""
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    labels = np.asarray(y)
    try:
        probabilities = cross_val_predict(
            clone(estimator),
            X,
            labels,
            cv=StratifiedKFold(folds, shuffle=True, random_state=0),
            method="predict_proba",
        )
    except (ValueError, TypeError, RuntimeError) as exc:
        log.info("no out-of-fold calibration rows: %s", exc)
        return None
    return OutOfFold(labels, np.asarray(probabilities, dtype=np.float64))
