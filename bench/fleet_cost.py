"""Fleet monitoring's costs, in-process: the hot path, the statistics records, the model's monitor.

Run (from the repo root; no Kafka needed)::

    .venv/bin/python -m bench.fleet_cost             # ~4 minutes
    .venv/bin/python -m bench.fleet_cost --quick     # ~1 minute: one round, smaller passes

Three measurements, all in one run (``bench/_fleet_worker.py`` does each in a process of its own):

1. **The hot path**: ``RequestHandler.handle`` on batches of 500 ``classification-20`` requests (the
   bench's model and payloads, as ``bench/handler_cost.py`` builds them: every monitor and the
   outcome join on) with the detectors in-process (``single``: ``DriftObserver(ship_stats=False)``,
   ``DRIFTLINE_MONITORING__FLEET=false``), with the blocks shipped (``fleet``: ``ship_stats=True``,
   the statistics records built and encoded) and with monitoring off. The three modes take turns,
   in a rotated order, ``--rounds`` times; each process times ``--repeats`` passes after a warm-up
   pass; CPU us per request from ``time.process_time``; medians over every pass, ratios the median
   of the per-round ratios.
2. **The statistics records** the fleet handler answered over its timed passes: records per batch,
   bytes per record and per request served, and which parts (column sets) they carry; also for the
   test suite's ``classification-20`` (10 trees, its reference the training rows:
   ``tests/support/models.py``) on resampled reference rows, and for ``breast-cancer`` with and
   without outcomes, in batches of 500 and 50 (a worker's batches are smaller below its full rate).
3. **The model's monitor**: a fresh non-shipping ``DriftObserver`` (as ``agent/app.py``'s
   ``wire_fleet_monitor`` builds it) fed the captured records in order: CPU us per record for
   ``decode_stats`` and for ``observe_stats``, and per request served, hence the share of one core
   the monitor needs at a given request rate (``--rate``, default the full run's 39,698/s).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
MODEL = "classification-20"
WORKER = REPO / "bench" / "_fleet_worker.py"
RESULTS = REPO / "bench" / "results" / "fleet_cost.json"
FULL_RATE = 39_698.0
"""requests/s of ``python -m bench``'s driftline worker, monitoring on (BENCHMARKS.md, issue 18)."""


