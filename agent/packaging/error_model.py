"""A regressor's model of its own absolute error, for estimating its error without labels.

A classifier says how sure it is of each prediction (:mod:`agent.packaging.calibration`); a regressor
does not. Direct loss estimation (NannyML's DLE) learns it instead: a second, small model is trained
to predict the absolute error ``|y - y_hat|`` from the features and the prediction, on labelled rows
the regressor was not trained on. Here it is fitted on part of the holdout (:data:`FIT_SHARE`, seeded)
and checked on the rest, against a constant estimate; converted to ONNX with the same converter and
opsets as the model itself; and shipped in the package as a second graph
(:class:`~schemas.manifest.ErrorModel`), verified when the package is loaded like the first. At
serving time the worker runs it on each batch (:meth:`agent.models.package.LoadedModel.estimate_errors`)
and watches the estimated absolute error against its reference on the checked rows
(:class:`agent.monitoring.estimation.EstimatedErrorMonitor`).

It is skipped, with a note saying why, when the holdout has fewer than :data:`MIN_ROWS` rows, when a
holdout row has no label, or when on the checked rows it does not beat the constant estimate (the
error then does not depend on where the inputs are, as far as these rows can tell). A missing value
of a feature the model lets through (``allow``) counts as the fitted rows' median there.

What it can see: inputs moving into a region where the regressor erred more on the holdout (a noisier
region, or one near the edge of its training data that the holdout covers). What it cannot: a change of
P(y | x) with the same inputs (only the labels show that), and anything beyond the holdout's range:
its trees are flat past the last rows they saw.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(1000, 2))
    >>> predicted = 2 * X[:, 0]
    >>> y = predicted + rng.normal(size=1000) * (0.2 + np.abs(X[:, 1]))  # noisier as |x1| grows
    >>> fitted = fit_error_model(X, y, predicted)
    >>> e = fitted.entry
    >>> e.rows, e.checked_rows, e.inputs, e.check_mae < e.constant_mae
    (600, 400, 'features+prediction', True)
    >>> round(e.checked_error, 2), round(e.realised_mae, 2)
    (0.83, 0.78)
    >>> print(fit_error_model(X[:150], y[:150], predicted[:150]).note)  # doctest: +NORMALIZE_WHITESPACE
    no error model: the holdout has 150 rows, fewer than the 200 needed to fit one on 60% and check
    it on the rest
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.packaging.convert import convert
from agent.packaging.parity import onnx_session
from schemas.manifest import ErrorModel

__all__ = ["ERROR_MODEL_FILE", "FIT_SHARE", "MIN_ROWS", "FittedErrorModel", "fit_error_model"]

ERROR_MODEL_FILE = "error_model.onnx"
"""The error model's file in the package directory."""

MIN_ROWS = 200
"""Fewer holdout rows than this give no error model: too few to fit one and check it on the rest."""

FIT_SHARE = 0.6
"""The share of the holdout rows the error model is fitted on; the rest check it."""

_PARITY = 1e-4
"""ONNX Runtime and scikit-learn must agree on the checked rows within this, relative to the
mean absolute error (float32 inputs against float64 thresholds)."""


@dataclass(frozen=True)
class FittedErrorModel:
    """The error model for the manifest and its ONNX bytes, or ``None`` for both and a note why."""

    entry: ErrorModel | None
    onnx_bytes: bytes | None
    note: str


