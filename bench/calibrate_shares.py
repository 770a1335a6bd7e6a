"""False alarms of the category-share streams: Bernoulli blocks against the Gaussian calibration.

A category's share stream is the indicator ``1[x == c]``, standardised with its reference share
``p`` (mean ``p``, sd ``sqrt(p (1 - p))``). A block of ``k`` events then sums to a Binomial(k, p),
whose z-score is skewed (``(1 - 2p) / sqrt(k p (1 - p))``) and discrete, where the detectors'
thresholds were set for near-Gaussian z-scores (``bench/calibrate_drift.py``). This script measures,
with fixed seeds, the false alarms per 1e6 no-drift events of:

* an anchored two-sided Page-Hinkley (the numpy replica of river's, ``bench.calibrate_drift``) at the
  default threshold and at lower thresholds, where alarms are frequent enough to compare rates;
* an anchored ADWIN (river itself, through ``AdwinDetector``) at the default delta;

for Binomial(k, p) block sums with several ``p`` and block sizes, beside N(0, 1) block z-scores (the
calibration's long runs) on the same number of events. A share stream is acceptable when its rate is
no higher than the Gaussian one at every threshold measured; the floor on a category's share
(:data:`agent.monitoring.features.SHARE_FLOOR`) is chosen from this table.

``--delays`` measures instead how long the new statistics take to see the changes they are for:
each replicate is one column of one :class:`~agent.monitoring.features.FeatureDriftMonitor`
(reference N(0, 1) as 101 quantiles, or a 40/35/25 category mix), 20,000 + U[0, 32) events as the
reference, then the change; the delay is the number of changed events up to the one completing the
block on which the column's first detection fired (any measure), and which measure fired.

``--stationary`` runs a whole monitor with every kind of stream on stationary data and counts its
detections: 20 standard-normal features, a 40/35/25 categorical one, a Beta(5, 2) output and a
60/30/10 predicted class (71 streams), ``--stationary-events`` events in batches of 2,000.

Run: ``.venv/bin/python -m bench.calibrate_shares [--events 1e8] [--ph-events 1e9]``, or
``--delays [--reps 400]``, or ``--stationary [--stationary-events 1e7]``
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time

import numpy as np

from agent.monitoring import AdwinDetector, DriftConfig
from agent.monitoring.blocks import binomial_scores
from bench.calibrate_drift import PageHinkleyReplica

STREAMS = 10_000


SCORES = False  # set by --scores: normal scores of the counts instead of plain z-scores


def _z_blocks(rng: np.random.Generator, p: float | None, k: int, rows: int) -> np.ndarray:
    """``rows`` x STREAMS block z-scores: Binomial(k, p) sums standardised, or N(0, 1) if p is None."""
    if p is None:
        return rng.standard_normal((rows, STREAMS))
    counts = rng.binomial(k, p, size=(rows, STREAMS))
    return _standardise(counts, k, p)


def _standardise(counts: np.ndarray, k: int, p: float) -> np.ndarray:
    if SCORES:
        # As agent.monitoring.columns does for share streams: the normal score of the count.
        return binomial_scores(k, p)[k][counts]
    # As agent.monitoring.blocks.z_scores: (sum - n mean) / (std sqrt(n)).
    return (counts - k * p) / (math.sqrt(p * (1 - p)) * math.sqrt(k))


def ph_alarms(config: DriftConfig, p: float | None, events: float, seed: int) -> tuple[int, float]:
    k = config.block_size
    blocks = max(1, int(events / (k * STREAMS)))
    rng = np.random.default_rng(seed)
    replica = PageHinkleyReplica(STREAMS, config, "both", prelude=True)
    alarms = 0
    for start in range(0, blocks, 200):
        for row in _z_blocks(rng, p, k, min(200, blocks - start)):
            alarms += int(replica.step(row).sum())
    return alarms, blocks * STREAMS * k


def adwin_alarms(config: DriftConfig, p: float | None, events: float, seed: int) -> tuple[int, float]:
    k = config.block_size
    rng = np.random.default_rng(seed)
    detector = AdwinDetector(
        config.adwin_delta,
        min_window_length=config.adwin_min_window_length,
        grace_period=config.adwin_grace_period,
        block_size=k,
        reference_blocks=config.reference_blocks,
    )
    blocks = int(events / k)
    alarms = 0
    step = detector._step
    for start in range(0, blocks, 100_000):
        rows = min(100_000, blocks - start)
        z = rng.standard_normal(rows) if p is None else _standardise(rng.binomial(k, p, rows), k, p)
        for zi in z.tolist():
            alarms += step(zi)
    return alarms, blocks * k


def _changed(name: str, rng: np.random.Generator, n: int) -> np.ndarray:
    z = rng.standard_normal(n)
    if name == "location +0.5 sd":
        return z + 0.5
    if name.startswith("spread x"):
        return z * float(name.removeprefix("spread x"))
    if name == "bimodal (same median)":
        return np.where(rng.random(n) < 0.5, -1.2, 1.2) + 0.4 * z
    if name == "heavier tails (12 % x3)":
        return z * np.where(rng.random(n) < 0.12, 3.0, 1.0)
    if name == "beyond the range (10 %)":
        return np.where(rng.random(n) < 0.1, np.where(rng.random(n) < 0.5, -6.0, 6.0), z)
    raise ValueError(name)


NUMERIC_CHANGES = [
    "location +0.5 sd",
    "spread x1.5",
    "spread x2",
    "spread x0.5",
    "spread x1.25",
    "bimodal (same median)",
    "heavier tails (12 % x3)",
    "beyond the range (10 %)",
]


def delays(reps: int, seed: int) -> None:
    from agent.monitoring import (
        CategoricalTransform,
        FeatureDriftMonitor,
        PercentileTransform,
        ReferenceTransform,
    )

    rng = np.random.default_rng(seed)
    quantiles = np.quantile(rng.standard_normal(100_000), np.linspace(0, 1, 101))
    before, after = 20_000, 20_000
    print(f"Delays, {reps} replicates (events after the change; 'miss': none within {after:,})")
    print(f"{'change':<30}{'median':>8}{'p90':>8}{'missed':>8}   measures that fired first")
    scenarios: list[tuple[str, list[float] | None]] = [(name, None) for name in NUMERIC_CHANGES]
    scenarios.append(("mix 40/35/25 -> 30/55/15", [0.3, 0.55, 0.15]))
    for name, mix in scenarios:
        offsets = rng.integers(0, 32, reps)
        n = before + 32 + after
        if mix is None:
            monitor = FeatureDriftMonitor(
                [f"c{i}" for i in range(reps)], ReferenceTransform([PercentileTransform(quantiles)] * reps)
            )
            data = rng.standard_normal((n, reps))
            for i, off in enumerate(offsets):
                start = before + int(off)
                data[start:, i] = _changed(name, rng, n - start)
        else:
            monitor = FeatureDriftMonitor(
                [f"c{i}" for i in range(reps)],
                ReferenceTransform([CategoricalTransform({0.0: 0.4, 1.0: 0.35, 2.0: 0.25})] * reps),
            )
            data = rng.choice(3, (n, reps), p=[0.4, 0.35, 0.25]).astype(np.float64)
            for i, off in enumerate(offsets):
                start = before + int(off)
                data[start:, i] = rng.choice(3, n - start, p=mix)
        first: dict[int, tuple[int, str]] = {}
        for lo in range(0, n, 1000):
            for d in monitor.update_batch(data[lo : lo + 1000]):
                first.setdefault(d.column, (d.event_index, d.measure))
        delay, measures, false = [], {}, 0
        for i, off in enumerate(offsets):
            start = before + int(off)
            hit = first.get(i)
            if hit is not None and hit[0] < start:
                false += 1
                continue
            if hit is None:
                delay.append(math.inf)
                continue
            delay.append(hit[0] - start + 1)
            measures[hit[1]] = measures.get(hit[1], 0) + 1
        finite = np.array(delay)
        med, p90 = np.median(finite), np.quantile(finite, 0.9)
        shown = ", ".join(f"{m} {c}" for m, c in sorted(measures.items(), key=lambda kv: -kv[1]))
        fmt = lambda v: "miss" if not math.isfinite(v) else f"{v:.0f}"  # noqa: E731
        missed = int(np.sum(~np.isfinite(finite)))
        print(
            f"{name:<30}{fmt(med):>8}{fmt(p90):>8}{missed:>8}   {shown}"
            + (f" ({false} before)" if false else "")
        )


def stationary(events: int, seed: int) -> None:
    from agent.monitoring import (
        CategoricalTransform,
        FeatureDriftMonitor,
        PercentileTransform,
        ReferenceTransform,
    )

    rng = np.random.default_rng(seed)
    probs = np.linspace(0, 1, 101)
    columns: list[PercentileTransform | CategoricalTransform] = [
        PercentileTransform(np.quantile(rng.standard_normal(100_000), probs)) for _ in range(20)
    ]
    columns.append(CategoricalTransform({0.0: 0.4, 1.0: 0.35, 2.0: 0.25}))
    monitor = FeatureDriftMonitor(
        [f"f{i}" for i in range(21)],
        ReferenceTransform(columns),
        output_reference=PercentileTransform(np.quantile(rng.beta(5, 2, 100_000), probs)),
        class_reference=CategoricalTransform({0.0: 0.6, 1.0: 0.3, 2.0: 0.1}),
    )
    found = []
    chunk = 100_000
    for _ in range(events // chunk):
        x = np.column_stack([rng.standard_normal((chunk, 20)), rng.choice(3, chunk, p=[0.4, 0.35, 0.25])])
        outputs, classes = rng.beta(5, 2, chunk), rng.choice(3, chunk, p=[0.6, 0.3, 0.1])
        for lo in range(0, chunk, 2000):
            found += monitor.update_batch(x[lo : lo + 2000], outputs[lo : lo + 2000], classes[lo : lo + 2000])
    streams = len(monitor.streams)
    exposure = streams * monitor.n_events
    print(f"{streams} streams, {monitor.n_events:,} stationary events ({exposure:.2g} stream-events)")
    print(f"detections: {len(found)}", [(d.name, d.measure, d.detector, d.event_index) for d in found])


def _rate(alarms: int, events: float) -> str:
    if alarms == 0:
        return f"<{3 / events * 1e6:.4f}"
    return f"{alarms / events * 1e6:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=float, default=1e8, help="events per ADWIN run")
    parser.add_argument("--ph-events", type=float, default=1e9, help="events per Page-Hinkley run")
    parser.add_argument("--shares", type=str, default="0.05,0.1,0.15,0.2,0.25,0.5")
    parser.add_argument("--blocks", type=str, default="32,64")
    parser.add_argument("--no-adwin", action="store_true")
    parser.add_argument(
        "--adwin-deltas", type=str, default="1e-2,1e-6", help="ADWIN deltas (a loose one: comparable rates)"
    )
    parser.add_argument("--scores", action="store_true", help="normal scores of the counts (production)")
    parser.add_argument("--delays", action="store_true", help="detection delays instead of false alarms")
    parser.add_argument("--reps", type=int, default=400)
    parser.add_argument("--stationary", action="store_true", help="a whole monitor on stationary data")
    parser.add_argument("--stationary-events", type=float, default=1e7)
    args = parser.parse_args()
    if args.stationary:
        stationary(int(args.stationary_events), seed=77)
        return
    if args.delays:
        delays(args.reps, seed=23)
        return
    global SCORES
    SCORES = args.scores
    print("share blocks as " + ("normal scores of the counts" if SCORES else "plain z-scores of the counts"))
    started = time.perf_counter()
    shares: list[float | None] = [None, *(float(s) for s in args.shares.split(","))]
    thresholds = (4.0, 5.0, 6.0)
    default = DriftConfig()
    print(f"Page-Hinkley (two-sided, anchored): false alarms per 1e6 events over {args.ph_events:.0e} events")
    print(f"{'block':>5} {'p':>6} {'skew':>6} " + "".join(f"{f'thr {t:g}':>14}" for t in thresholds))
    for k in (int(b) for b in args.blocks.split(",")):
        for p in shares:
            skew = 0.0 if p is None else (1 - 2 * p) / math.sqrt(k * p * (1 - p))
            cells = []
            for t in thresholds:
                config = dataclasses.replace(default, block_size=k, ph_threshold=t)
                alarms, exposure = ph_alarms(config, p, args.ph_events, seed=21)
                cells.append(f"{_rate(alarms, exposure)} ({alarms})")
            name = "N(0,1)" if p is None else f"{p:g}"
            print(f"{k:>5} {name:>6} {skew:>6.2f} " + "".join(f"{c:>14}" for c in cells), flush=True)
    if not args.no_adwin:
        deltas = [float(x) for x in args.adwin_deltas.split(",")]
        print(f"\nADWIN (anchored): false alarms per 1e6 events over {args.events:.0e} events")
        print(f"{'block':>5} {'p':>6} " + "".join(f"{f'delta {d:g}':>16}" for d in deltas))
        for k in (int(b) for b in args.blocks.split(",")):
            for p in shares:
                cells = []
                for delta in deltas:
                    config = dataclasses.replace(default, block_size=k, adwin_delta=delta)
                    alarms, exposure = adwin_alarms(config, p, args.events, seed=22)
                    cells.append(f"{_rate(alarms, exposure)} ({alarms})")
                name = "N(0,1)" if p is None else f"{p:g}"
                print(f"{k:>5} {name:>6} " + "".join(f"{c:>16}" for c in cells), flush=True)
    print(f"\n(took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
