"""Standardisation against the reference: every value becomes its reference percentile.

Pure numpy, no Kafka, Faust or manifest. With no drift the standardised stream is ~Uniform(0, 1)
(mean 1/2, standard deviation ``1/sqrt(12)``) whatever the feature's scale, so one calibration of the
detectors (:mod:`agent.monitoring.detectors`) holds for every feature.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "REFERENCE_MEAN",
    "REFERENCE_STD",
    "UNIFORM_KURTOSIS",
    "UNSEEN",
    "CategoricalTransform",
    "ColumnTransform",
    "FloatArray",
    "GridInterp",
    "IntArray",
    "PercentileTransform",
    "ReferenceTransform",
    "SegmentGrid",
    "TiedPercentiles",
    "as_float_column",
    "as_key",
    "is_missing",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

REFERENCE_MEAN = 0.5
"""Mean of the standardised stream when there is no drift."""

REFERENCE_STD = 1.0 / math.sqrt(12.0)
"""Standard deviation of the standardised stream when there is no drift (Uniform(0, 1))."""

UNIFORM_KURTOSIS = 1.8
"""Kurtosis (fourth central moment over the squared variance) of Uniform(0, 1)."""

UNSEEN = -1.0
"""What :class:`CategoricalTransform` returns for a category absent from the reference."""


class PercentileTransform:
    """Map a numeric feature to its reference percentile in ``[0, 1]``.

    Between quantiles the percentile is interpolated linearly; below the first quantile it is 0 and
    above the last it is 1. A value equal to a run of tied quantiles (a discrete feature) maps to
    the middle of the run (its mid-rank), so its mean under the reference is still 1/2. ``NaN``
    stays ``NaN`` (missing).

    Parameters
    ----------
    quantiles
        The reference values at evenly spaced probabilities ``0, 1/(m-1), ..., 1`` (101 points for
        percentiles); non-decreasing and finite.

    Example
    -------
    >>> import numpy as np
    >>> t = PercentileTransform(np.linspace(0.0, 10.0, 101))
    >>> t.transform(np.array([-1.0, 0.0, 2.5, 10.0, 99.0, np.nan])).tolist()
    [0.0, 0.0, 0.25, 1.0, 1.0, nan]

    Ties: a feature that is 0 for the first 70 percentiles maps 0 to the middle of that run.

    >>> t = PercentileTransform(np.r_[np.zeros(71), np.linspace(1.0, 4.0, 30)])
    >>> t.transform(np.array([0.0, 0.5, 1.0])).round(6).tolist()
    [0.35, 0.705, 0.71]

    A value within float32 rounding of a tied value counts as that value: serving feeds float32
    matrices and ONNX Runtime sums tree outputs in float32, so a reference atom recorded as 0.8 comes
    back as 0.80000007, which would otherwise land at the top of its run instead of the middle.

    >>> t = PercentileTransform(np.r_[np.zeros(50), np.full(51, 0.8)])
    >>> t.transform(np.array([0.8, 0.80000007, np.float32(0.8)])).round(6).tolist()
    [0.75, 0.75, 0.75]

    """

    def __init__(self, quantiles: npt.ArrayLike) -> None:
        q = np.asarray(quantiles, dtype=np.float64)
        if q.ndim != 1 or q.size < 2:
            raise ValueError(f"quantiles must be a 1-D array of at least 2 values, got {q.shape}")
        if not np.all(np.isfinite(q)):
            raise ValueError("quantiles must be finite")
        if np.any(np.diff(q) < 0):
            raise ValueError("quantiles must be non-decreasing")
        probs = np.arange(q.size) / (q.size - 1)
        knots, first, counts = np.unique(q, return_index=True, return_counts=True)
        self.quantiles = q
        self._knots = knots
        # Percentile of each distinct value at the start and end of its run of tied quantiles.
        self._p_low = probs[first]
        self._p_high = probs[first + counts - 1]
        self._p_mid = 0.5 * (self._p_low + self._p_high)
        self._has_ties = bool(np.any(counts > 1))
        # How close counts as equal: a few float32 ulps of the value, plus a hair of the range (taken
        # of each end when the range itself is past the largest float).
        with np.errstate(over="ignore"):
            width = float(q[-1] - q[0])
        hair = 1e-9 * width if math.isfinite(width) else 1e-9 * float(q[-1]) - 1e-9 * float(q[0])
        self._tolerance = 4 * float(np.finfo(np.float32).eps) * np.abs(knots) + hair

    @property
    def distinct_values(self) -> int:
        """Distinct values among the reference quantiles."""
        return int(self._knots.size)

    @property
    def interpolation(self) -> tuple[FloatArray, FloatArray] | None:
        """``(knots, percentiles)`` that ``np.interp`` maps values through, for a reference with no
        tied quantiles (``None`` otherwise: ties need the mid-rank of their run)."""
        return None if self._has_ties else (self._knots, self._p_low)

    def spread_moments(self) -> tuple[float, float]:
        """Mean and standard deviation, under the reference, of the spread stream ``2 |u - 1/2|``.

        Exactly ``1/2`` and ``1/sqrt(12)`` (Uniform(0, 1)) for a continuous reference; a discrete
        one puts each tied value at its mid-rank, which moves both.

        >>> PercentileTransform(np.linspace(0.0, 10.0, 101)).spread_moments() == (0.5, REFERENCE_STD)
        True
        >>> m, s = PercentileTransform(np.r_[np.zeros(71), np.linspace(1.0, 4.0, 30)]).spread_moments()
        >>> round(m, 4), round(s, 4)
        (0.42, 0.2064)
        """
        if not self._has_ties:
            return REFERENCE_MEAN, REFERENCE_STD

        def first(u: FloatArray) -> FloatArray:  # antiderivative of |2u - 1|
            return np.where(u < 0.5, u - u * u, u * u - u + 0.5)

        def second(u: FloatArray) -> FloatArray:  # antiderivative of (2u - 1)**2
            return (2 * u - 1) ** 3 / 6

        # Continuous stretches: u uniform between the end of one run and the start of the next.
        a, b = self._p_high[:-1], self._p_low[1:]
        m1 = float(np.sum(first(b) - first(a)))
        m2 = float(np.sum(second(b) - second(a)))
        # Atoms: a run of tied quantiles holds its probability at its mid-rank.
        mass = self._p_high - self._p_low
        v = np.abs(2 * self._p_mid - 1)
        m1 += float(np.sum(mass * v))
        m2 += float(np.sum(mass * v * v))
        return m1, math.sqrt(max(m2 - m1 * m1, 0.0))

    def location_moments(self) -> tuple[float, float, float]:
        """Mean, standard deviation and kurtosis, under the reference, of the standardised stream ``u``.

        ``1/2``, ``1/sqrt(12)`` and ``1.8`` (Uniform(0, 1)) for a continuous reference. A discrete one
        holds each tied value at its mid-rank: the mean stays near 1/2, the spread shrinks and the
        tails grow heavier (a feature that is 0 nine times in ten is mostly one value).

        >>> PercentileTransform(np.linspace(0.0, 10.0, 101)).location_moments() == (
        ...     REFERENCE_MEAN, REFERENCE_STD, UNIFORM_KURTOSIS)
        True
        >>> m, s, k = PercentileTransform(np.r_[np.zeros(91), np.linspace(1.0, 4.0, 10)]).location_moments()
        >>> round(m, 4), round(s, 4), round(k, 1)
        (0.5, 0.1503, 8.3)
        """
        if not self._has_ties:
            return REFERENCE_MEAN, REFERENCE_STD, UNIFORM_KURTOSIS
        # Continuous stretches (u uniform between the end of one run and the start of the next) and
        # atoms (a run of tied quantiles holds its probability at its mid-rank).
        a, b = self._p_high[:-1], self._p_low[1:]
        mass = self._p_high - self._p_low
        mean = float(np.sum((b * b - a * a) / 2) + np.sum(mass * self._p_mid))

        def central(k: int) -> float:
            stretches = ((b - mean) ** (k + 1) - (a - mean) ** (k + 1)) / (k + 1)
            return float(np.sum(stretches) + np.sum(mass * (self._p_mid - mean) ** k))

        return _moments(mean, central(2), central(4))

    def tail_share(self, tail: float) -> float:
        """Share of the reference whose percentile is below ``tail`` or above ``1 - tail``:
        ``2 * tail`` for a continuous reference (tied values count at their mid-rank).

        >>> PercentileTransform(np.linspace(0.0, 10.0, 101)).tail_share(0.01)
        0.02
        >>> PercentileTransform(np.r_[np.zeros(71), np.linspace(1.0, 4.0, 30)]).tail_share(0.01)
        0.01
        """
        if not self._has_ties:
            return 2 * tail
        a, b = self._p_high[:-1], self._p_low[1:]
        low = np.clip(np.minimum(b, tail) - a, 0.0, None)
        high = np.clip(b - np.maximum(a, 1 - tail), 0.0, None)
        mass = self._p_high - self._p_low
        atoms = mass * ((self._p_mid < tail) | (self._p_mid > 1 - tail))
        return round(float(low.sum() + high.sum() + atoms.sum()), 12)

    def transform(self, values: npt.ArrayLike) -> FloatArray:
        """Percentiles of ``values`` (any shape), ``NaN`` where a value is ``NaN``."""
        x = np.asarray(values, dtype=np.float64)
        if not self._has_ties:
            # No jumps in the piecewise-linear CDF: np.interp does it all in one C loop.
            return np.interp(x, self._knots, self._p_low, left=0.0, right=1.0)
        knots = self._knots
        last = knots.size - 1
        # Snap values within rounding of a knot onto it (see the class docstring).
        near = np.clip(np.searchsorted(knots, x), 0, last)
        below = np.clip(near - 1, 0, last)
        with np.errstate(invalid="ignore"):
            x = np.where(np.abs(x - knots[near]) <= self._tolerance[near], knots[near], x)
            x = np.where(np.abs(x - knots[below]) <= self._tolerance[below], knots[below], x)
        # Index of the last knot <= x (-1 below the first knot).
        i = np.searchsorted(knots, x, side="right") - 1
        lo = np.clip(i, 0, last)
        hi = np.clip(i + 1, 0, last)
        span = knots[hi] - knots[lo]
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(span > 0, (x - knots[lo]) / np.where(span > 0, span, 1.0), 0.0)
        # Strictly between two distinct values the CDF rises from the end of the lower run to the
        # start of the upper one; exactly on a value it is the middle of that value's run.
        out = self._p_high[lo] + frac * (self._p_low[hi] - self._p_high[lo])
        out = np.where(x == knots[lo], self._p_mid[lo], out)
        out = np.where(i < 0, 0.0, out)
        out = np.where(x > knots[last], 1.0, out)
        return np.where(np.isnan(x), np.nan, out)


class CategoricalTransform:
    """Map a categorical feature to a mid-CDF position over its reference categories.

    Categories are ordered by decreasing reference frequency (ties by their text, for a stable
    order), and category ``c`` maps to ``F(before c) + p(c)/2``. Under the reference the mean is
    exactly 1/2 for any order; ordering by frequency makes the direction readable: a positive shift
    means mass moved toward rarer categories. A mean-based detector only sees shifts that move mass
    along this order; a swap between two categories of similar frequency is nearly invisible.

    A category absent from the reference maps to :data:`UNSEEN` (schema drift, counted apart from
    data drift); ``None`` and ``NaN`` map to ``NaN`` (missing).

    Parameters
    ----------
    frequencies
        Reference frequency (or count) of each category; normalised to sum to 1.
    labels
        How alerts name each category (e.g. its name when the stream holds its index); ``str`` of
        the category when not given.

    Example
    -------
    >>> import numpy as np
    >>> t = CategoricalTransform({"fr": 0.5, "de": 0.3, "it": 0.2})
    >>> t.positions
    {'fr': 0.25, 'de': 0.65, 'it': 0.9}
    >>> t.transform(np.array(["de", "xx", None], dtype=object)).tolist()
    [0.65, -1.0, nan]

    """

    def __init__(
        self, frequencies: Mapping[Hashable, float], labels: Mapping[Hashable, str] | None = None
    ) -> None:
        if not frequencies:
            raise ValueError("frequencies must name at least one category")
        weights = {cat: float(w) for cat, w in frequencies.items()}
        if any(not math.isfinite(w) or w < 0 for w in weights.values()):
            raise ValueError("frequencies must be finite and non-negative")
        total = math.fsum(weights.values())
        if total <= 0:
            raise ValueError("frequencies must not all be zero")
        order = sorted(weights, key=lambda cat: (-weights[cat], str(cat)))
        positions: dict[Hashable, float] = {}
        cumulative = 0.0
        for cat in order:
            p = weights[cat] / total
            positions[cat] = cumulative + p / 2
            cumulative += p
        self.positions = positions
        self.shares = {cat: weights[cat] / total for cat in order}
        """Reference share of each category, most frequent first."""
        self.labels = {cat: (labels or {}).get(cat, str(cat)) for cat in order}
        """The name alerts give each category."""
        # Numeric category codes (the common case once a pipeline has encoded them) take a
        # vectorised path; anything else goes through the dictionary.
        numeric = all(
            isinstance(c, int | float | np.integer | np.floating) and not isinstance(c, bool)
            for c in positions
        )
        self._codes: FloatArray | None = None
        self._code_positions: FloatArray | None = None
        if numeric:
            codes = np.array([float(c) for c in positions], dtype=np.float64)  # type: ignore[arg-type]
            sort = np.argsort(codes)
            self._codes = codes[sort]
            self._code_positions = np.array(list(positions.values()), dtype=np.float64)[sort]

    def location_moments(self) -> tuple[float, float, float]:
        """Mean, standard deviation and kurtosis of the positions under the reference shares.

        >>> m, s, k = CategoricalTransform({"fr": 0.5, "de": 0.3, "it": 0.2}).location_moments()
        >>> round(m, 4), round(s, 4), round(k, 2)
        (0.5, 0.2646, 1.47)
        """
        p = np.array(list(self.shares.values()))
        pos = np.array([self.positions[c] for c in self.shares])
        mean = float(np.sum(p * pos))
        return _moments(mean, float(np.sum(p * (pos - mean) ** 2)), float(np.sum(p * (pos - mean) ** 4)))

    def transform(self, values: npt.ArrayLike) -> FloatArray:
        """Positions of ``values`` (1-D): ``NaN`` for missing, :data:`UNSEEN` for unknown."""
        arr = np.asarray(values)
        if self._codes is not None and arr.dtype.kind in "fiub":
            x = arr.astype(np.float64)
            codes = self._codes
            assert self._code_positions is not None
            idx = np.clip(np.searchsorted(codes, x), 0, codes.size - 1)
            found = codes[idx] == x
            out = np.where(found, self._code_positions[idx], UNSEEN)
            return np.where(np.isnan(x), np.nan, out)
        get = self.positions.get
        out_list = [math.nan if is_missing(v) else get(as_key(v), UNSEEN) for v in arr.ravel().tolist()]
        return np.array(out_list, dtype=np.float64).reshape(arr.shape)


def _moments(mean: float, m2: float, m4: float) -> tuple[float, float, float]:
    """``(mean, std, kurtosis)`` from the mean and the second and fourth central moments; the
    kurtosis of a constant is taken as 1 (no spread to estimate)."""
    var = max(m2, 0.0)
    return mean, math.sqrt(var), m4 / (var * var) if var > 1e-12 else 1.0


def is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def as_key(value: object) -> Hashable:
    # numpy scalars hash like their Python values, but arrays of objects may hold unhashables.
    return value if isinstance(value, Hashable) else repr(value)


ColumnTransform = PercentileTransform | CategoricalTransform
"""One column's reference transform."""


