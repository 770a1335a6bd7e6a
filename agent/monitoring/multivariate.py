"""Multivariate drift: how the numeric features move together, through their reconstruction error.

The package's :class:`~schemas.manifest.Reconstruction` keeps the principal components of the
standardised numeric features that explain most (90 % by default) of their variance on the reference
rows. A request whose features keep their usual relations is reconstructed well from those components;
one whose features stop moving together as they did (two correlated features that decorrelate, a
sign that flips, a sensor stuck while its partner moves) leaves more unexplained. That per-request
error (:class:`ReconstructionErrors`, one vectorised pass over the batch matrix) is monitored as one
more column (:class:`ReconstructionMonitor`), named :data:`RECONSTRUCTION_COLUMN`: its reference
percentile, against the error's quantiles on rows the components were not fitted on, in blocks, with
an upward Page-Hinkley and ADWIN as every other column. Only rises are reported: an error below the
reference means the rows are *more* typical than the reference, and any feature that collapsed to a
constant shows in its own column.

What it catches that no single column shows: a change in the correlation structure with every
marginal unchanged. What it cannot: a change inside the kept components (features that keep moving
together but all shift along their main direction: the single-feature columns see that), and
anything among categorical features, which it leaves out.

May import: :mod:`agent.monitoring` (its other modules), :mod:`schemas`.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from agent.monitoring.columns import ColumnSet, WindowStats, column_detectors
from agent.monitoring.detectors import Detection, DriftConfig
from agent.monitoring.transforms import REFERENCE_MEAN, REFERENCE_STD, FloatArray, PercentileTransform
from schemas.manifest import NumericStatistics, Reconstruction, reconstruction_errors

__all__ = ["RECONSTRUCTION_COLUMN", "ReconstructionErrors", "ReconstructionMonitor"]

RECONSTRUCTION_COLUMN = "reconstruction_error"
"""The monitored column's name: the subject of its alerts and incidents."""


class ReconstructionErrors:
    """The reconstruction error of each row of a model's input matrix, arrays prepared once.

    Parameters
    ----------
    reconstruction
        The package's reconstruction.
    feature_names
        The model's feature names, in matrix-column order.

    Example
    -------
    >>> import numpy as np
    >>> from agent.packaging.reconstruction import fit_reconstruction
    >>> rng = np.random.default_rng(1)
    >>> a, b = rng.standard_normal((2, 2000))
    >>> X = np.c_[a, 0.9 * a + np.sqrt(0.19) * b]
    >>> r = fit_reconstruction(["u", "v"], X[:1500], X[1500:])
    >>> errors = ReconstructionErrors(r, ("u", "v"))
    >>> bool(np.allclose(errors(X[:5]), r.errors(X[:5], ("u", "v"))))
    True
    >>> errors(np.array([[1.0, 1.0], [1.0, -1.0]], dtype=np.float32)).round(2).tolist()
    [0.0, 1.42]
    """

    def __init__(self, reconstruction: Reconstruction, feature_names: tuple[str, ...]) -> None:
        self.reconstruction = reconstruction
        self._columns = np.array([feature_names.index(f) for f in reconstruction.features], dtype=np.intp)
        self._mean = np.asarray(reconstruction.mean, dtype=np.float64)
        self._scale = np.asarray(reconstruction.scale, dtype=np.float64)
        self._components = np.asarray(reconstruction.components, dtype=np.float64)

    def __call__(self, matrix: npt.NDArray[np.floating]) -> FloatArray:
        """Errors of the rows of ``matrix`` ``(n, n_features)``, float32 or float64."""
        return reconstruction_errors(matrix, self._columns, self._mean, self._scale, self._components)


