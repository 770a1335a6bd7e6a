"""Blocks: a standardised stream cut into blocks of consecutive events, summed exactly.

Values are quantised to ``2**-24`` and summed as integers, so a block's sums do not depend on the
order of additions, hence not on how the stream was batched. A block becomes one z-score, ~N(0, 1)
with no drift, which is what the detectors (:mod:`agent.monitoring.detectors`) see.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from agent.monitoring.transforms import FloatArray, IntArray

__all__ = [
    "FIXED_POINT",
    "MAX_VALUE",
    "BlockAccumulator",
    "Blocks",
    "binomial_scores",
    "quantise",
    "z_score",
    "z_scores",
]

# Standardised values are rounded to multiples of 2**-24 and summed as integers, so a block's sum
# does not depend on the order of additions, hence not on how the stream was batched.
FIXED_POINT = 1 << 24
# Largest standardised value accepted (error ratios can exceed 1); keeps integer sums of squares
# far from int64 overflow.
MAX_VALUE = 1024.0


@dataclass(frozen=True, slots=True)
class Blocks:
    """The blocks completed by one push: one row per block, one column per stream."""

    counts: IntArray  # non-missing values in the block
    sums: IntArray  # sum of values, in units of 2**-24
    sumsqs: IntArray  # sum of squared values, in units of 2**-24
    raw_sums: FloatArray  # sum of the untransformed values (evidence and metrics only)
    raw_sumsqs: FloatArray  # sum of their squares (the spread's evidence)
    ends: IntArray  # index, within the push, of the block's last event


def quantise(values: FloatArray) -> tuple[IntArray, IntArray, IntArray]:
    present = ~np.isnan(values)
    v = np.clip(np.where(present, values, 0.0), -MAX_VALUE, MAX_VALUE)
    q = np.rint(v * FIXED_POINT).astype(np.int64)
    qq = np.rint(v * v * FIXED_POINT).astype(np.int64)
    return present.astype(np.int64), q, qq


class BlockAccumulator:
    """Cuts ``d`` parallel streams into blocks of ``block_size`` consecutive events.

    The untransformed values (``raw``) are summed for the first ``n_raw`` streams only (the columns'
    location streams; derived streams such as a spread or a category share have no raw value of
    their own), with their squares, for the evidence of an alert.
    """

    def __init__(self, block_size: int, n_columns: int, n_raw: int | None = None) -> None:
        self.block_size = block_size
        self.n_columns = n_columns
        self.n_raw = n_columns if n_raw is None else n_raw
        self.filled = 0  # events already in the current, incomplete block
        self._ints = np.zeros((3, n_columns), dtype=np.int64)  # count, sum, sum of squares
        self._raw = np.zeros((2, self.n_raw), dtype=np.float64)  # sum, sum of squares

    def push(self, values: FloatArray, raw: FloatArray | None = None) -> Blocks:
        """Add ``values`` (n, d), ``NaN`` = missing, and the raw values of the first ``n_raw``
        streams (n, n_raw); return the blocks they complete."""
        n, d = values.shape
        r = self.n_raw
        k = self.block_size
        present, q, qq = quantise(values)
        ints = np.concatenate([present, q, qq], axis=1)  # (n, 3d): one reduceat for all three
        if raw is None:
            raw_v = np.zeros((n, 2 * r))
        else:
            rv = np.where(present[:, :r] > 0, raw, 0.0)
            raw_v = np.concatenate([rv, rv * rv], axis=1)
        first_end = k - self.filled - 1
        ends = np.arange(first_end, n, k, dtype=np.int64)
        if ends.size == 0:
            self._ints += ints.sum(axis=0).reshape(3, d)
            self._raw += raw_v.sum(axis=0).reshape(2, r)
            self.filled += n
            empty_i = np.zeros((0, d), dtype=np.int64)
            empty_r = np.zeros((0, r))
            return Blocks(empty_i, empty_i, empty_i, empty_r, empty_r, ends)
        starts = np.concatenate([[0], ends + 1])
        tail = starts[-1] < n
        if not tail:
            starts = starts[:-1]
        seg_ints = np.add.reduceat(ints, starts, axis=0).reshape(-1, 3, d)
        seg_raw = np.add.reduceat(raw_v, starts, axis=0).reshape(-1, 2, r)
        b = ends.size
        block_ints = seg_ints[:b].copy()
        block_raw = seg_raw[:b].copy()
        block_ints[0] += self._ints
        block_raw[0] += self._raw
        if tail:
            self._ints = seg_ints[b].copy()
            self._raw = seg_raw[b].copy()
        else:
            self._ints = np.zeros((3, d), dtype=np.int64)
            self._raw = np.zeros((2, r), dtype=np.float64)
        self.filled = int(n - ends[-1] - 1)
        return Blocks(
            block_ints[:, 0], block_ints[:, 1], block_ints[:, 2], block_raw[:, 0], block_raw[:, 1], ends
        )

    def push_one(self, value: float) -> tuple[int, int] | None:
        """Scalar path for one stream; returns ``(count, sum)`` when the value ends a block."""
        if not math.isnan(value):
            v = min(max(value, -MAX_VALUE), MAX_VALUE)
            # round() and np.rint both round half to even: same integers as push().
            self._ints[0, 0] += 1
            self._ints[1, 0] += round(v * FIXED_POINT)
            self._ints[2, 0] += round(v * v * FIXED_POINT)
        self.filled += 1
        if self.filled < self.block_size:
            return None
        count, total = int(self._ints[0, 0]), int(self._ints[1, 0])
        self._ints[:] = 0
        self._raw[:] = 0.0
        self.filled = 0
        return count, total


def z_scores(
    counts: IntArray, sums: IntArray, mean: float | FloatArray, std: float | FloatArray
) -> FloatArray:
    """Block z-scores; ``NaN`` for a block with no values. ``mean`` and ``std`` are the reference
    moments of every stream, or one per stream (column)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        z: FloatArray = (sums / FIXED_POINT - counts * mean) / (std * np.sqrt(counts))
    return np.where(counts > 0, z, np.nan)


