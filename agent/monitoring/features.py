"""Data and prediction drift: one monitor over every input feature of a model, and its output."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.monitoring.columns import ColumnSet, WindowStats, column_detectors
from agent.monitoring.detectors import AdwinDetector, Detection, DriftConfig
from agent.monitoring.transforms import (
    REFERENCE_MEAN,
    REFERENCE_STD,
    UNSEEN,
    CategoricalTransform,
    FloatArray,
    PercentileTransform,
    ReferenceTransform,
    as_float_column,
)

__all__ = [
    "FeatureDriftMonitor",
]


class FeatureDriftMonitor:
    """Data-drift monitor for the input features of one model, and optionally its output.

    Each batch is standardised against the reference in one call, cut into blocks of
    ``config.block_size`` events and fed to two Page-Hinkley detectors and an ADWIN per column.
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
    >>> [(d.name, d.detector, d.event_index) for d in found]
    [('income', 'page_hinkley_up', 30175)]
    >>> round(found[0].shift_sd, 2)  # since the estimated change point
    0.5

    """

    def __init__(
        self,
        feature_names: Sequence[str],
        reference: ReferenceTransform,
        *,
        output_reference: PercentileTransform | None = None,
        output_name: str = "output",
        config: DriftConfig | None = None,
    ) -> None:
        if len(feature_names) != reference.n_columns:
            raise ValueError(
                f"{len(feature_names)} feature names for {reference.n_columns} reference columns"
            )
        self.config = config or DriftConfig()
        self.reference = reference
        self.output_reference = output_reference
        names = list(feature_names)
        if output_reference is not None:
            names.append(output_name)
        self._categorical = np.array(
            [isinstance(c, CategoricalTransform) for c in reference.columns], dtype=bool
        )
        self._columns = ColumnSet(
            names,
            [column_detectors(self.config, REFERENCE_MEAN, REFERENCE_STD, "both") for _ in names],
            self.config.block_size,
            self.config.window_blocks,
            REFERENCE_MEAN,
            REFERENCE_STD,
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

    def update_batch(self, features: npt.ArrayLike, outputs: npt.ArrayLike | None = None) -> list[Detection]:
        """Monitor one batch: ``features`` is ``(n_rows, n_features)``, ``outputs`` ``(n_rows,)``.

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
        unseen = u == UNSEEN
        if unseen.any():
            self._columns.unseen += unseen.sum(axis=0)
            u[unseen] = np.nan
        missing = np.isnan(u)
        self._columns.missing += missing.sum(axis=0) - unseen.sum(axis=0)
        return self._columns.push(u, raw)

    def window_stats(self, last: int | None = None) -> list[WindowStats]:
        """Per-column statistics over the last ``config.window_blocks`` complete blocks (or the
        ``last`` ones of them)."""
        return self._columns.window_stats(last)

    def detector_statistics(self) -> list[tuple[str, str, float]]:
        """``(column, detector, statistic)`` of each column's detectors now, for metrics; the detector
        is named by its family (``adwin``, ``page_hinkley``), which does not change when it fires."""
        return [
            (name, "adwin" if isinstance(detector, AdwinDetector) else "page_hinkley", detector.statistic)
            for name, group in zip(self._columns.names, self._columns.detectors, strict=True)
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
