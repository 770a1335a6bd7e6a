"""Estimated performance without labels: a model's expected error per prediction, monitored.

Labels often come hours or weeks after a prediction, or never. A classifier's confidence says how
likely each prediction is to be right, once calibrated on labelled rows the model was not trained on
(the package's :class:`~schemas.manifest.Calibration`, fitted at packaging time): the expected error
of a prediction is ``1 - calibrated P(predicted class)``. :class:`EstimatedErrorMonitor` feeds it,
per prediction, to the same block detectors as the real error (:mod:`agent.monitoring.concept`),
against the estimated error on the holdout: when inputs move into a region where the model is less
sure, the estimated error rises and a ``performance`` alert is raised, long before any label comes
(NannyML's CBPE, per event on a stream).

What it cannot see: a change of P(y | x) with the inputs unchanged (pure concept drift). The model is
then as sure as before and wrong more often; only the labels (the concept monitor) catch that. Nor
does it see a shift into a region where the model is confidently wrong.

A regressor has no confidence to calibrate. Its package may carry a model of its absolute error
instead (:class:`~schemas.manifest.ErrorModel`, fitted on part of the holdout: NannyML's DLE), which
the served model runs on each batch; :class:`EstimatedAbsErrorMonitor` watches the expected absolute
error it gives, in the target's units, against its mean on the holdout rows it was checked on. It
sees inputs move to where the regressor erred more on the holdout; not a change of P(y | x), and
nothing beyond the holdout's range (the error model's trees are flat past it).

Once outcomes are joined to their predictions (:mod:`agent.monitoring.join`, which keeps each
prediction's expected error), :class:`EstimateCheck` sets the realised error beside the estimate over
the same predictions: how close the estimate was is a metric.

May import: :mod:`agent.monitoring` (its other modules), :mod:`schemas`.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt

from agent.monitoring.columns import ColumnSet, WindowStats, column_detectors
from agent.monitoring.detectors import Detection, DriftConfig
from schemas.manifest import Calibration, ErrorModel

__all__ = [
    "EXPECTED_ERROR_STEP",
    "REGRESSION_STEP",
    "EstimateCheck",
    "EstimatedAbsErrorMonitor",
    "EstimatedErrorMonitor",
    "JoinedTally",
    "joined_units",
    "quantise_expected",
]

EXPECTED_ERROR_STEP = 1.0 / 200
"""Resolution at which the outcome join keeps a prediction's expected error (half a percentage point:
the estimate over any window is off by less than a quarter point on average from this rounding, and
the join can share one entry tuple between the predictions of a batch with the same values)."""

REGRESSION_STEP = 1.0 / 1000
"""Resolution at which a fleet worker ships a regressor's joined absolute errors, realised and
estimated: a thousandth of the model's reference MAE (:func:`joined_units`)."""


def joined_units(kind: str, reference_mean: float) -> tuple[float, float]:
    """What one unit of the integer sums a fleet worker ships for its joined predictions is worth
    (:class:`~agent.monitoring.technical.RateCounts`' ``estimated_wrong`` and ``expected_steps``):
    for a classifier, one wrong prediction and :data:`EXPECTED_ERROR_STEP` of expected error; for a
    regressor, both :data:`REGRESSION_STEP` of its reference MAE (``reference_mean``, the package's).

    >>> joined_units("classification", 0.1)
    (1.0, 0.005)
    >>> joined_units("regression", 2.5)
    (0.0025, 0.0025)
    """
    if kind == "classification":
        return 1.0, EXPECTED_ERROR_STEP
    unit = reference_mean * REGRESSION_STEP
    return unit, unit


_MIN_ERROR = 0.005
"""The reference estimated error is floored here: a holdout on which every prediction looked sure
still leaves some room for the error to rise against."""


