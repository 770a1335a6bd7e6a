"""Technical drift: windowed rates of bad input and a sustained rise of inference latency.

May import: :mod:`schemas` and :mod:`agent.monitoring.river_drift` (plain counters and river's
Page-Hinkley).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

from agent.models.encoding import shorten_category, tally
from agent.monitoring import river_drift

__all__ = ["LatencyWatch", "RateCounts", "RateWatch", "Transition", "most_often"]

Transition = Literal["fire", "recover"] | None
"""What a window's close says: over the threshold (``fire``), back under it (``recover``), or no change."""


class RateWatch:
    """Share of events with some property over tumbling windows, against an allowed rate.

    Fires when a full window's share exceeds ``baseline + margin``, recovers when a later window is
    back under ``baseline + margin / 2`` (:attr:`recover_below`). Windows count events, not batches,
    so the result barely depends on batching. The gap between the two keeps a rate that sits near
    the threshold from flapping: a feature whose values leave the reference range 6.6 % of the time
    reads 5.3-7.9 % over windows of 2,000 events (a 5 % margin), and a window under 5 % would have
    recovered it only for the next to fire again, a second incident for one cause.

    Example:
        >>> w = RateWatch(baseline=0.01, margin=0.05, window=100)
        >>> [w.update(hits, 50) for hits in (0, 1, 10, 10, 2, 3, 0, 0)]
        [None, None, None, 'fire', None, None, None, 'recover']

    The windows read 1 %, 20 % (over 6 %: fire), 5 % (under 6 % but not under 3.5 %: still over),
    then 0 % (recover). A window closes with the batch that carries it to ``window`` events, and its
    share is over every event of that batch (:attr:`last_events`):

        >>> w.update(3, 70), w.update(3, 70), w.last_events, round(w.last_share, 4)
        (None, None, 140, 0.0429)
    """

    def __init__(self, baseline: float, margin: float, window: int) -> None:
        self.baseline = baseline
        self.threshold = baseline + margin
        self.recover_below = baseline + margin / 2
        """A window's share under this recovers a watch that fired."""
        self.window = window
        self.over = False
        self.last_share = 0.0
        self.windows = 0
        """Windows closed so far."""
        self.last_events = 0
        """Events in the last closed window: at least :attr:`window`, and more when the batch that
        closed it carried it past (the share, and the counts an alert names, are over all of them)."""
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
        self.last_share, self.last_events = share, self._events
        self.windows += 1
        self._hits = self._events = 0
        over = share > self.threshold if not self.over else share >= self.recover_below
        if over == self.over:
            return None
        self.over = over
        return "fire" if over else "recover"


