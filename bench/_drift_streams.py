"""Seeded drift streams and delay counting for ``bench/compare_alibi.py`` (pure numpy).

Every stream is a reference sample (what a model package would hold) and, per replicate, a live
stream that follows the reference for ``warm + U[0, 32)`` events and then changes. Generators
take their seed explicitly (``numpy.random.default_rng((seed, stream, replicate))``), so a stream
is the same array whichever detector reads it and whatever other streams run.

Nothing here imports driftline or alibi-detect: the driver gives the same arrays to driftline's
monitor in this process and to alibi-detect in a venv of its own (``bench/_alibi_side.py``).

Example
-------
>>> spec = STREAMS["location 0.5 sd"]
>>> s = make_stream(spec, reps=3, warm=1000, horizon=500, n_ref=200, seed=1)
>>> s.live.shape, s.change.tolist(), s.reference.shape
((3, 1532, 1), [1014, 1005, 1001], (200, 1))
>>> round(float(s.live[:, 1100:, 0].mean()), 2)  # after the change the mean is 0.5
0.5
>>> delays = [first_after([10, 1100], 1014), first_after([], 1005), first_after([1001], 1001)]
>>> delays
[(87, 1), (None, 0), (1, 0)]
>>> summarise([d for d, _ in delays], horizon=500)
{'median': 87.0, 'p90': None, 'missed': 1, 'replicates': 3}
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

# Categorical streams: the reference mix and the mix after the change (issue 14's example).
MIX_BEFORE = (0.40, 0.35, 0.25)
MIX_AFTER = (0.30, 0.55, 0.15)
# Correlated pair: reference correlation and correlation after the change.
RHO_BEFORE = 0.9
RHO_AFTER = 0.0
# Bimodal split: modes at +-1 reference sd, each with sd 0.5 (mean and median unchanged).
BIMODAL_AT = 1.0
BIMODAL_SD = 0.5
# Where in a block the change falls is drawn from U[0, PHASE): driftline's blocks are 32 events.
PHASE = 32
# A miss, for percentiles: later than any horizon.
NEVER = 1e12

Draw = Callable[[np.random.Generator, int], np.ndarray]


@dataclasses.dataclass(frozen=True)
class StreamSpec:
    """One kind of stream: ``kind`` is ``numeric``, ``categorical`` or ``pair`` (two features)."""

    name: str
    kind: str
    after: Draw | None  # draws ``(n, d)`` post-change rows; None: no change (stable stream)
    note: str


@dataclasses.dataclass
class Stream:
    """A stream's reference ``(n_ref, d)``, live rows ``(reps, n, d)`` and change index per replicate.

    Categorical streams hold category codes ``0, 1, 2`` (as floats) in both arrays.
    """

    spec: StreamSpec
    reference: np.ndarray
    live: np.ndarray
    change: np.ndarray


def _normal(shift: float = 0.0, scale: float = 1.0) -> Draw:
    return lambda rng, n: shift + scale * rng.standard_normal((n, 1))


def _bimodal(rng: np.random.Generator, n: int) -> np.ndarray:
    sign = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    return (sign * BIMODAL_AT + BIMODAL_SD * rng.standard_normal(n))[:, None]


def _heavy_tails(rng: np.random.Generator, n: int) -> np.ndarray:
    # Student's t with 3 degrees of freedom, scaled to unit variance (its variance is 3).
    return (rng.standard_t(3, n) / math.sqrt(3.0))[:, None]


def _categories(mix: tuple[float, ...]) -> Draw:
    edges = np.cumsum(mix)[:-1]
    return lambda rng, n: np.searchsorted(edges, rng.random(n), side="right").astype(np.float64)[:, None]


def _pair(rho: float) -> Draw:
    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        z = rng.standard_normal((n, 2))
        z[:, 1] = rho * z[:, 0] + math.sqrt(1.0 - rho * rho) * z[:, 1]
        return z

    return draw


STREAMS: dict[str, StreamSpec] = {
    spec.name: spec
    for spec in [
        StreamSpec("stable", "numeric", None, "N(0, 1) throughout: false alarms only"),
        StreamSpec("location 0.25 sd", "numeric", _normal(0.25), "N(0.25, 1)"),
        StreamSpec("location 0.5 sd", "numeric", _normal(0.5), "N(0.5, 1)"),
        StreamSpec("location 1 sd", "numeric", _normal(1.0), "N(1, 1)"),
        StreamSpec("spread x1.5", "numeric", _normal(0.0, 1.5), "N(0, 1.5^2)"),
        StreamSpec("spread x2", "numeric", _normal(0.0, 2.0), "N(0, 2^2)"),
        StreamSpec("spread x0.5", "numeric", _normal(0.0, 0.5), "N(0, 0.5^2)"),
        StreamSpec(
            "bimodal split",
            "numeric",
            _bimodal,
            f"N(-{BIMODAL_AT}, {BIMODAL_SD}^2) or N(+{BIMODAL_AT}, {BIMODAL_SD}^2), half each: same mean and "
            "median",
        ),
        StreamSpec("heavy tails", "numeric", _heavy_tails, "Student t(3) / sqrt(3): same mean and sd"),
        StreamSpec(
            "category mix",
            "categorical",
            _categories(MIX_AFTER),
            "3 categories, 40/35/25 % -> 30/55/15 %",
        ),
        StreamSpec(
            "correlation",
            "pair",
            _pair(RHO_AFTER),
            f"2 features N(0, 1), correlation {RHO_BEFORE} -> {RHO_AFTER}: same marginals",
        ),
        StreamSpec("stable mix", "categorical", None, "40/35/25 % throughout: false alarms only"),
        StreamSpec("stable pair", "pair", None, f"correlation {RHO_BEFORE} throughout: false alarms only"),
    ]
}


def _before(spec: StreamSpec) -> Draw:
    if spec.kind == "categorical":
        return _categories(MIX_BEFORE)
    if spec.kind == "pair":
        return _pair(RHO_BEFORE)
    return _normal()


def make_reference(spec: StreamSpec, n_ref: int, seed: int) -> np.ndarray:
    """The stream's reference sample ``(n_ref, d)``: its no-change distribution."""
    return _before(spec)(np.random.default_rng((seed, 0)), n_ref)