def _joined(parts: Sequence[npt.NDArray[Any]], dtype: npt.DTypeLike = np.float64) -> npt.NDArray[Any]:
    """The columns' arrays one after the other (empty for no column), as the grid classes index them."""
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype=dtype)


class SegmentGrid:
    """Each value's segment among its column's knots, for a whole matrix at once: the lookup of
    :class:`GridInterp` and of the percentiles of tied references.

    ``np.searchsorted`` and ``np.interp`` binary-search each value, and on a fresh batch the search's
    branches mispredict. This gives each column a uniform grid of ``cells_per_knot`` cells per knot
    over its range, with the segment each cell starts in; a value's cell is one multiplication away,
    and at most :attr:`steps` comparisons (the most knots a cell holds, 1 for most references) move it
    to its segment. A column whose knots bunch so tightly that a cell would hold more than
    ``max_steps`` of them even at ``max_cells_per_knot`` (say, a reference with a very long tail) is
    left out: :attr:`columns` are the ones this takes.

    Parameters
    ----------
    knots
        Per column, its strictly increasing finite knots (at least 2).
    cells_per_knot, max_cells_per_knot
        The coarsest grid tried, and the finest, in cells per knot (doubling between them).
    max_steps
        The most comparisons per value a column may need to be taken.

    Example
    -------
    >>> grid = SegmentGrid([np.array([0.0, 1.0, 10.0]), np.array([-1.0, 1.0])])
    >>> grid.columns, grid.starts.tolist()
    ((0, 1), [0, 3])
    >>> (grid.segments(np.array([[0.5, -5.0], [10.0, 0.0], [3.0, 7.0]])) - grid.starts).tolist()
    [[0, 0], [1, 0], [1, 0]]
    """

    def __init__(
        self,
        knots: Sequence[FloatArray],
        *,
        cells_per_knot: int = 8,
        max_cells_per_knot: int = 64,
        max_steps: int = 2,
    ) -> None:
        flat_knots, flat_next, table = [], [], []
        lo, hi, inv, last_cell, table_offset, starts, columns = [], [], [], [], [], [], []
        steps = offset = cells = 0
        for j, k in enumerate(knots):
            if k.ndim != 1 or k.size < 2 or not (np.all(np.isfinite(k)) and np.all(np.diff(k) > 0)):
                raise ValueError(f"column {j}: knots must be finite and strictly increasing, at least 2")
            found = self._grid(k, cells_per_knot, max_cells_per_knot, max_steps)
            if found is None:
                continue
            first, need = found
            columns.append(j)
            steps = max(steps, need)
            flat_knots.append(k)
            # The next knot of each segment; NaN past the last one (no value is >= NaN, +inf
            # included), so no step leaves the column.
            flat_next.append(np.r_[k[1:-1], np.nan, np.nan])
            table.append(first + offset)
            lo.append(k[0])
            hi.append(k[-1])
            inv.append(first.size / (k[-1] - k[0]))
            last_cell.append(first.size - 1)
            table_offset.append(cells)
            starts.append(offset)
            offset += k.size
            cells += first.size
        self.columns = tuple(columns)
        """The columns this takes, in order."""
        self.steps = steps
        """Comparisons per value that take any value of its cell to its segment."""
        self.knots = _joined(flat_knots)
        """The columns' knots, one after the other: what :meth:`segments` indexes."""
        self.starts = np.array(starts, dtype=np.intp)
        """Where each column's knots start in :attr:`knots`."""
        self.lo = np.array(lo)
        """Each column's first knot."""
        self.hi = np.array(hi)
        """Each column's last knot."""
        self._next = _joined(flat_next)
        self._table = _joined(table, np.intp)
        self._inv = np.array(inv)
        self._last_cell = np.array(last_cell, dtype=np.float64)
        self._table_offset = np.array(table_offset, dtype=np.intp)

    @staticmethod
    def _grid(
        k: FloatArray, per_knot: int, most: int, max_steps: int
    ) -> tuple[npt.NDArray[np.intp], int] | None:
        """Each cell's first segment, and the steps the worst cell needs: the coarsest grid of one
        step, else the coarsest of ``max_steps`` or fewer, up to ``most`` cells per knot (``None``
        if there is none)."""
        n = k.size
        fallback = None
        lo, hi = float(k[0]), float(k[-1])
        span = hi - lo
        if not (math.isfinite(span) and math.isfinite(most * n / span)):
            return None  # a range past the largest float, or too narrow to divide: no grid
        # Some 25 times what rounding can move a value's cell by (the rounding of x - lo and of
        # the product, a few units in the last place of the range, and that of each cell's start
        # here, one of its magnitude): a value computed into cell g lies above g's start minus
        # this and below its end plus this, so g's first segment is never past the value's, and
        # ``need`` steps always reach it.
        margin = 64 * float(np.finfo(np.float64).eps) * (span + max(abs(lo), abs(hi)))
        while per_knot <= most:
            g = per_knot * n
            edges = lo + np.arange(g + 1) * (span / g)
            first = np.clip(np.searchsorted(k, edges[:-1] - margin, side="right") - 1, 0, n - 2)
            final = np.clip(np.searchsorted(k, edges[1:] + margin, side="right") - 1, 0, n - 2)
            need = int((final - first).max())
            if need <= 1:
                return first.astype(np.intp), need
            if need <= max_steps and fallback is None:
                fallback = first.astype(np.intp), need
            per_knot *= 2
        return fallback

    def segments(self, x: FloatArray) -> npt.NDArray[np.intp]:
        """``(n, len(columns))`` float64 values -> the index in :attr:`knots` of each one's segment
        (its column's last knot <= the value, but never the very last: ``k[s] <= x < k[s + 1]``
        inside the range; the first segment below it, the last from its last knot on; any one of
        the column's for ``NaN``)."""
        with np.errstate(over="ignore", invalid="ignore"):
            t = x - self.lo
            t *= self._inv
        np.fmax(t, 0.0, out=t)  # NaN -> cell 0
        np.fmin(t, self._last_cell, out=t)
        cell = t.astype(np.intp)
        cell += self._table_offset
        seg: npt.NDArray[np.intp] = np.take(self._table, cell)
        for _ in range(self.steps):
            seg += x >= np.take(self._next, seg)
        return seg


