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

Each statistic's size is made comparable (``|shift|`` for the mean, ``|ln ratio|`` for the spread);
the feature's score is its largest size times its importance. Shifts under :data:`NOISE_FLOOR` are
the window's sampling noise and explain nothing. The ranking goes into the alert's evidence as data
(:class:`~schemas.alert.Driver`) and into its message (:func:`explain`).

May import: :mod:`agent.monitoring` (its other modules), :mod:`schemas`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agent.monitoring.columns import WindowStats
from agent.monitoring.transforms import REFERENCE_STD
from schemas.alert import Alert, AlertKind, Driver

__all__ = ["EXPLAINED_KINDS", "NOISE_FLOOR", "ColumnShift", "column_shifts", "explain", "rank_drivers"]

NOISE_FLOOR = 0.1
"""Smallest size of a shift that counts: a tenth of a reference sd, or a spread ratio beyond e^±0.1
(x0.9 - x1.1). A stable window of 2,048 events moves its mean by about 0.02 sd."""

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


def column_shifts(windows: Sequence[WindowStats], features: Sequence[str]) -> list[ColumnShift]:
    """The mean and spread shifts of each feature in ``features`` over its recent window.

    Example:
        >>> w = WindowStats("x", count=2048, mean=0.6, std=REFERENCE_STD / 2, shift_sd=0.35,
        ...                 raw_mean=1.0, missing=0, unseen=0)
        >>> [(s.statistic, round(s.shift, 2), round(s.size, 2)) for s in column_shifts([w], ["x"])]
        [('mean', 0.35, 0.35), ('spread', 0.5, 0.69)]
    """
    wanted = set(features)
    out: list[ColumnShift] = []
    for w in windows:
        if w.name not in wanted or not w.count or not math.isfinite(w.shift_sd):
            continue
        out.append(ColumnShift(w.name, "mean", w.shift_sd, abs(w.shift_sd)))
        if math.isfinite(w.std) and w.std > 0:
            ratio = w.std / REFERENCE_STD
            out.append(ColumnShift(w.name, "spread", ratio, abs(math.log(ratio))))
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
        if s.size >= NOISE_FLOOR and (s.feature not in best or s.size > best[s.feature].size):
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
