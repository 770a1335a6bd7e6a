"""One measurement of ``bench/fleet_cost.py``, run as its own process.

Run by the driver as ``python bench/_fleet_worker.py '<json config>'``; it imports nothing from
``bench``. It builds the request handler as ``driftline run`` does (``bench/_handler_worker.py``'s
handler: every monitor and the outcome join on, the join's records fed back with the next batch) in
one of three modes:

* ``off``: no observers (``DRIFTLINE_MONITORING__ENABLED=false``);
* ``single``: a :class:`DriftObserver` that runs its detectors in-process (``ship_stats=False``,
  ``DRIFTLINE_MONITORING__FLEET=false``);
* ``fleet``: a shipping observer (``ship_stats=True``): the column sets only cut blocks, and each
  batch that completed any answers one statistics record for the statistics topic.

It hands the handler the payloads in batches of ``batch`` records (spread over four partitions),
once to warm up and then ``repeats`` times, and writes the CPU time of each pass per request
(``time.process_time``). In ``fleet`` mode it also keeps every statistics record the handler
answered (sizes, parts, records per batch) and, with ``monitor``, times the model's monitor side:
a fresh non-shipping :class:`DriftObserver` (as ``agent/app.py``'s ``wire_fleet_monitor`` builds it)
fed the warm-up pass's records untimed, then each timed pass's records in their order, timing
``decode_stats`` and ``observe_stats`` separately.
"""

from __future__ import annotations

import gc
import json
import pickle
import sys
import time
from pathlib import Path
from typing import Any


def _observer(
    cfg: dict[str, Any], registry: Any, metrics: Any, *, ship: bool, persist_join: bool = True
) -> Any:
    from agent.monitoring.incidents import IncidentManager, InMemoryIncidentStore
    from agent.monitoring.model_monitor import MonitorSettingsView
    from agent.monitoring.observer import DriftObserver

    settings = MonitorSettingsView(**cfg.get("settings", {}))
    kwargs: dict[str, Any] = {"ship_stats": True, "worker": "bench/1"} if ship else {}
    return DriftObserver(
        IncidentManager(InMemoryIncidentStore(), cooldown_s=900.0, metrics=metrics),
        settings=settings,
        metrics=metrics,
        persist_join=persist_join,
        resolve=registry.resolve,
        **kwargs,
    )


def _handler(cfg: dict[str, Any]) -> Any:
    from agent.metrics import Metrics
    from agent.models.registry import ModelRegistry
    from agent.serving.handler import RequestHandler

    metrics = Metrics()
    registry = ModelRegistry(Path(cfg["model_repository"]))
    registry.refresh()
    mode = cfg["mode"]
    observers = [] if mode == "off" else [_observer(cfg, registry, metrics, ship=mode == "fleet")]
    join = getattr(observers[0], "join", None) if observers else None
    if join is not None and hasattr(join, "n_partitions"):
        join.n_partitions = 4  # as the worker sets it: a join partition per join topic partition
    extra: dict[str, Any] = {"stats_topic": "stats"} if mode == "fleet" else {}
    return RequestHandler(
        registry,
        predictions_topic="predictions",
        dead_letters_topic="dead",
        max_event_bytes=64 * 1024,
        metrics=metrics,
        observers=observers,
        outcomes_topic="outcomes" if observers else None,
        alerts_topic="alerts",
        changelog_topic="changelog" if observers else None,
        **extra,
    )


def _monitor_side(
    cfg: dict[str, Any], warm: list[bytes], passes: list[list[bytes]], requests: int
) -> dict[str, Any]:
    """The model's monitor over the captured records: CPU per record and per request served."""
    from agent.metrics import Metrics
    from agent.models.registry import ModelRegistry
    from agent.monitoring.fleet import decode_stats

    registry = ModelRegistry(Path(cfg["model_repository"]))
    registry.refresh()
    monitor = _observer(cfg, registry, Metrics(), ship=False, persist_join=False)
    alerts: dict[str, int] = {}

    def count(observed: Any) -> None:
        for a in observed.alerts:
            name = f"{a.kind.value}/{a.subject}"
            alerts[name] = alerts.get(name, 0) + 1

    for value in warm:
        count(monitor.observe_stats(decode_stats(value)))
    gc.collect()
    out: dict[str, Any] = {"decode_us_per_record": [], "observe_us_per_record": [], "us_per_request": []}
    for records in passes:
        t0 = time.process_time()
        decoded = [decode_stats(v) for v in records]
        t1 = time.process_time()
        for stats in decoded:
            count(monitor.observe_stats(stats))
        t2 = time.process_time()
        n = max(len(records), 1)
        out["decode_us_per_record"].append((t1 - t0) / n * 1e6)
        out["observe_us_per_record"].append((t2 - t1) / n * 1e6)
        out["us_per_request"].append((t2 - t0) / requests * 1e6)
    out["alerts"] = alerts
    return out