@dataclass
class RateCounts:
    """What one model's rate watches count over some events: fed to the watches at once by a worker
    that runs them, or shipped in its statistics records (fleet monitoring) to the model's one
    monitor, so that a fleet's workers count toward one window and raise one alert.

    Example:
        >>> a = RateCounts(requests=500, missing={0: 3}, unseen_fields={"colour": 50}, checked=500)
        >>> a.add(RateCounts(requests=200, missing={0: 1, 1: 1}, dead_letters=4, wrong_type={"age": 4}))
        >>> a.requests, a.missing, a.dead_letters, a.events
        (700, {0: 4, 1: 1}, 4, 704)
        >>> RateCounts.from_json(a.to_json()) == a
        True
        >>> RateCounts(requests=500, checked=500).to_json()  # what is zero is left out
        {'requests': 500, 'checked': 500}
    """

    requests: int = 0
    """Accepted requests served."""
    missing: dict[int, int] = field(default_factory=dict)
    """Feature index -> accepted requests whose value was missing."""
    out_of_range: dict[int, int] = field(default_factory=dict)
    """Feature index -> accepted requests with a value outside the manifest's declared range."""
    outside_reference: dict[int, int] = field(default_factory=dict)
    """Feature index -> accepted requests with a value outside the reference's [min, max]."""
    unknown_categories: dict[int, int] = field(default_factory=dict)
    """Feature index -> accepted requests with a category the model was not built with."""
    unknown_values: dict[int, dict[str, int]] = field(default_factory=dict)
    """Feature index -> which of those categories, with their counts: at most
    :data:`~agent.models.encoding.UNKNOWN_EXAMPLES` distinct ones per feature
    (:func:`~agent.models.encoding.tally`)."""
    unseen_fields: dict[str, int] = field(default_factory=dict)
    """Unknown field name -> requests carrying it."""
    with_unseen: int = 0
    """Requests (accepted or rejected) with any unknown field."""
    checked: int = 0
    """Requests (accepted or rejected) checked for unknown fields."""
    dead_letters: int = 0
    """The model's requests sent to the dead-letter topic."""
    wrong_type: dict[str, int] = field(default_factory=dict)
    """Feature -> dead letters for a value of the wrong type there."""
    outcomes: int = 0
    """The model's outcomes read at the join (by the worker that owns their join partition)."""
    unjoined: int = 0
    """Of those, the ones that matched no prediction."""
    unknown_model: int = 0
    """Requests for a model the worker does not serve (among its dead letters; a worker's own
    counts, shipped under :data:`~agent.monitoring.fleet.WORKER_STATS`, not a model's)."""
    estimated: int = 0
    """Joined outcomes whose prediction's error was estimated when it was made."""
    estimated_wrong: int = 0
    """Their realised errors: for a classifier, the ones whose label said the prediction was wrong;
    for a regressor, their absolute errors summed, in units of
    :func:`~agent.monitoring.estimation.joined_units`."""
    expected_steps: int = 0
    """The sum of their estimated errors, in units of
    :func:`~agent.monitoring.estimation.joined_units` (a classifier's:
    :data:`~agent.monitoring.estimation.EXPECTED_ERROR_STEP`, as the join keeps them)."""

    _COUNTS: ClassVar[tuple[str, ...]] = (
        "requests",
        "with_unseen",
        "checked",
        "dead_letters",
        "outcomes",
        "unjoined",
        "unknown_model",
        "estimated",
        "estimated_wrong",
        "expected_steps",
    )
    _BY_INDEX: ClassVar[tuple[str, ...]] = (
        "missing",
        "out_of_range",
        "outside_reference",
        "unknown_categories",
    )
    _BY_NAME: ClassVar[tuple[str, ...]] = ("unseen_fields", "wrong_type")

    @property
    def events(self) -> int:
        """The model's requests counted: served and dead-lettered."""
        return self.requests + self.dead_letters

    def __bool__(self) -> bool:
        return bool(self.requests or self.dead_letters or self.checked or self.outcomes or self.estimated)

    def add(self, other: RateCounts) -> None:
        """Adds ``other``'s counts to these."""
        for name in self._COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in (*self._BY_INDEX, *self._BY_NAME):
            mine: dict[Any, int] = getattr(self, name)
            for key, hits in getattr(other, name).items():
                mine[key] = mine.get(key, 0) + hits
        for i, values in other.unknown_values.items():
            tally(self.unknown_values.setdefault(i, {}), values)

    def to_json(self) -> dict[str, Any]:
        """A JSON object as a statistics record's header carries it: zero counts and empty maps left
        out, feature indices as strings."""
        out: dict[str, Any] = {name: getattr(self, name) for name in self._COUNTS if getattr(self, name)}
        for name in self._BY_INDEX:
            by_index: dict[int, int] = getattr(self, name)
            if any(by_index.values()):
                out[name] = {str(i): n for i, n in by_index.items() if n}
        for name in self._BY_NAME:
            by_name: dict[str, int] = getattr(self, name)
            if any(by_name.values()):
                out[name] = {k: n for k, n in by_name.items() if n}
        values = {str(i): dict(v) for i, v in self.unknown_values.items() if v}
        if values:
            out["unknown_values"] = values
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> RateCounts:
        """The counts of :meth:`to_json`'s object; ``ValueError`` if one is not a count."""

        def count(v: Any) -> int:
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"rate count {v!r} is not a non-negative integer")
            return v

        try:
            out = cls()
            for name in cls._COUNTS:
                setattr(out, name, count(raw.get(name, 0)))
            for name in cls._BY_INDEX:
                setattr(out, name, {int(i): count(n) for i, n in raw.get(name, {}).items()})
            for name in cls._BY_NAME:
                setattr(out, name, {str(k): count(n) for k, n in raw.get(name, {}).items()})
            # Written by another process: held to the same bounds as the encoder's own.
            for i, values in raw.get("unknown_values", {}).items():
                tally(
                    out.unknown_values.setdefault(int(i), {}),
                    {shorten_category(str(k)): count(n) for k, n in values.items()},
                )
        except (AttributeError, TypeError) as e:
            raise ValueError(f"rate counts of the wrong shape: {e}") from e
        return out


