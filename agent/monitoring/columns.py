"""The engine of the monitors: blocks, detectors and a window of recent blocks per column.

:class:`ColumnSet` feeds each column's block z-scores to its detectors, turns a firing into a
:class:`~agent.monitoring.detectors.Detection` with the window since the most likely change point, and
keeps the windowed statistics that metrics and recoveries read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from agent.monitoring.blocks import FIXED_POINT, BlockAccumulator, Blocks, z_scores
from agent.monitoring.detectors import (
    AdwinDetector,
    BlockDetector,
    Detection,
    DriftConfig,
    PageHinkleyDetector,
)
from agent.monitoring.transforms import FloatArray, IntArray

__all__ = [
    "ColumnSet",
    "Window",
    "WindowStats",
    "column_detectors",
    "moments",
    "recent_segment",
]


@dataclass(frozen=True, slots=True)
class WindowStats:
    """Windowed statistics of one monitored column, for metrics."""

    name: str
    """Column name."""
    count: int
    """Non-missing values in the window."""
    mean: float
    """Mean of the monitored (standardised) stream over the window; ``NaN`` if empty."""
    std: float
    """Its standard deviation over the window."""
    shift_sd: float
    """``(mean - reference_mean) / reference_std``."""
    raw_mean: float
    """Mean of the untransformed values (``NaN`` for categorical columns)."""
    missing: int
    """Missing values since the monitor started."""
    unseen: int
    """Values of categories absent from the reference since the monitor started."""


class Window:
    """The last ``size`` blocks' sums per column (a ring kept as a sliding array)."""

    def __init__(self, size: int, n_columns: int) -> None:
        self.size = size
        self.ints = np.zeros((0, 3, n_columns), dtype=np.int64)
        self.raw = np.zeros((0, n_columns), dtype=np.float64)

    def with_blocks(self, blocks: Blocks, upto: int) -> tuple[IntArray, FloatArray]:
        new = np.stack([blocks.counts[:upto], blocks.sums[:upto], blocks.sumsqs[:upto]], axis=1)
        ints = np.concatenate([self.ints, new])[-self.size :]
        raw = np.concatenate([self.raw, blocks.raw_sums[:upto]])[-self.size :]
        return ints, raw

    def add(self, blocks: Blocks) -> None:
        if blocks.ends.size:
            self.ints, self.raw = self.with_blocks(blocks, blocks.ends.size)


def moments(count: int, total: float, total_sq: float) -> tuple[float, float]:
    if count == 0:
        return math.nan, math.nan
    mean = float(total) / count
    return mean, math.sqrt(max(float(total_sq) / count - mean * mean, 0.0))


def recent_segment(counts: IntArray, sums: IntArray) -> int:
    """Start of the segment after the most likely single change point in a run of blocks."""
    m = counts.size
    if m < 2:
        return 0
    c = np.cumsum(counts).astype(np.float64)
    s = np.cumsum(sums).astype(np.float64)
    n_before, s_before = c[:-1], s[:-1]
    n_after, s_after = c[-1] - n_before, s[-1] - s_before
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = s_after / n_after - s_before / n_before
        score = np.abs(gap) * np.sqrt(n_before * n_after / c[-1])
    score = np.where((n_before > 0) & (n_after > 0), score, -1.0)
    return int(np.argmax(score)) + 1 if score.max() > 0 else 0