class GridInterp:
    """``np.interp`` of many columns at once, each against knots of its own, bit for bit.

    ``np.interp`` binary-searches each value's segment, and on a fresh batch of values the search's
    branches mispredict: 33 ns per value here for 101 knots (9 ns when the same 500 values come
    again), 0.7 us per request for a model of 20 features. This finds the segment of every value of
    the matrix at once on a :class:`SegmentGrid`, then computes each as ``np.interp`` computes it
    (the segment's slope times the distance from its left knot, plus the knot's value; the first
    value below the first knot, the last from the last knot on, ``NaN`` for ``NaN``: ``np.interp``'s
    defaults), so it is the same float.

    A column the grid leaves out (knots bunched too tightly: see :class:`SegmentGrid`), or whose
    slope overflows, is left to ``np.interp``: :attr:`columns` are the ones this takes.

    Parameters
    ----------
    knots
        Per column, its strictly increasing knots (at least 2, finite).
    values
        Per column, the value at each knot.
    cells_per_knot, max_cells_per_knot, max_steps
        The grid's (:class:`SegmentGrid`).

    Example
    -------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> probs = np.linspace(0.0, 1.0, 101)
    >>> knots = [np.quantile(rng.normal(size=1_000), probs), np.quantile(rng.exponential(size=1_000), probs)]
    >>> grid = GridInterp(knots, [probs, probs])
    >>> grid.columns, grid.steps
    ((0, 1), 1)
    >>> x = np.c_[rng.normal(size=500), rng.exponential(size=500)]
    >>> x[:3] = [[np.nan, -1.0], [knots[0][7], 1e9], [-np.inf, knots[1][100]]]
    >>> expected = np.c_[np.interp(x[:, 0], knots[0], probs), np.interp(x[:, 1], knots[1], probs)]
    >>> np.array_equal(grid(x), expected, equal_nan=True)
    True
    """

    def __init__(
        self,
        knots: Sequence[npt.ArrayLike],
        values: Sequence[npt.ArrayLike],
        *,
        cells_per_knot: int = 8,
        max_cells_per_knot: int = 64,
        max_steps: int = 2,
    ) -> None:
        if len(knots) != len(values):
            raise ValueError(f"{len(knots)} columns of knots for {len(values)} of values")
        kept, kept_values, slopes = [], [], []
        for j, (kj, vj) in enumerate(zip(knots, values, strict=True)):
            k = np.asarray(kj, dtype=np.float64)
            v = np.asarray(vj, dtype=np.float64)
            if k.ndim != 1 or k.size < 2 or v.shape != k.shape:
                raise ValueError(f"column {j}: knots and values must be 1-D, of one length >= 2")
            if not (np.all(np.isfinite(k)) and np.all(np.isfinite(v)) and np.all(np.diff(k) > 0)):
                raise ValueError(f"column {j}: knots must be finite and strictly increasing")
            with np.errstate(over="ignore", divide="ignore"):
                slope = (v[1:] - v[:-1]) / (k[1:] - k[:-1])  # as np.interp computes it
            if np.all(np.isfinite(slope)):
                kept.append((j, k))
                kept_values.append(v)
                slopes.append(np.r_[slope, 0.0])
        self._grid = SegmentGrid(
            [k for _, k in kept],
            cells_per_knot=cells_per_knot,
            max_cells_per_knot=max_cells_per_knot,
            max_steps=max_steps,
        )
        on_grid = self._grid.columns
        self.columns = tuple(kept[i][0] for i in on_grid)
        """The columns computed here; the others are ``np.interp``'s."""
        self.steps = self._grid.steps
        """Comparisons per value that take any value of its cell to its segment."""
        self._slope = _joined([slopes[i] for i in on_grid])
        self._value = _joined([kept_values[i] for i in on_grid])
        self._left = np.array([kept_values[i][0] for i in on_grid])
        self._right = np.array([kept_values[i][-1] for i in on_grid])

    def __call__(self, x: FloatArray) -> FloatArray:
        """``(n, len(columns))`` float64 values of :attr:`columns` -> their interpolated values."""
        grid = self._grid
        seg = grid.segments(x)
        # Infinities and values far out overflow or meet a zero slope on the way; their results are
        # replaced at the end.
        with np.errstate(over="ignore", invalid="ignore"):
            out: FloatArray = x - np.take(grid.knots, seg)
            out *= np.take(self._slope, seg)
            out += np.take(self._value, seg)
        np.copyto(out, np.broadcast_to(self._left, out.shape), where=x < grid.lo)
        np.copyto(out, np.broadcast_to(self._right, out.shape), where=x >= grid.hi)
        return out