def most_often(values: dict[str, int], top: int = 3) -> list[tuple[str, int]]:
    """The ``top`` categories of a tally, most requests first (ties in the order met).

    >>> most_often({"trial": 38, "enterprise": 312, "gold": 38, "x": 1})
    [('enterprise', 312), ('trial', 38), ('gold', 38)]
    """
    return sorted(values.items(), key=lambda item: -item[1])[:top]


class LatencyWatch:
    """Page-Hinkley (upward) on per-row inference latency, against its own level at the same batch
    size, summarised over intervals of time.

    A call's fixed cost is spread over its rows, so the latency per row depends on the batch size,
    and batch sizes follow the traffic: the breast-cancer forest takes ~2 us per row in batches of
    500 and ~35 in batches of one. Against one baseline, a worker that warmed up under load raised a
    latency alert after 34 single-request batches once traffic fell, with nothing slower. So each
    size class (1, 2-3, 4-7, ... 512 and more rows) gets its own baseline, the median of its first
    ``warmup`` batches, and a batch is compared with its own class's.

    And a few slow batches are not a slower machine: at low traffic a batch may hold one request,
    and a second of contention (a neighbour process, a collection) is a hundred slow batches. So the
    batches' ``log(latency / baseline)`` (capped at ``log(10)``) are summarised per ``interval_s`` of
    time by their median, and the medians feed river's Page-Hinkley with an allowance of
    ``log(1.5)``: the cumulative excess must reach ``threshold``. At the default 20 and 1 s, after
    1,000 s at its level, that takes 77 s of latency twice its level, 21 s at four times, 11 s at
    ten (the detector's running mean includes the rise: 1.6x is never found, nor twice the level
    when it comes 100 s after the warm-up).

    Example (one batch of 500 rows a second, then batches of one, then a machine three times slower):
        >>> w = LatencyWatch(warmup=20, threshold=20.0)
        >>> steady = [w.update(10.0 + (i % 3), rows=500, now=float(i)) for i in range(100)]
        >>> quiet = [w.update(60.0 + (i % 3), rows=1, now=100.0 + i) for i in range(300)]
        >>> any(steady + quiet)
        False
        >>> [(i, round(w.last_ratio, 1)) for i in range(100) if w.update(180.0, rows=1, now=400.0 + i)]
        [(32, 3.0)]
    """

    SIZE_CLASSES = 10
    """Batch size classes: by the bit length of the row count, the last one 512 rows and more."""

    def __init__(self, warmup: int, threshold: float, interval_s: float = 1.0) -> None:
        self.warmup = warmup
        self.threshold = threshold
        self.interval_s = interval_s
        self.baselines: dict[int, float] = {}
        """Size class -> the median latency per row (us) of its first ``warmup`` batches."""
        self.last_ratio = 1.0
        """The last interval's median latency over its batches' baselines."""
        self._seen: dict[int, list[float]] = {}
        self._interval: list[float] = []
        self._interval_start = 0.0
        self._ph = self._detector()

    def _detector(self) -> river_drift.PageHinkley:
        return river_drift.PageHinkley(
            min_instances=1, delta=math.log(1.5), threshold=self.threshold, alpha=1.0, mode="up"
        )

    def update(self, per_row_us: float, *, rows: int, now: float) -> bool:
        """Feeds one batch of ``rows`` rows (latency per row, wall-clock ``now`` in seconds); True when
        a sustained rise is detected (the new level then becomes the baseline, after a new warm-up)."""
        size = min(max(rows, 1).bit_length(), self.SIZE_CLASSES)
        baseline = self.baselines.get(size)
        if baseline is None:
            seen = self._seen.setdefault(size, [])
            seen.append(per_row_us)
            if len(seen) >= self.warmup:
                self.baselines[size] = max(float(np.median(seen)), 1e-9)
                del self._seen[size]
            return False
        if self._interval and now - self._interval_start >= self.interval_s:  # the last one is over
            x = float(np.median(self._interval))
            self._interval = []
            self.last_ratio = math.exp(x)
            self._ph.update(x)  # type: ignore[no-untyped-call]
            if self._ph.drift_detected:
                self.baselines.clear()
                self._seen.clear()
                self._ph = self._detector()
                return True
        if not self._interval:
            self._interval_start = now
        self._interval.append(min(math.log(max(per_row_us, 1e-9) / baseline), math.log(10.0)))
        return False