class ColumnSet:
    """Blocks, detectors and window of ``d`` standardised streams: the engine of both monitors."""

    def __init__(
        self,
        names: Sequence[str],
        detectors: Sequence[Sequence[BlockDetector]],
        block_size: int,
        window_blocks: int,
        mean: float,
        std: float,
        *,
        rises_only: bool = False,
    ) -> None:
        self.names = tuple(names)
        self.detectors = [list(group) for group in detectors]
        # For error streams: a fall is good news, so it neither reports nor restarts the column (a
        # restart would blind the upward detector for its whole warm-up, right when the error rises).
        self.rises_only = rises_only
        self.mean = mean
        self.std = std
        self.n_events = 0
        self.missing = np.zeros(len(names), dtype=np.int64)
        self.unseen = np.zeros(len(names), dtype=np.int64)
        self._blocks = BlockAccumulator(block_size, len(names))
        self._window = Window(window_blocks, len(names))

    def push(self, values: FloatArray, raw: FloatArray | None) -> list[Detection]:
        blocks = self._blocks.push(values, raw)
        base = self.n_events
        self.n_events += values.shape[0]
        z = z_scores(blocks.counts, blocks.sums, self.mean, self.std)
        found: list[Detection] = []
        # The one Python loop: a few river calls per block and column.
        for i, row in enumerate(z.tolist()):
            for j, zj in enumerate(row):
                if zj != zj:  # NaN: the column had no value in this block
                    continue
                group = self.detectors[j]
                for det in group:
                    if det._step(zj):
                        end = base + int(blocks.ends[i])
                        detection = self._detection(j, det, end, blocks, i + 1)
                        if self.rises_only and detection.shift_sd <= 0:
                            det.restart()
                            continue
                        found.append(detection)
                        # One shift, one detection: the whole column starts afresh.
                        for other in group:
                            other.restart()
                        break
        self._window.add(blocks)
        return found

    def _detection(self, j: int, det: BlockDetector, end: int, blocks: Blocks, upto: int) -> Detection:
        ints, _ = self._window.with_blocks(blocks, upto)
        counts, sums, sumsqs = ints[:, 0, j], ints[:, 1, j], ints[:, 2, j]
        start = recent_segment(counts, sums)
        count = int(counts[start:].sum())
        mean, std = moments(count, sums[start:].sum() / FIXED_POINT, sumsqs[start:].sum() / FIXED_POINT)
        return Detection(
            column=j,
            name=self.names[j],
            detector=det.name,
            event_index=end,
            reference_mean=self.mean,
            reference_std=self.std,
            window_mean=mean,
            window_std=std,
            window_count=count,
            shift_sd=(mean - self.mean) / self.std,
            statistic=det.statistic,
        )

    def window_stats(self, last: int | None = None) -> list[WindowStats]:
        """Per column, over the window's blocks (its ``last`` blocks only, if given)."""
        ints = self._window.ints if last is None else self._window.ints[-last:]
        counts = ints[:, 0].sum(axis=0)
        sums = ints[:, 1].sum(axis=0) / FIXED_POINT
        sumsqs = ints[:, 2].sum(axis=0) / FIXED_POINT
        raws = (self._window.raw if last is None else self._window.raw[-last:]).sum(axis=0)
        stats = []
        for j, name in enumerate(self.names):
            count = int(counts[j])
            mean, std = moments(count, float(sums[j]), float(sumsqs[j]))
            stats.append(
                WindowStats(
                    name=name,
                    count=count,
                    mean=mean,
                    std=std,
                    shift_sd=(mean - self.mean) / self.std,
                    raw_mean=float(raws[j]) / count if count else math.nan,
                    missing=int(self.missing[j]),
                    unseen=int(self.unseen[j]),
                )
            )
        return stats


def column_detectors(
    config: DriftConfig, mean: float, std: float, ph_direction: Literal["up", "both"]
) -> list[BlockDetector]:
    return [
        PageHinkleyDetector(
            ph_direction,
            allowance=config.ph_allowance,
            threshold=config.ph_threshold,
            min_instances=config.ph_min_instances,
            block_size=config.block_size,
            reference_blocks=config.reference_blocks,
            mean=mean,
            std=std,
        ),
        AdwinDetector(
            config.adwin_delta,
            min_window_length=config.adwin_min_window_length,
            grace_period=config.adwin_grace_period,
            block_size=config.block_size,
            reference_blocks=config.reference_blocks,
            mean=mean,
            std=std,
        ),
    ]