def quantise_expected(expected: npt.NDArray[np.float64]) -> list[float]:
    """Expected errors rounded to :data:`EXPECTED_ERROR_STEP`, as plain floats for the outcome join.

    Example:
        >>> quantise_expected(np.array([0.0123, 0.4999, 1.0]))
        [0.01, 0.5, 1.0]
    """
    steps = np.rint(expected / EXPECTED_ERROR_STEP)
    return [float(v) for v in (steps * EXPECTED_ERROR_STEP).round(6).tolist()]


class _EstimateColumn:
    """The estimated error per prediction as one monitored column, rises only (a fall is good news)."""

    kind: ClassVar[Literal["classification", "regression"]]

    def __init__(
        self, reference_mean: float, reference_std: float, block_size: int, config: DriftConfig
    ) -> None:
        self.reference_mean = reference_mean
        self.reference_std = reference_std
        self.config = config.with_block_size(block_size)
        detectors = column_detectors(self.config, reference_mean, reference_std, "up")
        self._columns = ColumnSet(
            ["estimated_error"],
            [detectors],
            block_size,
            self.config.window_blocks,
            reference_mean,
            reference_std,
            rises_only=True,
        )
        self.last_expected: npt.NDArray[np.float64] = np.zeros(0)
        """The expected errors of the last batch fed."""

    @property
    def columns(self) -> ColumnSet:
        """The column set the detectors run on (a fleet worker ships its blocks instead)."""
        return self._columns

    @property
    def block_size(self) -> int:
        """Predictions per block."""
        return self.config.block_size

    @property
    def n_events(self) -> int:
        """Predictions seen so far."""
        return self._columns.n_events

    def update_expected(self, expected: npt.ArrayLike) -> list[Detection]:
        """Feed one batch's expected errors; returns the rises detected, in stream order."""
        values = np.asarray(expected, dtype=np.float64).reshape(-1)
        self.last_expected = values
        return self._columns.push(values.reshape(-1, 1), values.reshape(-1, 1))

    def window_stats(self) -> WindowStats:
        """The last ``config.window_blocks`` blocks; ``mean`` is the recent estimated error."""
        return self._columns.window_stats()[0]

    def detector_statistics(self) -> list[tuple[str, str, float]]:
        """``(column, detector family, statistic)``, as the feature monitor reports them."""
        return [
            ("estimated_error", "page_hinkley" if i == 0 else "adwin", det.statistic)
            for i, det in enumerate(self._columns.detectors[0])
        ]


