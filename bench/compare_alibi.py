"""Drift detection against alibi-detect's online detectors, on the same seeded streams.

Compares, stream by stream (``bench/_drift_streams.py``):

* **driftline**: a :class:`FeatureDriftMonitor` per replicate, built from the stream's reference
  sample as a package builds it (101 quantiles per numeric feature; the category frequencies for a
  categorical one, through :class:`CategoricalTransform`), with the library's default configuration
  (``DriftConfig()``: 0.0007 false alarms per 1e6 events per column), or with ``--budget N`` the
  parameters serving derives for a model of these columns from its false-alarm budget of ``N`` per
  1e6 events (``monitoring.false_alarms_per_million``, 1 by default: :mod:`agent.monitoring.budget`),
  fed the live rows in batches of 500 as the serving path feeds it.
  Whatever statistics the monitor watches by default, it watches here; for the pair of features,
  the reconstruction-error monitor too where this checkout has it (``agent.monitoring.multivariate``).
* **alibi-detect**: ``CVMDriftOnline`` on numeric features and ``FETDriftOnline`` on one-vs-rest
  0/1 indicators of each category, on the same reference sample, one ``predict`` per event,
  windows ``--windows``, thresholds configured by its own simulation for ``--ert`` with 10x as
  many bootstraps (as its documentation asks). It runs in a venv of its own: alibi-detect 0.13
  needs numpy < 2, driftline's river needs numpy >= 2.2.5 (``--setup`` creates it).

Method (fixed seeds throughout):

* **Reference**: ``--n-ref`` rows drawn from the stream's no-change distribution, one sample per
  stream kind, shared by both detectors and every replicate.
* **Replicates**: ``warm + U[0, 32)`` rows from the reference distribution, then the change, then
  at least ``horizon`` changed rows. driftline reads every row from the first (it is anchored to
  its reference at start-up). alibi-detect reads the last ``lead`` rows before the change and then
  the changed rows: its state is its last ``max(windows)`` rows and its thresholds stop changing
  after ``2 * max(windows) - 1`` rows, so ``lead = 2 * max(windows)`` meets the change in the
  state any longer run would, and costs a hundredth of the time.
* **Delay**: the number of changed rows up to and including the one the detector fired on; a
  replicate with no detection within ``horizon`` rows is a miss. driftline fires at the end of a
  block of 32 events; a detection before the change is a false alarm (counted, the run goes on).
* **False alarms**: the stable streams (no change). driftline reads all their rows; alibi-detect
  the first 10,000 rows of 4 of them (5,000 of 2 with ``--quick``), reset after each alarm (its
  ERT counts from a fresh start). driftline also runs longer stable streams, each replicate with
  a reference of its own.
* **Cost**: microseconds per update (one event of all a detector's features) and per update per
  feature, once windows are full, in the same run.

Run::

    .venv/bin/python -m bench.compare_alibi --setup  # once: .venv-compare/ (compare-requirements.txt)
    .venv/bin/python -m bench.compare_alibi        # full: 5-6 minutes on 2 shared cores
    .venv/bin/python -m bench.compare_alibi --quick  # 1-2 minutes
    .venv/bin/python -m bench.compare_alibi --skip-alibi --budget 1  # driftline as served, alone (~1 min)

The first run with a new ``--ert``, ``--n-ref`` or ``--windows`` also runs alibi-detect's threshold
simulation (minutes); its result is kept in ``bench/results/alibi_thresholds.json``. Results go to
``bench/results/compare_alibi.json`` (``--quick``: ``compare_alibi_quick.json``).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from agent.monitoring import (
    CategoricalTransform,
    DriftConfig,
    FeatureDriftMonitor,
    PercentileTransform,
    ReferenceTransform,
)
from agent.monitoring.budget import within_budget
from bench._drift_streams import STREAMS, Stream, StreamSpec, first_after, make_stream, summarise

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "bench" / "compare-requirements.txt"
DEFAULT_VENV = ROOT / ".venv-compare"
BATCH = 500
PROBS = np.linspace(0.0, 1.0, 101)
CATEGORIES = 3


# --------------------------------------------------------------------------------------------
# driftline
# --------------------------------------------------------------------------------------------


def reference_transform(spec: StreamSpec, reference: np.ndarray) -> ReferenceTransform:
    """The stream's reference as a package holds it: quantiles, or category frequencies."""
    if spec.kind == "categorical":
        codes, counts = np.unique(reference[:, 0], return_counts=True)
        return ReferenceTransform(
            [CategoricalTransform({float(c): int(n) for c, n in zip(codes, counts, strict=True)})]
        )
    return ReferenceTransform(
        [PercentileTransform(np.quantile(reference[:, j], PROBS)) for j in range(reference.shape[1])]
    )


