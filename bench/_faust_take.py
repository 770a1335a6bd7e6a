"""The best Faust-agent baseline of ``python -m bench``: ``take()`` batches and a raw batched producer.

``bench/faust_options.py`` measured every Faust agent design on a trivial workload; the best one,
``agent_take_rawproducer`` (about 8.7k events/s and 107 us of CPU per event there), is this:

* a Faust agent over the requests topic, ``stream.take_events(500, within=5 ms)``;
* each batch handled at once, with driftline's own :class:`agent.serving.handler.RequestHandler`
  (the same decoding, batched ONNX Runtime call, monitors and outcome join as ``driftline run``,
  wired as :mod:`agent.app` wires it, and the same topics consumed: requests, outcomes and the
  join's own topic), so the two differ only in how records get in and out;
* the batch's messages appended to one producer batch per topic-partition of Faust's own
  ``AIOKafkaProducer`` (``create_batch`` / ``send_batch``), its acknowledgements awaited inside the
  agent body: ``take()`` acks the events to Faust (which then commits them) only after the body ran,
  so this stays at least once;
* the Faust settings of the naive agent (``bench/_naive.py``): driftline's own (web on 127.0.0.1,
  10 s session timeout, 1 s heartbeats, 5 ms linger, INFO logging without the spinner) plus a
  32 MiB fetch size and a 256 KiB producer batch.

What it cannot shed is Faust's per-event path before user code sees an event (an ``Event`` per
record, ``wait_first`` per message, per-message acks): ~100 us of CPU per event in
``bench/FAUST_OPTIONS.md``.

Run by ``bench/run.py`` as its own process: ``python -m bench._faust_take '<json config>'``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from aiokafka.partitioner import DefaultPartitioner

from agent.metrics import Metrics
from agent.models.registry import ModelRegistry
from agent.monitoring.incidents import IncidentManager, InMemoryIncidentStore
from agent.monitoring.model_monitor import MonitorSettingsView
from agent.monitoring.observer import DriftObserver
from agent.serving.handler import RequestHandler
from agent.serving.messages import OutgoingMessage

__all__ = ["build_handler", "main"]

TAKE_MAX = 500
TAKE_WITHIN_S = 0.005


def build_handler(cfg: dict[str, Any]) -> RequestHandler:
    """driftline's request handler with every monitor on, as :func:`agent.app.build` wires it."""
    metrics = Metrics()
    registry = ModelRegistry(Path(cfg["model_repository"]))
    registry.refresh()
    observer = DriftObserver(
        IncidentManager(InMemoryIncidentStore(), cooldown_s=900.0, metrics=metrics),
        settings=MonitorSettingsView(),
        metrics=metrics,
        persist_join=True,
        resolve=registry.resolve,
    )
    # As the worker sets it on assignment: a join partition per partition of the join topic.
    observer.join.n_partitions = cfg["partitions"]
    return RequestHandler(
        registry,
        predictions_topic=cfg["predictions"],
        dead_letters_topic=cfg["dead"],
        max_event_bytes=64 * 1024,
        metrics=metrics,
        observers=[observer],
        outcomes_topic=cfg["outcomes"],
        alerts_topic=cfg["alerts"],
        changelog_topic=cfg["changelog"],
    )


async def _send(producer: Any, messages: list[OutgoingMessage], partitions: dict[str, list[int]]) -> None:
    """One producer batch per topic-partition (more when one fills up), acks awaited."""
    partitioner = DefaultPartitioner()
    builders: dict[tuple[str, int], Any] = {}
    futures = []
    for m in messages:
        numbers = partitions.get(m.topic)
        if numbers is None:
            numbers = partitions[m.topic] = sorted(await producer.partitions_for(m.topic))
        partition = m.partition
        if partition is None or partition not in numbers:
            partition = int(partitioner(m.key, numbers, numbers))
        builder = builders.get((m.topic, partition))
        if builder is None:
            builder = builders[m.topic, partition] = producer.create_batch()
        if builder.append(key=m.key, value=m.value, timestamp=None) is None:
            futures.append(await producer.send_batch(builder, m.topic, partition=partition))
            builder = builders[m.topic, partition] = producer.create_batch()
            builder.append(key=m.key, value=m.value, timestamp=None)
    for (topic, partition), builder in builders.items():
        builder.close()  # ready at once: an open batch lingers and holds the partition's next one
        futures.append(await producer.send_batch(builder, topic, partition=partition))
    await asyncio.gather(*futures)


def run_worker(cfg: dict[str, Any]) -> None:
    """Runs the Faust worker until it is terminated (SIGTERM)."""
    import faust

    handler = build_handler(cfg)
    app = faust.App(
        cfg["app_id"],
        broker=f"kafka://{cfg['bootstrap']}",
        datadir=cfg["data_dir"],
        autodiscover=False,
        store="memory://",
        web_bind="127.0.0.1",
        web_host="127.0.0.1",
        web_port=cfg["web_port"],
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        producer_linger=0.005,
        producer_max_batch_size=256 * 1024,
        consumer_max_fetch_size=32 * 1024 * 1024,
        topic_partitions=cfg["partitions"],
        topic_replication_factor=1,
    )
    # The topics `driftline run` consumes: requests, outcomes and the outcome join's own topic.
    requests = app.topic(
        cfg["requests"],
        cfg["outcomes"],
        cfg["changelog"],
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    partitions: dict[str, list[int]] = {}

    @app.agent(requests)
    async def serve(stream: Any) -> None:
        async for events in stream.take_events(TAKE_MAX, within=TAKE_WITHIN_S):
            # A Faust Message has the topic, partition, offset, key and value the handler reads.
            messages = handler.handle([event.message for event in events])
            # Faust's own aiokafka producer, for create_batch/send_batch (no public handle on it).
            await _send(app.producer._ensure_producer(), messages, partitions)  # type: ignore[attr-defined]

    worker = faust.Worker(app, loglevel="info")
    worker.spinner = None  # as `driftline run`: the spinner would put the root logger at DEBUG
    worker.execute_from_commandline()


def main(argv: list[str]) -> None:
    run_worker(json.loads(argv[1]))


if __name__ == "__main__":
    main(sys.argv)