def _estimator(seed: int, rows: int) -> Any:
    from sklearn.ensemble import GradientBoostingRegressor

    # Small and smooth: a few hundred rows of a noisy target. Shallow trees, a moderate rate and large
    # leaves keep it from learning the rows' noise; squared loss estimates the mean of |error|. It runs
    # on every served batch: 50 trees fit the noisy example as well as 100 at half the cost (about
    # 1.1 us per prediction with onnxruntime on one thread, against 1.7 to 2.7 for 100).
    return GradientBoostingRegressor(
        n_estimators=50,
        max_depth=2,
        learning_rate=0.1,
        # Leaves of at least 1/40 of the rows (20 at least): with 20-row leaves on 1,800 rows it
        # learnt a little of a feature the error does not depend on (bench/calibrate_estimate.py).
        min_samples_leaf=max(20, rows // 40),
        subsample=0.8,
        random_state=seed,
    )


def fit_error_model(
    X: npt.NDArray[np.float64],
    y: npt.ArrayLike,
    predicted: npt.ArrayLike,
    *,
    seed: int = 0,
    opsets: Mapping[str, int] | None = None,
) -> FittedErrorModel:
    """Fits a model of ``|y - predicted|`` on :data:`FIT_SHARE` of the holdout rows ``X`` (seeded) and
    checks it on the rest; ``predicted`` are the regressor's values as ONNX Runtime gives them."""
    X = np.asarray(X, dtype=np.float64)
    values = np.asarray(predicted, dtype=np.float64).reshape(-1)
    target = np.abs(np.asarray(y, dtype=np.float64).reshape(-1) - values)
    n = len(X)
    if n < MIN_ROWS:
        return FittedErrorModel(
            None,
            None,
            f"no error model: the holdout has {n} rows, fewer than the {MIN_ROWS} needed to fit one "
            f"on {FIT_SHARE:.0%} and check it on the rest",
        )
    if not np.isfinite(target).all():
        unlabelled = int((~np.isfinite(target)).sum())
        return FittedErrorModel(
            None,
            None,
            f"no error model: {unlabelled} holdout rows have no finite label or prediction to "
            "measure an error by",
        )
    rows = np.c_[X, values]
    order = np.random.default_rng(seed).permutation(n)
    cut = round(n * FIT_SHARE)
    fit, check = np.sort(order[:cut]), np.sort(order[cut:])
    estimator = _estimator(seed, len(fit))
    if np.isnan(X).any():
        # Features the model lets through missing (``allow``): scikit-learn's gradient boosting takes
        # no NaN, so the error model reads a missing value as the fitted rows' median (skl2onnx
        # converts the imputer; it drops a missing-value indicator, so there is none).
        from sklearn.impute import SimpleImputer
        from sklearn.pipeline import make_pipeline

        estimator = make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), estimator)
    estimator.fit(rows[fit], target[fit])
    converted = convert(estimator, rows.shape[1], opsets)
    session = onnx_session(converted.onnx_bytes)
    (onnx_out,) = session.run(None, {"input": np.ascontiguousarray(rows, dtype=np.float32)})
    every = np.maximum(np.asarray(onnx_out, dtype=np.float64).reshape(-1), 0.0)
    estimate = every[check]
    realised = target[check]
    scale = max(float(realised.mean()), 1e-12)
    skl = np.maximum(estimator.predict(rows.astype(np.float32)), 0.0)
    if float(np.abs(skl - every).max()) > _PARITY * scale:
        return FittedErrorModel(
            None,
            None,
            "no error model: ONNX Runtime and scikit-learn disagree on it by "
            f"{float(np.abs(skl - every).max()):.3g}",
        )
    check_mae = float(np.abs(estimate - realised).mean())
    constant_mae = float(np.abs(float(target[fit].mean()) - realised).mean())
    if check_mae >= constant_mae:
        return FittedErrorModel(
            None,
            None,
            f"no error model: on the {len(check)} checked holdout rows it is off by {check_mae:.4g} "
            f"on average, no better than a constant ({constant_mae:.4g}): the error does not depend "
            "on the inputs as far as the holdout can tell",
        )
    cls = type(estimator)
    entry = ErrorModel(
        file=ERROR_MODEL_FILE,
        sha256=hashlib.sha256(converted.onnx_bytes).hexdigest(),
        estimator=f"{cls.__module__}.{cls.__qualname__}",
        inputs="features+prediction",
        rows=len(fit),
        checked_rows=len(check),
        # The estimate depends on the inputs only: its reference is over every holdout row (the
        # fitted ones too), a steadier mean for the monitor than the checked rows' alone.
        reference_error=float(every.mean()),
        reference_error_std=float(every.std()),
        checked_error=float(estimate.mean()),
        realised_mae=float(realised.mean()),
        check_mae=check_mae,
        constant_mae=constant_mae,
    )
    note = (
        f"error model: fitted on {len(fit)} holdout rows, checked on {len(check)}: off by "
        f"{check_mae:.4g} on average vs {constant_mae:.4g} for a constant; estimated MAE "
        f"{entry.checked_error:.4g} vs realised {entry.realised_mae:.4g} there"
    )
    return FittedErrorModel(entry, converted.onnx_bytes, note)
