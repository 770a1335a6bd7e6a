"""A stationary million over two fleet workers: no drift alert expected, and what the fleet shipped.

Run (from the repo root, with the broker up: ``scripts/kafka up``)::

    .venv/bin/python -m bench.fleet_stationary                     # 10^6 requests: ~3-4 minutes
    .venv/bin/python -m bench.fleet_stationary --events 100000     # a quick look
    .venv/bin/python -m bench.fleet_stationary --fleet false       # the single-process design

Two ``driftline run`` workers (one group, ``DRIFTLINE_*`` variables as a user sets them; default
monitoring settings, fleet monitoring on unless ``--fleet false``) on a 4-partition requests topic.
The model is ``classification-20`` as the test suite builds it (``tests/support/models.py``: 10
trees, 2,000 samples, its training rows as the holdout, so every reference describes those rows),
and the requests are its reference rows resampled with a fixed seed: a stationary stream, as the
integration tests send it. Once both workers have their partitions, the bench publishes
``--events`` requests as fast as it can, waits until each has its prediction and until the model's
monitor has committed every statistics record, and then reads the alerts topic: alerts by kind and
subject, and incident reports. It reports the elapsed time, the workers' CPU, the statistics
topic's records and bytes, and which worker hosted the model's monitor (from the workers' logs).

Expected: no data, prediction or performance alert. The false-alarm budget is 1 per 10^6 events
for the whole model (README, "Drift detection and its false-alarm budget": 0.63 per 10^6 measured
for 20 features with every statistic), so one alert in 10^6 events is within it, and two or more
would be unusual (P ~ 13 % at 0.63 per 10^6).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from bench._harness import proc_cpu_seconds, proc_peak_rss_mb
from bench.run import PARTITIONS, Bench, _all_assigned, _wait_ready

REPO = Path(__file__).resolve().parent.parent
MODEL = "classification-20"
NAMES = [f"x{i:02d}" for i in range(20)]
RESULTS = REPO / "bench" / "results" / "fleet_stationary.json"


def build_test_package(root: Path) -> np.ndarray:
    """classification-20 as tests/support/models.py builds it; returns its reference rows."""
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


def stationary(rows: np.ndarray, n: int, seed: int, chunk: int = 50_000) -> Iterator[Any]:
    """``n`` requests, reference rows drawn with ``seed``, made as they are sent (not held)."""
    from producers.stream import Message, MessageKind

    rng = np.random.default_rng(seed)
    for lo in range(0, n, chunk):
        for i, row in enumerate(rows[rng.integers(0, len(rows), min(chunk, n - lo))].tolist(), lo):
            rid = f"st-{seed}-{i}"
            body = {"request_id": rid, "model": MODEL, "features": dict(zip(NAMES, row, strict=True))}
            yield Message(rid.encode(), orjson.dumps(body), MessageKind.REQUEST)


async def end_count(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await consumer.stop()


async def read_all(bootstrap: str, topic: str) -> list[Any]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(tps)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[Any] = []
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for batch in (await consumer.getmany(timeout_ms=1000)).values():
                out.extend(batch)
        return out
    finally:
        await consumer.stop()


async def run(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    from schemas.alert import Alert
    from schemas.incident import decode_record

    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "events": args.events,
        "seed": args.seed,
        "fleet": args.fleet,
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }
    print(f"run {bench.run_id}: building {MODEL} (the test suite's) ...", flush=True)
    rows = build_test_package(bench.package_root)
    label = "stationary"
    topics = bench.topics(label)
    await bench.create_topics(topics)
    app_id = f"{bench.prefix}-{label}"
    settings = {"DRIFTLINE_MONITORING__FLEET": "true" if args.fleet else "false"}
    procs = [
        bench.start_driftline(f"{label}-w{i}", topics, app_id, monitoring=True, settings=settings)
        for i in range(2)
    ]
    try:
        for proc in procs:
            await _wait_ready(proc, 120.0)
        deadline = time.monotonic() + 90
        while not await _all_assigned(procs) and time.monotonic() < deadline:
            await asyncio.sleep(0.3)
        await asyncio.sleep(3.0)  # Faust's group (the statistics topic's agent) settles too
        cpu0 = {p.label: proc_cpu_seconds(p.pid) or 0.0 for p in procs}
        print(f"  both workers assigned; publishing {args.events:,} stationary requests ...", flush=True)
        started = time.monotonic()
        summary = await bench.publish(topics, stationary(rows, args.events, args.seed))
        published = time.monotonic() - started
        print(
            f"  published in {published:.1f} s ({summary.rate:,.0f}/s); waiting for the predictions",
            flush=True,
        )
        deadline = time.monotonic() + 120 + args.events / 2000
        served = 0
        while time.monotonic() < deadline:
            served = await end_count(bench.bootstrap, topics["predictions"])
            dead = await end_count(bench.bootstrap, topics["dead"])
            if served + dead >= args.events:
                break
            if not all(p.alive() for p in procs):
                raise RuntimeError("a worker exited:\n" + "\n".join(p.tail() for p in procs))
            await asyncio.sleep(0.2)
        elapsed = time.monotonic() - started
        cpu = {p.label: (proc_cpu_seconds(p.pid) or 0.0) - cpu0[p.label] for p in procs}
        report.update(
            {
                "publish_s": round(published, 1),
                "served_s": round(elapsed, 1),
                "predictions": served,
                "dead_letters": dead,
                "requests_per_s": served / elapsed,
                "worker_cpu_s": {k: round(v, 1) for k, v in cpu.items()},
                "cpu_us_per_request": sum(cpu.values()) / max(served, 1) * 1e6,
            }
        )
        print(f"  {served:,} predictions, {dead:,} dead letters in {elapsed:.1f} s", flush=True)
        if args.fleet:
            report["stats_topic"] = await bench.fleet_stats(app_id, timeout_s=60.0)
            print(f"  statistics topic: {report['stats_topic']}", flush=True)
        await asyncio.sleep(args.settle_s)  # alerts of the last records, incident reports
        report["rss_peak_mb"] = {p.label: proc_peak_rss_mb(p.pid) for p in procs}
        # Before the workers stop (each stop is a rebalance, logged too).
        hosts: dict[str, list[str]] = {}
        for proc in procs:
            with contextlib.suppress(OSError):
                text = proc.log.read_text(errors="replace")
                hosts[proc.label] = re.findall(
                    r"fleet monitor: (?:assigned statistics partitions \[[^\]]*\]|hosting .*)", text
                )
        report["monitor_log"] = hosts
    finally:
        for p in procs:
            bench.stop(p)
    kinds: Counter[str] = Counter()
    subjects: Counter[str] = Counter()
    incidents = 0
    for record in await read_all(bench.bootstrap, topics["alerts"]):
        if record.value is None:
            continue
        decoded = decode_record(record.value)
        if isinstance(decoded, Alert):
            kinds[decoded.kind.value] += 1
            subjects[f"{decoded.kind.value}/{decoded.subject}"] += 1
        else:
            incidents += 1
    report["alerts_by_kind"] = dict(kinds)
    report["alerts_by_subject"] = dict(subjects)
    report["incident_reports"] = incidents
    report["drift_alerts"] = sum(kinds.get(k, 0) for k in ("data", "prediction", "performance"))
    report["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fleet_stationary", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--fleet", type=lambda s: s.lower() in ("1", "true", "yes"), default=True)
    parser.add_argument("--settle-s", type=float, default=5.0, help="wait after the monitor caught up")
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    from bench.run import execute

    args.runs, args.latency_s = 1, 0.0
    report = execute(args, run)
    print(json.dumps(report, indent=2, default=str))
    print(
        f"\n{report['events']:,} stationary requests over 2 workers (fleet {report['fleet']}): "
        f"{report['drift_alerts']} data/prediction/performance alerts {report['alerts_by_kind']}, "
        f"{report['incident_reports']} incident reports; served in {report['served_s']} s "
        f"({report['requests_per_s']:,.0f}/s, "
        f"{report['cpu_us_per_request']:.1f} us of worker CPU per request)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
