"""Calibrate agent.monitoring's detectors by simulation: false alarms and detection delays.

Method (fixed seeds throughout):

* **False alarms.** With no drift the standardised stream is iid Uniform(0, 1). Exact runs draw
  uniform events, quantise and sum them into block z-scores exactly as ``agent.monitoring.blocks`` does, and
  count detections per million events: Page-Hinkley through a vectorised numpy replica of river's
  recursion (checked first against river, through ``PageHinkleyDetector``, to give identical
  detections), ADWIN through river itself (``AdwinDetector``). Long runs (not with ``--quick``) draw the
  block z-scores from N(0, 1) instead of summing uniforms: the sum of k uniforms has lighter tails
  than the Gaussian, so this errs on the side of more alarms, and it reaches 1e10 events.
  Detectors are measured anchored (as at start-up) and fresh (as after a restart, for which the
  probability of firing in the first 500 blocks is reported).
* **Detection delay.** Reference N(0, 1): 100,000 draws give the 101 reference quantiles. Each
  replicate is 20,000 + U[0, block) events of N(0, 1), then N(shift, 1); the delay is the number of
  shifted events up to the one that completes the firing block. Replicates run as independent
  columns of one ``FeatureDriftMonitor`` (the production path, all detectors) and through each
  detector wrapper alone. Extra detections after the first one count as bursts.
* **Error monitor.** Stationary Bernoulli(p) errors for several p, a 10% -> 30% jump, Gaussian and
  Laplace regression errors, and river's binary detectors on the same streams for comparison.
* **False-alarm curves** (``curves``), for ``agent.monitoring.budget``: anchored two-sided
  Page-Hinkleys (the replica, 50,000 streams at once) at thresholds 3 to 6, and river's ADWIN at
  deltas 3e-2 to 1e-5 (one detector per 2**20 blocks), on Gaussian block z-scores, each point until
  it counts 200 alarms or reaches its cap; ln(rate) is fitted by weighted least squares, linear in
  the threshold and in ln(delta) (ADWIN at delta <= 1e-3, where budgets land).
* **Whole models** (``models``): monitors of 2, 20 and 100 features (one categorical) and their
  output, built within a budget by ``budget.within_budget`` as ``ModelMonitor`` builds them, fed
  stationary seeded streams in batches of 500: measured false alarms per 1e6 events beside the
  budget (with Poisson 95% intervals), then the step delays at the default budget.

Run: ``.venv/bin/python -m bench.calibrate_drift [--quick] [--sections detectors,errors,curves,models]``
(detectors and errors by default: about 10 minutes; curves about 25 and models about 30 on the
2-core machine shared with other jobs).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from river.drift import binary
from scipy.stats import chi2

from agent.monitoring import (
    REFERENCE_MEAN,
    REFERENCE_STD,
    AdwinDetector,
    CategoricalTransform,
    ColumnTransform,
    DriftConfig,
    ErrorMonitor,
    FeatureDriftMonitor,
    PageHinkleyDetector,
    PercentileTransform,
    ReferenceTransform,
)
from agent.monitoring.budget import BudgetSplit, split_budget, within_budget

FIXED_POINT = 1 << 24
NEVER = 10**12
PROBS = np.linspace(0.0, 1.0, 101)


# --------------------------------------------------------------------------------------------
# Block z-scores and a replica of river's PageHinkley
# --------------------------------------------------------------------------------------------


def block_z(u: np.ndarray) -> np.ndarray:
    """Z-scores of complete blocks ``u[..., k]``, computed as agent.monitoring.blocks computes them."""
    k = u.shape[-1]
    sums = np.rint(u * FIXED_POINT).astype(np.int64).sum(axis=-1)
    return (sums / FIXED_POINT - k * REFERENCE_MEAN) / (REFERENCE_STD * math.sqrt(k))


class PageHinkleyReplica:
    """river's ``PageHinkley(alpha=1)`` on ``streams`` parallel streams, vectorised.

    Follows river 0.26 step for step (running mean, both cumulative sums, ``_max_decrease``
    starting at -1, the ``min_instances`` gate), plus the wrapper's prelude and its restart after
    a detection, so that it fires on the same blocks as ``PageHinkleyDetector``.
    """

    def __init__(self, streams: int, config: DriftConfig, mode: str, prelude: bool) -> None:
        self.delta = config.ph_allowance * math.sqrt(config.block_size)
        self.threshold = config.ph_threshold
        self.min_instances = config.ph_min_instances
        self.mode = mode
        self.streams = streams
        self.n = np.zeros(streams)
        self.mean = np.zeros(streams)
        self.sum_inc = np.zeros(streams)
        self.min_inc = np.full(streams, np.inf)
        self.sum_dec = np.zeros(streams)
        self.max_dec = np.full(streams, -1.0)
        self.fired = np.zeros(streams, dtype=bool)
        if prelude:
            for i in range(config.reference_blocks):
                self.step(np.full(streams, 1.0 if i % 2 == 0 else -1.0))
            self.fired[:] = False

    def step(self, z: np.ndarray) -> np.ndarray:
        if self.fired.any():
            r = self.fired
            self.n[r] = 0.0
            self.mean[r] = 0.0
            self.sum_inc[r] = 0.0
            self.min_inc[r] = np.inf
            self.sum_dec[r] = 0.0
            self.max_dec[r] = -1.0
        self.n += 1.0
        self.mean += (1.0 / self.n) * (z - self.mean)
        dev = z - self.mean
        self.sum_inc = 1.0 * self.sum_inc + dev - self.delta
        self.sum_dec = 1.0 * self.sum_dec + dev + self.delta
        np.minimum(self.min_inc, self.sum_inc, out=self.min_inc)
        np.maximum(self.max_dec, self.sum_dec, out=self.max_dec)
        up = (self.sum_inc - self.min_inc) > self.threshold
        down = (self.max_dec - self.sum_dec) > self.threshold
        test = up if self.mode == "up" else down if self.mode == "down" else up | down
        self.fired = test & (self.n >= self.min_instances)
        return self.fired


def check_replica(default: DriftConfig) -> str:
    """The replica and river (through the production wrapper) fire on the same events.

    Checked with the defaults and with a touchy configuration that fires hundreds of times, so
    that restarts and the ``min_instances`` gate are exercised too.
    """
    detections = 0
    touchy = dataclasses.replace(default, ph_allowance=0.05, ph_threshold=2.0, ph_min_instances=5)
    for config in (default, touchy):
        detections += _check_replica(config)
    return f"replica of river's PageHinkley: identical detections ({detections}) on 36 streams"


def _check_replica(config: DriftConfig) -> int:
    k = config.block_size
    rng = np.random.default_rng(1)
    n_blocks = 4000
    u = rng.random((n_blocks * k, 6))
    # Steps up and down of various sizes, so that there is plenty to detect.
    for col, (at, shift) in enumerate([(30_000, 0.3), (50_000, -0.4), (70_000, 0.15), (90_000, -0.1)]):
        u[at:, col] = np.clip(u[at:, col] + shift, 0.0, 1.0)
    detections = 0
    for mode in ("up", "down", "both"):
        replica = PageHinkleyReplica(6, config, mode, prelude=True)
        z = block_z(u.T.reshape(6, n_blocks, k))
        ours: list[list[int]] = [[] for _ in range(6)]
        for t in range(n_blocks):
            for s in np.flatnonzero(replica.step(z[:, t])):
                ours[s].append((t + 1) * k - 1)
        for s in range(6):
            detector = PageHinkleyDetector(
                mode,
                allowance=config.ph_allowance,
                threshold=config.ph_threshold,
                min_instances=config.ph_min_instances,
                block_size=k,
                reference_blocks=config.reference_blocks,
            )
            theirs = detector.update_many(u[:, s])
            if theirs != ours[s]:
                raise AssertionError(f"replica != river for mode {mode}, stream {s}")
            detections += len(theirs)
    return detections


# --------------------------------------------------------------------------------------------
# False alarms
# --------------------------------------------------------------------------------------------


def _uniform_blocks(rng: np.random.Generator, blocks: int, streams: int, k: int) -> Iterator[np.ndarray]:
    chunk = max(1, 2_000_000 // (streams * k))
    for start in range(0, blocks, chunk):
        yield block_z(rng.random((min(chunk, blocks - start), streams, k)))


def ph_false_alarms(
    config: DriftConfig, events: float, seed: int, gaussian: bool = False
) -> tuple[int, float]:
    """Alarms of an anchored two-sided Page-Hinkley on ``events`` no-drift events."""
    k = config.block_size
    streams = 1000 if not gaussian else 10_000
    blocks = max(1, int(events / (k * streams)))
    rng = np.random.default_rng(seed)
    replica = PageHinkleyReplica(streams, config, "both", prelude=True)
    alarms = 0
    if gaussian:
        for start in range(0, blocks, 500):
            z = rng.standard_normal((min(500, blocks - start), streams))
            for row in z:
                alarms += int(replica.step(row).sum())
    else:
        for z in _uniform_blocks(rng, blocks, streams, k):
            for row in z:
                alarms += int(replica.step(row).sum())
    return alarms, blocks * streams * k


def ph_fresh_fire_probability(config: DriftConfig, seed: int, runs: int = 100_000) -> float:
    """P(a restarted Page-Hinkley fires within its first 500 blocks), no drift."""
    rng = np.random.default_rng(seed)
    replica = PageHinkleyReplica(runs, config, "both", prelude=False)
    ever = np.zeros(runs, dtype=bool)
    for z in _uniform_blocks(rng, 500, runs, config.block_size):
        for row in z:
            ever |= replica.step(row)
    return float(ever.mean())


def adwin_false_alarms(
    config: DriftConfig, events: float, seed: int, gaussian: bool = False
) -> tuple[int, float]:
    """Alarms of an anchored ADWIN on ``events`` no-drift events (river itself)."""
    k = config.block_size
    rng = np.random.default_rng(seed)
    detector = _adwin(config)
    alarms = 0
    total = 0
    chunk = 2_000_000 // k * k
    while total < events:
        if gaussian:
            # Feed N(0, 1) block z-scores straight to the wrapped river detector.
            for z in rng.standard_normal(chunk // k).tolist():
                alarms += detector._step(z)
        else:
            alarms += len(detector.update_many(rng.random(chunk)))
        total += chunk
    return alarms, total


def adwin_fresh_fire_probability(config: DriftConfig, seed: int, runs: int) -> float:
    rng = np.random.default_rng(seed)
    k = config.block_size
    fired = 0
    for _ in range(runs):
        detector = _adwin(config, reference_blocks=0)
        fired += bool(detector.update_many(rng.random(500 * k)))
    return fired / runs


def _adwin(config: DriftConfig, reference_blocks: int | None = None) -> AdwinDetector:
    return AdwinDetector(
        config.adwin_delta,
        min_window_length=config.adwin_min_window_length,
        grace_period=config.adwin_grace_period,
        block_size=config.block_size,
        reference_blocks=config.reference_blocks if reference_blocks is None else reference_blocks,
    )


def _ph(config: DriftConfig) -> PageHinkleyDetector:
    return PageHinkleyDetector(
        "both",
        allowance=config.ph_allowance,
        threshold=config.ph_threshold,
        min_instances=config.ph_min_instances,
        block_size=config.block_size,
        reference_blocks=config.reference_blocks,
    )


# --------------------------------------------------------------------------------------------
# Delays
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Delays:
    delays: list[int]
    pre_change: int  # detections before the change (false alarms)
    bursts: int  # detections after the first one following the change

    def summary(self) -> str:
        d = np.array(self.delays)
        missed = int((d >= NEVER).sum())
        p = np.percentile(d, [50, 90, 99])
        cells = [f"{int(v):>6}" if v < NEVER else "  miss" for v in p]
        return f"{cells[0]} {cells[1]} {cells[2]}  missed {missed:>3}/{d.size}"


def _shift_streams(
    config: DriftConfig, shift: float, reps: int, seed: int, warm: int = 20_000, post: int = 20_000
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reference quantiles, a (warm + block + post, reps) matrix and each column's change index."""
    rng = np.random.default_rng(seed)
    quantiles = np.quantile(rng.standard_normal(100_000), PROBS)
    n = warm + config.block_size + post
    data = rng.standard_normal((n, reps))
    change = warm + rng.integers(0, config.block_size, reps)
    data[np.arange(n)[:, None] >= change[None, :]] += shift
    return quantiles, data, change