Setup = DriftConfig | float | None
"""driftline's detectors: a :class:`DriftConfig`, a false-alarm budget per 10**6 events of the whole
model (``--budget``: the parameters serving derives for the model, :mod:`agent.monitoring.budget`),
or ``None`` for the library's defaults."""


def feature_monitor(names: list[str], transform: ReferenceTransform, setup: Setup) -> FeatureDriftMonitor:
    """The model's feature monitor, built as serving builds it when ``setup`` is a budget."""
    if isinstance(setup, float):
        monitor, _ = within_budget(lambda c: FeatureDriftMonitor(names, transform, config=c), setup)
        return monitor
    return FeatureDriftMonitor(names, transform, config=setup)


def reconstruction_monitor(
    spec: StreamSpec, reference: np.ndarray, names: list[str], config: Setup
) -> Any | None:
    """The reconstruction-error monitor of a model with several numeric features (issue 14, item 4),
    fitted on the reference rows alone (no holdout); None where this checkout has none."""
    if spec.kind != "pair":
        return None
    try:
        from agent.monitoring.multivariate import ReconstructionMonitor
        from agent.packaging.reconstruction import fit_reconstruction
    except ImportError:
        return None
    r = fit_reconstruction(names, reference)
    # Under a budget, serving gives the reconstruction column its own calibration (the defaults).
    config = None if isinstance(config, float) else config
    return None if r is None else ReconstructionMonitor(r, tuple(names), config=config)


def driftline_events(
    spec: StreamSpec, reference: np.ndarray, live: np.ndarray, config: Setup = None
) -> tuple[list[int], float]:
    """Event indices at which a fresh model's monitors fired (any column), and the seconds it took."""
    names = [f"x{j}" for j in range(live.shape[1])]
    monitors: list[Any] = [feature_monitor(names, reference_transform(spec, reference), config)]
    multivariate = reconstruction_monitor(spec, reference, names, config)
    if multivariate is not None:
        monitors.append(multivariate)
    events = []
    start = time.perf_counter()
    for lo in range(0, live.shape[0], BATCH):
        for monitor in monitors:
            events += [d.event_index for d in monitor.update_batch(live[lo : lo + BATCH])]
    return sorted(events), time.perf_counter() - start


def run_driftline(stream: Stream, config: Setup) -> dict[str, Any]:
    per_rep = [driftline_events(stream.spec, stream.reference, rep, config) for rep in stream.live]
    return {
        "events": [events for events, _ in per_rep],
        "seconds": sum(s for _, s in per_rep),
        "updates": int(stream.live.shape[0] * stream.live.shape[1]),
    }


def driftline_long_stable(
    kind: str, reps: int, events: int, n_ref: int, seed: int, config: Setup
) -> dict[str, Any]:
    """Alarms on long stable streams, each replicate with a reference sample of its own."""
    spec = STREAMS[{"numeric": "stable", "categorical": "stable mix", "pair": "stable pair"}[kind]]
    alarms = 0
    for r in range(reps):
        s = make_stream(spec, 1, events - 32, 0, n_ref, seed=seed * 1000 + r)
        found, _ = driftline_events(spec, s.reference, s.live[0], config)
        alarms += len(found)
    return {"kind": kind, "replicates": reps, "events": reps * events, "alarms": alarms}


def driftline_cost(n_ref: int, seed: int, events: int, config: Setup) -> list[dict[str, Any]]:
    rng = np.random.default_rng((seed, 77))
    out = []
    for kind, d in (("numeric", 1), ("numeric", 20), ("categorical", 1)):
        spec = STREAMS["stable" if kind == "numeric" else "stable mix"]
        if kind == "numeric":
            reference, live = rng.standard_normal((n_ref, d)), rng.standard_normal((events, d))
        else:
            reference = rng.integers(0, CATEGORIES, (n_ref, d)).astype(np.float64)
            live = rng.integers(0, CATEGORIES, (events, d)).astype(np.float64)
        names = [f"x{j}" for j in range(d)]
        monitor = feature_monitor(names, reference_transform(spec, reference), config)
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for lo in range(0, events, BATCH):
                monitor.update_batch(live[lo : lo + BATCH])
            best = min(best, (time.perf_counter() - start) / events * 1e6)
        out.append(
            {
                "detector": f"FeatureDriftMonitor ({kind})",
                "features": d,
                "after_updates": 0,
                "updates": events,
                "us_per_update": round(best, 2),
                "us_per_update_per_feature": round(best / d, 2),
            }
        )
    return out


