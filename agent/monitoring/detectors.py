"""Block-mean detectors: river's Page-Hinkley and ADWIN on block z-scores, anchored to the reference.

Pure logic, no Kafka, Faust or manifest: the serving code builds a :class:`FeatureDriftMonitor`
from the package's reference quantiles and feeds it each inference batch as a matrix; an
:class:`ErrorMonitor` is fed per-event losses once outcomes arrive.

How it works
------------
1. **Standardise against the reference.** Every value goes through its feature's reference
   distribution (:class:`PercentileTransform`, :class:`CategoricalTransform`), so with no drift the
   standardised stream is ~Uniform(0, 1) (mean 1/2, standard deviation ``1/sqrt(12)``) whatever the
   feature's scale. One calibration then holds for every feature.
2. **Blocks.** The standardised stream is cut into blocks of ``block_size`` consecutive events (32
   by default), counted from the monitor's first event, so a stream fed one event at a time or a
   thousand at a time forms the same blocks. A block becomes one z-score
   ``(sum - n/2) / (sqrt(n) / sqrt(12))`` over its ``n`` non-missing values, ~N(0, 1) with no
   drift. Values are quantised to ``2**-24`` so that block sums are exact integers: detections are
   bit-identical whatever the batching. The detectors see one value per block, which cuts their
   Python cost by the block size; for a shift in the mean the block mean is a sufficient
   statistic, so the only statistical price is the block granularity (about half a block of
   extra delay).
3. **Detectors** (river's, wrapped). :class:`PageHinkleyDetector` is a CUSUM with allowance
   ``ph_allowance * sqrt(block_size)`` and ``alpha=1`` (river's default forgetting factor cancels
   the allowance once the cumulative sum settles, which is why river's defaults raise hundreds of
   false alarms on a long stationary stream); a monitor runs one two-sided detector per column,
   which fires on exactly the blocks a pair of one-sided ones would, at half the cost.
   :class:`AdwinDetector` is two-sided with an adaptive window. ADWIN's bound has a range term
   meant for inputs in ``[0, 1]``; block z-scores are near-Gaussian, for which the variance term
   alone is the right bound, so ADWIN is fed ``10 * z`` (shrinking the range term tenfold) and
   ``adwin_delta`` is set by simulation instead of by the bound. Page-Hinkley is tuned to catch a
   half-standard-deviation step fast; ADWIN catches smaller and slower drifts that a CUSUM with
   that allowance misses.
4. **Anchoring to the reference.** river's detectors look for changes *within* the live stream,
   so a stream that is already drifted at start-up would never fire. Each detector is therefore
   first fed ``reference_blocks`` synthetic blocks alternating ``+1, -1`` (mean 0 and variance 1:
   exactly what the reference predicts). A stream that starts drifted is then detected as a
   change from the reference, and the finite weight of that prelude keeps a tiny bias of the
   transform (e.g. for a discrete feature read off a 1% quantile grid) from ever accumulating
   into an alarm.
5. **After a detection** the wrapper restarts its river detector from scratch, with no prelude:
   the live level becomes the new normal, so one step change raises one detection. (river 0.26
   does the same on the update after a detection, ADWIN included: its Rust core shrinks the
   window, then the Python wrapper resets it.) The detectors' warm-ups (``ph_min_instances``,
   ``adwin_grace_period`` blocks) are the grace period. In a monitor, a detection by any detector
   of a column restarts all that column's detectors, so one shift raises one :class:`Detection`
   per column, not one per detector.

Calibration
-----------
``bench/calibrate_drift.py`` sets the defaults by simulation, with fixed seeds (method in its
docstring). False alarms: iid Uniform(0, 1) events, quantised and summed into block z-scores as
here, through river's ADWIN and through a numpy replica of river's Page-Hinkley (checked to give
identical detections, 3,020 of them, on 36 streams); long runs use Gaussian block z-scores, which
have heavier tails than sums of uniforms. Delay: reference N(0, 1) as 101 quantiles, then
20,000 + U[0, 32) events of N(0, 1) and N(shift, 1) after, through :class:`FeatureDriftMonitor`;
the delay is the number of shifted events up to the one completing the firing block. Defaults
(block 32, ``ph_allowance=0.25``, ``ph_threshold=6``, ``adwin_delta=1e-6``), 400 replicates:

    detector              false alarms / 1e6 events     0.5 sd step delay       medians
                                                          median   p90   p99    0.25 sd   1 sd
    Page-Hinkley (2-way)  0.0005 (80 in 1.5e11 events)    167     252   349     2309      71
    ADWIN                 < 0.009 (0 in 3.2e8 events)     232     302   368      682     104
    monitor (both)        sum of the two                  173     257   341      706      71

A 0.5 sd shift present from the first event is detected after a median of 160 events (anchoring).
No detector fired in the 500 blocks after 100,000 (Page-Hinkley) and 2,000 (ADWIN) restarts, and
no step raised a second detection (no bursts). Raising ``ph_threshold`` by 1 divides
Page-Hinkley's false alarms by about 16 for ~25 more events of delay (table in the script's
output). A monitor of ``d`` columns raises about ``d`` times the per-column rate.

False-alarm budget
------------------
The defaults above are the library's; serving derives ``ph_threshold`` and ``adwin_delta`` per
model instead (:mod:`agent.monitoring.budget`): ``monitoring.false_alarms_per_million`` (1 by
default) is the expected false alarms per 1e6 events of the whole model, split evenly over its
streams and between the two detectors, each share turned into a parameter through a curve measured
by ``bench/calibrate_drift.py --sections curves`` (Gaussian block z-scores, anchored, restarts
included; fixed seeds, output in ``bench/results/calibrate_curves.txt``):

    ph_threshold                3.0    3.5    4.0    4.5    5.0     5.5     6.0
    false alarms / 1e6 events   2.06   0.48   0.115  0.029  0.0074  0.0018  0.00053
    fit: ln(rate) = 9.049 - 2.790 * ph_threshold

    adwin_delta                 1e-3   3e-4   1e-4   3e-5   1e-5
    false alarms / 1e6 events   0.21   0.049  0.025  0.0044 0.0019
    fit: ln(rate) = 5.427 + 1.020 * ln(adwin_delta)   (steeper above 1e-3: 3.2 at 1e-2)

Whole models (``--sections models``): ``n - 1`` numeric features, one categorical feature and the
output, through :class:`FeatureDriftMonitor` built by ``budget.within_budget`` as serving builds
it, on stationary seeded streams; the delay is a 0.5 reference-sd step in one feature (events after
the change, 400 replicates):

    features  streams  budget  ph_threshold  adwin_delta  events   alarms  per 1e6 [95% CI]     0.5 sd step
                                                                                          median   p90
    2         3        1       3.89          8.4e-4       1e8      76      0.76 [0.60, 0.95]    116     185
    20        21       1       4.59          1.2e-4       5e7      35      0.70 [0.49, 0.97]    139     199
    100       101      1       5.15          2.6e-5       2e7      12      0.60 [0.31, 1.05]    151     222
    20        21       5       4.01          6.0e-4       1e7      54      5.4  [4.1, 7.0]
    100       101      30      3.93          7.5e-4       2e6      52      26   [19, 34]
    (DriftConfig() defaults, per column:   6   1e-6                       0.0007 (fit)         173     257)

At the default budget the measured whole-model rates are 60-76 % of it (block z-scores of
percentiles have lighter tails than the Gaussian ones the curves were measured on); the larger
budgets land on it within their counting noise. A wider model gets stricter detectors: its 0.25 sd
step takes a median of 388, 485 and 551 events for 2, 20 and 100 features (681 with the defaults).
Each ADWIN of the curve ran for at most 2**20 blocks (33.5M events); longer-lived ones were not
measured. Both curves hold for ``block_size=32`` and ``ph_allowance=0.25`` only.

Discrete features: a value tied with a run of reference quantiles maps to the middle of the run
(mid-rank), whose variance is ``(1 - sum p**3) / 12 <= 1/12``; their z-scores are therefore
narrower than N(0, 1), so their false-alarm rate is at most the calibrated one (and their power is
somewhat lower).

Spread, tails and share streams
-------------------------------
A feature monitor runs these detectors on more than the location of each column
(:class:`~agent.monitoring.features.FeatureDriftMonitor`). The spread stream ``2 |u - 1/2|`` is
Uniform(0, 1) under a continuous reference, exactly like ``u``: the table above holds for it as it
is. The tails stream (beyond the reference's 2.5th and 97.5th percentiles, ``p = 0.05``) and the
share of a category (``p`` its reference share) are 0/1 streams: a block's count is
Binomial(32, p), whose plain z-score is skewed (``(1 - 2p) / sqrt(32 p (1 - p))``, 0.47 at
``p = 0.1``) and raises more false alarms than the Gaussian calibration allows. Their detectors are
therefore fed the normal score of the count's mid-CDF (:func:`~agent.monitoring.blocks.binomial_scores`),
Gaussian in its tails whatever ``p``, with a variance a little under 1. ``bench/calibrate_shares.py``,
anchored two-sided Page-Hinkley, false alarms per 1e6 events (alarm counts in brackets) over 3e9
events (3e8 for the first plain row); thresholds under the default 6 make the rates comparable where
alarms are frequent enough to count:

    block z-scores                    threshold 4      threshold 5      threshold 6 (default)
    N(0, 1) (the calibration above)   0.120 (361)      0.0083 (25)      < 0.001 (0)
    plain z-score, p = 0.1            1.274 (382)      0.143 (43)       0.020 (6)
    plain z-score, p = 0.25           0.277 (830)      0.0223 (67)      0.0023 (7)
    plain z-score, p = 0.35           0.168 (503)      0.0100 (30)      0.0003 (1)
    normal score,  p = 0.02           0.028 (85)       0.0017 (5)       < 0.001 (0)
    normal score,  p = 0.05           0.035 (104)      0.0023 (7)       < 0.001 (0)
    normal score,  p = 0.1            0.040 (120)      0.0020 (6)       < 0.001 (0)
    normal score,  p = 0.25           0.082 (247)      0.0047 (14)      < 0.001 (0)
    normal score,  p = 0.5            0.095 (285)      0.0060 (18)      < 0.001 (0)

ADWIN (the spread and tails streams' only detector; a share has Page-Hinkley too, whose rates are
the table above: ``features._detectors``) at the default ``delta=1e-6``
raised no alarm in 1e8 events of any of them (< 0.03 per 1e6), nor of N(0, 1) blocks. At looser
deltas, 3e8 events each:

    block z-scores                    delta 1e-2       delta 1e-3       delta 1e-4
    N(0, 1)                           2.86 (857)       0.223 (67)       0.033 (10)
    normal score,  p = 0.02           4.11 (1232)      0.483 (145)      0.057 (17)
    normal score,  p = 0.05           2.61 (784)       0.230 (69)       0.020 (6)
    normal score,  p = 0.1            2.49 (747)       0.180 (54)       0.023 (7)

At 2 % ADWIN raises up to twice the Gaussian rate; from 5 % on, no more. Hence shares of at least
5 % (:data:`~agent.monitoring.features.SHARE_FLOOR`; rarer categories pooled) and tails of 5 %
(:data:`~agent.monitoring.features.TAIL` on each side is 2.5 %). A model's rate is about the number
of its streams times the per-stream rate: 3 per numeric column (location, spread, tails), 1 + the
shares per categorical one. A monitor of 71 streams (20 numeric features, a 3-category one, the
output and a 3-class predicted class) raised no alarm over 1e7 stationary events
(``bench/calibrate_shares.py --stationary``: 7.1e8 stream-events), before and after its shares got
Page-Hinkley beside ADWIN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Self

import numpy as np
import numpy.typing as npt

from agent.monitoring import river_drift
from agent.monitoring.blocks import BlockAccumulator, z_score, z_scores
from agent.monitoring.transforms import REFERENCE_MEAN, REFERENCE_STD

__all__ = [
    "AdwinDetector",
    "BlockDetector",
    "Detection",
    "DriftConfig",
    "PageHinkleyDetector",
]

# ADWIN's bound adds (2/3) ln(2 ln W / delta) / n, a range term for inputs in [0, 1]. Block
# z-scores are near-Gaussian and unbounded, so the variance term is the right bound; scaling the
# input by 10 makes the range term a tenth of its size, and delta is calibrated by simulation.
_ADWIN_SCALE = 10.0


@dataclass(frozen=True)  # no slots: the class attributes double as the wrappers' defaults
class DriftConfig:
    """Detector parameters shared by every column of a monitor.

    The defaults are calibrated by ``bench/calibrate_drift.py`` for ``block_size=32``: fewer than
    one false alarm per 1e6 events per detector with a wide margin, and a 0.5 reference-sd step
    detected in a few hundred events. Changing ``block_size`` calls for a new calibration run.

    Example
    -------
    A stricter Page-Hinkley (about 16 times fewer false alarms, ~25 events more delay):

    >>> import numpy as np
    >>> rng = np.random.default_rng(3)
    >>> x = rng.random(30_000)
    >>> x[10_000:] = np.minimum(x[10_000:] + 0.5 * REFERENCE_STD, 1.0)
    >>> config = DriftConfig(ph_threshold=7.0)
    >>> PageHinkleyDetector("up", threshold=config.ph_threshold).update_many(x)
    [10207]
    >>> PageHinkleyDetector("up").update_many(x)
    [10175]
    """

    block_size: int = 32
    """Events per block; detectors see one z-score per block."""

    ph_allowance: float = 0.25
    """Page-Hinkley allowance (river's ``delta``) in reference standard deviations per event;
    about half the smallest shift Page-Hinkley is tuned to catch quickly."""

    ph_threshold: float = 6.0
    """Page-Hinkley threshold (river's ``threshold``), in block z-score units."""

    ph_min_instances: int = 16
    """Blocks a fresh Page-Hinkley waits before it may fire (the grace period after a reset)."""

    adwin_delta: float = 1e-6
    """ADWIN's significance parameter, for inputs scaled as described in the module docstring."""

    adwin_min_window_length: int = 2
    """Smallest ADWIN sub-window, in blocks."""

    adwin_grace_period: int = 16
    """Blocks a fresh ADWIN waits before it may fire (the grace period after a reset)."""

    reference_blocks: int = 256
    """Synthetic reference blocks fed to each detector at start (0: no anchoring)."""

    window_blocks: int = 64
    """Blocks kept for windowed statistics and detection evidence."""

    def __post_init__(self) -> None:
        if not 1 <= self.block_size <= 1 << 18:
            raise ValueError("block_size must be between 1 and 2**18")
        if self.ph_allowance < 0 or self.ph_threshold <= 0:
            raise ValueError("ph_allowance must be >= 0 and ph_threshold > 0")
        if not 0 < self.adwin_delta < 1:
            raise ValueError("adwin_delta must be in (0, 1)")
        if min(self.ph_min_instances, self.adwin_min_window_length, self.adwin_grace_period) < 1:
            raise ValueError("ph_min_instances, adwin_min_window_length, adwin_grace_period >= 1")
        if self.reference_blocks < 0 or self.window_blocks < 1:
            raise ValueError("reference_blocks must be >= 0 and window_blocks >= 1")

    def with_block_size(self, block_size: int) -> DriftConfig:
        """This configuration for blocks of ``block_size`` events (the larger blocks of a concept or
        estimated-error monitor), its warm-ups after a restart (``ph_min_instances``,
        ``adwin_grace_period``) kept at about the events they span here, and at least 2 blocks.
        Counted in blocks they would last as many times longer as the blocks are: at an error rate of
        2 % (blocks of 448 events) 7,168 outcomes after a detection, in which a second change, even
        an error rate going on from 5 % to 50 %, goes unseen.

        >>> c = DriftConfig().with_block_size(448)
        >>> c.block_size, c.ph_min_instances, c.adwin_grace_period
        (448, 2, 2)
        >>> DriftConfig().with_block_size(128).ph_min_instances  # 16 blocks of 32: 512 events
        4
        """
        scale = self.block_size / block_size
        return replace(
            self,
            block_size=block_size,
            ph_min_instances=max(2, math.ceil(self.ph_min_instances * scale)),
            adwin_grace_period=max(2, math.ceil(self.adwin_grace_period * scale)),
        )


class BlockDetector:
    """Shared contract: per-event ``update``/``update_many``, river detector fed per block."""

    name: str = ""

    def __init__(self, block_size: int, reference_blocks: int, mean: float, std: float) -> None:
        if block_size < 1:
            raise ValueError("block_size must be >= 1")
        if std <= 0:
            raise ValueError("std must be > 0")
        self.block_size = block_size
        self.reference_blocks = reference_blocks
        self.mean = mean
        self.std = std
        self._blocks = BlockAccumulator(block_size, 1)
        self._n_seen = 0
        self._drift_detected = False
        self._restart_pending = False
        self._detector: Any = None
        self.reanchor()

    def reanchor(self) -> None:
        """Start afresh at once, on a synthetic stretch that matches the reference exactly (mean 0,
        variance 1), as at construction: a stream drifted from its next event is a change (see the
        module docstring). Unlike :meth:`restart`, whose fresh detector takes the next blocks as
        its normal, this one measures them against the reference."""
        self._fresh()
        for i in range(self.reference_blocks):
            self._step(1.0 if i % 2 == 0 else -1.0)
        self._restart_pending = False

    fresh_block = 0
    """The index (blocks counted by the :class:`~agent.monitoring.columns.ColumnSet` feeding it) of the
    block after which it last started afresh: 0 for one that never restarted."""

    @property
    def kept_blocks(self) -> int | None:
        """After a two-sided detector fired: the blocks it keeps as the stream's new level (the ones
        after the change it found); ``None`` for a one-sided one."""
        return None

    def _new_detector(self) -> Any:
        raise NotImplementedError

    def _step(self, z: float) -> bool:
        """Feed one block z-score; True if the detector fired on it.

        Once fired, the detector starts afresh on the next block (the new level is the new
        normal). Subclasses inline this in one method: it runs once per block and column.
        """
        raise NotImplementedError

    def _fresh(self) -> None:
        self._detector = self._new_detector()
        self._restart_pending = False

    def restart(self) -> None:
        """Forget the stream: the next block starts a fresh detector (without the prelude)."""
        self._restart_pending = True

    @property
    def drift_detected(self) -> bool:
        """Whether the detector fired on the block completed by the last value fed."""
        return self._drift_detected

    @property
    def n_seen(self) -> int:
        """Values fed so far (missing ones included)."""
        return self._n_seen

    @property
    def statistic(self) -> float:
        """The detector's current statistic (see the subclass)."""
        raise NotImplementedError

    def update(self, x: float) -> Self:
        """Feed one standardised value (``NaN`` = missing)."""
        self._drift_detected = False
        self._n_seen += 1
        block = self._blocks.push_one(float(x))
        if block is not None and block[0] > 0:
            self._drift_detected = self._step(z_score(*block, self.mean, self.std))
        return self

    def update_many(self, values: npt.ArrayLike) -> list[int]:
        """Feed standardised values; return the stream indices (0-based, counted from the
        detector's first value) of the values whose block made the detector fire."""
        x = np.asarray(values, dtype=np.float64).reshape(-1, 1)
        base = self._n_seen
        self._n_seen += x.shape[0]
        blocks = self._blocks.push(x)
        z = z_scores(blocks.counts[:, 0], blocks.sums[:, 0], self.mean, self.std)
        hits = [
            base + end
            for zi, end in zip(z.tolist(), blocks.ends.tolist(), strict=True)
            if zi == zi and self._step(zi)  # zi != zi: NaN, an all-missing block
        ]
        self._drift_detected = bool(hits) and hits[-1] == self._n_seen - 1
        return hits


class PageHinkleyDetector(BlockDetector):
    """Page-Hinkley (river's ``PageHinkley``) on block z-scores of a standardised stream.

    river's detector runs with ``alpha=1`` (a plain CUSUM around its running mean),
    ``delta = allowance * sqrt(block_size)`` and ``threshold``; it is fed one z-score per block
    of ``block_size`` values. After it fires, it restarts from scratch on the next block.

    ``"both"`` is one river detector testing both sides: river updates both cumulative sums
    whatever the mode, so it costs half of an ``"up"`` and a ``"down"`` detector, and since a
    firing restarts both sides anyway it fires on exactly the same blocks as the pair would.
    :attr:`name` then tells which side fired.

    Parameters
    ----------
    direction
        ``"up"`` detects increases of the mean, ``"down"`` decreases, ``"both"`` either.
    allowance
        Per-event allowance in reference standard deviations (half the target shift).
    threshold
        Detection threshold, in block z-score units.
    min_instances
        Blocks a fresh detector waits before it may fire.
    block_size
        Values per block.
    reference_blocks
        Synthetic reference blocks fed at construction (0: none).
    mean, std
        Mean and standard deviation of the stream under the reference.

    Example
    -------
    A uniform stream whose mean rises by half a standard deviation at index 20,000:

    >>> import numpy as np
    >>> rng = np.random.default_rng(42)
    >>> x = rng.random(40_000)
    >>> x[20_000:] = np.minimum(x[20_000:] + 0.5 * REFERENCE_STD, 1.0)
    >>> ph = PageHinkleyDetector("up")
    >>> ph.update_many(x)
    [20223]

    """

    def __init__(
        self,
        direction: Literal["up", "down", "both"],
        *,
        allowance: float = DriftConfig.ph_allowance,
        threshold: float = DriftConfig.ph_threshold,
        min_instances: int = DriftConfig.ph_min_instances,
        block_size: int = DriftConfig.block_size,
        reference_blocks: int = DriftConfig.reference_blocks,
        mean: float = REFERENCE_MEAN,
        std: float = REFERENCE_STD,
    ) -> None:
        if direction not in ("up", "down", "both"):
            raise ValueError(f"direction must be 'up', 'down' or 'both', got {direction!r}")
        self.direction = direction
        self.name = "page_hinkley" if direction == "both" else f"page_hinkley_{direction}"
        self.allowance = allowance
        self.threshold = threshold
        self.min_instances = min_instances
        super().__init__(block_size, reference_blocks, mean, std)

    def _new_detector(self) -> Any:
        return river_drift.PageHinkley(
            min_instances=self.min_instances,
            delta=self.allowance * math.sqrt(self.block_size),
            threshold=self.threshold,
            alpha=1.0,
            mode=self.direction,
        )

    def _step(self, z: float) -> bool:
        if self._restart_pending:
            self._fresh()
        ph = self._detector
        ph.update(z)
        if not ph.drift_detected:
            return False
        if self.direction == "both":
            up, _ = self._tests()
            self.name = "page_hinkley_up" if up > self.threshold else "page_hinkley_down"
        self._restart_pending = True
        return True

    def _tests(self) -> tuple[float, float]:
        # river keeps the CUSUM sums private; a test pins these names so that an upgrade that
        # renames them fails loudly rather than silently reporting zeros.
        ph = self._detector
        up = ph._sum_increase - ph._min_increase
        down = ph._max_decrease - ph._sum_decrease
        return (
            float(up) if math.isfinite(up) else 0.0,
            float(down) if math.isfinite(down) else 0.0,
        )

    @property
    def statistic(self) -> float:
        """The CUSUM test value compared with ``threshold`` (block z-score units); for
        ``"both"``, the larger of the two sides."""
        up, down = self._tests()
        if self.direction == "up":
            return up
        return down if self.direction == "down" else max(up, down)


class AdwinDetector(BlockDetector):
    """Two-sided ADWIN (river's ``ADWIN``) on block z-scores of a standardised stream.

    river's detector runs with ``clock=1`` (a check per block) and is fed ``10 * z`` per block of
    ``block_size`` values (see the module docstring for the scale). After it fires, it restarts
    from scratch on the next block.

    Parameters
    ----------
    delta
        ADWIN's significance parameter, calibrated by simulation.
    min_window_length
        Smallest sub-window compared, in blocks.
    grace_period
        Blocks a fresh detector waits before it may fire.
    block_size
        Values per block.
    reference_blocks
        Synthetic reference blocks fed at construction (0: none).
    mean, std
        Mean and standard deviation of the stream under the reference.

    Example
    -------
    A uniform stream whose mean falls by half a standard deviation at index 20,000:

    >>> import numpy as np
    >>> rng = np.random.default_rng(42)
    >>> x = rng.random(40_000)
    >>> x[20_000:] = np.maximum(x[20_000:] - 0.5 * REFERENCE_STD, 0.0)
    >>> adwin = AdwinDetector()
    >>> adwin.update_many(x)
    [20287]
    >>> round(adwin.statistic, 2)  # window mean, in reference sds from the reference mean
    -0.46

    """

    name = "adwin"

    def __init__(
        self,
        delta: float = DriftConfig.adwin_delta,
        *,
        min_window_length: int = DriftConfig.adwin_min_window_length,
        grace_period: int = DriftConfig.adwin_grace_period,
        block_size: int = DriftConfig.block_size,
        reference_blocks: int = DriftConfig.reference_blocks,
        mean: float = REFERENCE_MEAN,
        std: float = REFERENCE_STD,
    ) -> None:
        self.delta = delta
        self.min_window_length = min_window_length
        self.grace_period = grace_period
        super().__init__(block_size, reference_blocks, mean, std)

    def _new_detector(self) -> Any:
        return river_drift.ADWIN(  # type: ignore[no-untyped-call]  # river's ADWIN is unannotated
            delta=self.delta,
            clock=1,
            min_window_length=self.min_window_length,
            grace_period=self.grace_period,
        )

    def _fresh(self) -> None:
        super()._fresh()
        # river's ADWIN.update is a Python wrapper around its Rust window (``_helper``) that only adds
        # a reset after a detection; this detector never feeds a river detector past its detection
        # (it starts a fresh one), so the window is fed directly: a third of the cost of a step, and
        # with 60-odd streams per block of 32 events, ~0.4 us per request. A test pins the name.
        self._update = self._detector._helper.update

    def _step(self, z: float) -> bool:
        if self._restart_pending:
            self._fresh()
        if not self._update(z * _ADWIN_SCALE):
            return False
        self._detector._drift_detected = True  # what river's update would have recorded
        self._restart_pending = True
        return True

    @property
    def kept_blocks(self) -> int | None:
        """ADWIN's window after it fired: the blocks after the change it found (it dropped the
        older ones)."""
        return int(self._detector._helper.get_width())

    @property
    def statistic(self) -> float:
        """Mean of ADWIN's current window, in reference standard deviations from the reference
        mean. When ADWIN fires it drops its oldest buckets, but what it keeps can still hold much
        pre-change data: the effect size of a detection is :attr:`Detection.shift_sd`."""
        return float(self._detector.estimation) / (_ADWIN_SCALE * math.sqrt(self.block_size))


@dataclass(frozen=True, slots=True)
class Detection:
    """One detector firing on one column, with the evidence an alert needs."""

    column: int
    """Column index in the monitor (features first, then the output if monitored)."""
    name: str
    """Column name."""
    detector: str
    """``"adwin"``, ``"page_hinkley_up"`` or ``"page_hinkley_down"``."""
    event_index: int
    """Index (0-based, in the monitor's stream) of the event that completed the firing block."""
    reference_mean: float
    """Mean of the monitored stream under the reference (1/2 for standardised features)."""
    reference_std: float
    """Its standard deviation under the reference (``1/sqrt(12)`` for standardised features)."""
    window_mean: float
    """Mean of the monitored stream since the most likely change point in the recent window."""
    window_std: float
    """Standard deviation of the stream over that window."""
    window_count: int
    """Non-missing values in that window."""
    shift_sd: float
    """``(window_mean - reference_mean) / reference_std``."""
    statistic: float
    """The detector's statistic when it fired (see :attr:`PageHinkleyDetector.statistic`,
    :attr:`AdwinDetector.statistic`)."""
    measure: str = "location"
    """Which stream of the column fired: ``"location"`` (the standardised value itself),
    ``"spread"`` (``2 |u - 1/2|``: distance from the reference median) or ``"share"`` (one
    category's indicator); the reference and window means above are of that stream."""
    category: str | None = None
    """For a ``"share"`` detection, the category (``"other"``: the pool of the rare ones)."""
    # Float sums of the raw values depend on how the stream was batched (in the last bits): evidence
    # only, left out of comparisons so that detections stay equal whatever the batching.
    raw_mean: float = field(default=math.nan, compare=False)
    """Mean of the column's untransformed values over the same window (``NaN``: not numeric)."""
    raw_std: float = field(default=math.nan, compare=False)
    """Their standard deviation over that window."""
