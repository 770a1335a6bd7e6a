"""Data and prediction drift: one monitor over every input feature of a model, and its output."""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.monitoring.columns import ColumnSet, Stream, StreamStats, WindowStats, column_detectors
from agent.monitoring.detectors import AdwinDetector, BlockDetector, Detection, DriftConfig
from agent.monitoring.transforms import (
    REFERENCE_MEAN,
    REFERENCE_STD,
    UNSEEN,
    CategoricalTransform,
    ColumnTransform,
    FloatArray,
    PercentileTransform,
    ReferenceTransform,
    as_float_column,
)

__all__ = [
    "SHARE_FLOOR",
    "FeatureDriftMonitor",
    "share_groups",
]

SHARE_FLOOR = 0.05
"""Smallest reference share (of a category, or of the pool of the rarer ones) watched by a share
stream of its own. Share streams reach their detectors as normal scores of their block counts
(:func:`~agent.monitoring.blocks.binomial_scores`), which keep the Gaussian calibration down to this
share (``bench/calibrate_shares.py``; table in :mod:`agent.monitoring.detectors`)."""

TAIL = 0.025
"""The tails stream of a numeric column counts values below the reference's ``TAIL`` percentile or
above its ``1 - TAIL`` percentile (5 % of a continuous reference). Beyond the 1st and 99th (2 %) the
stream saw heavier tails sooner, but its ADWIN raised up to twice the Gaussian calibration's false
alarms at loose deltas (``bench/calibrate_shares.py``); at 5 % it raises fewer."""

OTHER = "other"
"""The name of the pooled share stream of a column's rare categories."""


def share_groups(
    transform: CategoricalTransform, floor: float = SHARE_FLOOR
) -> list[tuple[str, list[Hashable]]]:
    """The share streams of a categorical column: ``(name, categories)`` per stream.

    Each category whose reference share ``p`` has ``floor <= p <= 1 - floor`` gets a stream of its
    own; the rarer ones are pooled into one ``"other"`` stream if their total is in that range too.
    Two streams that cover every category mirror each other (their shares sum to 1): the second
    is left out.

    Example
    -------
    >>> share_groups(CategoricalTransform({"red": 0.4, "green": 0.35, "blue": 0.25}))
    [('red', ['red']), ('green', ['green']), ('blue', ['blue'])]
    >>> share_groups(CategoricalTransform({"a": 0.5, "b": 0.3, "c": 0.12, "d": 0.04, "e": 0.04}))
    [('a', ['a']), ('b', ['b']), ('c', ['c']), ('other', ['d', 'e'])]
    >>> share_groups(CategoricalTransform({"yes": 0.7, "no": 0.3}))  # "no" mirrors "yes"
    [('yes', ['yes'])]
    """
    groups: list[tuple[str, list[Hashable]]] = []
    rare: list[Hashable] = []
    for category, p in transform.shares.items():
        if floor <= p <= 1 - floor:
            groups.append((transform.labels[category], [category]))
        elif p < floor:
            rare.append(category)
    pooled = sum(transform.shares[c] for c in rare)
    if rare and floor <= pooled <= 1 - floor:
        groups.append((OTHER, rare))
    if len(groups) == 2 and sum(len(cats) for _, cats in groups) == len(transform.shares):
        groups.pop()
    return groups


