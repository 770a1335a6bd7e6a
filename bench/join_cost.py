"""Memory and garbage-collection cost of the outcome join, against the layout it replaced.

The join keeps every prediction until its outcome arrives or ``join_ttl_s`` passes, up to
``join_max_entries`` (1,000,000 by default), so its bytes per entry decide the worker's memory and
its GC-tracked objects decide how long a full collection stalls the serving loop. Both layouts are
filled the same way (batches of 500 over 4 partitions, request ids as the producers make them, a
binary classifier's predictions) in the same process:

* **baseline**: one ``OrderedDict`` per partition of ``JoinEntry`` named tuples, one per
  prediction (the layout before ``agent.monitoring.join`` was made compact);
* **driftline**: :class:`agent.monitoring.join.OutcomeJoin` (plain dicts; one shared plain tuple per
  predicted class and batch).

Bytes per entry are ``tracemalloc``'s count of everything the fill allocated and kept, request ids
included; the full collection is timed after one collection has run (what a serving worker sees
in steady state). Medians of ``--runs``.

Run: ``.venv/bin/python -m bench.join_cost [--entries 1000000] [--runs 3]``
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
import tracemalloc
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from agent.monitoring.join import JoinEntry, OutcomeJoin

BATCH = 500
PARTITIONS = 4


Batches = list[tuple[float, dict[int, list[tuple[bytes, bool]]]]]
"""Per batch: its time, and per partition (request id as bytes, predicted class)."""


def _batches(entries: int, seed: int) -> Batches:
    rnd = random.Random(seed)
    out: Batches = []
    for start in range(0, entries, BATCH):
        parts: dict[int, list[tuple[bytes, bool]]] = {}
        for i in range(start, min(start + BATCH, entries)):
            # The bytes of each id are made inside the fill, as a worker decodes them from requests.
            parts.setdefault(i % PARTITIONS, []).append((f"calm-7-{i:08d}".encode(), rnd.random() < 0.4))
        out.append((1_700_000_000.0 + start / 30_000, parts))
    return out


def _fill_baseline(batches: Batches) -> Any:
    parts: dict[int, OrderedDict[str, JoinEntry]] = {p: OrderedDict() for p in range(PARTITIONS)}
    for at, by_partition in batches:
        for partition, pairs in by_partition.items():
            entries = parts[partition]
            for rid, predicted in pairs:
                entries[rid.decode()] = JoinEntry("m", "1", float(predicted), at)
    return parts


def _fill_driftline(batches: Batches) -> Any:
    join = OutcomeJoin(ttl_s=1e9, max_entries=10**9)
    for at, by_partition in batches:
        for partition, pairs in by_partition.items():
            join.remember_batch(partition, "m", "1", at, [(rid.decode(), float(p)) for rid, p in pairs])
    return join


def measure(fill: Callable[[Batches], Any], batches: Batches, entries: int) -> dict[str, float]:
    gc.collect()
    gc.freeze()  # the input batches are not the join's cost
    try:
        tracemalloc.start()
        started = time.perf_counter()
        kept = fill(batches)
        fill_s = time.perf_counter() - started
        size, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        gc.collect()
        started = time.perf_counter()
        gc.collect()
        gc_s = time.perf_counter() - started
        tracked = len(gc.get_objects())
        del kept
    finally:
        gc.unfreeze()
    return {
        "bytes_per_entry": size / entries,
        "fill_us_per_entry": fill_s / entries * 1e6,
        "full_gc_ms": gc_s * 1e3,
        "tracked_objects": float(tracked),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.join_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    batches = _batches(args.entries, seed=7)
    results: dict[str, list[dict[str, float]]] = {"baseline": [], "driftline": []}
    for run in range(args.runs):
        order = [("baseline", _fill_baseline), ("driftline", _fill_driftline)]
        for name, fill in order if run % 2 == 0 else order[::-1]:
            results[name].append(measure(fill, batches, args.entries))
    print(f"{args.entries:,} entries, medians of {args.runs} runs")
    print(f"{'layout':<10} {'bytes/entry':>12} {'fill us/entry':>14} {'full GC ms':>11} {'tracked':>10}")
    medians = {}
    for name, runs in results.items():
        med = medians[name] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(
            f"{name:<10} {med['bytes_per_entry']:>12.0f} {med['fill_us_per_entry']:>14.2f}"
            f" {med['full_gc_ms']:>11.1f} {med['tracked_objects']:>10,.0f}"
        )
    base, new = medians["baseline"], medians["driftline"]
    print(
        f"driftline/baseline: bytes {new['bytes_per_entry'] / base['bytes_per_entry']:.2f}x,"
        f" full GC {new['full_gc_ms'] / max(base['full_gc_ms'], 1e-9):.3f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
