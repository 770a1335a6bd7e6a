"""Latency alone: where a paced run's tail goes, run after run, with the same harness as ``python -m bench``.

Run (from the repo root, with the broker up)::

    .venv/bin/python -m bench.latency --rate 20000 --runs 5           # ~2.5 minutes
    .venv/bin/python -m bench.latency --rate 20000 --baseline-ref main # both trees, in turns
    .venv/bin/python -m bench.latency --set DRIFTLINE_SERVING__BATCH_MAX_WAIT_MS=0

Each run is ``bench/run.py``'s half-rate phase: a fresh ``driftline run`` worker (every monitor on,
its garbage collections written down by ``bench/_probe.py``), requests paced at ``--rate`` for
``--latency-s`` seconds, latency from the request's CreateTime to the prediction's LogAppendTime,
the first second left out. For each run it prints the p50/p99, the stall report (a run has a stall
when one 100 ms window holds more than 10 % of its requests slower than 25 ms), and the split of
each request's latency into before handling (producer linger, broker, fetch, the fill wait, the
batches ahead), handling and after (monitors, produce, the broker's append), with how many of the
slow requests overlapped a garbage collection pause of the broker (its ``gc.log``) or the worker.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench._harness import median, stall_runs
from bench.run import MODEL, REPO, Bench, execute, machine_info

RESULTS = REPO / "bench" / "results" / "latency.json"


async def run_latency(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    from agent.models.repository import ModelRepository
    from agent.packaging.builder import build_package
    from agent.packaging.examples import classification_20

    build_package(
        classification_20(), name=MODEL, version="1", repository=ModelRepository(bench.package_root)
    )
    settings = dict(item.split("=", 1) for item in args.set)
    trees = {"current": REPO}
    if bench.baseline_tree is not None:  # exported by execute()
        trees[args.baseline_ref] = bench.baseline_tree
    runs: list[dict[str, Any]] = []
    for rnd in range(args.runs):
        for name in list(trees) if rnd % 2 == 0 else list(reversed(trees)):
            # bench.latency paces at half of "the highest rate": twice --rate.
            label = f"lat-{rnd}-{len(runs)}"
            result = await bench.latency(
                2 * args.rate,
                tree=trees[name],
                name=label,
                shares=(0.5,),
                settings=settings,
                profile=args.profile,
            )
            phase = result["phases"]["50%"]
            phase.update({"tree": name, "round": rnd})
            runs.append(phase)
            parts = phase.get("parts", {})
            cores = {k: round(phase.get(f"{k}_cores") or 0.0, 2) for k in ("worker", "broker", "other")}
            print(
                f"  run {rnd} {name:<10} {phase['achieved_rate']:>8,.0f}/s p50 {phase['p50_ms']:.0f} "
                f"p99 {phase['p99_ms']:.0f} max {phase['max_ms']:.0f} ms; cores {cores}; "
                f"slow {parts.get('slow', 0):,} mostly {parts.get('slow_by_part')}, in pauses "
                f"{parts.get('slow_in_pause')}; p99 split {parts.get('p99_ms')}; "
                f"pauses {phase.get('pauses')}",
                flush=True,
            )
            if phase.get("profile_us_per_request"):
                split = dict(phase["profile_us_per_request"])
                top = split.pop("top_frames_us", {})
                print(f"    worker CPU us per request {sum(split.values()):.1f}: {split}", flush=True)
                if args.frames:
                    for frame, us in top.items():
                        print(f"      {us:6.2f}  {frame}")
    summary = {}
    for name in trees:
        mine = [r for r in runs if r["tree"] == name]
        summary[name] = {
            "p99_ms": [r["p99_ms"] for r in mine],
            "p99_median_ms": median(r["p99_ms"] for r in mine),
            "p50_median_ms": median(r["p50_ms"] for r in mine),
            "stall_runs": stall_runs(mine),
        }
    return {"machine": machine_info(), "run_id": bench.run_id, "runs": runs, "summary": summary}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=20_000.0, help="paced requests/s")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--latency-s", type=float, default=15.0, help="seconds of paced requests per run")
    parser.add_argument("--baseline-ref", help="also run this git commit's worker, in turns")
    parser.add_argument("--set", action="append", default=[], help="DRIFTLINE_X=value for the workers")
    parser.add_argument("--profile", action="store_true", help="py-spy samples each run's worker")
    parser.add_argument("--frames", action="store_true", help="with --profile: print the top frames")
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.events = 0  # no drains here
    started = time.monotonic()
    report = execute(args, run_latency)
    report["args"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    report["duration_s"] = round(time.monotonic() - started, 1)
    for name, row in report["summary"].items():
        stalled = row["stall_runs"]
        print(
            f"{name}: p99 {row['p99_ms']} ms (median {row['p99_median_ms']:.0f}), p50 median "
            f"{row['p50_median_ms']:.0f} ms; stalls in {stalled['with_stall']} of {stalled['runs']} runs"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