class FeatureDriftMonitor:
    """Data-drift monitor for the input features of one model, and optionally its output.

    Each batch is standardised against the reference in one call, cut into blocks of
    ``config.block_size`` events and fed to a two-sided Page-Hinkley and an ADWIN per stream.
    Every column has a **location** stream (its reference percentile ``u``, or a category's
    mid-CDF position). A numeric column with more than two distinct reference values also has a
    **spread** stream ``v = 2 |u - 1/2|``, Uniform(0, 1) under a continuous reference like ``u``
    (so the same calibration holds): it rises when the values spread away from the reference
    median (a wider spread, a bimodal split, heavier tails, values beyond the reference range,
    which ``u`` clips to 0 or 1) and falls when they narrow. A categorical column has a **share**
    stream per frequent category (:func:`share_groups`), ``1[x == c]`` against its reference
    share. A detection names its column and the measure that fired.
    Missing values (``NaN``/``None``) are excluded and counted; categories absent from the
    reference are excluded and counted apart (schema drift).

    Parameters
    ----------
    feature_names
        One name per feature column.
    reference
        The features' reference transform (one column per feature).
    output_reference
        Reference quantiles of a scalar output (e.g. the positive-class probability); when given,
        :meth:`update_batch` needs the outputs and the output is monitored as one more column.
    output_name
        Name of the output column.
    class_reference
        A classifier's predicted-class frequencies on the reference; when given,
        :meth:`update_batch` needs the predicted classes (keyed as the transform is) and they are
        monitored as one more, categorical, column after the output.
    class_name
        Name of the predicted-class column.
    output_shape
        Watch the output's spread and tails as well as its location (a regressor's value). A
        classifier's probabilities pile up in runs of tied values at 0 and 1 that a grid of 101
        reference quantiles resolves only to a percent, so the spread stream's reference moments miss
        its own holdout rows by about 0.06 sd, which ADWIN finds in a few thousand stationary
        events; its predicted class's shares watch that output's mix instead.
    config
        Detector parameters; the calibrated defaults when omitted.

    Example
    -------
    Three standard-normal features; from event 30,000 the second one's mean rises by half a
    standard deviation. The batches are of 500 events, as the serving path sends them.

    >>> import numpy as np
    >>> rng = np.random.default_rng(7)
    >>> quantiles = np.quantile(rng.standard_normal((100_000, 3)), np.linspace(0, 1, 101), axis=0)
    >>> monitor = FeatureDriftMonitor.from_quantiles(["age", "income", "tenure"], quantiles.T)
    >>> live = rng.standard_normal((60_000, 3))
    >>> live[30_000:, 1] += 0.5
    >>> found = [d for start in range(0, 60_000, 500)
    ...          for d in monitor.update_batch(live[start:start + 500])]
    >>> [(d.name, d.measure, d.detector, d.event_index) for d in found]
    [('income', 'location', 'page_hinkley_up', 30175)]
    >>> round(found[0].shift_sd, 2)  # since the estimated change point
    0.5

    The income stays shifted; the third feature's spread doubles around the same median from
    event 80,000 (its mean does not move): the spread stream sees it, and the raw standard
    deviation says by how much.

    >>> live = rng.standard_normal((40_000, 3))
    >>> live[:, 1] += 0.5
    >>> live[20_000:, 2] *= 2.0
    >>> found = [d for start in range(0, 40_000, 500)
    ...          for d in monitor.update_batch(live[start:start + 500])]
    >>> [(d.name, d.measure, d.detector, d.event_index) for d in found]
    [('tenure', 'spread', 'adwin', 80095)]
    >>> found[0].window_count, round(found[0].raw_std, 1)  # the few events since the change
    (96, 2.0)

    """

    def __init__(
        self,
        feature_names: Sequence[str],
        reference: ReferenceTransform,
        *,
        output_reference: PercentileTransform | None = None,
        output_name: str = "output",
        class_reference: CategoricalTransform | None = None,
        class_name: str = "predicted_class",
        output_shape: bool = True,
        config: DriftConfig | None = None,
    ) -> None:
        if len(feature_names) != reference.n_columns:
            raise ValueError(
                f"{len(feature_names)} feature names for {reference.n_columns} reference columns"
            )
        self.config = config or DriftConfig()
        self.reference = reference
        self.output_reference = output_reference
        self.class_reference = class_reference
        names = list(feature_names)
        transforms: list[ColumnTransform] = list(reference.columns)
        if output_reference is not None:
            names.append(output_name)
            transforms.append(output_reference)
        if class_reference is not None:
            names.append(class_name)
            transforms.append(class_reference)
        self.output_columns = frozenset(range(reference.n_columns, len(names)))
        """Indices of the output columns (the output, the predicted class), after the features."""
        self._categorical = np.array(
            [isinstance(c, CategoricalTransform) for c in reference.columns], dtype=bool
        )
        streams = [Stream(j, REFERENCE_MEAN, REFERENCE_STD) for j in range(len(names))]
        spread: list[int] = []
        shares: list[tuple[int, FloatArray]] = []
        tails: list[int] = []
        output = reference.n_columns if output_reference is not None else -1
        for j, t in enumerate(transforms):
            if j == output and not output_shape:
                continue
            if isinstance(t, PercentileTransform):
                mean, std = t.spread_moments()
                if t.distinct_values > 2 and std > 0:
                    spread.append(j)
                    streams.append(Stream(j, mean, std, "spread"))
        for j, t in enumerate(transforms):
            if j == output and not output_shape:
                continue
            if isinstance(t, PercentileTransform) and t.distinct_values > 2:
                p = t.tail_share(TAIL)
                # A reference whose extremes are tied values (say 10 % of zeros) has thinner tails
                # than 5 %: under the share floor, the 0/1 stream is not calibrated.
                if SHARE_FLOOR <= p <= 0.5:
                    tails.append(j)
                    streams.append(Stream(j, p, math.sqrt(p * (1 - p)), "tails", counts=True))
        for j, t in enumerate(transforms):
            if isinstance(t, CategoricalTransform):
                for label, categories in share_groups(t):
                    p = sum(t.shares[c] for c in categories)
                    shares.append((j, np.array([t.positions[c] for c in categories])))
                    streams.append(Stream(j, p, math.sqrt(p * (1 - p)), "share", label, counts=True))
        self._reference_moments: dict[str, tuple[float, float, float]] | None = None
        self._spread = np.array(spread, dtype=np.int64)
        self._tails = np.array(tails, dtype=np.int64)
        self._shares = shares
        self._columns = ColumnSet.of_streams(
            names,
            streams,
            [_detectors(self.config, s) for s in streams],
            self.config.block_size,
            self.config.window_blocks,
        )

    @classmethod
    def from_quantiles(
        cls,
        feature_names: Sequence[str],
        quantiles: npt.ArrayLike,
        *,
        output_quantiles: npt.ArrayLike | None = None,
        output_name: str = "output",
        config: DriftConfig | None = None,
    ) -> FeatureDriftMonitor:
        """All-numeric monitor from ``(n_features, n_points)`` reference quantiles."""
        return cls(
            feature_names,
            ReferenceTransform.from_quantiles(quantiles),
            output_reference=(None if output_quantiles is None else PercentileTransform(output_quantiles)),
            output_name=output_name,
            config=config,
        )

    @property
    def columns(self) -> ColumnSet:
        """The column set the detectors run on (a fleet worker ships its blocks instead)."""
        return self._columns

    @property
    def names(self) -> tuple[str, ...]:
        """Monitored column names: the features, then the output if monitored."""
        return self._columns.names

    @property
    def n_streams(self) -> int:
        """Monitored streams, each watched by its own group of detectors (one per column today): what
        the model's false-alarm budget is split over (:mod:`agent.monitoring.budget`)."""
        return len(self._columns.detectors)

    @property
    def n_events(self) -> int:
        """Events (rows) seen so far."""
        return self._columns.n_events

    @property
    def streams(self) -> tuple[Stream, ...]:
        """Every monitored stream: the columns' locations first, then their spreads and shares."""
        return self._columns.streams

    def update_batch(
        self,
        features: npt.ArrayLike,
        outputs: npt.ArrayLike | None = None,
        classes: npt.ArrayLike | None = None,
    ) -> list[Detection]:
        """Monitor one batch: ``features`` is ``(n_rows, n_features)``, ``outputs`` and ``classes``
        (the predicted classes) ``(n_rows,)``.

        Returns the detections fired by this batch, in stream order.
        """
        x = np.asarray(features)
        u = self.reference.transform(x)
        raw = self._raw(x)
        if self.output_reference is not None:
            if outputs is None:
                raise ValueError("this monitor watches the model output: pass outputs")
            out = as_float_column(np.asarray(outputs).reshape(-1))
            if out.shape[0] != u.shape[0]:
                raise ValueError(f"{out.shape[0]} outputs for {u.shape[0]} feature rows")
            u = np.column_stack([u, self.output_reference.transform(out)])
            raw = np.column_stack([raw, out])
        elif outputs is not None:
            raise ValueError("this monitor has no output reference: outputs are not monitored")
        if self.class_reference is not None:
            if classes is None:
                raise ValueError("this monitor watches the predicted class: pass classes")
            c = np.asarray(classes).reshape(-1)
            if c.shape[0] != u.shape[0]:
                raise ValueError(f"{c.shape[0]} classes for {u.shape[0]} feature rows")
            u = np.column_stack([u, self.class_reference.transform(c)])
            raw = np.column_stack([raw, np.full(c.shape[0], np.nan)])
        elif classes is not None:
            raise ValueError("this monitor has no class reference: classes are not monitored")
        unseen = u == UNSEEN
        if unseen.any():
            self._columns.unseen += unseen.sum(axis=0)
            u[unseen] = np.nan
        missing = np.isnan(u)
        self._columns.missing += missing.sum(axis=0) - unseen.sum(axis=0)
        return self._columns.push(self._stream_values(u), raw)

    def _stream_values(self, u: FloatArray) -> FloatArray:
        """One column per stream: the locations ``u``, then the spreads, then the shares."""
        parts = [u]
        if self._spread.size:
            parts.append(2.0 * np.abs(u[:, self._spread] - 0.5))
        if self._tails.size:
            t = u[:, self._tails]
            with np.errstate(invalid="ignore"):
                outer = ((t < TAIL) | (t > 1.0 - TAIL)).astype(np.float64)
            parts.append(np.where(np.isnan(t), np.nan, outer))
        for j, positions in self._shares:
            col = u[:, j]
            # Positions are distinct per category and u holds them exactly: equality is membership.
            hit = (col[:, None] == positions).any(axis=1).astype(np.float64)
            parts.append(np.where(np.isnan(col), np.nan, hit)[:, None])
        return np.concatenate(parts, axis=1) if len(parts) > 1 else u

    def stream_stats(self, last: int | None = None) -> list[StreamStats]:
        """Per-stream statistics over the last ``config.window_blocks`` complete blocks."""
        return self._columns.stream_stats(last)

    def largest_shifts(self) -> FloatArray:
        """Per column, the largest ``|shift_sd|`` of its streams over the recent window."""
        return self._columns.largest_shifts()

    def reference_moments(self) -> dict[str, tuple[float, float, float]]:
        """Per feature, the ``(mean, std, kurtosis)`` of its standardised stream under the reference
        (what attribution measures a window's spread and noise against)."""
        if self._reference_moments is None:
            self._reference_moments = {
                name: column.location_moments()
                for name, column in zip(self._columns.names, self.reference.columns, strict=False)
            }
        return self._reference_moments

    def window_stats(self, last: int | None = None) -> list[WindowStats]:
        """Per-column statistics over the last ``config.window_blocks`` complete blocks (or the
        ``last`` ones of them)."""
        return self._columns.window_stats(last)

    def detector_statistics(self) -> list[tuple[str, str, float]]:
        """``(column, detector, statistic)`` of each column's detectors now, for metrics; the detector
        is named by its family (``adwin``, ``page_hinkley``), which does not change when it fires."""
        names = self._columns.names
        return [
            (names[stream.column], _family(detector, stream), detector.statistic)
            for stream, group in zip(self._columns.streams, self._columns.detectors, strict=True)
            for detector in group
        ]

    def _raw(self, x: npt.NDArray[Any]) -> FloatArray:
        if x.dtype.kind in "fiub":
            raw = x.astype(np.float64)
        else:
            raw = np.full(x.shape, np.nan)
            for j in np.flatnonzero(~self._categorical):
                raw[:, j] = as_float_column(x[:, j])
        raw[:, self._categorical] = np.nan
        return raw


