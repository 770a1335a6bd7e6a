"""One false-alarm budget per model: the detectors' parameters derived from it.

A model's drift monitor runs a Page-Hinkley and an ADWIN on each of its monitored streams (every
feature and the output today; more statistics per column add more streams). With no drift each
detector raises false alarms at a small rate, and the model raises their sum. The setting
``monitoring.false_alarms_per_million`` is that sum's budget: the expected false alarms per 10**6
events for the whole model, all streams and detectors together. :func:`split_budget` spreads it
evenly over the streams and, within a stream, evenly between the two detectors, and inverts each
detector's measured false-alarm curve to get its parameter:

* Page-Hinkley: ``ln(rate) = a + b * ph_threshold`` (exponential in the threshold, as for any
  CUSUM: each +1 divides the rate by ``exp(-b)``);
* ADWIN: ``ln(rate) = c + e * ln(adwin_delta)`` (a power of delta).

Rates are per 10**6 events of one stream, for the default block size (32), Page-Hinkley allowance
(0.25) and warm-ups; the curves were measured on Gaussian block z-scores (heavier-tailed than the
sums of uniform values that a feature produces, so the real rates are at most these), anchored as
at start-up, restarts after each alarm included. The parameters are clipped to
:data:`PH_THRESHOLD_BOUNDS` and :data:`ADWIN_DELTA_BOUNDS`; :attr:`BudgetSplit.clipped` names the
ones that were, and :attr:`BudgetSplit.expected_per_million` is the rate the clipped parameters
predict (above the budget when a tiny budget meets a very wide model).

Pure logic: no settings, no I/O. :class:`~agent.monitoring.model_monitor.ModelMonitor` calls it
with the setting and its feature monitor's :attr:`~agent.monitoring.features.FeatureDriftMonitor.n_streams`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from agent.monitoring.detectors import DriftConfig

__all__ = [
    "ADWIN_DELTA_BOUNDS",
    "ADWIN_LOG_RATE",
    "PH_LOG_RATE",
    "PH_THRESHOLD_BOUNDS",
    "BudgetSplit",
    "adwin_false_alarms",
    "config_for_budget",
    "ph_false_alarms",
    "split_budget",
    "within_budget",
]

# Fitted by `.venv/bin/python -m bench.calibrate_drift --sections curves` (2026-12-05, branch
# issue-14c; seeds 100-106 and 200-207; output in bench/results/calibrate_curves.txt): weighted
# least squares on the log of counts of 19 to 329 alarms per point, Page-Hinkley at thresholds
# 3, 3.5, ..., 6 (80 alarms in 1.5e11 events at 6), ADWIN at deltas 1e-3, 3e-4, ..., 1e-5 (19
# alarms in 1e10 events at 1e-5). Page-Hinkley's points lie within their Poisson noise of the fit;
# ADWIN's scatter more, up to 30 % (1e-4: 0.025 measured, 0.019 fitted), which the whole-model runs
# (--sections models) absorb: a feature's block z-scores have lighter tails than the Gaussian ones.
PH_LOG_RATE = (9.0490, -2.7900)
"""``(a, b)``: ln(false alarms per 1e6 events of one stream) = ``a + b * ph_threshold``."""

ADWIN_LOG_RATE = (5.4274, 1.0204)
"""``(c, e)``: ln(false alarms per 1e6 events of one stream) = ``c + e * ln(adwin_delta)``."""

PH_THRESHOLD_BOUNDS = (3.0, 12.0)
"""Page-Hinkley thresholds a budget may give: below 3 the curve is unmeasured and short noisy stretches
fire it; each +1 costs about 25 events of delay on a half-sd step, so 12 about doubles the delay of
the default 6."""

ADWIN_DELTA_BOUNDS = (1e-12, 1e-3)
"""ADWIN deltas a budget may give: the curve is fitted from 1e-3 down to 1e-5 (it is steeper above,
where the fit would understate the alarms) and extrapolated below."""

PH_SHARE = 0.5
"""Share of each stream's budget given to Page-Hinkley; ADWIN gets the rest."""


def ph_false_alarms(threshold: float) -> float:
    """Page-Hinkley's false alarms per 1e6 events of one stream at ``threshold`` (the fitted curve).

    >>> round(ph_false_alarms(6.0), 5)  # the default threshold (DriftConfig)
    0.00046
    """
    a, b = PH_LOG_RATE
    return math.exp(a + b * threshold)


def adwin_false_alarms(delta: float) -> float:
    """ADWIN's false alarms per 1e6 events of one stream at ``delta`` (the fitted curve).

    >>> round(adwin_false_alarms(1e-6), 5)  # the default delta (DriftConfig), extrapolated
    0.00017
    """
    c, e = ADWIN_LOG_RATE
    return math.exp(c + e * math.log(delta))