# --------------------------------------------------------------------------------------------
# alibi-detect (in its own venv)
# --------------------------------------------------------------------------------------------


def alibi_python(given: str | None) -> Path | None:
    candidates = [given, os.environ.get("DRIFTLINE_COMPARE_PYTHON"), str(DEFAULT_VENV / "bin" / "python")]
    for c in candidates:
        if c and Path(c).exists():
            probe = subprocess.run([c, "-c", "import alibi_detect"], capture_output=True, check=False)
            if probe.returncode == 0:
                return Path(c)
    return None


def missing_alibi_message() -> str:
    return (
        "alibi-detect is not installed. It cannot share driftline's venv (alibi-detect 0.13 needs\n"
        "numpy < 2 and numba < 0.60; driftline's river 0.26 needs numpy >= 2.2.5), so this bench runs it\n"
        f"in a venv of its own, from {REQUIREMENTS.relative_to(ROOT)}:\n\n"
        "    .venv/bin/python -m bench.compare_alibi --setup\n\n"
        f"creates {DEFAULT_VENV.relative_to(ROOT)}/; or point --alibi-python (or DRIFTLINE_COMPARE_PYTHON)\n"
        "at a Python that has those requirements. --skip-alibi runs driftline's half alone."
    )


def setup_venv() -> None:
    python = sys.executable  # venv makes the new venv from the base interpreter
    print(f"creating {DEFAULT_VENV} and installing {REQUIREMENTS.name} (a large tree: numba, scipy, ...)")
    subprocess.run([python, "-m", "venv", str(DEFAULT_VENV)], check=True)
    pip = [str(DEFAULT_VENV / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
    subprocess.run([*pip, "-r", str(REQUIREMENTS)], check=True)


def run_alibi(python: Path, streams: list[Stream], args: argparse.Namespace, lead: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="compare-alibi-") as tmp:
        root = Path(tmp)
        jobs = []
        for i, s in enumerate(streams):
            stable = s.spec.after is None
            if stable:
                live = s.live[: args.alibi_stable[0], : args.alibi_stable[1]]
            else:
                live = np.stack(
                    [
                        rep[at - lead : at + args.alibi_horizon]
                        for rep, at in zip(s.live, s.change.tolist(), strict=True)
                    ]
                )
            np.save(root / f"ref{i}.npy", s.reference, allow_pickle=False)
            np.save(root / f"live{i}.npy", live, allow_pickle=False)
            jobs.append(
                {
                    "name": s.spec.name,
                    "kind": s.spec.kind,
                    "reference": f"ref{i}.npy",
                    "live": f"live{i}.npy",
                    "lead": 0 if stable else lead,
                    "mode": "stable" if stable else "delay",
                    "categories": CATEGORIES,
                }
            )
        job = {
            "ert": args.ert,
            "n_bootstraps": int(10 * args.ert),
            "windows": args.windows,
            "seed": args.seed,
            "n_ref": args.n_ref,
            "thresholds_cache": str(ROOT / "bench" / "results" / "alibi_thresholds.json"),
            "streams": jobs,
            # [detector, features, updates, of which measured]
            "cost_cases": [
                ["cvm", 1, 2200, 2000],
                ["cvm", 20, 500 if args.quick else 700, 300 if args.quick else 500],
                ["fet", CATEGORIES, 2200, 2000],
            ]
            + ([] if args.quick else [["cvm", 1, 20_000, 1000], ["fet", CATEGORIES, 20_000, 1000]]),
        }
        (root / "job.json").write_text(json.dumps(job))
        subprocess.run([str(python), str(ROOT / "bench" / "_alibi_side.py"), tmp], check=True)
        result: dict[str, Any] = json.loads((root / "result.json").read_text())
        return result


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _rate(alarms: int, events: int) -> str:
    if events == 0:
        return "-"
    if alarms == 0:
        # With no alarm, the 95% upper bound of a Poisson rate is 3 / exposure.
        return f"<{3 / events * 1e6:.3g}"
    return f"{alarms / events * 1e6:.3g}"


def _cell(summary: dict[str, Any], horizon: int) -> str:
    def one(v: float | None) -> str:
        return f">{horizon}" if v is None else f"{v:g}"

    missed = f" ({summary['missed']} missed)" if summary["missed"] else ""
    return f"{one(summary['median'])} / {one(summary['p90'])}{missed}"


def score(stream: Stream, events: list[list[int]], offsets: list[int], horizon: int) -> dict[str, Any]:
    """Delays of one detector's per-replicate detection indices, its alarms before the change, and
    the replicates that had any (driftline reads ``warm`` events before it, alibi-detect ``lead``)."""
    delays, pre, replicates = [], 0, 0
    for fired, at in zip(events, offsets, strict=True):
        delay, before = first_after(fired, at)
        delays.append(delay if delay is None or delay <= horizon else None)
        pre += before
        replicates += before > 0
    return {
        **summarise(delays, horizon),
        "pre_change_alarms": pre,
        "replicates_with_pre_change_alarms": replicates,
        "delays": delays,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer replicates and shorter streams (<2 min)")
    parser.add_argument(
        "--setup", action="store_true", help="create .venv-compare with alibi-detect, then exit"
    )
    parser.add_argument("--reps", type=int, help="replicates per stream (default 40, --quick 8)")
    parser.add_argument("--ert", type=float, default=1000.0, help="alibi-detect's expected run time")
    parser.add_argument("--n-ref", type=int, default=1000, help="reference rows (both detectors)")
    parser.add_argument("--windows", type=lambda s: [int(w) for w in s.split(",")], default=[20, 50, 100])
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--alibi-python", help="a Python with bench/compare-requirements.txt installed")
    parser.add_argument(
        "--alibi-horizon", type=int, default=5_000, help="changed events alibi-detect reads at most"
    )
    parser.add_argument(
        "--driftline-config",
        type=parse_config,
        help="DriftConfig fields for driftline, e.g. ph_threshold=4,adwin_delta=1e-4 (default: its defaults)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        help="driftline's detectors as serving builds them for a false-alarm budget of this many per 1e6 "
        "events of the whole model (monitoring.false_alarms_per_million; serving's default is 1)",
    )
    parser.add_argument("--skip-alibi", action="store_true", help="driftline's half only")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.budget is not None and args.driftline_config is not None:
        parser.error("--budget and --driftline-config both set driftline's detectors: give one")
    if args.budget is not None and not args.budget > 0:
        parser.error(f"--budget must be > 0 false alarms per 1e6 events, got {args.budget:g}")
    setup: Setup = args.driftline_config if args.budget is None else float(args.budget)
    if args.setup:
        setup_venv()
        return
    reps = args.reps or (8 if args.quick else 40)
    args.warm = 5_000 if args.quick else 20_000
    args.horizon = 5_000 if args.quick else 20_000
    # alibi-detect on stable streams: (replicates, events each); its cost per event is high.
    args.alibi_stable = (2, 4_000) if args.quick else (4, 10_000)
    args.alibi_horizon = min(args.alibi_horizon, args.horizon)
    lead = 2 * max(args.windows)
    out = args.out or ROOT / "bench" / "results" / (
        "compare_alibi_quick.json" if args.quick else "compare_alibi.json"
    )
    python = None
    if not args.skip_alibi:
        python = alibi_python(args.alibi_python)
        if python is None:
            print(missing_alibi_message(), file=sys.stderr)
            raise SystemExit(2)
    started = time.perf_counter()

    streams = [
        make_stream(spec, reps, args.warm, args.horizon, args.n_ref, args.seed) for spec in STREAMS.values()
    ]
    alibi = run_alibi(python, streams, args, lead) if python is not None else None
    rows = []
    for i, s in enumerate(streams):
        ours = run_driftline(s, setup)
        row: dict[str, Any] = {
            "stream": s.spec.name,
            "note": s.spec.note,
            "driftline": {"updates": ours["updates"], "seconds": round(ours["seconds"], 2)},
        }
        stable = s.spec.after is None
        if stable:
            row["driftline"]["alarms"] = sum(len(e) for e in ours["events"])
        else:
            row["driftline"].update(score(s, ours["events"], s.change.tolist(), args.horizon))
        if alibi is not None:
            theirs = alibi["streams"][i]
            cell = {k: theirs[k] for k in ("detector", "features", "updates", "configure_seconds")}
            cell["seconds"] = round(theirs["seconds"], 2)
            if stable:
                cell["alarms"] = sum(len(e) for e in theirs["events"])
            else:
                cell.update(score(s, theirs["events"], [lead] * reps, args.alibi_horizon))
            row["alibi"] = cell
        rows.append(row)

    long_reps, long_events = (20, 50_000) if args.quick else (100, 200_000)
    long_stable = [
        driftline_long_stable(kind, long_reps, long_events, args.n_ref, args.seed + k, setup)
        for k, kind in enumerate(("numeric", "categorical", "pair"))
    ]
    cost = driftline_cost(args.n_ref, args.seed, 100_000 if args.quick else 200_000, setup)
    if alibi is not None:
        cost += alibi["cost"]
    elapsed = time.perf_counter() - started
    report(rows, long_stable, cost, args, reps, lead, alibi)
    print(f"\n(took {elapsed:.0f} s)")
    record = {
        "args": {k: (str(v) if isinstance(v, Path | DriftConfig) else v) for k, v in vars(args).items()},
        "driftline_config": str(args.driftline_config or DriftConfig()) if args.budget is None else None,
        "driftline_budget_per_million": args.budget,
        "replicates": reps,
        "alibi_lead": lead,
        "alibi_versions": alibi["versions"] if alibi else None,
        "machine": {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": _commit()},
        "rows": rows,
        "driftline_long_stable": long_stable,
        "cost": cost,
        "seconds": round(elapsed, 1),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


def report(
    rows: list[dict[str, Any]],
    long_stable: list[dict[str, Any]],
    cost: list[dict[str, Any]],
    args: argparse.Namespace,
    reps: int,
    lead: int,
    alibi: dict[str, Any] | None,
) -> None:
    h, ha = args.horizon, args.alibi_horizon
    config = args.driftline_config or "defaults"
    if args.budget is not None:
        config = f"a budget of {args.budget:g} false alarms per 1e6 events per model, as served"
    print(
        f"## Drift detection, {reps} replicates per stream: delay in events after the change, "
        f"median / p90 (>N: not detected within N events)"
    )
    print(
        f"reference {args.n_ref} rows; driftline: FeatureDriftMonitor, {config}, batches of {BATCH}, "
        f"{args.warm} + U[0, 32) events before the change; alibi-detect: ERT {args.ert:g}, windows "
        f"{args.windows}, {int(10 * args.ert)} bootstraps, {lead} events before the change and at most "
        f"{ha} after"
    )
    print(
        "(pre: replicates with a false alarm before the change, over the events each detector read before it)"
    )
    print(f"\n{'stream':<20}{'driftline':>26}{'pre':>5}   {'alibi-detect':>26}{'pre':>5}")
    for row in rows:
        ours, theirs = row["driftline"], row.get("alibi")
        if "alarms" in ours:
            continue
        right = f"{_cell(theirs, ha):>26}{theirs['replicates_with_pre_change_alarms']:>5}" if theirs else ""
        print(
            f"{row['stream']:<20}{_cell(ours, h):>26}{ours['replicates_with_pre_change_alarms']:>5}   {right}"
        )
    print("\nFalse alarms per 1e6 events on stable streams (alarms / events)")
    for row in rows:
        ours, theirs = row["driftline"], row.get("alibi")
        if "alarms" not in ours:
            continue
        rate = _rate(ours["alarms"], ours["updates"])
        line = f"{row['stream']:<20}driftline {rate:>8} ({ours['alarms']}/{ours['updates']})"
        if theirs:
            line += (
                f"   {theirs['detector']} ({theirs['features']} feature(s)) "
                f"{_rate(theirs['alarms'], theirs['updates']):>8} ({theirs['alarms']}/{theirs['updates']}); "
                f"by its ERT {1e6 / args.ert:g}"
            )
        print(line)
    for ls in long_stable:
        print(
            f"driftline, {ls['kind']} stable, {ls['replicates']} references x "
            f"{ls['events'] // ls['replicates']} events: {_rate(ls['alarms'], ls['events'])} "
            f"({ls['alarms']}/{ls['events']})"
        )
    print("\nCost per update (one event of all the detector's features), per update per feature")
    for c in cost:
        after = f" after {c['after_updates']} updates" if c["after_updates"] > 2 * max(args.windows) else ""
        print(
            f"{c['detector']:<34}{c['features']:>3} feature(s) {c['us_per_update']:>10.2f} us"
            f" {c['us_per_update_per_feature']:>10.2f} us{after}"
        )
    if alibi is not None:
        configured = {
            (r["alibi"]["detector"], r["alibi"]["features"]): r["alibi"]["configure_seconds"] for r in rows
        }
        print(
            "alibi-detect's threshold simulation (s, once per configuration; cached): "
            + ", ".join(f"{d} x{f}: {s:.0f}" for (d, f), s in configured.items())
        )
        print(f"alibi-detect versions: {alibi['versions']}")


def parse_config(text: str) -> DriftConfig:
    """``DriftConfig`` from ``field=value,...`` (values as Python literals).

    >>> parse_config("ph_threshold=4,adwin_delta=1e-4").ph_threshold
    4
    """
    fields = dict(item.split("=", 1) for item in text.split(",") if item)
    return DriftConfig(**{k.strip(): ast.literal_eval(v.strip()) for k, v in fields.items()})


def _commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip()


if __name__ == "__main__":
    main()
