"""The engine of the monitors: blocks, detectors and a window of recent blocks per column.

:class:`ColumnSet` feeds each column's block z-scores to its detectors, turns a firing into a
:class:`~agent.monitoring.detectors.Detection` with the window since the most likely change point, and
keeps the windowed statistics that metrics and recoveries read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Literal

import numpy as np

from agent.monitoring.blocks import FIXED_POINT, BlockAccumulator, Blocks, binomial_scores, z_scores
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
    "Stream",
    "StreamStats",
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


@dataclass(frozen=True, slots=True)
class Stream:
    """One standardised stream of a monitored column: what it measures and its reference moments.

    A column always has its ``"location"`` stream (the standardised value itself); numeric columns
    may add a ``"spread"`` stream and categorical ones a ``"share"`` stream per category.
    """

    column: int
    """Index of the column (in :attr:`ColumnSet.names`) the stream belongs to."""
    mean: float
    """Mean of the stream under the reference."""
    std: float
    """Its standard deviation under the reference (per event)."""
    measure: str = "location"
    category: str | None = None
    """The category of a ``"share"`` stream."""
    counts: bool = False
    """A 0/1 stream (a share): its detectors see the normal score of each block's count
    (:func:`~agent.monitoring.blocks.binomial_scores`) instead of its skewed z-score."""


@dataclass(frozen=True, slots=True)
class StreamStats:
    """Windowed statistics of one stream, for recoveries and metrics."""

    stream: Stream
    count: int
    mean: float
    shift_sd: float
    """``(mean - stream.mean) / stream.std``."""


class Window:
    """The last ``size`` blocks' sums per stream (a ring kept as a sliding array)."""

    def __init__(self, size: int, n_columns: int, n_raw: int | None = None) -> None:
        self.size = size
        n_raw = n_columns if n_raw is None else n_raw
        self.ints = np.zeros((0, 3, n_columns), dtype=np.int64)
        self.raw = np.zeros((0, 2, n_raw), dtype=np.float64)

    def with_blocks(self, blocks: Blocks, upto: int) -> tuple[IntArray, FloatArray]:
        new = np.stack([blocks.counts[:upto], blocks.sums[:upto], blocks.sumsqs[:upto]], axis=1)
        ints = np.concatenate([self.ints, new])[-self.size :]
        new_raw = np.stack([blocks.raw_sums[:upto], blocks.raw_sumsqs[:upto]], axis=1)
        raw = np.concatenate([self.raw, new_raw])[-self.size :]
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
    """Blocks, detectors and window of ``d`` columns' standardised streams: the engine of the monitors.

    By default each column is one stream (its location) with the reference ``mean`` and ``std``;
    :meth:`of_streams` builds a set whose columns have several streams each, every stream with its
    own reference moments and detectors. The streams' values come as one matrix, one column per
    stream, the location streams first (stream ``j < d`` is column ``j``'s location), so one
    :class:`~agent.monitoring.blocks.BlockAccumulator` push (one ``reduceat``) serves them all.
    A detection on any stream of a column restarts every detector of that column: one change, one
    :class:`~agent.monitoring.detectors.Detection` per column, whichever statistic saw it first.
    """

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
        streams = [Stream(j, mean, std) for j in range(len(names))]
        self._setup(names, streams, detectors, block_size, window_blocks, rises_only)

    @classmethod
    def of_streams(
        cls,
        names: Sequence[str],
        streams: Sequence[Stream],
        detectors: Sequence[Sequence[BlockDetector]],
        block_size: int,
        window_blocks: int,
    ) -> ColumnSet:
        """Columns with several streams each; ``streams[j]`` is column ``j``'s location for
        ``j < len(names)``, and ``detectors[i]`` are stream ``i``'s."""
        self = cls.__new__(cls)
        self._setup(names, streams, detectors, block_size, window_blocks, False)
        return self

    def _setup(
        self,
        names: Sequence[str],
        streams: Sequence[Stream],
        detectors: Sequence[Sequence[BlockDetector]],
        block_size: int,
        window_blocks: int,
        rises_only: bool,
    ) -> None:
        d = len(names)
        if len(detectors) != len(streams) or len(streams) < d:
            raise ValueError(f"{len(detectors)} detector groups for {len(streams)} streams of {d} columns")
        if any(s.column != j or s.measure != "location" for j, s in enumerate(streams[:d])):
            raise ValueError("the first streams must be the columns' locations, in column order")
        self.names = tuple(names)
        self.streams = tuple(streams)
        self.detectors = [list(group) for group in detectors]
        # Every detector of a column, whatever its stream: a firing restarts them all.
        by_column: list[list[BlockDetector]] = [[] for _ in range(d)]
        for stream, group in zip(self.streams, self.detectors, strict=True):
            by_column[stream.column].extend(group)
        self._column_detectors = by_column
        self._stream_column = [s.column for s in self.streams]
        # For error streams: a fall is good news, so it neither reports nor restarts the column (a
        # restart would blind the upward detector for its whole warm-up, right when the error rises);
        # the column's recovery starts it afresh (reanchor).
        self.rises_only = rises_only
        self.mean = self.streams[0].mean
        self.std = self.streams[0].std
        self._means = np.array([s.mean for s in self.streams])
        self._stds = np.array([s.std for s in self.streams])
        scored = [i for i, st in enumerate(self.streams) if st.counts]
        self._scored = np.array(scored, dtype=np.int64)
        self._score_tables = np.stack(
            [binomial_scores(block_size, self.streams[i].mean) for i in scored]
            or [np.zeros((block_size + 1, block_size + 1))]
        )
        self.n_events = 0
        self._n_blocks = 0
        self.reanchored_at = 0
        """Events up to the last :meth:`reanchor`: a rise found after it is measured after it."""
        self.last_fall = 0
        """For rises only: the events up to the block where a detector last found a fall. No alert,
        but the stream had not settled there: a recovery waits a window after it, as after a
        detection (a drift read from one partition first steps up, back and up again)."""
        self.missing = np.zeros(d, dtype=np.int64)
        self.unseen = np.zeros(d, dtype=np.int64)
        self.block_size = block_size
        self.window_events = window_blocks * block_size
        """Events the window of recent blocks holds."""
        self._blocks = BlockAccumulator(block_size, len(self.streams), d)
        self._window = Window(window_blocks, len(self.streams), d)
        self.outbox: list[Blocks] | None = None
        """When set (:meth:`ship`), the blocks :meth:`push` completes go here instead of to the
        detectors: another process runs them (:meth:`consume`)."""

    def reanchor(self) -> None:
        """Every detector starts afresh, anchored on the reference as at construction
        (:meth:`~agent.monitoring.detectors.BlockDetector.reanchor`). For a rises-only column once
        its incident recovered: Page-Hinkley's mean is that of every block since it last started,
        so after a rise it sits on the high level, and once the stream is back its upward side
        would see a new rise only when the high blocks averaged out (a house-price regressor's
        error rose with a covariate shift, came back, and a label change 1,000 outcomes later was
        found 3,623 outcomes late). Anchored on the reference rather than on the blocks after the
        restart, a new rise that began just before the recovery was declared is still a rise. A
        recovery is judged over a settled window, so a dip while the partitions of one drift catch
        up with each other restarts nothing."""
        for group in self.detectors:
            for det in group:
                det.reanchor()
                det.fresh_block = self._n_blocks
        self.reanchored_at = self.n_events

    def ship(self) -> None:
        """Summarise only: from now on :meth:`push` cuts blocks into :attr:`outbox` and runs no
        detector (a fleet worker's half; the model's monitor consumes the blocks)."""
        self.outbox = []

    def take_blocks(self) -> Blocks | None:
        """The blocks completed since the last call, as one :class:`Blocks` (``None`` if none)."""
        if not self.outbox:
            return None
        taken, self.outbox = self.outbox, []
        if len(taken) == 1:
            return taken[0]
        return Blocks(*(np.concatenate([getattr(b, f.name) for b in taken]) for f in fields(Blocks)))

    def push(self, values: FloatArray, raw: FloatArray | None) -> list[Detection]:
        """Feed ``values`` (one column per stream) and the columns' ``raw`` values (one per column)."""
        blocks = self._blocks.push(values, raw)
        base = self.n_events
        self.n_events += values.shape[0]
        if self.outbox is not None:
            if blocks.ends.size:
                self.outbox.append(blocks)
            return []
        return self._detect(blocks, base)

    def consume(self, blocks: Blocks) -> list[Detection]:
        """Feed full blocks summed elsewhere (by :meth:`push` of a shipping set with the same streams,
        in any process): the detectors and the window see them as if pushed here, each block
        ``block_size`` events long, in the order given.

        Blocks from several workers, interleaved, are what one worker's blocks would be: each is
        ``block_size`` consecutive events of one worker's share of the stream, and the events of a
        stationary stream are exchangeable, so the calibration holds whatever the number of workers.
        """
        b = blocks.counts.shape[0]
        if blocks.counts.ndim != 2 or blocks.counts.shape[1] != len(self.streams):
            raise ValueError(
                f"blocks of {blocks.counts.shape[1:]} streams for a set of {len(self.streams)} streams"
            )
        k = self.block_size
        base = self.n_events
        self.n_events += b * k
        ends = np.arange(k - 1, b * k, k, dtype=np.int64)
        return self._detect(
            Blocks(blocks.counts, blocks.sums, blocks.sumsqs, blocks.raw_sums, blocks.raw_sumsqs, ends), base
        )

    def _detect(self, blocks: Blocks, base: int) -> list[Detection]:
        z = z_scores(blocks.counts, blocks.sums, self._means, self._stds)
        if self._scored.size and blocks.ends.size:
            idx = self._scored
            # 0/1 values quantise exactly: a block's sum is its count of ones times FIXED_POINT.
            ones = blocks.sums[:, idx] // FIXED_POINT
            z[:, idx] = self._score_tables[np.arange(idx.size), blocks.counts[:, idx], ones]
        found: list[Detection] = []
        column_of = self._stream_column
        # The one Python loop: a few river calls per block and stream.
        for i, row in enumerate(z.tolist()):
            for j, zj in enumerate(row):
                if zj != zj:  # NaN: the stream had no value in this block
                    continue
                group = self.detectors[j]
                for det in group:
                    if det._step(zj):
                        end = base + int(blocks.ends[i])
                        detection = self._detection(j, det, end, blocks, i + 1)
                        if self.rises_only and (detection.shift_sd <= 0 or self._fell(j, det, blocks, i + 1)):
                            det.restart()
                            det.fresh_block = self._n_blocks + i + 1
                            self.last_fall = end + 1
                            continue
                        found.append(detection)
                        # One shift, one detection: the whole column starts afresh.
                        for other in self._column_detectors[column_of[j]]:
                            other.restart()
                            other.fresh_block = self._n_blocks + i + 1
                        break
        self._n_blocks += len(z)
        self._window.add(blocks)
        return found

    def _fell(self, j: int, det: BlockDetector, blocks: Blocks, upto: int) -> bool:
        """Whether a two-sided detector that fired on stream ``j`` found a fall: the blocks it kept
        (after the change) have a lower mean than the ones it dropped (since it started afresh), as
        far as the window reaches. An error back at its reference after a rise is such a fall, and
        its window since the change point may still hold the rise: judged by that window alone
        (``shift_sd``), an estimated error back from 9.1 % to its holdout's 8.5 % read as a rise."""
        kept = det.kept_blocks
        if kept is None:
            return False
        dropped = self._n_blocks + upto - det.fresh_block - kept
        ints, _ = self._window.with_blocks(blocks, upto)
        counts, sums = ints[:, 0, j], ints[:, 1, j]
        cut = counts.size - kept
        if kept < 1 or dropped < 1 or cut < 1:
            return False
        lo = max(0, cut - dropped)
        n_before, n_after = int(counts[lo:cut].sum()), int(counts[cut:].sum())
        if not n_before or not n_after:
            return False
        return float(sums[cut:].sum()) / n_after < float(sums[lo:cut].sum()) / n_before

    def _detection(self, j: int, det: BlockDetector, end: int, blocks: Blocks, upto: int) -> Detection:
        ints, raw = self._window.with_blocks(blocks, upto)
        stream = self.streams[j]
        col = stream.column
        counts, sums, sumsqs = ints[:, 0, j], ints[:, 1, j], ints[:, 2, j]
        settled = max(self.last_fall, self.reanchored_at)
        if self.rises_only and settled > end + 1 - counts.size * self.block_size:
            # The stream fell back (or recovered) within the window: the rise is found among the
            # blocks since, not over the earlier rise (an error that was high, came back, and rose
            # again for another cause; the attribution reads the features over the same events).
            cut = counts.size - max((end + 1 - settled) // self.block_size, 1)
            start = cut + recent_segment(counts[cut:], sums[cut:])
        else:
            start = recent_segment(counts, sums)
        count = int(counts[start:].sum())
        mean, std = moments(count, sums[start:].sum() / FIXED_POINT, sumsqs[start:].sum() / FIXED_POINT)
        # The column's raw values over the same blocks (counted by its location stream).
        raw_count = int(ints[start:, 0, col].sum())
        raw_mean, raw_std = moments(raw_count, raw[start:, 0, col].sum(), raw[start:, 1, col].sum())
        return Detection(
            column=col,
            name=self.names[col],
            detector=det.name,
            event_index=end,
            reference_mean=stream.mean,
            reference_std=stream.std,
            window_mean=mean,
            window_std=std,
            window_count=count,
            shift_sd=(mean - stream.mean) / stream.std,
            statistic=det.statistic,
            measure=stream.measure,
            category=stream.category,
            raw_mean=raw_mean,
            raw_std=raw_std,
        )

    def window_stats(self, last: int | None = None) -> list[WindowStats]:
        """Per column (its location stream), over the window's blocks (its ``last`` blocks only, if
        given)."""
        d = len(self.names)
        ints = self._window.ints if last is None else self._window.ints[-last:]
        counts = ints[:, 0, :d].sum(axis=0)
        sums = ints[:, 1, :d].sum(axis=0) / FIXED_POINT
        sumsqs = ints[:, 2, :d].sum(axis=0) / FIXED_POINT
        raws = (self._window.raw if last is None else self._window.raw[-last:])[:, 0].sum(axis=0)
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
                    shift_sd=(mean - self.streams[j].mean) / self.streams[j].std,
                    raw_mean=float(raws[j]) / count if count else math.nan,
                    missing=int(self.missing[j]),
                    unseen=int(self.unseen[j]),
                )
            )
        return stats

    def stream_stats(self, last: int | None = None) -> list[StreamStats]:
        """Per stream, over the window's blocks (its ``last`` blocks only, if given)."""
        ints = self._window.ints if last is None else self._window.ints[-last:]
        counts = ints[:, 0].sum(axis=0)
        sums = ints[:, 1].sum(axis=0) / FIXED_POINT
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        shifts = (means - self._means) / self._stds
        return [
            StreamStats(s, int(c), float(m), float(z))
            for s, c, m, z in zip(self.streams, counts.tolist(), means.tolist(), shifts.tolist(), strict=True)
        ]

    def largest_shifts(self) -> FloatArray:
        """Per column, the largest ``|shift_sd|`` of its streams over the window (``NaN`` for a
        column with no value in the window): what a recovery is judged on."""
        out = np.full(len(self.names), np.nan)
        for s in self.stream_stats():
            if s.count and math.isfinite(s.shift_sd):
                c = s.stream.column
                out[c] = abs(s.shift_sd) if math.isnan(out[c]) else max(out[c], abs(s.shift_sd))
        return out


def column_detectors(
    config: DriftConfig, mean: float, std: float, ph_direction: Literal["up", "both"]
) -> list[BlockDetector]:
    """A column's Page-Hinkley (``ph_direction``) and two-sided ADWIN."""
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
