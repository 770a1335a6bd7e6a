"""Cost of drift monitoring per event for a 20-feature model: block monitor vs. naive updates.

Both paths see the same standard-normal features, standardised through the same reference
quantiles (one vectorised call per batch). The naive path then updates, for every event and every
feature, a river ADWIN and two river Page-Hinkley detectors (up and down) with river's defaults;
the monitor path is :meth:`agent.monitoring.features.FeatureDriftMonitor.update_batch`, which also
cuts blocks, counts missing values and keeps windowed statistics. The error monitor's cost per
outcome is reported too, and the reconstruction-error column's (multivariate drift,
:class:`agent.monitoring.multivariate.ReconstructionMonitor`: the batch's errors under the components
of the 20 features, then one more monitored column), on top of the feature monitor. Times are
medians of several runs in the same process (the machine is
shared, so compare the ratio rather than absolute numbers across runs).

Run: ``.venv/bin/python -m bench.drift_cost [--runs 5] [--batch 500]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
from river import drift as river_drift

from agent.monitoring import ErrorMonitor, FeatureDriftMonitor, ReferenceTransform
from agent.monitoring.multivariate import ReconstructionMonitor
from agent.packaging.reconstruction import fit_reconstruction

N_FEATURES = 20


def _us_per_row(update: Callable[[np.ndarray], object], data: np.ndarray, batch: int) -> float:
    """Microseconds per row of ``update`` called on ``data`` in slices of ``batch`` rows."""
    start = time.perf_counter()
    for lo in range(0, data.shape[0], batch):
        update(data[lo : lo + batch])
    return (time.perf_counter() - start) / data.shape[0] * 1e6


def _monitor_run(quantiles: np.ndarray, data: np.ndarray, batch: int) -> float:
    names = [f"f{i}" for i in range(N_FEATURES)]
    monitor = FeatureDriftMonitor.from_quantiles(names, quantiles)
    return _us_per_row(monitor.update_batch, data, batch)


def _transform_run(quantiles: np.ndarray, data: np.ndarray, batch: int) -> float:
    return _us_per_row(ReferenceTransform.from_quantiles(quantiles).transform, data, batch)


def _error_run(data: np.ndarray, batch: int) -> float:
    monitor = ErrorMonitor.for_classification(0.1)
    errors = (data[:, 0] > 1.2816).astype(np.float64)  # 10% errors
    return _us_per_row(monitor.update_many, errors, batch)


def _reconstruction_run(reference: np.ndarray, data: np.ndarray, batch: int) -> float:
    names = tuple(f"f{i}" for i in range(N_FEATURES))
    reconstruction = fit_reconstruction(names, reference[:5_000], reference[5_000:6_000])
    assert reconstruction is not None
    monitor = ReconstructionMonitor(reconstruction, names)
    # Served matrices are float32.
    return _us_per_row(monitor.update_batch, data.astype(np.float32), batch)


def _naive_run(quantiles: np.ndarray, data: np.ndarray, batch: int) -> float:
    transform = ReferenceTransform.from_quantiles(quantiles)
    detectors = [
        (
            river_drift.ADWIN(),
            river_drift.PageHinkley(mode="up"),
            river_drift.PageHinkley(mode="down"),
        )
        for _ in range(N_FEATURES)
    ]
    fired = 0
    start = time.perf_counter()
    for lo in range(0, data.shape[0], batch):
        for row in transform.transform(data[lo : lo + batch]).tolist():
            for value, group in zip(row, detectors, strict=True):
                for detector in group:
                    detector.update(value)
                    fired += detector.drift_detected
    return (time.perf_counter() - start) / data.shape[0] * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=500, help="events per update_batch call")
    parser.add_argument("--events", type=int, default=200_000, help="events per monitor run")
    parser.add_argument("--naive-events", type=int, default=20_000, help="events per naive run")
    args = parser.parse_args()

    rng = np.random.default_rng(20240601)
    reference = rng.standard_normal((100_000, N_FEATURES))
    quantiles = np.quantile(reference, np.linspace(0.0, 1.0, 101), axis=0).T
    data = rng.standard_normal((args.events, N_FEATURES))

    monitor, transform, naive, error, reconstruction = [], [], [], [], []
    # Interleaved so that a burst of load on the shared machine hits all paths alike.
    for _ in range(args.runs):
        monitor.append(_monitor_run(quantiles, data, args.batch))
        transform.append(_transform_run(quantiles, data, args.batch))
        naive.append(_naive_run(quantiles, data[: args.naive_events], args.batch))
        error.append(_error_run(data, args.batch))
        reconstruction.append(_reconstruction_run(reference, data, args.batch))

    med_monitor = statistics.median(monitor)
    med_transform = statistics.median(transform)
    med_naive = statistics.median(naive)
    print(f"{N_FEATURES} features, batches of {args.batch}, median of {args.runs} runs")
    print(f"{'path':<44}{'us/event':>10}")
    print(f"{'reference transform only':<44}{med_transform:>10.2f}")
    print(f"{'FeatureDriftMonitor.update_batch (total)':<44}{med_monitor:>10.2f}")
    print(f"{'naive: per-event ADWIN + 2 PH x 20 features':<44}{med_naive:>10.2f}")
    print(f"{'ErrorMonitor.update_many (0/1 errors)':<44}{statistics.median(error):>10.2f}")
    print(f"{'ReconstructionMonitor.update_batch':<44}{statistics.median(reconstruction):>10.2f}")
    print(f"speed-up of the monitor over the naive path: {med_naive / med_monitor:.1f}x")
    print(f"monitor runs: {', '.join(f'{t:.2f}' for t in monitor)}")
    print(f"naive runs:   {', '.join(f'{t:.2f}' for t in naive)}")


if __name__ == "__main__":
    main()
