"""Calibration of the reconstruction-error column (multivariate drift): false alarms and delays.

Each trial draws a fresh reference as the packaging would see it (3,000 rows to fit the components
on and 1,000 holdout rows, or 426 and 150 as breast-cancer has; the error's quantiles from the
holdout and the cross-fitted reference rows, so their own sampling noise is part of the
measurement), builds :class:`agent.monitoring.multivariate.ReconstructionMonitor` with the default
detectors, and feeds it a seeded stream in batches of 500:

- **false alarms**: stationary streams from the reference's distribution; alarms per 1e6 events;
- **delays**: the stream changes at event 5,000 to one in which some features stop moving together
  as they did, every feature's own distribution unchanged; events from the change to the detection
  (median, p90), and how many trials found nothing within 30,000 events.

The models: ``pair`` (3 features, two correlated 0.9, then 0.8, 0.7, 0.5 or 0), ``twenty`` (20
features, 4 latent factors plus noise, like ``make_classification``'s redundant features; then five
of them get other loadings, scaled to keep their variance), each with the large and the small holdout.

Run: ``.venv/bin/python -m bench.calibrate_reconstruction [--trials 20] [--events 250000]``
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from agent.monitoring.multivariate import ReconstructionMonitor
from agent.packaging.reconstruction import fit_reconstruction

Rows = Callable[[np.random.Generator, int, bool], npt.NDArray[np.float64]]


def pair(to: float) -> Rows:
    """a, b correlated 0.9 (``changed``: ``to``), c alone; all N(0, 1) either way."""

    def rows(rng: np.random.Generator, n: int, changed: bool) -> npt.NDArray[np.float64]:
        r = to if changed else 0.9
        a, b, c = rng.standard_normal((3, n))
        return np.c_[a, r * a + np.sqrt(1 - r**2) * b, c]

    return rows


_LOADINGS = np.random.default_rng(99).standard_normal((4, 20))


def twenty(rng: np.random.Generator, n: int, changed: bool) -> npt.NDArray[np.float64]:
    """20 features from 4 latent factors plus noise (sd 0.5); ``changed``: features 0-4 get their
    factors' loadings from another draw, scaled to the same variance (same marginals, new relations)."""
    factors = rng.standard_normal((n, 4))
    X = factors @ _LOADINGS + 0.5 * rng.standard_normal((n, 20))
    if changed:
        other = np.random.default_rng(100).standard_normal((4, 5))
        other *= np.linalg.norm(_LOADINGS[:, :5], axis=0) / np.linalg.norm(other, axis=0)
        X[:, :5] = factors @ other + 0.5 * rng.standard_normal((n, 5))
    return X


MODELS: dict[str, tuple[Rows, int]] = {
    "pair rho .9 -> .8": (pair(0.8), 3),
    "pair rho .9 -> .7": (pair(0.7), 3),
    "pair rho .9 -> .5": (pair(0.5), 3),
    "pair rho .9 -> 0": (pair(0.0), 3),
    "twenty, 5 features re-related": (twenty, 20),
}


def monitor_for(
    rows: Rows, d: int, rng: np.random.Generator, fit_rows: int, holdout_rows: int
) -> ReconstructionMonitor:
    names = tuple(f"x{i}" for i in range(d))
    r = fit_reconstruction(names, rows(rng, fit_rows, False), rows(rng, holdout_rows, False))
    assert r is not None
    return ReconstructionMonitor(r, names)


def feed(monitor: ReconstructionMonitor, stream: npt.NDArray[np.float64], batch: int = 500) -> list[int]:
    return [
        d.event_index
        for s in range(0, len(stream), batch)
        for d in monitor.update_batch(stream[s : s + batch])
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.calibrate_reconstruction", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--events", type=int, default=250_000, help="events per stationary trial")
    args = parser.parse_args()
    header = ("holdout", "events", "alarms", "per 1e6", "median", "p90", "missed")
    widths = (7, 10, 6, 8, 7, 7, 6)
    print(f"{'model':32} " + " ".join(f"{h:>{w}}" for h, w in zip(header, widths, strict=True)))
    for name, (rows, d) in MODELS.items():
        for holdout in (1_000, 150):
            alarms = 0
            delays: list[int] = []
            missed = 0
            for trial in range(args.trials):
                rng = np.random.default_rng([trial, d, holdout])
                monitor = monitor_for(rows, d, rng, 3_000 if holdout == 1_000 else 426, holdout)
                # Stationary: every detection is a false alarm (the monitor restarts after each).
                for start in range(0, args.events, 50_000):
                    alarms += len(feed(monitor, rows(rng, min(50_000, args.events - start), False)))
                monitor = monitor_for(rows, d, rng, 3_000 if holdout == 1_000 else 426, holdout)
                stream = np.r_[rows(rng, 5_000, False), rows(rng, 30_000, True)]
                found = [e - 5_000 for e in feed(monitor, stream) if e >= 5_000]
                if found:
                    delays.append(found[0])
                else:
                    missed += 1
            events = args.trials * args.events
            median = f"{statistics.median(delays):.0f}" if delays else "-"
            p90 = f"{np.percentile(delays, 90):.0f}" if delays else "-"
            print(
                f"{name:32} {holdout:>7} {events:>10,} {alarms:>6} {alarms / events * 1e6:>8.2f} "
                f"{median:>7} {p90:>7} {missed:>6}",
                flush=True,
            )


if __name__ == "__main__":
    main()