class TiedPercentiles:
    """The percentiles of many columns with tied reference quantiles at once, the same floats as
    each column's :meth:`PercentileTransform.transform` (snapped onto a tied value within float32
    rounding, the middle of its run there, linear between runs).

    The per-column path searches the knots twice per value and runs ~20 numpy operations per
    column; this does both searches on a :class:`SegmentGrid` and every operation once for all its
    columns: a model of discrete features (counts, ratings, flags) pays for its reference percentiles
    once per batch, not once per feature. A column the grid leaves out, or with a single distinct
    value, is left to its own transform: :attr:`columns` are the ones this takes.

    Parameters
    ----------
    transforms
        The columns' transforms (those with tied quantiles: a column without ties is
        :class:`GridInterp`'s, six times cheaper per value).

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> probs = np.linspace(0.0, 1.0, 101)
    >>> columns = [PercentileTransform(np.quantile(rng.integers(0, 5, 1_000), probs)),
    ...            PercentileTransform(np.r_[np.zeros(60), np.linspace(1.0, 3.0, 41)])]
    >>> tied = TiedPercentiles(columns)
    >>> tied.columns
    (0, 1)
    >>> x = np.c_[rng.integers(-1, 7, 500), rng.normal(1.0, 1.0, 500)].astype(np.float32).astype(np.float64)
    >>> x[:2] = [[np.nan, np.inf], [2.0, 0.0]]
    >>> expected = np.c_[columns[0].transform(x[:, 0]), columns[1].transform(x[:, 1])]
    >>> np.array_equal(tied(x), expected, equal_nan=True)
    True
    """

    def __init__(self, transforms: Sequence[PercentileTransform]) -> None:
        several = [(j, t) for j, t in enumerate(transforms) if t._knots.size >= 2]
        self._grid = SegmentGrid([t._knots for _, t in several])
        on_grid = [several[i] for i in self._grid.columns]
        self.columns = tuple(j for j, _ in on_grid)
        """The columns computed here; the others are their own transforms'."""
        ts = [t for _, t in on_grid]
        self._tolerance = _joined([t._tolerance for t in ts])
        self._p_high = _joined([t._p_high for t in ts])
        self._p_mid = _joined([t._p_mid for t in ts])
        # Per segment (its left knot's index), as the per-column path computes them for the knots it
        # lies between: their distance, and the percentile's rise from the end of the lower run to
        # the start of the upper one.
        self._span = _joined([np.r_[np.diff(t._knots), 0.0] for t in ts])
        self._rise = _joined([np.r_[t._p_low[1:] - t._p_high[:-1], 0.0] for t in ts])
        self._mid_last = np.array([t._p_mid[-1] for t in ts])

    def __call__(self, x: FloatArray) -> FloatArray:
        """``(n, len(columns))`` float64 values of :attr:`columns` -> their percentiles."""
        grid = self._grid
        knots = grid.knots
        seg = grid.segments(x)
        # The first knot >= x (np.searchsorted's left side), and the one before it.
        near = seg + (x > np.take(knots, seg))
        below = near - (near > grid.starts)
        with np.errstate(over="ignore", invalid="ignore"):
            k = np.take(knots, near)
            x = np.where(np.abs(x - k) <= np.take(self._tolerance, near), k, x)
            k = np.take(knots, below)
            x = np.where(np.abs(x - k) <= np.take(self._tolerance, below), k, x)
        seg = grid.segments(x)
        k = np.take(knots, seg)
        # Infinities and NaN run through with the rest: replaced below, or NaN as they should be.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            frac = (x - k) / np.take(self._span, seg)
            out: FloatArray = np.take(self._p_high, seg) + frac * np.take(self._rise, seg)
        out = np.where(x == k, np.take(self._p_mid, seg), out)
        np.copyto(out, np.broadcast_to(self._mid_last, out.shape), where=x == grid.hi)
        np.copyto(out, 1.0, where=x > grid.hi)
        np.copyto(out, 0.0, where=x < grid.lo)
        return out


