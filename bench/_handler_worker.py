"""One measurement of ``bench/handler_cost.py``, run as its own process on one source tree.

Run by the driver as ``python bench/_handler_worker.py '<json config>'`` with ``PYTHONPATH`` set to
the tree to measure (this checkout, or ``--baseline-ref``'s ``agent/``, ``schemas/``,
``producers/``): it imports nothing from ``bench``, so the tree's own ``agent`` is the one measured.

It builds the request handler as ``driftline run`` does (every monitor and the outcome join on, or
no observers), hands it the payloads in batches of ``batch`` records spread over four partitions,
once to warm up and then ``repeats`` times (the outcome join's records, where they go through the
join's own topic, fed back with the next batch as the worker reads them), and writes the CPU time
of each pass (``time.process_time``: this process, all threads) per request to ``cfg["result"]``. With
``profile_s`` it then goes on handling for that long, for py-spy to sample.
"""

from __future__ import annotations

import gc
import json
import pickle
import sys
import time
from pathlib import Path
from typing import Any


def _handler(cfg: dict[str, Any]) -> Any:
    from agent.metrics import Metrics
    from agent.models.registry import ModelRegistry
    from agent.monitoring.incidents import IncidentManager, InMemoryIncidentStore
    from agent.monitoring.observer import DriftObserver
    from agent.serving.handler import RequestHandler

    metrics = Metrics()
    registry = ModelRegistry(Path(cfg["model_repository"]))
    registry.refresh()
    observers = []
    if cfg["monitoring"]:
        observers.append(
            DriftObserver(
                IncidentManager(InMemoryIncidentStore(), cooldown_s=900.0, metrics=metrics),
                metrics=metrics,
                persist_join=True,
                resolve=registry.resolve,
            )
        )
    join = getattr(observers[0], "join", None) if observers else None
    if join is not None and hasattr(join, "n_partitions"):
        join.n_partitions = 4  # as the worker sets it: a join partition per join topic partition
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
    )


def main(argv: list[str]) -> None:
    from agent.serving.handler import Record

    cfg = json.loads(argv[1])
    payloads: list[tuple[bytes, bytes]] = pickle.loads(Path(cfg["payloads"]).read_bytes())
    handler = _handler(cfg)
    if handler.registry.resolve(cfg.get("model", "classification-20")) is None:
        # Every request would be dead-lettered, and measured as if it had been served.
        raise SystemExit(f"{cfg['model_repository']}: this tree serves no {cfg.get('model')} package")
    records = [Record("requests", i % 4, i, key, value) for i, (key, value) in enumerate(payloads)]
    size = cfg["batch"]
    batches = [records[i : i + size] for i in range(0, len(records), size)]
    # Where the outcome join's records go through its own topic, which the worker consumes too
    # (observe_join), each batch's join records come back with the next batch, as the worker reads them.
    feed = hasattr(handler.observers[0], "observe_join") if handler.observers else False
    fed: list[Any] = []

    def handle(batch: list[Any]) -> None:
        out = handler.handle(fed + batch if fed else batch)
        fed.clear()
        if feed:
            joins = [m for m in out if m.topic == "changelog"]
            fed.extend(Record("changelog", m.partition or 0, 0, m.key, m.value) for m in joins)

    for batch in batches:  # warm-up: first use of every code path, the monitors' reference windows
        handle(batch)
    gc.collect()
    gc.freeze()  # as the worker does at start-up (agent/serving/loop.py)
    passes = []
    for _ in range(cfg["repeats"]):
        started = time.process_time()
        for batch in batches:
            handle(batch)
        passes.append((time.process_time() - started) / len(records) * 1e6)
    result: dict[str, Any] = {"us_per_request": passes}
    if cfg.get("profile_s"):
        # Sampled from outside by py-spy (bench/handler_cost.py) while this keeps handling.
        Path(cfg["result"] + ".ready").write_text("")
        until = time.monotonic() + cfg["profile_s"]
        while time.monotonic() < until:
            for batch in batches:
                handle(batch)
    Path(cfg["result"]).write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv)
