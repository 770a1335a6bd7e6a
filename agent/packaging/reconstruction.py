"""The reconstruction of the numeric features (PCA), for multivariate drift, fitted at packaging time.

The numeric features of the reference rows (as served: after the missing-value policy) are
standardised by their mean and standard deviation, a missing value counting as the mean, and the
leading principal components that explain ``variance_share`` of the standardised variance are kept
(:func:`fit_reconstruction`; an SVD with numpy, no fitted object: the manifest stores plain numbers,
:class:`~schemas.manifest.Reconstruction`). At least one direction is always left out, so that a row
that breaks the features' usual relations has something to show; a model with fewer than two usable
numeric features gets none. Categorical features are left out: their index is not a quantity, and a
one-hot encoding would put a matrix of a hundred columns in every batch for a mix change that the
categorical column already watches.

The reference distribution of the reconstruction error comes from rows the components were not
fitted on (a PCA explains its own rows better than new ones, and quantiles of those errors would make
every new row look like drift): each reference row's error under components fitted on the other four
fifths of the reference rows (5-fold cross-fitting), and the holdout rows' errors under the final
components when there is a holdout. Cross-fitting gives every reference row an unseen error, where a
holdout of a hundred rows alone gives quantiles noisy enough to raise the false alarms several times
(``bench/calibrate_reconstruction.py``: 1.4 per 1e6 events with a 150-row holdout of a 20-feature
model, 0.4 with the cross-fitted rows added).

Example:
    Two features that move together (correlation 0.9) and a third on its own: 90 % of the variance
    is kept by two components, and the direction in which the pair disagrees is left out.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> a, b, c = rng.standard_normal((3, 5000))
    >>> X = np.c_[a, 0.9 * a + np.sqrt(1 - 0.81) * b, 5 + 2 * c]
    >>> fit, held = split_rows(len(X))
    >>> r = fit_reconstruction(["x", "y", "z"], X[fit], X[held])
    >>> len(r.components), round(r.variance_kept, 3), r.fitted_rows, r.error.count, r.error_from
    (2, 0.968, 4000, 5000, 'holdout_and_cross_fit')
    >>> round(r.error.mean, 2)  # |a - y| / sqrt(2) of standardised rows: about sqrt(0.1) on average
    0.25
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from schemas.manifest import NumericStatistics, Reconstruction, reconstruction_errors

__all__ = [
    "FOLDS",
    "HOLDOUT_SHARE",
    "MAX_VALUES",
    "MIN_ROWS",
    "VARIANCE_SHARE",
    "cross_fitted_errors",
    "fit_reconstruction",
    "split_rows",
]

VARIANCE_SHARE = 0.9
"""Share of the standardised variance the kept components explain, by default."""

HOLDOUT_SHARE = 0.2
"""Share of the rows :func:`split_rows` holds out by default."""

FOLDS = 5
"""Folds of the cross-fitting that gives each reference row an error from components it did not fit."""

MIN_ROWS = 20
"""Fewer rows than this to fit on give no reconstruction."""

MAX_VALUES = 20_000
"""At most this many numbers in the components (k x d): a wide model keeps fewer components than its
variance share asks for (``variance_kept`` says how much they keep), so that its manifest stays small
(about 400 kB of JSON) and its cost per request bounded (k x d multiply-adds)."""


def split_rows(n: int, share: float = HOLDOUT_SHARE, seed: int = 0) -> tuple[npt.NDArray[np.intp], ...]:
    """Seeded ``(kept, held_out)`` row indexes (each sorted) of ``n`` rows, ``share`` of them held out
    (rounded, at least one when ``n >= 2``).

    Example:
        >>> [part.tolist() for part in split_rows(10)]
        [[0, 1, 2, 3, 5, 7, 8, 9], [4, 6]]
    """
    held = min(max(round(n * share), 1 if n >= 2 else 0), n)
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[held:]), np.sort(order[:held])


def _moments(X: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], ...]:
    """Per column: the count of present values, their mean and (population) standard deviation."""
    present = ~np.isnan(X)
    counts = present.sum(axis=0)
    with np.errstate(invalid="ignore"):
        mean = np.where(counts > 0, np.nansum(X, axis=0) / np.maximum(counts, 1), 0.0)
        spread = np.sqrt(np.nansum((X - mean) ** 2, axis=0) / np.maximum(counts, 1))
    return counts, mean, spread


def _principal(z: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The principal directions of standardised rows ``z`` (missing already 0) and their cumulative
    share of the variance."""
    # The data are centred by the mean of the present values; missing ones sit at 0 already.
    _, singular, vt = np.linalg.svd(z - z.mean(axis=0), full_matrices=False)
    variance = singular**2
    return vt, np.cumsum(variance) / max(float(variance.sum()), np.finfo(np.float64).tiny)