def main(argv: list[str]) -> None:
    from agent.monitoring.fleet import decode_stats
    from agent.serving.handler import Record
    from schemas.alert import Alert
    from schemas.incident import decode_record

    cfg = json.loads(argv[1])
    payloads: list[tuple[str, bytes, bytes]] = pickle.loads(Path(cfg["payloads"]).read_bytes())
    handler = _handler(cfg)
    if handler.registry.resolve(cfg["model"]) is None:
        raise SystemExit(f"{cfg['model_repository']}: no {cfg['model']} package")
    records = [Record(topic, i % 4, i, key, value) for i, (topic, key, value) in enumerate(payloads)]
    served = sum(1 for r in records if r.topic == "requests")
    size = cfg["batch"]
    batches = [records[i : i + size] for i in range(0, len(records), size)]
    fed: list[Any] = []
    stats: list[bytes] = []
    per_batch: list[int] = []
    alerts: dict[str, int] = {}

    def handle(batch: list[Any]) -> None:
        out = handler.handle(fed + batch if fed else batch)
        fed.clear()
        fed.extend(
            Record("changelog", m.partition or 0, 0, m.key, m.value) for m in out if m.topic == "changelog"
        )
        shipped = [m.value for m in out if m.topic == "stats"]
        for m in out:
            if m.topic == "alerts" and m.value is not None:
                decoded = decode_record(m.value)
                if isinstance(decoded, Alert):
                    name = f"{decoded.kind.value}/{decoded.subject}"
                    alerts[name] = alerts.get(name, 0) + 1
        stats.extend(shipped)
        per_batch.append(len(shipped))

    for batch in batches:  # warm-up
        handle(batch)
    warm, stats = stats, []
    gc.collect()
    gc.freeze()  # as the worker does at start-up
    times: list[float] = []
    captured: list[list[bytes]] = []
    per_batch.clear()
    for _ in range(cfg["repeats"]):
        started = time.process_time()
        for batch in batches:
            handle(batch)
        times.append((time.process_time() - started) / served * 1e6)
        captured.append(stats)
        stats = []
    result: dict[str, Any] = {"us_per_request": times, "requests_per_pass": served, "handler_alerts": alerts}
    if cfg["mode"] == "fleet":
        everything = [v for p in captured for v in p]
        sizes = [len(v) for v in everything]
        parts: dict[str, dict[str, int]] = {}
        headers = 0
        for v in everything:
            headers += 8 + int.from_bytes(v[4:8], "little")
            for part in decode_stats(v).parts:
                p = parts.setdefault(part.name, {"records": 0, "blocks": 0, "streams": 0, "raw": 0})
                p["records"] += 1
                p["blocks"] += int(part.blocks.counts.shape[0])
                p["streams"] = int(part.blocks.counts.shape[1])
                p["raw"] = int(part.blocks.raw_sums.shape[1]) if part.blocks.raw_sums.ndim == 2 else 0
        requests = served * len(captured)
        result["stats"] = {
            "records": len(everything),
            "bytes": sum(sizes),
            "header_bytes": headers,
            "requests": requests,
            "batches": len(per_batch),
            "records_per_batch": len(everything) / max(len(per_batch), 1),
            "batches_with": {str(k): per_batch.count(k) for k in sorted(set(per_batch))},
            "bytes_per_record_min": min(sizes, default=0),
            "bytes_per_record_max": max(sizes, default=0),
            "bytes_per_request": sum(sizes) / max(requests, 1),
            "parts": parts,
        }
        if cfg.get("monitor"):
            result["monitor"] = _monitor_side(cfg, warm, captured, served)
    Path(cfg["result"]).write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv)
