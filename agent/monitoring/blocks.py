"""Blocks: a standardised stream cut into blocks of consecutive events, summed exactly.

Values are quantised to ``2**-24`` and summed as integers, so a block's sums do not depend on the
order of additions, hence not on how the stream was batched. A block becomes one z-score, ~N(0, 1)
with no drift, which is what the detectors (:mod:`agent.monitoring.detectors`) see.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from agent.monitoring.transforms import FloatArray, IntArray

__all__ = [
    "FIXED_POINT",
    "MAX_VALUE",
    "BlockAccumulator",
    "Blocks",
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
    raw_sums: FloatArray  # sum of the untransformed values (metrics only)
    ends: IntArray  # index, within the push, of the block's last event


def quantise(values: FloatArray) -> tuple[IntArray, IntArray, IntArray]:
    present = ~np.isnan(values)
    v = np.clip(np.where(present, values, 0.0), -MAX_VALUE, MAX_VALUE)
    q = np.rint(v * FIXED_POINT).astype(np.int64)
    qq = np.rint(v * v * FIXED_POINT).astype(np.int64)
    return present.astype(np.int64), q, qq


class BlockAccumulator:
    """Cuts ``d`` parallel streams into blocks of ``block_size`` consecutive events."""

    def __init__(self, block_size: int, n_columns: int) -> None:
        self.block_size = block_size
        self.n_columns = n_columns
        self.filled = 0  # events already in the current, incomplete block
        self._ints = np.zeros((3, n_columns), dtype=np.int64)  # count, sum, sum of squares
        self._raw = np.zeros(n_columns, dtype=np.float64)

    def push(self, values: FloatArray, raw: FloatArray | None = None) -> Blocks:
        """Add ``values`` (n, d), ``NaN`` = missing; return the blocks they complete."""
        n, d = values.shape
        k = self.block_size
        present, q, qq = quantise(values)
        ints = np.concatenate([present, q, qq], axis=1)  # (n, 3d): one reduceat for all three
        raw_v = np.zeros_like(values) if raw is None else np.where(present > 0, raw, 0.0)
        first_end = k - self.filled - 1
        ends = np.arange(first_end, n, k, dtype=np.int64)
        if ends.size == 0:
            self._ints += ints.sum(axis=0).reshape(3, d)
            self._raw += raw_v.sum(axis=0)
            self.filled += n
            empty_i = np.zeros((0, d), dtype=np.int64)
            return Blocks(empty_i, empty_i, empty_i, np.zeros((0, d)), ends)
        starts = np.concatenate([[0], ends + 1])
        tail = starts[-1] < n
        if not tail:
            starts = starts[:-1]
        seg_ints = np.add.reduceat(ints, starts, axis=0).reshape(-1, 3, d)
        seg_raw = np.add.reduceat(raw_v, starts, axis=0)
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
            self._raw = np.zeros(d, dtype=np.float64)
        self.filled = int(n - ends[-1] - 1)
        return Blocks(block_ints[:, 0], block_ints[:, 1], block_ints[:, 2], block_raw, ends)

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


def z_scores(counts: IntArray, sums: IntArray, mean: float, std: float) -> FloatArray:
    """Block z-scores; ``NaN`` for a block with no values."""
    with np.errstate(invalid="ignore", divide="ignore"):
        z: FloatArray = (sums / FIXED_POINT - counts * mean) / (std * np.sqrt(counts))
    return np.where(counts > 0, z, np.nan)


def z_score(count: int, total: int, mean: float, std: float) -> float:
    # Same operations in the same order as z_scores, so both paths give identical floats.
    return (total / FIXED_POINT - count * mean) / (std * math.sqrt(count))
