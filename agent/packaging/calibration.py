"""Calibration of a classifier's confidence on its holdout, for estimating its error without labels.

At serving time each prediction's expected correctness (the calibrated probability of the class it
predicts) feeds an estimated-error column (:mod:`agent.monitoring.estimation`), as in NannyML's CBPE.
Here, at packaging time, the model's highest class probability on labelled rows it was not trained on
is mapped to whether the prediction was right with an isotonic regression (scikit-learn's, bounded
below by chance: ``1 / classes``), whose
breakpoints go into the manifest as plain numbers (:class:`~schemas.manifest.Calibration`): the worker
interpolates them with numpy, and no fitted object is ever pickled.

The prediction counted is the arg-max of the probabilities, as the outcome join counts it.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> p = rng.uniform(0, 1, 2000)  # P(class 1) of a calibrated model
    >>> y = (rng.uniform(0, 1, 2000) < p).astype(int)
    >>> c = calibrate(y, {"probabilities": np.c_[1 - p, p]}, (0, 1), fitted_on="holdout")
    >>> c.method, c.rows, round(c.reference_error, 3)
    ('isotonic', 2000, 0.249)
    >>> c.expected_error(np.array([0.5, 0.75, 1.0])).round(2).tolist()
    [0.5, 0.23, 0.0]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from schemas.manifest import Calibration

__all__ = ["MIN_ROWS", "calibrate", "correct_predictions"]

MIN_ROWS = 20
"""Fewer labelled rows than this give no calibration: the estimate would be noise."""


def correct_predictions(
    y: npt.ArrayLike, probabilities: npt.NDArray[Any], class_labels: Sequence[Any]
) -> npt.NDArray[np.float64]:
    """1.0 where the arg-max class of ``probabilities`` is ``y``, 0.0 where not, NaN where ``y`` is
    not one of ``class_labels`` (compared as text, as the outcome join compares them)."""
    index = {str(label): i for i, label in enumerate(class_labels)}
    truth = np.array([index.get(str(v), -1) for v in np.asarray(y).tolist()], dtype=np.int64)
    predicted = np.asarray(probabilities).argmax(axis=1)
    return np.where(truth < 0, np.nan, (predicted == truth).astype(np.float64))


def calibrate(
    y: npt.ArrayLike,
    predicted: Mapping[str, npt.NDArray[Any]],
    class_labels: Sequence[Any],
    *,
    fitted_on: Literal["holdout", "reference"],
) -> Calibration | None:
    """The calibration of a classifier's confidence on labelled rows ``y`` with its ``predicted``
    probabilities; ``None`` when there are fewer than :data:`MIN_ROWS` usable rows or every prediction
    was right (or every one wrong): nothing to calibrate against."""
    from sklearn.isotonic import IsotonicRegression

    probabilities = np.asarray(predicted["probabilities"], dtype=np.float64)
    correct = correct_predictions(y, probabilities, class_labels)
    keep = ~np.isnan(correct)
    confidence = probabilities.max(axis=1)[keep]
    correct = correct[keep]
    if correct.size < MIN_ROWS or correct.min() == correct.max():
        return None
    # The predicted class is the likeliest one: below chance (1/classes) is the noise of the few rows
    # at the lowest confidences, not a model that is wrong more often than a coin.
    floor = 1.0 / probabilities.shape[1]
    iso = IsotonicRegression(y_min=floor, y_max=1.0, increasing=True, out_of_bounds="clip")
    iso.fit(confidence, correct)
    x = np.clip(np.asarray(iso.X_thresholds_, dtype=np.float64), 0.0, 1.0)
    yk = np.clip(np.asarray(iso.y_thresholds_, dtype=np.float64), 0.0, 1.0)
    # Thresholds are strictly increasing once clipped too (the confidences are in [0, 1] already);
    # np.maximum.accumulate guards the last bit of rounding in the correctness.
    yk = np.maximum.accumulate(yk)
    calibration = Calibration(
        rows=int(correct.size),
        fitted_on=fitted_on,
        confidence=tuple(float(v) for v in x),
        correctness=tuple(float(v) for v in yk),
        reference_error=0.0,
        reference_error_std=0.0,
    )
    errors = calibration.expected_error(confidence)
    return calibration.model_copy(
        update={
            "reference_error": min(max(float(errors.mean()), 0.0), 1.0),
            "reference_error_std": float(errors.std()),
        }
    )