def _standardised(
    X: npt.NDArray[np.float64], mean: npt.NDArray[np.float64], scale: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    z = (X - mean) / scale
    z[np.isnan(z)] = 0.0
    return z


def cross_fitted_errors(
    X: npt.NDArray[np.float64], k: int, folds: int = FOLDS, seed: int = 0
) -> npt.NDArray[np.float64]:
    """Each row's reconstruction error under ``k`` components fitted, with their own standardisation,
    on the other ``folds - 1`` folds of ``X`` (the reconstruction's columns only): errors of rows the
    components did not see, for every row."""
    out = np.empty(len(X))
    for held in np.array_split(np.random.default_rng(seed).permutation(len(X)), folds):
        rest = np.ones(len(X), dtype=bool)
        rest[held] = False
        _, mean, spread = _moments(X[rest])
        scale = np.where(spread > 0, spread, 1.0)
        vt, _ = _principal(_standardised(X[rest], mean, scale))
        out[held] = reconstruction_errors(X[held], np.arange(X.shape[1]), mean, scale, vt[:k])
    return out


def fit_reconstruction(
    feature_names: Sequence[str],
    X_fit: npt.NDArray[np.float64],
    X_holdout: npt.NDArray[np.float64] | None = None,
    *,
    numeric: Sequence[bool] | None = None,
    variance_share: float = VARIANCE_SHARE,
) -> Reconstruction | None:
    """The reconstruction fitted on the rows of ``X_fit``, with its error's distribution on rows the
    components were not fitted on: the rows of ``X_holdout`` when given, and every row of ``X_fit``
    cross-fitted (:func:`cross_fitted_errors`). Both are ``(n, len(feature_names))``, as served; NaN
    is missing.

    ``numeric`` flags the numeric columns (all by default). ``None`` when fewer than two numeric
    features vary in ``X_fit``, or it has fewer than :data:`MIN_ROWS` rows.
    """
    if not 0.0 < variance_share < 1.0:
        raise ValueError("variance_share must be in (0, 1)")
    names = list(feature_names)
    flags = [True] * len(names) if numeric is None else list(numeric)
    if len(X_fit) < MIN_ROWS:
        return None
    fit = np.asarray(X_fit, dtype=np.float64)
    counts, mean, spread = _moments(fit)
    # A feature constant (or always missing) on the reference has no variance to model: its own
    # column sees any change in it.
    usable = [
        j
        for j in range(len(names))
        if flags[j] and counts[j] >= 2 and spread[j] > 1e-12 * max(1.0, abs(mean[j]))
    ]
    if len(usable) < 2:
        return None
    columns = np.array(usable, dtype=np.intp)
    mean, scale = mean[columns], spread[columns]
    vt, share = _principal(_standardised(fit[:, columns], mean, scale))
    d = len(columns)
    k = min(int(np.searchsorted(share, variance_share - 1e-12) + 1), d - 1, max(MAX_VALUES // d, 1))
    components = vt[:k]
    errors = [cross_fitted_errors(fit[:, columns], k)]
    held = X_holdout is not None and len(X_holdout) > 0
    if held:
        assert X_holdout is not None
        holdout = np.asarray(X_holdout, dtype=np.float64)
        errors.append(reconstruction_errors(holdout, columns, mean, scale, components))
    return Reconstruction(
        features=tuple(names[j] for j in usable),
        mean=tuple(float(v) for v in mean),
        scale=tuple(float(v) for v in scale),
        components=tuple(tuple(float(v) for v in row) for row in components),
        variance_kept=float(share[k - 1]),
        fitted_rows=len(fit),
        error=NumericStatistics.from_values(np.concatenate(errors)),
        error_from="holdout_and_cross_fit" if held else "cross_fit",
    )
