"""Cost of the reference percentiles of a batch: the whole matrix at once (what serving runs) against
each column through its own transform (the baseline, and what the matrix path must equal).

``ReferenceTransform.transform`` sends the numeric columns without tied quantiles through
:class:`agent.monitoring.transforms.GridInterp` and those with ties through
:class:`~agent.monitoring.transforms.TiedPercentiles`; the baseline calls each column's
``PercentileTransform.transform`` (``np.interp``, or the tied path's searches) in turn, as serving
did before. Three references of 20 columns: continuous (normal, exponential, uniform), discrete
(counts, ratings, rounded values and a mostly-zero column: every column tied), and half of each.
Each batch is fresh values (the same values over and over would let the CPU learn the binary
searches' branches, which a stream never does). Both paths' results are checked equal, bit for bit,
before anything is timed.

Run: ``.venv/bin/python -m bench.transform_cost [--batch 500] [--repeats 7]`` (about 2 s).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from agent.monitoring.transforms import PercentileTransform, ReferenceTransform

N_FEATURES = 20
PROBS = np.arange(101) / 100


def _continuous(rng: np.random.Generator, j: int, n: int) -> np.ndarray:
    kind = j % 3
    if kind == 0:
        return rng.normal(j, 1.0 + j, n)
    if kind == 1:
        return rng.exponential(1.0 + j, n)
    return rng.uniform(-j, j + 1.0, n)


def _discrete(rng: np.random.Generator, j: int, n: int) -> np.ndarray:
    kind = j % 4
    if kind == 0:
        return rng.poisson(1.0 + j, n).astype(float)  # counts
    if kind == 1:
        return rng.integers(1, 6, n).astype(float)  # ratings
    if kind == 2:
        return np.round(rng.normal(0.0, 1.0, n), 1)  # rounded measurements
    return np.where(rng.random(n) < 0.7, 0.0, rng.exponential(5.0, n))  # mostly zero


SHAPES: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "continuous": _continuous,
    "discrete": _discrete,
    "half and half": lambda rng, j, n: (_continuous if j % 2 else _discrete)(rng, j, n),
}


def measure(shape: str, batch: int, repeats: int, seed: int = 0) -> dict[str, float]:
    """µs per request of both paths over ``repeats`` passes of 40 fresh batches (medians)."""
    draw = SHAPES[shape]
    rng = np.random.default_rng(seed)
    columns = [PercentileTransform(np.quantile(draw(rng, j, 20_000), PROBS)) for j in range(N_FEATURES)]
    tied = sum(c.interpolation is None for c in columns)
    reference = ReferenceTransform(columns)
    batches = [
        np.stack([draw(rng, j, batch) for j in range(N_FEATURES)], axis=1).astype(np.float32)
        for _ in range(40)
    ]

    def at_once(x: np.ndarray) -> np.ndarray:
        return reference.transform(x)

    def one_by_one(x: np.ndarray) -> np.ndarray:
        return np.stack([c.transform(x[:, j].astype(np.float64)) for j, c in enumerate(columns)], axis=1)

    for x in batches:
        if not np.array_equal(at_once(x), one_by_one(x), equal_nan=True):
            raise AssertionError(f"{shape}: the matrix path differs from the columns' own transforms")
    times: dict[str, list[float]] = {"at_once": [], "one_by_one": []}
    for _ in range(repeats):
        for name, f in (("at_once", at_once), ("one_by_one", one_by_one)):
            started = time.perf_counter()
            for x in batches:
                f(x)
            times[name].append((time.perf_counter() - started) / (len(batches) * batch) * 1e6)
    result = {name: statistics.median(t) for name, t in times.items()}
    return {**result, "tied_columns": float(tied), "speedup": result["one_by_one"] / result["at_once"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.transform_cost", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    print(f"reference percentiles of {N_FEATURES} columns, batches of {args.batch}; µs per request, medians")
    print(f"{'reference':<14} {'tied columns':>12} {'one by one':>11} {'at once':>8} {'speed-up':>9}")
    for shape in SHAPES:
        r = measure(shape, args.batch, args.repeats)
        print(
            f"{shape:<14} {int(r['tied_columns']):>12} {r['one_by_one']:>11.3f} {r['at_once']:>8.3f}"
            f" {r['speedup']:>8.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
