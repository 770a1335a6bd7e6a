"""How fast any detector could find a location shift, at a given false-alarm rate: an oracle CUSUM.

Issue 14 asks driftline to find drift as fast as alibi-detect "at a false-alarm rate no higher than
alibi-detect's". For a step in the mean of Gaussian events, Page's CUSUM on the log-likelihood ratio
of the known shift is optimal (Lorden 1971, Moustakides 1986): no detector with the same average run
length between false alarms (ARL0) has a shorter worst-case expected delay. This bench runs that
oracle: it knows the shift's size and sees every event (no blocks), so its delays are a floor for
driftline, whatever its statistics, at the same rate.

* Events ``N(0, 1)``, then ``N(shift, 1)``; the CUSUM of ``x - shift / 2``, threshold ``h``
  (the log-likelihood ratio divided by ``shift``), computed for a whole stream at once through
  Lindley's recursion ``S_t = C_t - min(0, min_{s <= t} C_s)`` with ``C`` the running sum.
* ``h`` for an ARL0 from Siegmund's approximation, ``ARL0 = (e^{2kb} - 2kb - 1) / (2k^2)`` with
  ``k = shift / 2`` and ``b = h + 1.166`` (accurate to a few percent for Gaussian increments), and
  checked by simulation where the ARL0 is short enough to simulate.
* The category mix of ``bench/_drift_streams.py`` (40/35/25 % -> 30/55/15 %): the CUSUM of the
  log-likelihood ratio ``ln(q_c / p_c)`` of each event's category. Its threshold for an ARL0 is
  found by simulation where that is cheap (ARL0 up to 10^4, from the first passages of one set of
  paths over a grid of thresholds) and extended beyond with the slope that theory gives a
  likelihood-ratio CUSUM, ``ln ARL0 = h + const`` (the simulated points show it).
* Delay: as in ``bench/compare_alibi.py``, changed events up to and including the one that fires,
  the oracle started ``warm`` events before the change (its statistic is then in its stationary
  state, as a long-running monitor's is); replicates that fire before the change are re-drawn.

Run::

    .venv/bin/python -m bench.oracle_cusum            # ~20 s

Example:
    >>> round(threshold_for_arl(0.5, 1e4), 2)
    13.11
    >>> cusum_first_alarm(np.array([0.1, 2.0, 2.0, -1.0, 3.0]), k=0.5, h=2.5)
    2
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from bench._drift_streams import MIX_AFTER, MIX_BEFORE

SIEGMUND_CORRECTION = 1.166
"""``2 * 0.583``: the overshoot correction of Siegmund's ARL approximation for Gaussian increments."""


def siegmund_arl(k: float, h: float) -> float:
    """ARL0 of a one-sided CUSUM of ``N(0, 1)`` increments minus ``k``, threshold ``h``."""
    b = h + SIEGMUND_CORRECTION
    return (math.exp(min(2 * k * b, 700.0)) - 2 * k * b - 1) / (2 * k * k)


def threshold_for_arl(shift: float, arl: float) -> float:
    """The threshold ``h`` whose one-sided CUSUM tuned to ``shift`` has average run length ``arl``."""
    k = shift / 2
    lo, hi = 0.0, 1e3
    for _ in range(200):  # bisection: the ARL grows with h
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if siegmund_arl(k, mid) < arl else (lo, mid)
    return (lo + hi) / 2


def cusum_path(increments: np.ndarray) -> np.ndarray:
    """Page's CUSUM ``S_t = max(0, S_{t-1} + x_t)`` from 0, for a whole stream at once (Lindley)."""
    c = np.cumsum(increments)
    return np.asarray(c - np.minimum(np.minimum.accumulate(c), 0.0))


def cusum_first_alarm(x: np.ndarray, k: float, h: float) -> int | None:
    """Index of the first event at which the CUSUM of ``x - k`` (from 0) exceeds ``h``, or None."""
    above = np.flatnonzero(cusum_path(x - k) > h)
    return int(above[0]) if above.size else None


def simulated_arl(k: float, h: float, runs: int, seed: int) -> float:
    """Mean run length to a false alarm of ``runs`` CUSUMs started from 0 on N(0, 1) events."""
    rng = np.random.default_rng(seed)
    window = int(30 * siegmund_arl(k, h)) + 1000  # no alarm within it: probability ~e^-30
    lengths = []
    for _ in range(runs):
        fired = cusum_first_alarm(rng.standard_normal(window), k, h)
        lengths.append(window if fired is None else fired + 1)
    return float(np.mean(lengths))


def oracle_delays(shift: float, arl: float, reps: int, warm: int, seed: int) -> list[int]:
    """Delays of the oracle tuned to ``shift`` at ``arl`` on ``reps`` seeded step streams."""
    k, h = shift / 2, threshold_for_arl(shift, arl)
    rng = np.random.default_rng((seed, int(shift * 1000), int(arl)))
    out: list[int] = []
    horizon = 50 * math.ceil((h + SIEGMUND_CORRECTION) / (shift - k))
    while len(out) < reps:
        x = rng.standard_normal(warm + horizon)
        x[warm:] += shift
        fired = cusum_first_alarm(x, k, h)
        if fired is None or fired < warm:
            continue  # a false alarm before the change (or, never, no alarm): draw again
        out.append(fired - warm + 1)
    return out