def _collect(events_by_column: list[list[int]], change: np.ndarray) -> Delays:
    delays, pre, bursts = [], 0, 0
    for events, at in zip(events_by_column, change.tolist(), strict=True):
        before = [e for e in events if e < at]
        after = [e for e in events if e >= at]
        pre += len(before)
        bursts += max(0, len(after) - 1)
        delays.append(after[0] - at + 1 if after else NEVER)
    return Delays(delays, pre, bursts)


def monitor_delays(config: DriftConfig, shift: float, reps: int, seed: int) -> Delays:
    """Delays of a FeatureDriftMonitor (all detectors), one replicate per column."""
    quantiles, data, change = _shift_streams(config, shift, reps, seed)
    return _collect(_monitor_events(config, quantiles, data), change)


def _monitor_events(config: DriftConfig, quantiles: np.ndarray, data: np.ndarray) -> list[list[int]]:
    """Detection event indices per column of ``data`` (one replicate each), in batches of 500."""
    reps = data.shape[1]
    monitor = FeatureDriftMonitor.from_quantiles(
        [f"r{i}" for i in range(reps)], np.tile(quantiles, (reps, 1)), config=config
    )
    events: list[list[int]] = [[] for _ in range(reps)]
    for lo in range(0, data.shape[0], 500):
        for d in monitor.update_batch(data[lo : lo + 500]):
            events[d.column].append(d.event_index)
    return events