def _run(cfg: dict[str, Any], tmp: Path, tag: str) -> dict[str, Any]:
    result = tmp / f"{tag}.json"
    argv = [sys.executable, str(WORKER), json.dumps({**cfg, "result": str(result)})]
    with (tmp / f"{tag}.log").open("w") as log:
        proc = subprocess.run(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0 or not result.exists():
        raise RuntimeError(
            f"{tag} failed (rc {proc.returncode}):\n{(tmp / f'{tag}.log').read_text()[-3000:]}"
        )
    out: dict[str, Any] = json.loads(result.read_text())
    return out


def _payloads(path: Path, messages: list[tuple[str, bytes, bytes]]) -> Path:
    path.write_bytes(pickle.dumps(messages))
    return path


def _reference_requests(rows: np.ndarray, n: int, seed: int) -> list[tuple[str, bytes, bytes]]:
    """``n`` requests for the test package: its reference rows resampled with ``seed``."""
    names = [f"x{i:02d}" for i in range(rows.shape[1])]
    rng = np.random.default_rng(seed)
    out = []
    for i, row in enumerate(rows[rng.integers(0, len(rows), n)]):
        rid = f"ref-{i}"
        body = {"request_id": rid, "model": MODEL, "features": dict(zip(names, map(float, row), strict=True))}
        out.append(("requests", rid.encode(), json.dumps(body).encode()))
    return out


def _test_package(root: Path) -> np.ndarray:
    """classification-20 as tests/support/models.py builds it (10 trees, the training rows as holdout)."""
    from agent.models.repository import ModelRepository
    from agent.packaging.builder import build_package
    from agent.packaging.examples import classification_20
    from agent.packaging.training import TrainingResult

    r = classification_20(n_estimators=10, n_samples=2000)
    replayed = TrainingResult(
        r.estimator, r.X_reference, r.y_reference, r.feature_names, r.X_reference, r.y_reference
    )
    build_package(replayed, name=MODEL, version="1", repository=ModelRepository(root))
    return np.asarray(r.X_reference, dtype=np.float64)


def _describe_stats(s: dict[str, Any]) -> str:
    parts = ", ".join(
        f"{name} {p['blocks'] / max(p['records'], 1):.1f} blocks x {p['streams']} streams + {p['raw']} raw"
        for name, p in s["parts"].items()
    )
    return (
        f"{s['records']:,} records for {s['requests']:,} requests in {s['batches']:,} batches "
        f"({s['records_per_batch']:.2f} per batch; batches by records {s['batches_with']}); "
        f"{s['bytes'] / max(s['records'], 1):,.0f} bytes per record "
        f"({s['bytes_per_record_min']:,}-{s['bytes_per_record_max']:,}; header "
        f"{s['header_bytes'] / max(s['records'], 1):,.0f}), "
        f"**{s['bytes_per_request']:.1f} bytes per request**; "
        f"per record: {parts}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet_cost", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round of 2 passes of 10,000 requests")
    parser.add_argument("--requests", type=int, default=20_000, help="payloads per pass")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per process")
    parser.add_argument("--rounds", type=int, default=5, help="processes per mode")
    parser.add_argument("--rate", type=float, default=FULL_RATE, help="requests/s for the monitor's share")
    parser.add_argument("--skip-bytes", action="store_true", help="skip the other models' records")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.repeats, args.rounds = 10_000, 2, 1

    from agent.models.repository import ModelRepository
    from agent.packaging.builder import build_package
    from agent.packaging.examples import breast_cancer, classification_20
    from producers.scenarios import generate

    modes = ["single", "fleet", "off"]
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "args": {k: str(v) for k, v in vars(args).items()},
        "loadavg_start": os.getloadavg()[0],
    }
    with tempfile.TemporaryDirectory(prefix="driftline-fleet-cost-") as tmpdir:
        tmp = Path(tmpdir)
        print(f"building the {MODEL} package ...", flush=True)
        build_package(
            classification_20(), name=MODEL, version="1", repository=ModelRepository(tmp / "models")
        )
        messages = generate("calm", model=MODEL, seed=7, count=args.requests, outcome_share=0.0)
        payloads = _payloads(tmp / "payloads.pkl", [("requests", m.key, m.value) for m in messages])
        base = {"model_repository": str(tmp / "models"), "model": MODEL, "payloads": str(payloads)}

        passes: dict[str, list[float]] = {m: [] for m in modes}
        per_round: dict[str, list[float]] = {m: [] for m in modes}
        monitor: dict[str, list[float]] = {"decode": [], "observe": [], "per_request": []}
        stats: dict[str, Any] = {}
        for rnd in range(args.rounds):
            order = modes[rnd % len(modes) :] + modes[: rnd % len(modes)]
            for mode in order:
                cfg = {
                    **base,
                    "batch": args.batch,
                    "repeats": args.repeats,
                    "mode": mode,
                    "monitor": mode == "fleet",
                }
                res = _run(cfg, tmp, f"{mode}-{rnd}")
                passes[mode].extend(res["us_per_request"])
                per_round[mode].append(statistics.median(res["us_per_request"]))
                times = " ".join(f"{x:.2f}" for x in res["us_per_request"])
                line = f"  round {rnd} {mode:<6} {times} us/request"
                if mode != "off":
                    line += f" (alerts from the handler: {res['handler_alerts'] or 'none'})"
                if "monitor" in res:
                    m = res["monitor"]
                    monitor["decode"].extend(m["decode_us_per_record"])
                    monitor["observe"].extend(m["observe_us_per_record"])
                    monitor["per_request"].extend(m["us_per_request"])
                    stats = res["stats"]
                    line += (
                        f"; monitor {' '.join(f'{x:.2f}' for x in m['us_per_request'])} us/request "
                        f"({statistics.median(m['observe_us_per_record']):.0f} us per record observed, "
                        f"{statistics.median(m['decode_us_per_record']):.0f} decoded; "
                        f"alerts {m['alerts'] or 'none'})"
                    )
                print(line, flush=True)

        others: dict[str, Any] = {}
        if not args.skip_bytes:
            print("statistics records of the other models ...", flush=True)
            rows = _test_package(tmp / "test-models")
            n = 20_000
            test_payloads = _payloads(tmp / "test.pkl", _reference_requests(rows, n, seed=3))
            build_package(
                breast_cancer(n_estimators=10),
                name="breast-cancer",
                version="1",
                repository=ModelRepository(tmp / "bc-models"),
            )
            bc = list(generate("calm", model="breast-cancer", seed=7, count=n, outcome_share=0.0))
            bc_out = list(generate("calm", model="breast-cancer", seed=7, count=n, outcome_share=1.0))
            bc_payloads = _payloads(tmp / "bc.pkl", [("requests", m.key, m.value) for m in bc])
            bc_out_payloads = _payloads(tmp / "bc-out.pkl", [(m.kind.topic, m.key, m.value) for m in bc_out])
            cases = [
                (f"{MODEL} (bench, 100 trees)", base["model_repository"], MODEL, str(payloads)),
                (f"{MODEL} (tests, reference rows)", str(tmp / "test-models"), MODEL, str(test_payloads)),
                ("breast-cancer, no outcomes", str(tmp / "bc-models"), "breast-cancer", str(bc_payloads)),
                (
                    "breast-cancer, every outcome",
                    str(tmp / "bc-models"),
                    "breast-cancer",
                    str(bc_out_payloads),
                ),
            ]
            for label, repository, model, path in cases:
                for batch in (500, 50):
                    cfg = {
                        "model_repository": repository,
                        "model": model,
                        "payloads": path,
                        "batch": batch,
                        "repeats": 1,
                        "mode": "fleet",
                        "monitor": True,
                    }
                    res = _run(cfg, tmp, f"bytes-{model}-{batch}-{len(others)}")
                    key = f"{label}, batches of {batch}"
                    others[key] = {
                        **res["stats"],
                        "monitor_us_per_request": res["monitor"]["us_per_request"][0],
                        "monitor_us_per_record": res["monitor"]["observe_us_per_record"][0]
                        + res["monitor"]["decode_us_per_record"][0],
                        "handler_us_per_request": res["us_per_request"][0],
                    }
                    print(
                        f"  {key}: {_describe_stats(res['stats'])}; monitor "
                        f"{others[key]['monitor_us_per_record']:.0f} us per record, "
                        f"{others[key]['monitor_us_per_request']:.2f} us per request",
                        flush=True,
                    )
    report["loadavg_end"] = os.getloadavg()[0]

    med = {m: statistics.median(v) for m, v in passes.items()}
    ratio = {
        "fleet_vs_single": statistics.median(
            f / s for f, s in zip(per_round["fleet"], per_round["single"], strict=True)
        ),
        "single_vs_off": statistics.median(
            s / o for s, o in zip(per_round["single"], per_round["off"], strict=True)
        ),
        "fleet_vs_off": statistics.median(
            f / o for f, o in zip(per_round["fleet"], per_round["off"], strict=True)
        ),
    }
    mon = {k: statistics.median(v) for k, v in monitor.items()}
    print(
        f"\nRequestHandler.handle, batches of {args.batch}, {args.requests:,} requests per pass; CPU us per "
        f"request, medians of {args.rounds} rounds x {args.repeats} passes (load average "
        f"{report['loadavg_start']:.2f} -> {report['loadavg_end']:.2f})"
    )
    for m in modes:
        v = passes[m]
        print(
            f"  {m:<7} {med[m]:6.2f} us ({min(v):.2f}-{max(v):.2f})"
            + ("" if m == "off" else f"   monitoring {med[m] - med['off']:.2f} us")
        )
    print(
        f"  fleet / single {ratio['fleet_vs_single']:.3f}, single / off {ratio['single_vs_off']:.3f}, "
        f"fleet / off {ratio['fleet_vs_off']:.3f} (medians of per-round ratios)"
    )
    print(f"\nstatistics records (the bench's workload, {args.batch} per batch): {_describe_stats(stats)}")
    total = med["fleet"] + mon["per_request"]
    print(
        f"\nthe model's monitor: decode_stats {mon['decode']:.0f} us + observe_stats "
        f"{mon['observe']:.0f} us per record = {mon['per_request']:.2f} us per request served; "
        f"at {args.rate:,.0f} requests/s "
        f"{mon['per_request'] * args.rate / 1e6:.3f} of one core"
        f"\n  fleet worker {med['fleet']:.2f} + monitor {mon['per_request']:.2f} = {total:.2f} us "
        f"per request, against {med['single']:.2f} single ({total / med['single']:.3f}x)"
    )
    report.update(
        {
            "us_per_request": {
                m: {"median": med[m], "passes": passes[m], "per_round": per_round[m]} for m in modes
            },
            "ratios": ratio,
            "stats": stats,
            "monitor": {"median": mon, "runs": monitor},
            "monitor_cores_at_rate": mon["per_request"] * args.rate / 1e6,
            "fleet_plus_monitor_us": total,
            "other_models": others,
        }
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