class ReconstructionMonitor:
    """Monitors the reconstruction error of every request of one model against its reference.

    Parameters
    ----------
    reconstruction
        The package's reconstruction (with the error's reference distribution).
    feature_names
        The model's feature names, in matrix-column order.
    config
        Detector parameters; the calibrated defaults when omitted.

    Example
    -------
    Two features correlated 0.9 and a third on its own; from event 20,000 the pair decorrelates,
    each feature keeping its own distribution (standard normal). The column fires 63 events later.

    >>> import numpy as np
    >>> from agent.packaging.reconstruction import fit_reconstruction
    >>> rng = np.random.default_rng(5)
    >>> def rows(n, rho):
    ...     a, b, c = rng.standard_normal((3, n))
    ...     return np.c_[a, rho * a + np.sqrt(1 - rho**2) * b, c]
    >>> r = fit_reconstruction(["a", "b", "c"], rows(4000, 0.9), rows(1000, 0.9))
    >>> monitor = ReconstructionMonitor(r, ("a", "b", "c"))
    >>> live = np.r_[rows(20_000, 0.9), rows(20_000, 0.0)]
    >>> found = [d for start in range(0, 40_000, 500) for d in monitor.update_batch(live[start:start + 500])]
    >>> [(d.name, d.detector, d.event_index) for d in found]
    [('reconstruction_error', 'page_hinkley_up', 20063)]
    >>> round(monitor.error_shift_sd(found[0].window_count), 1)  # in sd of the reference error
    3.3
    """

    def __init__(
        self,
        reconstruction: Reconstruction,
        feature_names: tuple[str, ...],
        *,
        config: DriftConfig | None = None,
    ) -> None:
        self.config = config or DriftConfig()
        self.errors = ReconstructionErrors(reconstruction, feature_names)
        self.reference: NumericStatistics = reconstruction.error
        self._transform = PercentileTransform(reconstruction.error.quantiles)
        self._columns = ColumnSet(
            [RECONSTRUCTION_COLUMN],
            [column_detectors(self.config, REFERENCE_MEAN, REFERENCE_STD, "up")],
            self.config.block_size,
            self.config.window_blocks,
            REFERENCE_MEAN,
            REFERENCE_STD,
            rises_only=True,
        )

    @property
    def columns(self) -> ColumnSet:
        """The column set the detectors run on (a fleet worker ships its blocks instead)."""
        return self._columns

    @property
    def n_events(self) -> int:
        """Events (rows) seen so far."""
        return self._columns.n_events

    def update_batch(self, matrix: npt.NDArray[np.floating]) -> list[Detection]:
        """Monitors one batch, the model's input matrix ``(n, n_features)``; the rises it detects."""
        raw = self.errors(matrix).reshape(-1, 1)
        return self._columns.push(self._transform.transform(raw), raw)

    def window_stats(self, last: int | None = None) -> WindowStats:
        """Statistics over the last ``config.window_blocks`` blocks (or the ``last`` ones);
        ``raw_mean`` is the mean reconstruction error."""
        return self._columns.window_stats(last)[0]

    def error_shift_sd(self, events: int | None = None) -> float:
        """The recent mean error's distance from the reference mean, in reference standard deviations
        of the error, over about the last ``events`` events (the whole window when not given)."""
        last = None
        if events is not None:
            last = min(max(-(-events // self.config.block_size), 1), self.config.window_blocks)
        return self.shift_of(self.window_stats(last).raw_mean)

    def shift_of(self, mean_error: float) -> float:
        """``mean_error``'s distance from the reference mean error, in reference standard deviations of
        the error (``NaN`` without a reference mean and sd)."""
        mean, std = self.reference.mean, self.reference.std
        if mean is None or not std:
            return float("nan")
        return (mean_error - mean) / std

    def detector_statistics(self) -> list[tuple[str, str, float]]:
        """``(column, detector family, statistic)`` of the column's detectors, for metrics."""
        return [
            (RECONSTRUCTION_COLUMN, "page_hinkley" if i == 0 else "adwin", d.statistic)
            for i, d in enumerate(self._columns.detectors[0])
        ]