def detector_delays(
    config: DriftConfig, make: Callable[[DriftConfig], Any], shift: float, reps: int, seed: int
) -> Delays:
    """Delays of one detector wrapper alone, on the same streams as monitor_delays."""
    quantiles, data, change = _shift_streams(config, shift, reps, seed)
    monitor = FeatureDriftMonitor.from_quantiles(["x"], quantiles[None, :], config=config)
    transform = monitor.reference.columns[0]
    events = [make(config).update_many(transform.transform(data[:, r])) for r in range(reps)]
    return _collect(events, change)


def drifted_from_start(config: DriftConfig, reps: int, seed: int) -> Delays:
    """Anchoring: N(0.5, 1) from the first event; delay counted from event 0."""
    quantiles, data, _ = _shift_streams(config, 0.0, reps, seed, warm=0)
    data += 0.5
    return _collect(_monitor_events(config, quantiles, data), np.zeros(reps, dtype=np.int64))


# --------------------------------------------------------------------------------------------
# Error monitor
# --------------------------------------------------------------------------------------------


def error_section(quick: bool) -> None:
    events = 4e6 if quick else 20e6
    reps = 60 if quick else 300
    print("\n## ErrorMonitor (block sizes from the reference; PH and ADWIN two-sided, rises counted)")
    print(f"{'stream':<44}{'block':>6}{'alarms':>8}{'events':>8}{'per 1e6':>9}")
    stationary: list[tuple[str, ErrorMonitor, Callable[[np.random.Generator, int], np.ndarray], float]] = [
        (f"classification, {p:.1%} error", ErrorMonitor.for_classification(p), _bernoulli(p), events)
        for p in (0.005, 0.02, 0.1, 0.3, 0.5)
    ]
    stationary += [
        (
            "regression, Gaussian errors",
            ErrorMonitor.for_regression(math.sqrt(2 / math.pi)),
            lambda rng, n: rng.standard_normal(n),
            events,
        ),
        (
            # |Laplace(1)| is Exp(1): MAE 1 and sd 1.
            "regression, Laplace errors, sd given",
            ErrorMonitor.for_regression(1.0, 1.0),
            lambda rng, n: rng.laplace(0.0, 1.0, n),
            events,
        ),
        (
            # The Gaussian default understates the spread of heavier-tailed errors.
            "regression, Laplace errors, sd not given",
            ErrorMonitor.for_regression(1.0),
            lambda rng, n: rng.laplace(0.0, 1.0, n),
            events / 4,
        ),
    ]
    for seed, (label, monitor, draw, n_events) in enumerate(stationary, start=20):
        alarms = _count_errors(monitor, draw, n_events, seed)
        print(
            f"{label:<44}{monitor.block_size:>6}{alarms:>8}{n_events / 1e6:>7.0f}M"
            f"{_rate(alarms, n_events):>9}"
        )

    print(f"\nDelay (events after the change), {reps} replicates, 20,000 + U[0, block) events before:")
    print(f"{'change':<44}{'median':>6} {'p90':>6} {'p99':>6}")
    rng = np.random.default_rng(40)
    rows = {
        "classification 10% -> 30%": (
            lambda: ErrorMonitor.for_classification(0.1),
            lambda n: rng.random(n) < 0.1,
            lambda n: rng.random(n) < 0.3,
        ),
        "regression MAE x1.5 (Gaussian errors)": (
            lambda: ErrorMonitor.for_regression(math.sqrt(2 / math.pi)),
            lambda n: rng.standard_normal(n),
            lambda n: rng.normal(0.0, 1.5, n),
        ),
    }
    for label, (make, before, after) in rows.items():
        found, changes = [], []
        for _ in range(reps):
            monitor = make()
            at = 20_000 + int(rng.integers(0, monitor.block_size))
            errors = np.r_[before(at), after(20_000)].astype(float)
            found.append([d.event_index for d in monitor.update_many(errors)])
            changes.append(at)
        print(f"{label:<44}{_collect(found, np.array(changes)).summary()}")

    print("\nriver's binary detectors fed every 0/1 error (for comparison; not used by ErrorMonitor):")
    print(
        f"{'detector':<26}{'us/event':>9}{'FA/1e6 @10%':>12}{'FA/1e6 @30%':>12}"
        f"{'10->30% after 20k':>18}{'after 300k':>11}"
    )
    makers: dict[str, tuple[Callable[[], Any], bool]] = {
        "DDM": (binary.DDM, False),
        "EDDM": (binary.EDDM, False),
        "HDDM_A": (binary.HDDMA, False),
        "HDDM_W": (binary.HDDMW, False),
        "FHDDM (fed 1 - error)": (binary.FHDDM, True),  # it watches for a *drop* in its input
    }
    n_stationary = 500_000 if quick else 2_000_000
    for name, (make, flip) in makers.items():
        rng = np.random.default_rng(50)
        rates, cost = [], 0.0
        for p in (0.1, 0.3):
            stream = (rng.random(n_stationary) < p).astype(int)
            detector = make()
            start = time.perf_counter()
            fired = 0
            for x in (1 - stream if flip else stream).tolist():
                detector.update(x)
                fired += detector.drift_detected
            cost = (time.perf_counter() - start) / n_stationary * 1e6
            rates.append(_rate(fired, n_stationary))
        cells = []
        for warm in (20_000, 300_000):
            delays = []
            for _ in range(10 if quick else 30):
                detector = make()
                pre = (rng.random(warm) < 0.1).astype(int)
                post = (rng.random(20_000) < 0.3).astype(int)
                for x in (1 - pre if flip else pre).tolist():
                    detector.update(x)
                delay = NEVER
                for i, x in enumerate((1 - post if flip else post).tolist()):
                    detector.update(x)
                    if detector.drift_detected:
                        delay = i + 1
                        break
                delays.append(delay)
            med = statistics.median(delays)
            cells.append(f"{int(med)}" if med < NEVER else "miss")
        print(f"{name:<26}{cost:>9.2f}{rates[0]:>12}{rates[1]:>12}{cells[0]:>18}{cells[1]:>11}")