class ReferenceTransform:
    """Standardise a whole batch matrix (rows = events, columns = features) in one call.

    Parameters
    ----------
    columns
        One transform per column, in column order.

    Example
    -------
    >>> import numpy as np
    >>> t = ReferenceTransform.from_quantiles(np.array([[0.0, 1.0, 2.0], [0.0, 10.0, 20.0]]))
    >>> t.transform(np.array([[1.5, 5.0], [np.nan, 25.0]])).tolist()
    [[0.75, 0.25], [nan, 1.0]]

    """

    def __init__(self, columns: Sequence[ColumnTransform]) -> None:
        if not columns:
            raise ValueError("a reference needs at least one column")
        self.columns = tuple(columns)
        # The numeric columns all at once, the same floats as one by one: those without ties by
        # GridInterp (np.interp's, at a quarter of its cost on fresh values), those with ties by
        # TiedPercentiles (2.5x faster over 20 columns); categories, and what neither takes, one
        # by one.
        numeric = [(j, c) for j, c in enumerate(self.columns) if isinstance(c, PercentileTransform)]
        plain = [(j, c.interpolation) for j, c in numeric if c.interpolation is not None]
        tied = [(j, c) for j, c in numeric if c.interpolation is None]
        grid = GridInterp([k for _, (k, _) in plain], [p for _, (_, p) in plain])
        tied_at_once = TiedPercentiles([c for _, c in tied])
        self._at_once: tuple[tuple[GridInterp | TiedPercentiles, npt.NDArray[np.intp]], ...] = tuple(
            (f, np.array([cols[i][0] for i in f.columns], dtype=np.intp))
            for f, cols in ((grid, plain), (tied_at_once, tied))
            if f.columns
        )
        done = {j for _, cols in self._at_once for j in cols.tolist()}
        self._one_by_one = tuple(j for j in range(len(self.columns)) if j not in done)

    @classmethod
    def from_quantiles(cls, quantiles: npt.ArrayLike) -> ReferenceTransform:
        """All-numeric reference from a ``(n_features, n_points)`` array of quantiles."""
        q = np.asarray(quantiles, dtype=np.float64)
        if q.ndim != 2:
            raise ValueError(f"quantiles must be 2-D (n_features, n_points), got {q.shape}")
        return cls([PercentileTransform(row) for row in q])

    @property
    def n_columns(self) -> int:
        """Number of columns."""
        return len(self.columns)

    def transform(self, matrix: npt.ArrayLike) -> FloatArray:
        """Standardised ``(n_rows, n_columns)`` matrix: ``NaN`` missing, :data:`UNSEEN` unknown."""
        x = np.asarray(matrix)
        if x.ndim != 2 or x.shape[1] != self.n_columns:
            raise ValueError(f"expected a (n, {self.n_columns}) matrix, got shape {x.shape}")
        out = np.empty(x.shape, dtype=np.float64)
        one_by_one: Sequence[int] = range(self.n_columns)
        if self._at_once and x.dtype != object:
            for at_once, cols in self._at_once:
                if cols.size == self.n_columns:
                    out[:] = at_once(x.astype(np.float64))
                else:
                    out[:, cols] = at_once(x[:, cols].astype(np.float64))
            one_by_one = self._one_by_one
        for j in one_by_one:
            column = self.columns[j]
            col = x[:, j]
            if isinstance(column, PercentileTransform):
                col = as_float_column(col)
            out[:, j] = column.transform(col)
        return out


def as_float_column(column: npt.NDArray[Any]) -> FloatArray:
    if column.dtype != object:
        return column.astype(np.float64, copy=False)
    return np.array([math.nan if v is None else float(v) for v in column], dtype=np.float64)
