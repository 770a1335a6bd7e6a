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
fitted on (a PCA explains its own rows better than new ones): the holdout when there is one, else a
seeded 20 % of the reference rows kept out of the fit (:func:`split_rows`).

Example:
    Two features that move together (correlation 0.9) and a third on its own: 90 % of the variance
    is kept by two components, and the direction in which the pair disagrees is left out.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> a, b, c = rng.standard_normal((3, 5000))
    >>> X = np.c_[a, 0.9 * a + np.sqrt(1 - 0.81) * b, 5 + 2 * c]
    >>> fit, held = split_rows(len(X))
    >>> r = fit_reconstruction(["x", "y", "z"], X[fit], X[held], error_from="reference_split")
    >>> len(r.components), round(r.variance_kept, 3), r.fitted_rows, r.error.count
    (2, 0.968, 4000, 1000)
    >>> round(r.error.mean, 2)  # |a - y| / sqrt(2) of standardised rows: about sqrt(0.1) on average
    0.26
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

from schemas.manifest import NumericStatistics, Reconstruction, reconstruction_errors

__all__ = [
    "HOLDOUT_SHARE",
    "MIN_ROWS",
    "VARIANCE_SHARE",
    "fit_reconstruction",
    "split_rows",
]

VARIANCE_SHARE = 0.9
"""Share of the standardised variance the kept components explain, by default."""

HOLDOUT_SHARE = 0.2
"""Share of the rows kept out of a fit when there is no holdout."""

MIN_ROWS = 20
"""Fewer rows than this to fit on, or to take the error's quantiles from, give no reconstruction."""


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


def fit_reconstruction(
    feature_names: Sequence[str],
    X_fit: npt.NDArray[np.float64],
    X_error: npt.NDArray[np.float64],
    *,
    error_from: Literal["holdout", "reference_split"],
    numeric: Sequence[bool] | None = None,
    variance_share: float = VARIANCE_SHARE,
) -> Reconstruction | None:
    """The reconstruction fitted on the rows of ``X_fit``, with its error's distribution on the rows
    of ``X_error`` (both ``(n, len(feature_names))``, as served; NaN is missing).

    ``numeric`` flags the numeric columns (all by default). ``None`` when fewer than two numeric
    features vary in ``X_fit``, or either matrix has fewer than :data:`MIN_ROWS` rows.
    """
    if not 0.0 < variance_share < 1.0:
        raise ValueError("variance_share must be in (0, 1)")
    names = list(feature_names)
    flags = [True] * len(names) if numeric is None else list(numeric)
    if len(X_fit) < MIN_ROWS or len(X_error) < MIN_ROWS:
        return None
    fit = np.asarray(X_fit, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        present = ~np.isnan(fit)
        counts = present.sum(axis=0)
        mean = np.where(counts > 0, np.nansum(fit, axis=0) / np.maximum(counts, 1), 0.0)
        spread = np.sqrt(np.nansum((fit - mean) ** 2, axis=0) / np.maximum(counts, 1))
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
    z = (fit[:, columns] - mean) / scale
    z[np.isnan(z)] = 0.0
    # The data are centred by the mean of the present values; missing ones sit at 0 already.
    _, singular, vt = np.linalg.svd(z - z.mean(axis=0), full_matrices=False)
    variance = singular**2
    total = float(variance.sum())
    if total <= 0.0:
        return None
    share = np.cumsum(variance) / total
    d = len(columns)
    k = min(int(np.searchsorted(share, variance_share - 1e-12) + 1), d - 1)
    components = vt[:k]
    errors = reconstruction_errors(np.asarray(X_error, dtype=np.float64), columns, mean, scale, components)
    return Reconstruction(
        features=tuple(names[j] for j in usable),
        mean=tuple(float(v) for v in mean),
        scale=tuple(float(v) for v in scale),
        components=tuple(tuple(float(v) for v in row) for row in components),
        variance_kept=float(share[k - 1]),
        fitted_rows=len(fit),
        error=NumericStatistics.from_values(errors),
        error_from=error_from,
    )