def _detectors(config: DriftConfig, stream: Stream) -> list[BlockDetector]:
    """A location or a share keeps both detectors; a spread or tails stream has ADWIN alone.

    The Python loop over blocks x detectors is the monitor's main cost; a second detector on the
    spread and tails of every numeric column cost 1 us more per event on 20 features and moved the
    tests' detections by 0 to 96 events (ADWIN is the cheaper of the two, and the one that catches
    small, slow changes). Shares are few (a categorical column's frequent categories, a classifier's
    classes), and Page-Hinkley finds a mix change sooner: 40/35/25 -> 30/55/15 in a median of 225.5
    events instead of 285.5 (``bench.compare_alibi``), for ~1 us per 32 events per share. The budget
    (:mod:`agent.monitoring.budget`) counts every stream as a pair of detectors either way."""
    if stream.measure in ("location", "share"):
        return column_detectors(config, stream.mean, stream.std, "both")
    return [
        AdwinDetector(
            config.adwin_delta,
            min_window_length=config.adwin_min_window_length,
            grace_period=config.adwin_grace_period,
            block_size=config.block_size,
            reference_blocks=config.reference_blocks,
            mean=stream.mean,
            std=stream.std,
        )
    ]


def _family(detector: BlockDetector, stream: Stream) -> str:
    family = "adwin" if isinstance(detector, AdwinDetector) else "page_hinkley"
    if stream.measure == "location":
        return family
    suffix = stream.measure if stream.category is None else f"share_{stream.category}"
    return f"{family}_{suffix}"