@dataclass(frozen=True, slots=True)
class BudgetSplit:
    """A model's false-alarm budget split over its streams and detectors."""

    per_million: float
    """The whole model's budget: expected false alarms per 1e6 events."""
    n_streams: int
    """Monitored streams, each with one Page-Hinkley and one ADWIN."""
    config: DriftConfig
    """The detectors' parameters (the defaults but for ``ph_threshold`` and ``adwin_delta``)."""
    clipped: tuple[str, ...]
    """The parameters that hit their bounds (``"ph_threshold"``, ``"adwin_delta"``)."""

    @property
    def ph_per_million(self) -> float:
        """One Page-Hinkley's predicted false alarms per 1e6 events."""
        return ph_false_alarms(self.config.ph_threshold)

    @property
    def adwin_per_million(self) -> float:
        """One ADWIN's predicted false alarms per 1e6 events."""
        return adwin_false_alarms(self.config.adwin_delta)

    @property
    def expected_per_million(self) -> float:
        """The whole model's predicted false alarms per 1e6 events with these parameters."""
        return self.n_streams * (self.ph_per_million + self.adwin_per_million)


def split_budget(per_million: float, n_streams: int) -> BudgetSplit:
    """Split a model's budget of ``per_million`` false alarms per 1e6 events over ``n_streams``.

    Example
    -------
    The default budget (1 per 1e6) for a 20-feature model with its output monitored (21 streams):

    >>> split = split_budget(1.0, 21)
    >>> split.config.ph_threshold, split.config.adwin_delta
    (4.59, 0.00012)
    >>> round(split.expected_per_million, 2), split.clipped
    (0.97, ())

    One false alarm per 10**15 events for 1000 streams asks for more than the bounds allow:

    >>> tiny = split_budget(1e-9, 1000)
    >>> tiny.config.ph_threshold, tiny.config.adwin_delta, tiny.clipped
    (12.0, 1e-12, ('ph_threshold', 'adwin_delta'))
    >>> tiny.expected_per_million > 1e-9
    True
    """
    if not per_million > 0 or not math.isfinite(per_million):
        raise ValueError(f"per_million must be a positive number, got {per_million}")
    if n_streams < 1:
        raise ValueError(f"n_streams must be >= 1, got {n_streams}")
    per_stream = per_million / n_streams
    a, b = PH_LOG_RATE
    c, e = ADWIN_LOG_RATE
    # Rounded on the safe side, to figures a log line can give exactly: the threshold up to 0.01,
    # delta down to two significant digits.
    threshold = math.ceil((math.log(PH_SHARE * per_stream) - a) / b * 100 - 1e-9) / 100
    delta = _floor_2_digits(math.exp((math.log((1.0 - PH_SHARE) * per_stream) - c) / e))
    clipped = []
    lo, hi = PH_THRESHOLD_BOUNDS
    if not lo <= threshold <= hi:
        threshold = min(max(threshold, lo), hi)
        clipped.append("ph_threshold")
    lo, hi = ADWIN_DELTA_BOUNDS
    if not lo <= delta <= hi:
        delta = min(max(delta, lo), hi)
        clipped.append("adwin_delta")
    config = dataclasses.replace(DriftConfig(), ph_threshold=threshold, adwin_delta=delta)
    return BudgetSplit(per_million, n_streams, config, tuple(clipped))


def _floor_2_digits(x: float) -> float:
    scale = 10.0 ** (math.floor(math.log10(x)) - 1)
    return float(f"{math.floor(x / scale + 1e-9) * scale:.2g}")


def config_for_budget(per_million: float, n_streams: int) -> DriftConfig:
    """The detector parameters for a model of ``n_streams`` streams (see :func:`split_budget`)."""
    return split_budget(per_million, n_streams).config


class _Monitor(Protocol):
    @property
    def config(self) -> DriftConfig: ...

    @property
    def n_streams(self) -> int: ...


M = TypeVar("M", bound=_Monitor)


def within_budget(
    build: Callable[[DriftConfig], M], per_million: float, *, extra_streams: int = 0
) -> tuple[M, BudgetSplit]:
    """Build a monitor whose detectors share a budget of ``per_million`` false alarms per 1e6 events.

    Two steps: ``build(DriftConfig())`` tells how many streams the monitor runs, then the monitor
    is built again with the parameters the budget gives for that many (unless they are the same).
    ``extra_streams`` counts streams that other monitors of the model run with the same parameters
    (``split.config``), so that they share the budget too.
    """
    if extra_streams < 0:
        raise ValueError(f"extra_streams must be >= 0, got {extra_streams}")
    monitor = build(DriftConfig())
    split = split_budget(per_million, monitor.n_streams + extra_streams)
    if split.config != monitor.config:
        monitor = build(split.config)
    return monitor, split
