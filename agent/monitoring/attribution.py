"""Attribution: which features likely explain a prediction, performance or concept alert.

An alert on the model's output, its estimated error or its real error says that something went wrong,
not why. The likely drivers are the features whose recent window moved most, in each statistic the
monitors track, weighted by how much the model's output depends on them (the permutation importance
the package measured on its holdout, :class:`~schemas.manifest.FeatureImportance`). A feature the
model ignores can move a lot and explain nothing; an important one that moved a little explains more.

Per feature, over the feature monitor's recent window (the last ``window_blocks`` blocks):

* ``mean``: the shift of the reference-standardised stream, in reference standard deviations (what
  the data-drift detectors watch);
* ``spread``: the ratio of its standard deviation to the reference's; a feature squeezed toward the
  decision boundary keeps its mean and loses its spread.

The spread is measured against the feature's own reference spread: a discrete feature holds each
tied value at its mid-rank, so its standardised stream spreads less than Uniform(0, 1) and has heavier
tails (a pixel that is 0 in 95 % of the rows spreads about a third as much). Each statistic's size is
made comparable (``|shift|`` for the mean, ``|ln ratio|`` for the spread); the feature's score is its
largest size times its importance. A size under :data:`NOISE_FLOOR`, or under :data:`NOISE_Z` times
its sampling sd over the window (:attr:`ColumnShift.noise`: a short window, or the spread of a sparse
feature), is the window's sampling noise and explains nothing; so is the spread of a sparse feature
over a window too short to hold a few dozen of its rare values (:data:`SPREAD_EVENTS_PER_KURTOSIS`).
The ranking goes into the alert's evidence as data
(:class:`~schemas.alert.Driver`) and into its message (:func:`explain`).

May import: :mod:`agent.monitoring` (its other modules), :mod:`schemas`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agent.monitoring.columns import WindowStats
from agent.monitoring.transforms import REFERENCE_STD, UNIFORM_KURTOSIS
from schemas.alert import Alert, AlertKind, Driver

__all__ = [
    "EXPLAINED_KINDS",
    "NOISE_FLOOR",
    "NOISE_Z",
    "SPREAD_EVENTS_PER_KURTOSIS",
    "ColumnShift",
    "column_shifts",
    "explain",
    "rank_drivers",
]

NOISE_FLOOR = 0.1
"""Smallest size of a shift that counts: a tenth of a reference sd, or a spread ratio beyond e^±0.1
(x0.9 - x1.1). A stable window of 2,048 events moves its mean by about 0.02 sd."""

NOISE_Z = 4.0
"""A size counts once it is at least this many sampling sds of its statistic over the window: on a
64-feature model (128 sizes), a stable window names a feature by chance in fewer than 1 % of alerts.
Over 256 events (the shortest window read, ``MIN_DRIVER_BLOCKS``) that is 0.25 sd for a continuous
feature's mean; over 2,048 events, under :data:`NOISE_FLOOR`."""

SPREAD_EVENTS_PER_KURTOSIS = 30
"""A window's spread is read only over at least this many events per unit of the feature's reference
kurtosis: about 30 values away from the bulk of a sparse feature (its kurtosis is about one over
their share). A pixel that is non-zero once in 80 rows (kurtosis ~48) shows 3 or 4 of them in 288
events: their count, not a spread, is what such a window measures, and it is often 0 or 1."""

UNIFORM = (0.5, REFERENCE_STD, UNIFORM_KURTOSIS)
"""A continuous feature's reference moments ``(mean, std, kurtosis)`` of its standardised stream."""

EXPLAINED_KINDS = frozenset({AlertKind.PREDICTION, AlertKind.PERFORMANCE, AlertKind.CONCEPT})
"""The kinds of alert that get drivers: the ones about the model's output or error."""


@dataclass(frozen=True, slots=True)
class ColumnShift:
    """One statistic of one feature over the recent window."""

    feature: str
    statistic: str
    shift: float
    """``mean``: in reference sds; ``spread``: recent sd / reference sd."""
    size: float
    """Comparable across statistics: ``|shift|``, or ``|ln ratio|``."""
    noise: float = 0.0
    """The sampling sd of ``size`` over the window when nothing changed (0: not known)."""


