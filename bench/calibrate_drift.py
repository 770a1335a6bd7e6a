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

Run: ``.venv/bin/python -m bench.calibrate_drift [--quick]`` (about 10 minutes in full).
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

from agent.monitoring import (
    REFERENCE_MEAN,
    REFERENCE_STD,
    AdwinDetector,
    DriftConfig,
    ErrorMonitor,
    FeatureDriftMonitor,
    PageHinkleyDetector,
)

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
    print("\n## ErrorMonitor (block sizes from the reference; PH up + ADWIN)")
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
# Main
# --------------------------------------------------------------------------------------------


def _rate(alarms: int, events: float) -> str:
    # With no alarm, the 95% upper bound of a Poisson rate is 3 / exposure.
    if alarms == 0:
        return f"<{3 / events * 1e6:.4f}"
    return f"{alarms / events * 1e6:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller samples, no long runs (~2 min)")
    args = parser.parse_args()
    events = 8e6 if args.quick else 32e6
    reps = 100 if args.quick else 400
    chosen = DriftConfig()
    started = time.perf_counter()

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
    if not args.quick:
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
    p_ph = ph_fresh_fire_probability(chosen, seed=7, runs=20_000 if args.quick else 100_000)
    p_adwin = adwin_fresh_fire_probability(chosen, seed=8, runs=200 if args.quick else 2000)
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

    error_section(args.quick)
    print(f"\n(calibration took {time.perf_counter() - started:.0f} s)")


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