def make_stream(spec: StreamSpec, reps: int, warm: int, horizon: int, n_ref: int, seed: int) -> Stream:
    """``reps`` replicates of ``warm + U[0, PHASE) `` reference rows, then rows after the change.

    Each replicate has ``warm + PHASE + horizon`` rows, so at least ``horizon`` rows follow its change.
    A stable stream's "change" index is drawn the same way but nothing changes there.
    """
    before, after = _before(spec), spec.after
    n = warm + PHASE + horizon
    index = list(STREAMS).index(spec.name) + 1
    rows, changes = [], []
    for r in range(reps):
        rng = np.random.default_rng((seed, index, r))
        at = warm + int(rng.integers(0, PHASE))
        live = before(rng, n)
        if after is not None:
            live[at:] = after(rng, n - at)
        rows.append(live)
        changes.append(at)
    return Stream(spec, make_reference(spec, n_ref, seed), np.stack(rows), np.array(changes, dtype=np.int64))


def first_after(events: list[int], change: int) -> tuple[int | None, int]:
    """``(delay, false alarms before the change)`` of one replicate's detection event indices.

    The delay counts the changed events up to and including the one the detector fired on (a
    detection on the first changed event has delay 1); ``None`` when nothing fired after the change.
    """
    before = sum(1 for e in events if e < change)
    after = [e for e in events if e >= change]
    return (min(after) - change + 1 if after else None), before


def summarise(delays: list[int | None], horizon: int) -> dict[str, float | int | None]:
    """Median and p90 delay over replicates; a miss counts as later than any detection, and a
    percentile that falls on a miss is ``None`` ("not detected within ``horizon`` events")."""
    ranked = np.array([NEVER if d is None else float(d) for d in delays])
    cells: dict[str, float | int | None] = {}
    for label, q in (("median", 50), ("p90", 90)):
        value = float(np.percentile(ranked, q)) if ranked.size else NEVER
        cells[label] = None if value > horizon else round(value, 1)
    cells["missed"] = sum(1 for d in delays if d is None)
    cells["replicates"] = len(delays)
    return cells
