"""Batch size and longest wait: where the serving defaults come from.

``serving.batch_size`` (most requests per batch) and ``serving.batch_max_wait_ms`` (longest wait for
a batch to fill) trade throughput against latency: a bigger batch spreads the per-batch costs
(one ONNX Runtime call, one monitor update, one produce and commit) over more requests, a longer
wait lets batches fill at moderate rates but holds each request longer. For each setting this
measures, with the same harness, broker and payloads as ``python -m bench`` (``bench/run.py``):

* **throughput**: a fresh ``driftline run`` worker (all monitoring on) drains the pre-filled topic
  (requests/s between 10 % and 90 %, CPU µs per request);
* **latency**: another fresh worker serves requests paced at ``--rate`` (default 12,500/s, half the
  25,000/s target) for ``--latency-s``; p50/p99 from the request's CreateTime to the prediction's
  LogAppendTime, and the worker's cores over the phase (what a moderate rate costs).

Batch sizes are swept with no wait (``--wait-for-sizes``: batching alone, each batch what one
fetch brought), waits at the default batch size (``--size-for-waits``). Every point runs
``--runs`` times in a rotated order; the table shows medians and the JSON keeps every run.

Run: ``.venv/bin/python -m bench.sweep [--runs 2] [--batch-sizes 100,250,500,1000,2000]
[--waits 1,2,5,10,20] [--rate 12500]`` (~9 minutes for the default grid and 2 runs).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from agent.settings import ServingSettings
from bench._harness import median
from bench.run import REPO, Bench, execute, machine_info, prepare

RESULTS = REPO / "bench" / "results" / "sweep.json"


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def grid(
    batch_sizes: list[int], waits: list[float], default_size: int, default_wait: float
) -> list[tuple[int, float]]:
    """Batch sizes at the default wait, then waits at the default size, without repeats.

    Example:
        >>> grid([100, 500], [1.0, 5.0], 500, 5.0)
        [(100, 5.0), (500, 5.0), (500, 1.0)]
    """
    points = [(size, default_wait) for size in batch_sizes]
    points += [(default_size, wait) for wait in waits if (default_size, wait) not in points]
    return points


async def run_sweep(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {"machine": machine_info(), "run_id": bench.run_id}
    started = time.monotonic()
    topics = await prepare(bench, report, onnx_limit=False)
    defaults = ServingSettings()
    size = defaults.batch_size if args.size_for_waits is None else args.size_for_waits
    wait = defaults.batch_max_wait_ms if args.wait_for_sizes is None else args.wait_for_sizes
    points = grid(args.batch_sizes, args.waits, size, wait)
    runs: list[dict[str, Any]] = []
    for rnd in range(args.runs):
        shift = rnd * len(points) // max(args.runs, 1)
        for size, wait in points[shift:] + points[:shift]:
            settings = {
                "DRIFTLINE_SERVING__BATCH_SIZE": str(size),
                "DRIFTLINE_SERVING__BATCH_MAX_WAIT_MS": str(wait),
            }
            tag = f"-b{size}-w{wait:g}"
            drain = await bench.measure("driftline_on", rnd, topics["requests"], settings=settings, tag=tag)
            latency = await bench.latency(
                2 * args.rate, name=f"latency{tag}-r{rnd}", shares=(0.5,), settings=settings
            )
            phase = latency["phases"].get("50%", {})
            run = {
                "round": rnd,
                "batch_size": size,
                "batch_max_wait_ms": wait,
                "events_per_s": drain.get("events_per_s"),
                "cpu_us_per_event": drain.get("cpu_us_per_event"),
                "drain_rss_mb": drain.get("rss_peak_mb"),
                "rate": phase.get("achieved_rate"),
                "p50_ms": phase.get("p50_ms"),
                "p99_ms": phase.get("p99_ms"),
                "max_ms": phase.get("max_ms"),
                "worker_cores_at_rate": phase.get("worker_cores"),
                "other_cores": phase.get("other_cores"),
                "error": drain.get("error"),
            }
            runs.append(run)
            print(
                f"  r{rnd} batch {size:>5} wait {wait:>4g} ms: {_num(run['events_per_s'])}/s"
                f" {_num(run['cpu_us_per_event'], '.1f')} us/event;"
                f" at {_num(run['rate'])}/s p50 {_num(run['p50_ms'])} p99 {_num(run['p99_ms'])} ms,"
                f" {_num(run['worker_cores_at_rate'], '.2f')} cores",
                flush=True,
            )
    report["runs"] = runs
    report["summary"] = [
        {
            "batch_size": size,
            "batch_max_wait_ms": wait,
            **{
                key: median(r[key] for r in runs if (r["batch_size"], r["batch_max_wait_ms"]) == (size, wait))
                for key in ("events_per_s", "cpu_us_per_event", "p50_ms", "p99_ms", "worker_cores_at_rate")
            },
        }
        for size, wait in points
    ]
    report["defaults"] = {"batch_size": defaults.batch_size, "batch_max_wait_ms": defaults.batch_max_wait_ms}
    report["duration_s"] = round(time.monotonic() - started, 1)
    return report


def _num(x: Any, spec: str = ",.0f") -> str:
    return "-" if x is None else format(x, spec)


def print_table(report: dict[str, Any]) -> None:
    rate = report["args"]["rate"]
    print(f"\nmedians of {report['args']['runs']} runs; latency at {rate:,.0f} requests/s paced")
    print(f"{'batch':>6} {'wait ms':>8} {'req/s':>8} {'us/req':>7} {'p50 ms':>7} {'p99 ms':>7} {'cores':>6}")
    for row in report["summary"]:
        mark = (
            " (default)"
            if (row["batch_size"], row["batch_max_wait_ms"]) == tuple(report["defaults"].values())
            else ""
        )
        print(
            f"{row['batch_size']:>6} {row['batch_max_wait_ms']:>8g} {_num(row['events_per_s']):>8}"
            f" {_num(row['cpu_us_per_event'], '.1f'):>7} {_num(row['p50_ms']):>7} {_num(row['p99_ms']):>7}"
            f" {_num(row['worker_cores_at_rate'], '.2f'):>6}{mark}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=_ints, default=_ints("100,250,500,1000,2000"))
    parser.add_argument(
        "--waits", type=_floats, default=_floats("1,2,5,10,20"), help="batch_max_wait_ms values"
    )
    parser.add_argument(
        "--wait-for-sizes", type=float, default=0.0, help="the wait of the batch-size points (default 0)"
    )
    parser.add_argument(
        "--size-for-waits", type=int, help="the batch size of the wait points (default: the setting's)"
    )
    parser.add_argument("--rate", type=float, default=12_500.0, help="paced requests/s of the latency phases")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--events", type=int, default=120_000, help="pre-filled requests drained per point")
    parser.add_argument("--latency-s", type=float, default=10.0, help="seconds of paced requests per point")
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    report = execute(args, run_sweep)
    report["args"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    report["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    print_table(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwrote {args.out}")
    return 0 if not any(r["error"] for r in report["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