def z_score(count: int, total: int, mean: float, std: float) -> float:
    # Same operations in the same order as z_scores, so both paths give identical floats.
    return (total / FIXED_POINT - count * mean) / (std * math.sqrt(count))


def binomial_scores(block_size: int, p: float) -> FloatArray:
    """Normal scores of block counts of a 0/1 stream with reference rate ``p``: ``table[n, s]`` is
    ``Phi^-1(P(X < s) + P(X = s) / 2)`` for ``X ~ Binomial(n, p)`` (``NaN`` for ``s > n``).

    The plain z-score ``(s - n p) / sqrt(n p (1 - p))`` of a count is skewed for ``p`` far from
    1/2, and its upper tail raises several times the false alarms the Gaussian-calibrated
    detectors allow (``bench/calibrate_shares.py``). The normal score of the count's mid-CDF has
    Gaussian tails whatever ``p``, with a variance a little under 1 (the count is discrete), and it
    is monotone in the count, so a rise of the rate still raises the scores.

    >>> t = binomial_scores(32, 0.1)
    >>> [round(float(t[32, s]), 2) for s in (0, 3, 10)]
    [-2.12, -0.04, 3.3]
    """
    if not 0 < p < 1:
        raise ValueError("p must be in (0, 1)")
    normal = NormalDist()
    table = np.full((block_size + 1, block_size + 1), np.nan)
    for n in range(1, block_size + 1):
        pmf = [math.comb(n, s) * p**s * (1 - p) ** (n - s) for s in range(n + 1)]
        below = 0.0
        for s, mass in enumerate(pmf):
            mid = min(max(below + mass / 2, 1e-300), 1 - 1e-16)
            table[n, s] = normal.inv_cdf(mid)
            below += mass
    return table