class EstimatedErrorMonitor(_EstimateColumn):
    """A classifier's estimated error per prediction, monitored against its estimate on the holdout.

    Each prediction's highest class probability goes through the package's calibration; the expected
    error (``1 - correctness``) is cut into blocks and fed to an upward Page-Hinkley and a two-sided
    ADWIN, standardised by the holdout's mean and per-row spread of the estimated error, exactly as
    the real error is (:class:`~agent.monitoring.concept.ErrorMonitor`): blocks hold at least 8
    expected errors, and a fall of the estimate is good news, so it neither reports nor restarts the
    column (its recovery does).

    Parameters
    ----------
    calibration
        The package's calibration (its ``reference_error`` and ``reference_error_std`` come from the
        rows it was fitted on).
    config
        Detector parameters; the calibrated defaults when omitted.

    Example
    -------
    A calibrated model whose inputs move, at prediction 30,000, to where it is less sure (its
    highest probability drops from about 0.9 to about 0.7):

    >>> c = Calibration(rows=1000, fitted_on="holdout", confidence=(0.5, 1.0), correctness=(0.5, 1.0),
    ...                 reference_error=0.1, reference_error_std=0.058)
    >>> rng = np.random.default_rng(4)
    >>> confidence = np.r_[rng.uniform(0.8, 1.0, 30_000), rng.uniform(0.5, 0.9, 30_000)]
    >>> monitor = EstimatedErrorMonitor(c)
    >>> monitor.block_size
    96
    >>> found = [d for start in range(0, 60_000, 500)
    ...          for d in monitor.update(np.c_[1 - confidence, confidence][start:start + 500])]
    >>> [(d.detector, d.event_index) for d in found]
    [('page_hinkley_up', 30047)]
    >>> round(monitor.window_stats().mean, 2)  # the recent estimated error
    0.3
    """

    kind = "classification"

    def __init__(self, calibration: Calibration, *, config: DriftConfig | None = None) -> None:
        config = config or DriftConfig()
        p = min(max(calibration.reference_error, _MIN_ERROR), 1.0 - _MIN_ERROR)
        # Never narrower than a tenth of a Bernoulli's spread at that rate: a holdout whose rows all got
        # the same estimate would otherwise make any change infinitely significant.
        std = max(calibration.reference_error_std, 0.1 * math.sqrt(p * (1.0 - p)))
        rarer = min(p, 1.0 - p)
        block_size = config.block_size * math.ceil(8 / (config.block_size * rarer))
        super().__init__(p, std, block_size, config)
        self.calibration = calibration

    def expected_errors(self, probabilities: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Each row's expected error from its class probabilities (``(n, classes)``)."""
        p = np.asarray(probabilities)
        confidence = p.max(axis=1).astype(np.float64)
        return self.calibration.expected_error(confidence, p.argmax(axis=1))

    def update(self, probabilities: npt.ArrayLike) -> list[Detection]:
        """Feed one batch's class probabilities; returns the rises detected, in stream order."""
        return self.update_expected(self.expected_errors(probabilities))


class EstimatedAbsErrorMonitor(_EstimateColumn):
    """A regressor's estimated absolute error per prediction (from the package's error model),
    monitored against its mean on the holdout rows the error model was checked on.

    The expected absolute errors (in the target's units) are cut into blocks of
    ``4 * config.block_size`` (as the realised absolute errors are) and fed to an upward Page-Hinkley
    and a two-sided ADWIN, standardised by the checked rows' mean and per-row spread of the estimate.
    The spread is floored at a tenth of the mean: an error model that gives every row about the same
    estimate would otherwise make any change infinitely significant.

    Parameters
    ----------
    error_model
        The package's error model entry (its ``reference_error`` and ``reference_error_std``).
    config
        Detector parameters; the calibrated defaults when omitted.

    Example
    -------
    A regressor whose inputs move, at prediction 30,000, to where its error model expects an absolute
    error of about 3 instead of about 2:

    >>> e = ErrorModel(file="error_model.onnx", sha256="0" * 64, estimator="x.Y", inputs="features",
    ...                rows=600, checked_rows=400, reference_error=2.0, reference_error_std=0.5,
    ...                checked_error=2.05, realised_mae=2.1, check_mae=1.0, constant_mae=1.2)
    >>> rng = np.random.default_rng(4)
    >>> expected = np.r_[rng.normal(2.0, 0.5, 30_000), rng.normal(3.0, 0.5, 30_000)].clip(0)
    >>> monitor = EstimatedAbsErrorMonitor(e)
    >>> monitor.block_size
    128
    >>> found = [d for start in range(0, 60_000, 500)
    ...          for d in monitor.update_expected(expected[start:start + 500])]
    >>> [(d.detector, d.event_index) for d in found]
    [('page_hinkley_up', 30079)]
    >>> round(monitor.window_stats().mean, 1)  # the recent estimated MAE
    3.0
    """

    kind = "regression"

    def __init__(self, error_model: ErrorModel, *, config: DriftConfig | None = None) -> None:
        config = config or DriftConfig()
        mean = max(error_model.reference_error, 1e-12)
        std = max(error_model.reference_error_std, 0.1 * mean)
        super().__init__(mean, std, 4 * config.block_size, config)
        self.error_model = error_model


@dataclasses.dataclass(frozen=True, slots=True)
class EstimateWindow:
    """The realised and the estimated error over the same joined predictions."""

    count: int
    realised: float
    estimated: float

    @property
    def gap(self) -> float:
        """``estimated - realised``: positive when the estimate was too pessimistic."""
        return self.estimated - self.realised


class JoinedTally:
    """A model's last joined predictions, in chunks (a batch's, or a fleet worker's record's): how many,
    their realised error summed (a classifier's wrong predictions; a regressor's absolute errors), and
    the error estimated for them when they were made. A concept alert compares the two over its own
    window (:meth:`recent`): the inputs explain a rise of the error when the estimate rose with it,
    and not when the labels stopped following the inputs.

    Example:
        >>> tally = JoinedTally()
        >>> tally.add(500, 60, 55.0)  # 12 % wrong, 11 % estimated
        >>> tally.add(250, 120, 30.0)  # then 48 % wrong, 12 % estimated
        >>> w = tally.recent(250)
        >>> w.count, w.realised, w.estimated
        (250, 0.48, 0.12)
        >>> tally.recent(600).count  # whole chunks: at least as many as asked, where there are
        750
    """

    def __init__(self, keep: int = 20_000) -> None:
        self.keep = keep
        self._chunks: deque[tuple[int, float, float]] = deque()
        self._n = 0

    def add(self, n: int, wrong: float, estimated: float) -> None:
        """``n`` joined predictions, ``wrong`` the sum of their errors (how many were wrong, for a
        classifier), ``estimated`` the sum of their expected errors."""
        if n <= 0:
            return
        self._chunks.append((n, wrong, estimated))
        self._n += n
        while self._n - self._chunks[0][0] >= self.keep:
            self._n -= self._chunks.popleft()[0]

    def recent(self, n: int) -> EstimateWindow | None:
        """The newest chunks that hold at least ``n`` predictions (all of them, if fewer); ``None``
        if there are none."""
        count, wrong, estimated = 0, 0.0, 0.0
        for chunk_n, chunk_wrong, chunk_estimated in reversed(self._chunks):
            if count >= n:
                break
            count, wrong, estimated = count + chunk_n, wrong + chunk_wrong, estimated + chunk_estimated
        return EstimateWindow(count, wrong / count, estimated / count) if count else None


class EstimateCheck:
    """The last ``window`` joined predictions' realised error beside the error estimated for them.

    Parameters:
        window: Joined predictions kept (the estimate is judged over windows of this many).

    Example:
        >>> check = EstimateCheck(window=4)
        >>> check.add([1.0, 0.0, 0.0, 0.0, 0.0, 1.0], [0.5, 0.1, 0.1, 0.1, 0.2, 0.3])
        >>> w = check.current()
        >>> w.count, w.realised, round(w.estimated, 3), round(w.gap, 3)
        (4, 0.25, 0.175, -0.075)
        >>> check.total
        6
    """

    def __init__(self, window: int = 2000) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self.window = window
        self._realised = np.zeros(window)
        self._estimated = np.zeros(window)
        self._next = 0
        self.total = 0
        """Joined predictions with an estimate, since the monitor started."""

    def add(self, realised: Any, estimated: Any) -> None:
        """Adds joined predictions: their 0/1 errors and the errors estimated when they were made."""
        r = np.asarray(realised, dtype=np.float64).reshape(-1)[-self.window :]
        e = np.asarray(estimated, dtype=np.float64).reshape(-1)[-self.window :]
        n = r.size
        at = (self._next + np.arange(n)) % self.window
        self._realised[at] = r
        self._estimated[at] = e
        self._next = (self._next + n) % self.window
        self.total += int(np.asarray(realised).size)

    def current(self) -> EstimateWindow:
        """The window as it is now (fewer than ``window`` predictions until that many were joined)."""
        count = min(self.total, self.window)
        if count == 0:
            return EstimateWindow(0, math.nan, math.nan)
        if count < self.window:
            r, e = self._realised[:count], self._estimated[:count]
        else:
            r, e = self._realised, self._estimated
        return EstimateWindow(count, float(r.mean()), float(e.mean()))