def mix_increments(before: tuple[float, ...], after: tuple[float, ...]) -> np.ndarray:
    """The log-likelihood ratio of each category, after vs before."""
    return np.asarray(np.log(np.asarray(after) / np.asarray(before)), dtype=np.float64)


def _categories(rng: np.random.Generator, shares: tuple[float, ...], n: int) -> np.ndarray:
    return np.searchsorted(np.cumsum(shares)[:-1], rng.random(n), side="right")


def mix_arl_curve(thresholds: np.ndarray, runs: int, window: int, seed: int) -> np.ndarray:
    """Mean run length to a false alarm of the mix's CUSUM, per threshold (censored at ``window``)."""
    rng = np.random.default_rng((seed, 99))
    llr = mix_increments(MIX_BEFORE, MIX_AFTER)
    total = np.zeros(thresholds.size)
    for _ in range(runs):
        peak = np.maximum.accumulate(cusum_path(llr[_categories(rng, MIX_BEFORE, window)]))
        total += np.minimum(np.searchsorted(peak, thresholds, side="right") + 1, window)
    return total / runs


def mix_threshold(arl: float, fitted: tuple[float, float]) -> float:
    """``h`` for ``arl`` from the fit ``ln ARL0 = a + h`` (slope 1; ``fitted`` is ``(a, slope)``)."""
    a, slope = fitted
    return (math.log(arl) - a) / slope


def mix_delays(h: float, reps: int, warm: int, seed: int) -> list[int]:
    rng = np.random.default_rng((seed, 98, int(h * 1000)))
    llr = mix_increments(MIX_BEFORE, MIX_AFTER)
    out: list[int] = []
    while len(out) < reps:
        x = np.concatenate([_categories(rng, MIX_BEFORE, warm), _categories(rng, MIX_AFTER, 5000)])
        fired = cusum_first_alarm(llr[x], 0.0, h)
        if fired is None or fired < warm:
            continue
        out.append(fired - warm + 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2000)
    parser.add_argument("--warm", type=int, default=2000, help="events before the change")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument(
        "--arls",
        type=lambda s: [float(a) for a in s.split(",")],
        default=[1e3, 1e4, 1e6, 6e6],
        help="average run lengths to compare (events per false alarm)",
    )
    args = parser.parse_args()
    print("ARL0 check (Siegmund's approximation vs 400 simulated runs, shift 0.5):")
    for arl in (1e3, 1e4):
        h = threshold_for_arl(0.5, arl)
        print(f"  ARL0 {arl:>9,.0f}: h {h:.3f}, simulated {simulated_arl(0.25, h, 400, args.seed):,.0f}")
    print(f"\nOracle CUSUM delays (changed events, median / p90, {args.reps} replicates):")
    print(f"{'shift (sd)':>10}" + "".join(f"{f'ARL0 {a:,.0f}':>22}" for a in args.arls))
    for shift in (0.25, 0.5, 1.0):
        cells = []
        for arl in args.arls:
            d = np.array(oracle_delays(shift, arl, args.reps, args.warm, args.seed))
            cells.append(f"{np.median(d):g} / {np.percentile(d, 90):g}")
        print(f"{shift:>10g}" + "".join(f"{c:>22}" for c in cells))
    grid = np.arange(2.0, 9.01, 0.5)
    arls = mix_arl_curve(grid, runs=300, window=400_000, seed=args.seed)
    usable = (arls > 50) & (arls < 2e4)
    slope, a = np.polyfit(grid[usable], np.log(arls[usable]), 1)
    kl = float(np.dot(MIX_AFTER, mix_increments(MIX_BEFORE, MIX_AFTER)))
    print(f"\nThe category mix {MIX_BEFORE} -> {MIX_AFTER}: KL {kl:.4f} nats per event")
    print(
        "  ARL0 by simulation (300 runs): "
        + ", ".join(f"h {h:g}: {v:,.0f}" for h, v in zip(grid, arls, strict=True) if v > 50 and v < 2e4)
    )
    print(f"  fit ln ARL0 = {a:.3f} + {slope:.3f} h (theory: slope 1); the thresholds below use slope 1")
    a1 = float(np.mean(np.log(arls[usable]) - grid[usable]))
    cells = []
    for arl in args.arls:
        d = np.array(mix_delays(mix_threshold(arl, (a1, 1.0)), args.reps, args.warm, args.seed))
        cells.append(f"{np.median(d):g} / {np.percentile(d, 90):g}")
    print(f"{'mix':>10}" + "".join(f"{c:>22}" for c in cells))


if __name__ == "__main__":
    main()