def column_shifts(
    windows: Sequence[WindowStats],
    features: Sequence[str],
    moments: Mapping[str, tuple[float, float, float]] | None = None,
) -> list[ColumnShift]:
    """The mean and spread shifts of each feature in ``features`` over its recent window.

    ``moments`` gives a feature's reference ``(mean, std, kurtosis)`` of its standardised stream
    (:meth:`~agent.monitoring.features.FeatureDriftMonitor.reference_moments`); a feature it does
    not name is taken as continuous (:data:`UNIFORM`). The spread is the window's sd over that std;
    a constant reference has none.

    Example:
        >>> w = WindowStats("x", count=2048, mean=0.6, std=REFERENCE_STD / 2, shift_sd=0.35,
        ...                 raw_mean=1.0, missing=0, unseen=0)
        >>> [(s.statistic, round(s.shift, 2), round(s.size, 2)) for s in column_shifts([w], ["x"])]
        [('mean', 0.35, 0.35), ('spread', 0.5, 0.69)]

        A feature that is 0 in 95 % of its reference rows spreads that little by nature:

        >>> [round(s.shift, 2) for s in column_shifts([w], ["x"], {"x": (0.5, 0.14, 18.0)})]
        [0.35, 1.03]
    """
    wanted = set(features)
    out: list[ColumnShift] = []
    for w in windows:
        if w.name not in wanted or not w.count or not math.isfinite(w.shift_sd):
            continue
        _, std, kurtosis = (moments or {}).get(w.name, UNIFORM)
        root_n = math.sqrt(w.count)
        out.append(ColumnShift(w.name, "mean", w.shift_sd, abs(w.shift_sd), std / REFERENCE_STD / root_n))
        if (
            math.isfinite(w.std)
            and w.std > 0
            and std > 0
            and w.count >= SPREAD_EVENTS_PER_KURTOSIS * kurtosis
        ):
            ratio = w.std / std
            # The sd of a sample sd's log: sqrt((kurtosis - 1) / 4n) (the delta method).
            noise = math.sqrt(max(kurtosis - 1.0, 0.0) / 4.0) / root_n
            out.append(ColumnShift(w.name, "spread", ratio, abs(math.log(ratio)), noise))
    return out


def rank_drivers(
    shifts: Sequence[ColumnShift], importance: Mapping[str, float] | None, *, top: int = 3
) -> list[Driver]:
    """The ``top`` features by largest shift size times importance, most likely first; without
    importances every feature weighs the same.

    Example:
        >>> shifts = [ColumnShift("radius", "mean", 1.4, 1.4), ColumnShift("noise", "mean", 3.0, 3.0),
        ...           ColumnShift("texture", "spread", 1.6, 0.47)]
        >>> for d in rank_drivers(shifts, {"radius": 0.31, "noise": 0.01, "texture": 0.12}):
        ...     print(d.text())
        radius +1.4 sd (importance 0.31)
        texture spread x1.6 (importance 0.12)
        noise +3.0 sd (importance 0.01)
    """
    best: dict[str, ColumnShift] = {}
    for s in shifts:
        if s.size < max(NOISE_FLOOR, NOISE_Z * s.noise):
            continue
        if s.feature not in best or s.size > best[s.feature].size:
            best[s.feature] = s
    n = len({s.feature for s in shifts}) or 1
    drivers = []
    for feature, s in best.items():
        weight = importance.get(feature, 0.0) if importance is not None else 1.0 / n
        score = s.size * weight
        if score > 0:
            drivers.append(
                Driver(feature=feature, statistic=s.statistic, shift=s.shift, importance=weight, score=score)
            )
    drivers.sort(key=lambda d: (-d.score, d.feature))
    return drivers[:top]


def explain(alert: Alert, drivers: Sequence[Driver]) -> Alert:
    """``alert`` with ``drivers`` in its evidence and named at the end of its message; unchanged (the
    same id) but for those."""
    if not drivers:
        return alert
    named = ", ".join(d.text() for d in drivers)
    return alert.model_copy(
        update={
            "message": f"{alert.message}; likely drivers: {named}",
            "evidence": alert.evidence.model_copy(update={"drivers": tuple(drivers)}),
        }
    )
