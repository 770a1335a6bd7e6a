"""Calibrate what reaches users: alerts, not detections. False alerts per 10^6 events and alert delays
near the alerting bound, through the real serving path (``RequestHandler`` and ``DriftObserver``).

``bench/calibrate_drift.py`` measures the detectors; this measures the decision after them. A
detection is alerted when the shift it measured over the events since its change point is at least
``recovery_shift_sd`` (0.15 reference sd) away from the reference; one that measured less, moving
away, is kept and judged again once the window (2,048 events) holds only later events
(``DriftObserver._confirmations``). Two things can therefore differ from the detectors' figures:

* **False alerts with a reference that is not exact.** A package's feature references are quantiles
  of a sample of rows (its training rows); the live stream comes from the same distribution but not
  from those rows, so each quantile carries sampling error. A detection on such a stream is a real
  (small) offset from the reference; the bound and the confirmation decide whether it pages.
* **Delays near the bound.** A step a little over the bound may first be measured under it: its
  alert then comes from the confirmation, a window later.

Method (fixed seeds throughout):

* **Models.** A seeded ``make_classification`` problem (20 numeric features, as ``classification-20``),
  a 10-tree forest trained on 1,500 rows, a 500-row holdout (the output, estimated-error and
  reconstruction references), built into a package by ``build_package`` with the default settings
  (every statistic, the budget of 1 false alarm per 10^6 events). ``exact``: the stream resamples
  the training rows, and the holdout is those rows too, so every reference describes the stream
  exactly (as the test suite's streams do). ``sampled``: the stream is fresh rows of the same
  problem that no reference saw, the features' reference 1,500 or 15,000 training rows
  (``--train``), one problem (``random_state``) per replicate.
* **False alerts**: ``--events`` stationary events per model, in batches of 500; alerts of every
  drift kind (data, prediction, performance) counted by kind and subject, and detections that were
  kept under the bound, and how many of those a window confirmed.
* **Delays**: a step of ``s`` reference sd (the monitors' unit: ``raw_step``) on one feature
  (``x03``, an informative one) after 16,000 +
  U[0, 500) stationary events of the exact model, ``--reps`` replicates per step; the delay is the
  number of changed events handled when the feature's data alert came out (batches of 250, so to
  within 250), and whether it came from a detection at or over the bound or from a confirmation.

Run: ``.venv/bin/python -m bench.calibrate_alerts [--quick]`` (about 7 minutes: 5 exact models, 5
sampled ones for each of 1,500 and 15,000 reference rows, 10^6 events each, and the steps;
``--quick`` about 1: one model of each kind, 2 x 10^5 events, 5 replicates per step).
Writes ``bench/results/calibrate_alerts.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bench._harness import in_process_serving

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "calibrate_alerts.json"
MODEL = "calib-20"
NAMES = [f"x{i:02d}" for i in range(20)]
FEATURE = 3
TRAIN, HOLDOUT = 1500, 500
STEPS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.5)
WARM = 16_000
HORIZON = 12_000
DRIFT_KINDS = ("data", "prediction", "performance")


def problem(random_state: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=n, n_features=20, n_informative=10, n_redundant=4, random_state=random_state
    )
    return X, y


def build(root: Path, random_state: int, n_stream: int, *, exact: bool, train: int = TRAIN) -> np.ndarray:
    """Builds the package in ``root`` (a forest on ``train`` rows, the features' reference); returns
    the rows the stream draws from."""
    from sklearn.ensemble import RandomForestClassifier

    from agent.models.repository import ModelRepository
    from agent.packaging.builder import build_package
    from agent.packaging.training import TrainingResult

    X, y = problem(random_state, train + HOLDOUT + (0 if exact else n_stream))
    Xt, yt = X[:train], y[:train]
    forest = RandomForestClassifier(n_estimators=10, random_state=random_state).fit(Xt, yt)
    if exact:
        result = TrainingResult(forest, Xt, yt, NAMES, Xt, yt)
    else:
        h = slice(train, train + HOLDOUT)
        result = TrainingResult(forest, Xt, yt, NAMES, X[h], y[h])
    build_package(result, name=MODEL, version="1", repository=ModelRepository(root), progress=None)
    return Xt if exact else X[train + HOLDOUT :]


class Serving:
    """One worker's handler and its in-process monitor (``ship_stats=False``: the single-process
    design, whose detections the fleet's monitor reproduces block for block)."""

    def __init__(self, root: Path) -> None:
        self.handler, self.observer = in_process_serving(root)
        self.offsets = [0, 0, 0, 0]
        self.n = 0
        self.batches = 0

    def handle(self, rows: np.ndarray) -> list[Any]:
        """Serves ``rows`` as one batch of one partition (round robin); the alerts it raised."""
        from agent.serving.handler import Record
        from schemas.alert import Alert
        from schemas.incident import decode_record

        partition = self.batches % 4
        self.batches += 1
        records = []
        for row in rows.tolist():
            features = dict(zip(NAMES, row, strict=True))
            body = {"request_id": f"r{self.n}", "model": MODEL, "features": features}
            records.append(Record("requests", partition, self.offsets[partition], None, orjson.dumps(body)))
            self.offsets[partition] += 1
            self.n += 1
        out = []
        for m in self.handler.handle(records):
            if m.topic == "alerts":
                r = decode_record(m.value or b"")
                if isinstance(r, Alert):
                    out.append(r)
        return out


def stationary(root: Path, rows: np.ndarray, events: int, seed: int, *, resample: bool) -> dict[str, Any]:
    serving = Serving(root)
    counts = {"kept": 0, "confirmed": 0}
    monitor_observer = serving.observer
    drift_alerts = monitor_observer._drift_alerts
    confirmations = monitor_observer._confirmations

    def _drift_alerts(monitor: Any, detections: Any, ctx: Any) -> Any:
        before = len(monitor.unconfirmed)
        out = drift_alerts(monitor, detections, ctx)
        counts["kept"] += max(0, len(monitor.unconfirmed) - before)
        return out

    def _confirmations(monitor: Any, ctx: Any) -> Any:
        out = confirmations(monitor, ctx)
        counts["confirmed"] += len(out)
        return out

    monitor_observer._drift_alerts = _drift_alerts  # type: ignore[method-assign]
    monitor_observer._confirmations = _confirmations  # type: ignore[method-assign]
    rng = np.random.default_rng(seed)
    alerts: Counter[str] = Counter()
    first: dict[str, int] = {}
    raised: list[dict[str, Any]] = []
    started = time.process_time()
    for lo in range(0, events, 500):
        n = min(500, events - lo)
        batch = rows[rng.integers(0, len(rows), n)] if resample else rows[lo : lo + n]
        for a in serving.handle(batch):
            if a.kind.value in DRIFT_KINDS:
                key = f"{a.kind.value}:{a.subject}"
                alerts[key] += 1
                first.setdefault(key, serving.n)
                raised.append(
                    {
                        "kind": a.kind.value,
                        "subject": a.subject,
                        "measure": a.evidence.extra.get("measure"),
                        "detector": a.detector,
                        "shift_sd": a.evidence.shift_in_std,
                        "window_events": a.evidence.window_events,
                        "at": serving.n,
                    }
                )
    cpu = time.process_time() - started
    return {
        "events": events,
        "alerts": dict(alerts),
        "first_at": first,
        "raised": raised,
        "kept_under_bound": counts["kept"],
        "confirmed": counts["confirmed"],
        "cpu_us_per_event": round(cpu / events * 1e6, 1),
    }


def raw_step(rows: np.ndarray, shift_sd: float) -> float:
    """The amount to add to x03 so that its standardised stream (the percentile of each value among
    the reference's 101 quantiles, as ``PercentileTransform`` computes it) moves by ``shift_sd``
    reference sds (1/sqrt(12) each) on ``rows``: the monitors' own unit, in which the alerting bound
    is set. x03 is not Gaussian, so a step in its raw sd is not that."""
    x = rows[:, FEATURE]
    quantiles = np.quantile(x, np.linspace(0.0, 1.0, 101))
    levels = np.linspace(0.0, 1.0, 101)
    base = float(np.interp(x, quantiles, levels).mean())
    target = shift_sd / np.sqrt(12.0)
    lo, hi = 0.0, 4.0 * float(x.std())
    for _ in range(60):
        mid = (lo + hi) / 2
        moved = float(np.interp(x + mid, quantiles, levels).mean()) - base
        lo, hi = (mid, hi) if moved < target else (lo, mid)
    return (lo + hi) / 2


def step(root: Path, rows: np.ndarray, shift: float, seed: int) -> dict[str, Any]:
    """One replicate: a ``shift`` reference-sd step on x03 after WARM + U[0, 500) events; the first
    data alert on x03, in changed events, and whether a confirmation raised it."""
    rng = np.random.default_rng((seed, round(shift * 1000)))
    change = WARM + int(rng.integers(0, 500))
    delta = raw_step(rows, shift)
    serving = Serving(root)
    confirmations = serving.observer._confirmations
    via: list[int] = []

    def _confirmations(monitor: Any, ctx: Any) -> Any:
        out = confirmations(monitor, ctx)
        via.extend(1 for a in out if a.subject == NAMES[FEATURE])
        return out

    serving.observer._confirmations = _confirmations  # type: ignore[method-assign]
    end = change + HORIZON
    while serving.n < end:
        n = min(250, end - serving.n)
        batch = rows[rng.integers(0, len(rows), n)].copy()
        idx = np.arange(serving.n, serving.n + n)
        batch[idx >= change, FEATURE] += delta
        for a in serving.handle(batch):
            if a.kind.value == "data" and a.subject == NAMES[FEATURE]:
                return {
                    "delay": serving.n - change,
                    "early": serving.n <= change,
                    "confirmed": bool(via),
                    "measured_sd": round(a.evidence.shift_in_std or 0.0, 3),
                }
    return {"delay": None, "early": False, "confirmed": False, "measured_sd": None}


def _pct(values: list[int], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer events and replicates (~3 minutes)")
    parser.add_argument(
        "--events", type=int, help="stationary events per model (default 10^6, --quick 2x10^5)"
    )
    parser.add_argument("--sampled", type=int, help="sampled models per size (default 5, --quick 1)")
    parser.add_argument("--reps", type=int, help="replicates per step (default 20, --quick 5)")
    parser.add_argument(
        "--train",
        type=lambda t: [int(x) for x in t.split(",")],
        default=[TRAIN, 10 * TRAIN],
        help="training (feature reference) rows of the sampled models, comma-separated sizes",
    )
    parser.add_argument("--exact", type=int, help="exact models (default 5, --quick 1; 0: no steps)")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    # Every alert is logged at WARNING; the bench counts them and prints its own summary.
    logging.getLogger("agent").setLevel(logging.ERROR)
    events = args.events or (200_000 if args.quick else 1_000_000)
    n_sampled = args.sampled if args.sampled is not None else (1 if args.quick else 5)
    reps = args.reps or (5 if args.quick else 20)
    n_exact = args.exact if args.exact is not None else (1 if args.quick else 5)
    started = time.monotonic()
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip(),
        "events": events,
        "seed": args.seed,
        "stationary": [],
        "steps": [],
    }
    with tempfile.TemporaryDirectory(prefix="driftline-calibrate-alerts-") as tmp:
        exact_root = Path(tmp) / "exact"
        exact_rows = np.empty((0, len(NAMES)))
        for k in range(n_exact):
            state = args.seed + 100 * k
            root = exact_root if k == 0 else Path(tmp) / f"exact-{state}"
            print(f"building the exact model (random_state {state}) ...", flush=True)
            rows = build(root, state, 0, exact=True)
            exact_rows = rows if k == 0 else exact_rows
            r = stationary(root, rows, events, state, resample=True)
            r.update(kind="exact", random_state=state, train=TRAIN)
            report["stationary"].append(r)
            print(f"  exact (random_state {state}): {r['alerts']}", flush=True)
        for train in args.train:
            for k in range(n_sampled):
                state = args.seed + 1 + k
                root = Path(tmp) / f"sampled-{train}-{state}"
                rows = build(root, state, events, exact=False, train=train)
                r = stationary(root, rows, events, state, resample=False)
                r.update(kind="sampled", random_state=state, train=train)
                report["stationary"].append(r)
                print(f"  sampled ({train} rows, random_state {state}): {r['alerts']}", flush=True)
        for shift in STEPS if n_exact else ():
            runs = [step(exact_root, exact_rows, shift, args.seed * 100 + i) for i in range(reps)]
            delays = [r["delay"] for r in runs if r["delay"] is not None]
            row = {
                "shift_sd": shift,
                "replicates": reps,
                "alerted": len(delays),
                "median": statistics.median(delays) if delays else None,
                "p90": _pct(delays, 90) if delays else None,
                "via_confirmation": sum(r["confirmed"] for r in runs),
                "before_change": sum(r["early"] for r in runs),
                "runs": runs,
            }
            report["steps"].append(row)
            print(
                f"  step {shift} sd: alerted {len(delays)}/{reps} within {HORIZON:,}; median "
                f"{row['median']}, p90 {row['p90']}; via confirmation {row['via_confirmation']}",
                flush=True,
            )
    report["seconds"] = round(time.monotonic() - started, 1)
    print_report(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")
    return 0


def print_report(report: dict[str, Any]) -> None:
    print(f"\n## Alerts, not detections ({report['date']}, {report['commit']}, {report['seconds']:.0f} s)\n")
    print(
        "| stream | reference rows | events | drift alerts (statistic, events in) | per 10^6 "
        "| kept under the bound | confirmed |"
    )
    print("|---|---:|---:|---|---:|---:|---:|")
    for r in report["stationary"]:
        n = sum(r["alerts"].values())
        rate = n / r["events"] * 1e6 if n else 3 / r["events"] * 1e6
        shown = f"{rate:.2f}" if n else f"< {rate:.2f}"
        what = ", ".join(f"{a['subject']} {a['measure']} at {a['at']:,}" for a in r["raised"]) or "none"
        print(
            f"| {r['kind']} (random_state {r['random_state']}) | {r['train']:,} | {r['events']:,} | "
            f"{what} | {shown} | "
            f"{r['kept_under_bound']} | {r['confirmed']} |"
        )
    print("\n| step on x03 | alerted within 12,000 | median / p90 delay | via a confirmation |")
    print("|---:|---:|---:|---:|")
    for s in report["steps"]:
        cell = "-" if s["median"] is None else f"{s['median']:,.0f} / {s['p90']:,.0f}"
        print(
            f"| {s['shift_sd']} sd | {s['alerted']} of {s['replicates']} | {cell} | {s['via_confirmation']} |"
        )


if __name__ == "__main__":
    sys.exit(main())
