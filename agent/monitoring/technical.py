"""Technical drift: windowed rates of bad input and a sustained rise of inference latency.

May import: :mod:`schemas` and :mod:`agent.monitoring.river_drift` (plain counters and river's
Page-Hinkley).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from agent.monitoring import river_drift

__all__ = ["LatencyWatch", "RateWatch", "Transition"]

Transition = Literal["fire", "recover"] | None
"""What a window's close says: over the threshold (``fire``), back under it (``recover``), or no change."""


class RateWatch:
    """Share of events with some property over tumbling windows, against an allowed rate.

    Fires when a full window's share exceeds ``baseline + margin``, recovers when a later window is
    back under it. Windows count events, not batches, so the result does not depend on batching.

    Example:
        >>> w = RateWatch(baseline=0.01, margin=0.05, window=100)
        >>> [w.update(hits, 50) for hits in (0, 1, 10, 10, 0, 0)]
        [None, None, None, 'fire', None, 'recover']
        >>> w.last_share
        0.0
    """

    def __init__(self, baseline: float, margin: float, window: int) -> None:
        self.baseline = baseline
        self.threshold = baseline + margin
        self.window = window
        self.over = False
        self.last_share = 0.0
        self.windows = 0
        """Windows closed so far."""
        self._hits = 0
        self._events = 0

    @property
    def idle(self) -> bool:
        """Not a hit in its last full window, nor since: a watch that may be let go."""
        return self.windows > 0 and self.last_share == 0.0 and self._hits == 0 and not self.over

    def update(self, hits: int, events: int) -> Transition:
        """Counts ``hits`` among ``events`` more events; says if a window closed over or back under."""
        self._hits += hits
        self._events += events
        if self._events < self.window:
            return None
        share = self._hits / self._events
        self.last_share = share
        self.windows += 1
        self._hits = self._events = 0
        over = share > self.threshold
        if over == self.over:
            return None
        self.over = over
        return "fire" if over else "recover"


class LatencyWatch:
    """Page-Hinkley (upward) on per-row inference latency, relative to its own warm-up level.

    The first ``warmup`` batches set the baseline (their median); after that each batch feeds
    ``log(latency / baseline)`` (capped at ``log(10)``: one stalled batch cannot fire it alone) to
    river's Page-Hinkley with an allowance of ``log(1.5)``: latency has to stay well above 1.5x its
    baseline for dozens of batches before the cumulative sum reaches ``threshold``.

    Example:
        >>> w = LatencyWatch(warmup=20, threshold=20.0)
        >>> steady = [w.update(10.0 + (i % 3)) for i in range(500)]
        >>> any(steady)
        False
        >>> slower = [w.update(30.0) for _ in range(200)]
        >>> slower.index(True)
        35
    """

    def __init__(self, warmup: int, threshold: float) -> None:
        self.warmup = warmup
        self.threshold = threshold
        self.baseline: float | None = None
        self._seen: list[float] = []
        self._ph: river_drift.PageHinkley | None = None

    def update(self, per_row_us: float) -> bool:
        """Feeds one batch's per-row latency; True when a sustained rise is detected."""
        if self._ph is None:
            self._seen.append(per_row_us)
            if len(self._seen) >= self.warmup:
                self.baseline = max(float(np.median(self._seen)), 1e-9)
                self._ph = river_drift.PageHinkley(
                    min_instances=1, delta=math.log(1.5), threshold=self.threshold, alpha=1.0, mode="up"
                )
                self._seen = []
            return False
        assert self.baseline is not None
        x = min(math.log(max(per_row_us, 1e-9) / self.baseline), math.log(10.0))
        self._ph.update(x)  # type: ignore[no-untyped-call]
        if self._ph.drift_detected:
            # The new level becomes the baseline after another warm-up.
            self._ph = None
            return True
        return False