def _bernoulli(p: float) -> Callable[[np.random.Generator, int], np.ndarray]:
    return lambda rng, n: (rng.random(n) < p).astype(float)


def _count_errors(
    monitor: ErrorMonitor, draw: Callable[[np.random.Generator, int], np.ndarray], events: float, seed: int
) -> int:
    rng = np.random.default_rng(seed)
    alarms = 0
    for _ in range(int(events // 1_000_000)):
        alarms += len(monitor.update_many(draw(rng, 1_000_000)))
    return alarms


# --------------------------------------------------------------------------------------------
# False-alarm curves (for agent.monitoring.budget)
# --------------------------------------------------------------------------------------------

# Page-Hinkley thresholds and ADWIN deltas where alarms are countable in minutes: each point runs
# until it has counted TARGET_ALARMS or reached its event cap, and the fit extrapolates beyond.
PH_CURVE = [(3.0, 2e9), (3.5, 5e9), (4.0, 1e10), (4.5, 2e10), (5.0, 6e10), (5.5, 1e11), (6.0, 1.5e11)]
ADWIN_CURVE = [
    (3e-2, 2e8),
    (1e-2, 4e8),
    (3e-3, 8e8),
    (1e-3, 2e9),
    (3e-4, 3.2e9),
    (1e-4, 3.2e9),
    (3e-5, 6.4e9),
    (1e-5, 1e10),
]
# ADWIN's curve bends: steeper than a power of delta above 1e-3 (about delta**1.1 over the whole
# range). Budgets land below 1e-3 (agent.monitoring.budget bounds delta there), so only those
# points are fitted; the flatter slope also errs on the side of more alarms when extrapolating.
ADWIN_FIT_MAX_DELTA = 1e-3
TARGET_ALARMS = 200


def ph_curve_point(threshold: float, max_events: float, seed: int) -> tuple[int, float]:
    """Alarms of anchored two-sided Page-Hinkleys (numpy replica) on Gaussian block z-scores."""
    config = dataclasses.replace(DriftConfig(), ph_threshold=threshold)
    streams = 50_000
    replica = PageHinkleyReplica(streams, config, "both", prelude=True)
    rng = np.random.default_rng(seed)
    alarms, blocks = 0, 0
    while alarms < TARGET_ALARMS and blocks * streams * config.block_size < max_events:
        for row in rng.standard_normal((100, streams)):
            alarms += int(replica.step(row).sum())
        blocks += 100
    return alarms, blocks * streams * config.block_size


def adwin_curve_point(delta: float, max_events: float, seed: int) -> tuple[int, float]:
    """Alarms of anchored ADWINs (river, through the wrapper) on Gaussian block z-scores.

    One detector per 2**20 blocks (33.5M events, days of a busy model's stream), so that the
    window grows as long as it does in serving.
    """
    config = dataclasses.replace(DriftConfig(), adwin_delta=delta)
    k = config.block_size
    rng = np.random.default_rng(seed)
    alarms, blocks, per_detector = 0, 0, 1 << 20
    detector = _adwin(config)
    while alarms < TARGET_ALARMS and blocks * k < max_events:
        if blocks and blocks % per_detector == 0:
            detector = _adwin(config)
        for z in rng.standard_normal(1 << 16).tolist():
            alarms += detector._step(z)
        blocks += 1 << 16
    return alarms, blocks * k


def _curve_cells(alarms: int, exposure: float, fit: float, seconds: float) -> str:
    return f"{alarms:>8}{exposure:>10.2e}{_rate(alarms, exposure):>10}{fit:>10.5f}{seconds:>9.0f}"


def fit_log_rate(xs: list[float], alarms: list[int], exposures: list[float]) -> tuple[float, float]:
    """Weighted least squares of ln(alarms per 1e6 events) = a + b x; weight = alarms (the inverse
    variance of a Poisson count's log). Points without alarms are left out of the fit."""
    x = np.array([xi for xi, n in zip(xs, alarms, strict=True) if n > 0])
    n = np.array([ni for ni in alarms if ni > 0], dtype=np.float64)
    e = np.array([ei for ei, ni in zip(exposures, alarms, strict=True) if ni > 0])
    y = np.log(n / e * 1e6)
    b, a = np.polyfit(x, y, 1, w=np.sqrt(n))
    return float(a), float(b)


def curves_section(quick: bool) -> None:
    scale = 0.05 if quick else 1.0
    print(
        f"\n## False-alarm curves for agent.monitoring.budget (Gaussian block z-scores, anchored, "
        f"until {TARGET_ALARMS} alarms or the cap)"
    )
    print(f"{'ph_threshold':>12}{'alarms':>8}{'events':>10}{'per 1e6':>10}{'fit':>10}{'seconds':>9}")
    rows = []
    for i, (threshold, cap) in enumerate(PH_CURVE):
        started = time.perf_counter()
        alarms, exposure = ph_curve_point(threshold, cap * scale, seed=100 + i)
        rows.append((threshold, alarms, exposure, time.perf_counter() - started))
        print(f"  (threshold {threshold}: {alarms} alarms in {exposure:.2e} events)", flush=True)
    a, b = fit_log_rate([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
    for threshold, alarms, exposure, seconds in rows:
        fit = math.exp(a + b * threshold)
        print(f"{threshold:>12}{_curve_cells(alarms, exposure, fit, seconds)}")
    print(f"Page-Hinkley fit: ln(per 1e6) = {a:.4f} {b:+.4f} * threshold (x{math.exp(-b):.1f} fewer per +1)")
    print(f"\n{'adwin_delta':>12}{'alarms':>8}{'events':>10}{'per 1e6':>10}{'fit':>10}{'seconds':>9}")
    rows = []
    for i, (delta, cap) in enumerate(ADWIN_CURVE):
        started = time.perf_counter()
        alarms, exposure = adwin_curve_point(delta, cap * scale, seed=200 + i)
        rows.append((delta, alarms, exposure, time.perf_counter() - started))
        print(f"  (delta {delta:.0e}: {alarms} alarms in {exposure:.2e} events)", flush=True)
    fitted = [r for r in rows if r[0] <= ADWIN_FIT_MAX_DELTA]
    c, e = fit_log_rate([math.log(r[0]) for r in fitted], [r[1] for r in fitted], [r[2] for r in fitted])
    for delta, alarms, exposure, seconds in rows:
        fit = math.exp(c + e * math.log(delta))
        print(f"{delta:>12.0e}{_curve_cells(alarms, exposure, fit, seconds)}")
    print(f"ADWIN fit (delta <= {ADWIN_FIT_MAX_DELTA:g}): ln(per 1e6) = {c:.4f} {e:+.4f} * ln(delta)")


# --------------------------------------------------------------------------------------------
# Whole models within their budget
# --------------------------------------------------------------------------------------------

# One categorical feature per model (mapped, as ModelMonitor maps it, by the category's index).
CATEGORIES = {0.0: 0.4, 1.0: 0.3, 2.0: 0.2, 3.0: 0.1}
# (features, budget per 1e6 events, events): the default budget over as many events as a few
# minutes allow (enough to count alarms), and larger budgets, as large as ADWIN's bound on delta
# allows for the model's width (budget <= 0.39 * streams), to count more alarms quickly.
MODEL_RUNS = [
    (20, 5.0, 1e7),
    (2, 1.0, 3e7),
    (20, 1.0, 3e7),
    (100, 30.0, 2e6),
    (20, 0.1, 3e7),
]
"""(features, budget per 1e6, events). Output: bench/results/calibrate_models_merged.txt (the monitor
with every statistic of issue 14: location, spread, tails, shares); bench/results/calibrate_models.txt
is the earlier run of one stream per column."""


def model_monitor(n_features: int, config: DriftConfig, seed: int) -> FeatureDriftMonitor:
    """A model's feature monitor as serving builds it: ``n_features - 1`` numeric features (reference:
    101 quantiles of 100,000 N(0, 1) draws), one categorical feature and the output (reference
    quantiles of 100,000 Uniform(0, 1) draws)."""
    rng = np.random.default_rng(seed)
    quantiles = np.quantile(rng.standard_normal((100_000, n_features - 1)), PROBS, axis=0).T
    columns: list[ColumnTransform] = [PercentileTransform(q) for q in quantiles]
    columns.append(CategoricalTransform(CATEGORIES))
    return FeatureDriftMonitor(
        [f"x{i}" for i in range(n_features)],
        ReferenceTransform(columns),
        output_reference=PercentileTransform(np.quantile(rng.random(100_000), PROBS)),
        output_name="prediction",
        config=config,
    )


def model_false_alarms(
    n_features: int, per_million: float, events: float, seed: int
) -> tuple[BudgetSplit, int, int]:
    """Detections of a whole model's monitor, built within ``per_million``, on stationary events."""
    monitor, split = within_budget(lambda config: model_monitor(n_features, config, seed), per_million)
    rng = np.random.default_rng(seed + 1)
    cats = np.array(list(CATEGORIES))
    probs = np.array(list(CATEGORIES.values()))
    batch, chunk = 500, 200
    alarms, seen = 0, 0
    last_report = time.perf_counter()
    while seen < events:
        x = rng.standard_normal((chunk * batch, n_features))
        x[:, -1] = rng.choice(cats, size=chunk * batch, p=probs)
        out = rng.random(chunk * batch)
        for lo in range(0, chunk * batch, batch):
            alarms += len(monitor.update_batch(x[lo : lo + batch], out[lo : lo + batch]))
        seen += chunk * batch
        if time.perf_counter() - last_report > 60:
            last_report = time.perf_counter()
            print(f"  ({n_features} features, budget {per_million:g}: {seen:.1e} events, {alarms} alarms)")
    return split, alarms, seen


def models_section(quick: bool) -> None:
    scale = 0.02 if quick else 1.0
    print(
        "\n## Whole models within their false-alarm budget: FeatureDriftMonitor built by "
        "agent.monitoring.budget.within_budget (as ModelMonitor builds it), stationary events"
    )
    print(
        f"{'features':>8}{'streams':>8}{'budget':>8}{'ph_thr':>7}{'adwin_delta':>12}{'clipped':>9}"
        f"{'predicted':>10}{'events':>9}{'alarms':>7}{'per 1e6':>9}{'95% CI':>17}{'seconds':>8}"
    )
    for i, (n_features, per_million, events) in enumerate(MODEL_RUNS):
        started = time.perf_counter()
        split, alarms, seen = model_false_alarms(n_features, per_million, events * scale, seed=500 + 2 * i)
        c = split.config
        lo, hi = _poisson_ci(alarms)
        ci = f"[{lo / seen * 1e6:.3f}, {hi / seen * 1e6:.3f}]"
        print(
            f"{n_features:>8}{split.n_streams:>8}{per_million:>8g}{c.ph_threshold:>7.2f}{c.adwin_delta:>12.2e}"
            f"{'yes' if split.clipped else 'no':>9}{split.expected_per_million:>10.3f}{seen:>9.1e}{alarms:>7}"
            f"{_rate(alarms, seen):>9}{ci:>17}{time.perf_counter() - started:>8.0f}",
            flush=True,
        )
    reps = 100 if quick else 400
    print(
        f"\nDelay of a step (events after the change, {reps} replicates) at the default budget (1 per 1e6), "
        "beside DriftConfig()'s defaults"
    )
    delays = f"{'0.5 sd: median  p90  p99':<38}{'0.25 sd':>8}{'1 sd':>6}"
    print(f"{'features':>8}{'ph_thr':>7}{'adwin_delta':>12}   {delays}")
    configs = [("defaults", DriftConfig())] + [
        (str(d), split_budget(1.0, model_monitor(d, DriftConfig(), 0).n_streams).config) for d in (2, 20, 100)
    ]
    for label, config in configs:
        d = {s: monitor_delays(config, s, reps if s == 0.5 else reps // 2, seed=9) for s in (0.25, 0.5, 1.0)}
        print(
            f"{label:>8}{config.ph_threshold:>7.2f}{config.adwin_delta:>12.2e}   {d[0.5].summary():<38}"
            f"{_median(d[0.25]):>8}{_median(d[1.0]):>6}",
            flush=True,
        )


def _poisson_ci(n: int) -> tuple[float, float]:
    """Exact (Garwood) 95% interval of a Poisson count, from the chi-square quantiles."""
    lo = 0.0 if n == 0 else float(chi2.ppf(0.025, 2 * n)) / 2
    return lo, float(chi2.ppf(0.975, 2 * n + 2)) / 2


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def _rate(alarms: int, events: float) -> str:
    # With no alarm, the 95% upper bound of a Poisson rate is 3 / exposure.
    if alarms == 0:
        return f"<{3 / events * 1e6:.4f}"
    return f"{alarms / events * 1e6:.4f}"


SECTIONS = ("detectors", "errors", "curves", "models")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller samples, no long runs")
    parser.add_argument(
        "--sections",
        default="detectors,errors",
        help=f"comma-separated, among {', '.join(SECTIONS)} (default: detectors,errors)",
    )
    args = parser.parse_args()
    sections = args.sections.split(",")
    if unknown := set(sections) - set(SECTIONS):
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    started = time.perf_counter()
    if "detectors" in sections:
        detectors_section(args.quick)
    if "errors" in sections:
        error_section(args.quick)
    if "curves" in sections:
        curves_section(args.quick)
    if "models" in sections:
        models_section(args.quick)
    print(f"\n(calibration took {time.perf_counter() - started:.0f} s)")


def detectors_section(quick: bool) -> None:
    events = 8e6 if quick else 32e6
    reps = 100 if quick else 400
    chosen = DriftConfig()

    print(check_replica(chosen))
    header = f"{'FA/1e6':>9}   {'0.5 sd: median  p90  p99':<38}{'0.25 sd median':>14}{'1 sd median':>12}"
    print(
        f"\n## Page-Hinkley (two-sided) alone: false alarms on {events / 1e6:.0f}M uniform events, "
        f"delays over {reps} replicates"
    )
    print(f"{'block':>5} {'allow':>5} {'thresh':>6} {header}")
    ph_grid = [(32, 0.25, 5.0), (32, 0.25, 6.0), (32, 0.25, 7.0), (64, 0.2, 4.5), (64, 0.2, 5.0)]
    for k, allowance, threshold in ph_grid:
        config = dataclasses.replace(chosen, block_size=k, ph_allowance=allowance, ph_threshold=threshold)
        alarms, exposure = ph_false_alarms(config, events, seed=2)
        print(f"{k:>5} {allowance:>5} {threshold:>6} {_row(config, _ph, alarms, exposure, reps, chosen)}")

    print(
        f"\n## ADWIN alone: false alarms on {events / 1e6:.0f}M uniform events, delays over {reps} replicates"
    )
    print(f"{'block':>5} {'delta':>7} {header}")
    for k, delta in [(32, 1e-5), (32, 1e-6), (32, 1e-7), (64, 1e-6)]:
        config = dataclasses.replace(chosen, block_size=k, adwin_delta=delta)
        alarms, exposure = adwin_false_alarms(config, events, seed=4)
        print(f"{k:>5} {delta:>7.0e} {_row(config, _adwin, alarms, exposure, reps, chosen)}")

    print(f"\n## Defaults: {chosen}")
    if not quick:
        alarms, exposure = ph_false_alarms(chosen, 1e10, seed=5, gaussian=True)
        print(
            f"Page-Hinkley, {exposure / 1e9:.0f}e9 events (Gaussian blocks): "
            f"{_rate(alarms, exposure)} per 1e6 ({alarms} alarms)"
        )
        alarms, exposure = adwin_false_alarms(chosen, 3.2e8, seed=6, gaussian=True)
        print(
            f"ADWIN, {exposure / 1e6:.0f}M events (Gaussian blocks): "
            f"{_rate(alarms, exposure)} per 1e6 ({alarms} alarms)"
        )
    p_ph = ph_fresh_fire_probability(chosen, seed=7, runs=20_000 if quick else 100_000)
    p_adwin = adwin_fresh_fire_probability(chosen, seed=8, runs=200 if quick else 2000)
    print(f"P(fire within 500 blocks of a restart, no drift): Page-Hinkley {p_ph:.5f}, ADWIN {p_adwin:.4f}")
    print(f"\nFeatureDriftMonitor (all detectors), {reps} replicates: delay in events after the change")
    print(
        f"{'scenario':<34}{'median':>6} {'p90':>6} {'p99':>6}              {'pre-change FA':>13}{'bursts':>8}"
    )
    for shift in (0.25, 0.5, 1.0):
        d = monitor_delays(chosen, shift, reps, seed=9)
        print(f"{f'step of {shift} sd at 20,000':<34}{d.summary()}{d.pre_change:>13}{d.bursts:>8}")
    d = drifted_from_start(chosen, reps, seed=10)
    print(f"{'0.5 sd from the first event':<34}{d.summary()}{d.pre_change:>13}{d.bursts:>8}")


def _row(
    config: DriftConfig,
    make: Callable[[DriftConfig], Any],
    alarms: int,
    exposure: float,
    reps: int,
    chosen: DriftConfig,
) -> str:
    d = {
        s: detector_delays(config, make, s, reps if s == 0.5 else reps // 2, seed=3) for s in (0.25, 0.5, 1.0)
    }
    mark = " <- default" if config == chosen else ""
    delays = f"{d[0.5].summary():<38}{_median(d[0.25]):>14}{_median(d[1.0]):>12}"
    return f"{_rate(alarms, exposure):>9}   {delays}{mark}"


def _median(d: Delays) -> str:
    med = statistics.median(d.delays)
    return f"{int(med)}" if med < NEVER else "miss"


if __name__ == "__main__":
    main()
