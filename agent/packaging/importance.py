"""Each feature's importance to the model's output, measured by permutation on the holdout.

Drift attribution (:mod:`agent.monitoring.attribution`) weighs each feature's recent shift by how much
the model's output depends on it. That dependence is measured here, once, on the rows the package is
checked on: each feature's column is shuffled ``repeats`` times (seeded) and the model's output is
compared with its output on the rows as they are. No labels are needed, so a model packaged from an
ONNX file without labelled rows gets its importances too.

The change is measured on what the monitors watch: for classifiers half the L1 distance between the
probability vectors (the total-variation distance, in ``[0, 1]``); for regressors the absolute change
of the value, in standard deviations of the value. Shares of the total go into the manifest.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(500, 3))
    >>> def predict(rows):  # a regressor on the first feature, a little on the second
    ...     return {"values": 3 * rows[:, 0] + 0.5 * rows[:, 1]}
    >>> imp = permutation_importance("regression", predict, X, ("a", "b", "c"), fitted_on="holdout")
    >>> {name: round(share, 2) for name, share in imp.values.items()}
    {'a': 0.86, 'b': 0.14, 'c': 0.0}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from schemas.manifest import FeatureImportance, Task

__all__ = ["MAX_ROWS", "permutation_importance"]

MAX_ROWS = 2000
"""At most this many rows (a seeded sample) are permuted: the shares settle well before."""

Predict = Callable[[npt.NDArray[np.float64]], Mapping[str, npt.NDArray[Any]]]
"""Rows -> the model's ``probabilities`` (classifiers) or ``values`` (regressors)."""


def _output(task: Task, predicted: Mapping[str, npt.NDArray[Any]]) -> npt.NDArray[np.float64]:
    key = "values" if task == "regression" else "probabilities"
    out = np.asarray(predicted[key], dtype=np.float64)
    return out.reshape(len(out), -1)


def permutation_importance(
    task: Task,
    predict: Predict,
    X: npt.NDArray[np.float64],
    feature_names: Sequence[str],
    *,
    fitted_on: Literal["holdout", "reference"],
    repeats: int = 3,
    seed: int = 0,
) -> FeatureImportance:
    """The share of the output's permutation sensitivity that each feature carries, on rows ``X``."""
    rng = np.random.default_rng(seed)
    if len(X) > MAX_ROWS:
        X = X[np.sort(rng.choice(len(X), MAX_ROWS, replace=False))]
    base = _output(task, predict(X))
    # Regressors: in standard deviations of the value; classifiers: half the L1 distance.
    scale = (float(base.std()) or 1.0) if task == "regression" else 2.0
    raw = np.zeros(len(feature_names))
    for j in range(len(feature_names)):
        total = 0.0
        for _ in range(repeats):
            shuffled = X.copy()
            shuffled[:, j] = X[rng.permutation(len(X)), j]
            changed = _output(task, predict(shuffled))
            total += float(np.abs(changed - base).sum(axis=1).mean()) / scale
        raw[j] = total / repeats
    sum_raw = float(raw.sum())
    shares = raw / sum_raw if sum_raw > 0 else np.zeros_like(raw)
    return FeatureImportance(
        rows=len(X),
        fitted_on=fitted_on,
        repeats=repeats,
        values={name: float(min(max(s, 0.0), 1.0)) for name, s in zip(feature_names, shares, strict=True)},
    )
