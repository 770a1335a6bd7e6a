"""One retry schedule for everything driftline retries: exponential backoff with jitter.

Webhook deliveries, the InfluxDB spool's write-back and the incident store's writes all wait
:meth:`Backoff.delay` between attempts, so they back off alike and a test of one schedule covers all.

Example:
    >>> import random
    >>> backoff = Backoff(0.5, 30.0, rng=random.Random(7))
    >>> [round(backoff.delay(n), 2) for n in (1, 2, 3, 10)]
    [0.33, 0.58, 1.65, 16.09]
"""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """Exponential backoff with jitter.

    The wait after failed attempt ``n`` (1-based) is drawn uniformly from the upper half of
    ``min(max_s, initial_s * 2 ** (n - 1))``: it doubles with each failure up to ``max_s``, and
    several clients failing together spread their retries instead of retrying in lockstep.

    Parameters:
        initial_s: The longest wait after the first failure.
        max_s: The longest wait ever.
        rng: Source of the jitter (seed it in tests).
    """

    def __init__(self, initial_s: float, max_s: float, *, rng: random.Random | None = None) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self._rng = rng or random.Random()

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        ceiling = min(self.max_s, self.initial_s * 2 ** (max(attempt, 1) - 1))
        return self._rng.uniform(ceiling / 2, ceiling)
