"""Builds the Faust app that wires driftline's plain parts together; nothing else lives here.

The app owns the worker's lifecycle, its web server (REST), and timers (model repository polling).
Serving runs in :class:`~agent.serving.loop.ServingLoop`, a service started with the app: see that
module for why the hot path does not go through a Faust agent.
"""

from __future__ import annotations

import asyncio
import errno
import importlib.metadata
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
import numpy as np
from aiokafka.structs import TopicPartition

from agent.alerting.fleet_monitor import FleetMonitor
from agent.alerting.incident_store import KafkaIncidentStore
from agent.alerting.wiring import wire_alert_sinks
from agent.errors import ConfigurationError
from agent.kafka import aiokafka_options, committed_offsets, replay_records, ssl_context
from agent.kafka_outage import install as install_outage_handling
from agent.metrics import MetricPoint, Metrics, worker_tags
from agent.models.registry import ModelRegistry
from agent.monitoring.batch import BatchObserver
from agent.monitoring.context import ServingContext
from agent.monitoring.incidents import Incident, IncidentManager
from agent.monitoring.model_monitor import MonitorSettingsView
from agent.monitoring.observer import DriftObserver
from agent.report.web import register_report_view
from agent.serving.handler import RequestHandler
from agent.serving.loop import ServingLoop
from agent.serving.messages import OutgoingMessage
from agent.serving.oip import OpenInference, register_oip_views
from agent.serving.web import register_views
from agent.settings import KafkaSettings, Settings
from agent.topics import TopicSetup, join_changelog_topic, stats_topic
from schemas.alert import AlertKind, Severity

__all__ = ["Driftline", "create_app", "faust_credentials", "prepare_data_dir", "worker_description"]

log = logging.getLogger(__name__)


@dataclass
class Driftline:
    """The Faust app and the parts it wires, built once per worker process."""

    settings: Settings
    app: faust.App
    registry: ModelRegistry
    handler: RequestHandler
    serving: ServingLoop
    metrics: Metrics
    incidents: IncidentManager
    observer: DriftObserver | None
    fleet_monitor: FleetMonitor | None = None
    """The host of the models' monitors whose statistics partitions this worker is assigned."""

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Ready when at least one model is loaded and the serving loop has joined its group."""
        served = [f"{m.name}/{m.version}" for m in self.registry.served()]
        stats = self.serving.stats
        kafka = stats.running and stats.joined
        detail: dict[str, Any] = {
            "models": served,
            "kafka": "connected" if kafka else "connecting",
            "assigned_partitions": sorted(f"{tp.topic}:{tp.partition}" for tp in stats.assigned),
        }
        if self.fleet_monitor is not None:
            # The statistics partitions this worker hosts the models' monitor of, and what it did.
            detail["model_monitor"] = self.fleet_monitor.stats()
        return bool(served) and kafka, detail


def faust_credentials(settings: KafkaSettings) -> Any:
    """SASL/TLS credentials for Faust's own clients, mirroring :func:`agent.kafka.aiokafka_options`."""
    context = ssl_context(settings)
    if settings.security_protocol.startswith("SASL"):
        password = settings.sasl_password.get_secret_value() if settings.sasl_password else ""
        return faust.SASLCredentials(
            username=settings.sasl_username or "",
            password=password,
            mechanism=settings.sasl_mechanism or "PLAIN",
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def prepare_data_dir(path: Path) -> Path:
    """Creates the worker's data directory with its parents (Faust creates only its last level, and
    ended the worker with a raw ``FileNotFoundError`` traceback when a parent was missing).

    Raises :class:`ConfigurationError`, naming the directory, if it cannot be created or written.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "not writable")
    except OSError as exc:
        raise ConfigurationError(
            f"the data directory {path} cannot be created or written ({exc.strerror or type(exc).__name__}): "
            "set DRIFTLINE_DATA_DIR or --data-dir"
        ) from None
    return path


def create_app(settings: Settings) -> Driftline:
    """Builds the app, its serving loop, its timers and its web views from ``settings``."""
    kafka = settings.kafka
    # A reconnect backoff and a summary of repeated Kafka client errors, for the outage's sake.
    install_outage_handling([logging.getLogger(ServingLoop.__module__)])
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{host.strip()}" for host in kafka.bootstrap_servers.split(",")],
        broker_credentials=faust_credentials(kafka),
        datadir=str(prepare_data_dir(settings.data_dir)),
        autodiscover=False,
        store="memory://",
        web_bind=settings.web.host,
        web_host=settings.web.host,
        web_port=settings.web.port,
        # Faust's 60 s default makes every worker's first group join wait about half of it.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        # Faust's own producer sends one request per message at linger 0 (~120 us/event).
        producer_linger=0.005,
        topic_partitions=settings.topics.partitions,
        topic_replication_factor=settings.topics.replication_factor,
    )
    # The app's first child: the topics exist before the alerts agent's consumer and the serving loop
    # start (mode starts children in the order they were added).
    app.add_dependency(TopicSetup(settings, loop=app.loop))
    metrics = Metrics()
    registry = ModelRegistry(
        settings.serving.model_repository,
        settings.serving.pinned_versions,
        intra_op_num_threads=settings.serving.intra_op_num_threads,
        max_requested_versions=settings.serving.max_requested_versions,
        metrics=metrics,
    )
    options = aiokafka_options(kafka)
    incident_store = KafkaIncidentStore(
        settings.incidents.topic or f"{settings.app_id}-incidents",
        options,
        restore_timeout_s=settings.incidents.restore_timeout_s,
        replication_factor=settings.topics.replication_factor,
    )
    incidents = IncidentManager(
        incident_store,
        cooldown_s=settings.incidents.cooldown_s,
        metrics=metrics,
        group_window_s=settings.incidents.group_window_s,
    )
    observers: list[BatchObserver] = []
    observer: DriftObserver | None = None
    fleet = settings.monitoring.enabled and settings.monitoring.fleet
    context = ServingContext(worker_description(settings.image))
    if settings.monitoring.enabled:
        observer = DriftObserver(
            incidents,
            context=context,
            settings=monitor_settings(settings),
            metrics=metrics,
            persist_join=True,
            resolve=registry.resolve,
            ship_stats=fleet,
            ship_interval_s=settings.monitoring.stats_interval_s,
            worker=f"{socket.gethostname()}/{os.getpid()}",
        )
        observers.append(observer)
    handler = RequestHandler(
        registry,
        predictions_topic=settings.topics.predictions,
        dead_letters_topic=settings.topics.dead_letters,
        max_event_bytes=settings.serving.max_event_bytes,
        metrics=metrics,
        observers=observers,
        outcomes_topic=settings.topics.outcomes if observer is not None else None,
        alerts_topic=settings.topics.alerts,
        changelog_topic=join_changelog_topic(settings) if observer is not None else None,
        stats_topic=stats_topic(settings) if fleet else None,
    )

    join_topic = join_changelog_topic(settings)

    async def on_assigned(partitions: frozenset[TopicPartition]) -> None:
        if observer is None or not settings.monitoring.concept_drift:
            return
        # The join topic's partitions are the join partitions: a request id's is its hash modulo
        # their number (agent/monitoring/join.py).
        observer.join.n_partitions = max(len(serving.partitions_for(join_topic)), 1)
        # Replayed up to where the group goes on reading them: the loop joins the rest. Only the
        # last TTL's records can hold a prediction still waiting; they are applied as they are read.
        positions = await serving.positions(tp for tp in partitions if tp.topic == join_topic)
        until = {tp.partition: offset for tp, offset in positions.items()}
        for partition in until:
            observer.restore_partition(partition, ())
        timeout_s = settings.monitoring.join_restore_timeout_s
        started = time.monotonic()
        complete = await replay_records(
            options,
            join_topic,
            until,
            lambda partition, records: observer.restore_partition(
                partition, [(r.key or b"", r.value) for r in records], more=True
            ),
            timeout_s=timeout_s,
            since_ms=int((time.time() - settings.monitoring.join_ttl_s) * 1000),
        )
        for partition in sorted(until):
            kept = observer.restore_partition(partition, (), more=True)
            log.info("outcome join: restored %d predictions of partition %d", kept, partition)
        if not complete:
            log.error(
                "outcome join: its topic was not read back to where the group stopped within %g s "
                "(DRIFTLINE_MONITORING__JOIN_RESTORE_TIMEOUT_S); the predictions not read back are not "
                "joined, and their outcomes are counted unmatched",
                timeout_s,
            )
        else:
            log.info("outcome join: read back in %.1f s", time.monotonic() - started)

    async def on_revoked(partitions: frozenset[TopicPartition]) -> None:
        if observer is not None:
            for tp in partitions:
                if tp.topic == join_topic:
                    observer.drop_partition(tp.partition)

    topics = [settings.topics.requests]
    if observer is not None and settings.monitoring.concept_drift:
        # Outcomes, wherever their producer put them, are copied to the join topic by request id;
        # the join itself reads the join topic (agent/monitoring/join.py).
        topics += [settings.topics.outcomes, join_topic]
    serving = ServingLoop(
        topics=topics,
        on_assigned=on_assigned,
        on_revoked=on_revoked,
        handler=handler,
        consumer_options=options,
        producer_options=options,
        group_id=f"{settings.app_id}-serving",
        batch_size=settings.serving.batch_size,
        batch_max_wait_ms=settings.serving.batch_max_wait_ms,
        resend_topics=[settings.topics.alerts],
        held=held_stats(observer, stats_topic(settings)) if fleet and observer is not None else None,
        # The incident records of the alerts a batch raised go out in the batch's produce request.
        queued=incident_store,
        loop=app.loop,
    )
    fleet_monitor = None
    if fleet:
        assert observer is not None
        fleet_monitor = wire_fleet_monitor(app, settings, observer, metrics, registry, incident_store)
    driftline = Driftline(
        settings, app, registry, handler, serving, metrics, incidents, observer, fleet_monitor
    )

    # Alert path (issue 5): a Faust agent on the alerts topic fans alerts out to InfluxDB and webhooks.
    last = {"records": 0, "at": time.monotonic()}

    worker = worker_tags(settings.app_id, settings.web.port)

    def metric_points() -> list[MetricPoint]:
        # Throughput and latency since the previous call, dead letters, and the monitors' statistics.
        now, records = time.monotonic(), serving.stats.records_in
        rate = (records - last["records"]) / max(now - last["at"], 1e-9)
        last.update(records=records, at=now)
        stats = handler.stats
        fields: dict[str, float] = {
            "events_per_s": rate,
            "events": float(records),
            "predictions": float(stats.predictions),
            "dead_letters": float(sum(stats.dead_letters.values())),
        }
        latencies = stats.take_latencies()
        if latencies:
            p50, p99 = np.percentile(latencies, [50, 99])
            fields.update(batch_latency_p50_ms=float(p50), batch_latency_p99_ms=float(p99))
        points = [MetricPoint("driftline_throughput", fields, dict(worker))]
        points.extend(
            MetricPoint("driftline_dead_letters", {"count": float(n)}, {**worker, "reason": reason})
            for reason, n in stats.dead_letters.items()
        )
        if observer is not None:
            points.extend(observer.metric_points())
        if fleet_monitor is not None:
            points.extend(fleet_monitor.observer.metric_points(join=False))
        points.extend(open_incident_points(incidents.open_incidents()))
        return points

    wire_alert_sinks(app, settings, metrics, incidents=incidents, metrics_source=metric_points)

    def refresh_models() -> None:
        if registry.refresh().loaded:
            metrics.model_info.clear()
            for served in registry.served():
                metrics.model_info.labels(model=served.name, version=served.version).set(1)

    async def start_serving() -> None:
        await asyncio.get_running_loop().run_in_executor(None, refresh_models)
        if not registry.served():
            log.warning(
                "no model packages in %s yet; requests are dead-lettered until one appears "
                "(build one with `driftline package --example breast-cancer`)",
                settings.serving.model_repository,
            )
        await app.add_runtime_dependency(serving)

    async def poll_repository() -> None:
        # Verification reads and hashes files and builds a session: keep it off the event loop.
        await asyncio.get_running_loop().run_in_executor(None, refresh_models)

    app.task(start_serving)
    app.timer(interval=settings.serving.repository_poll_interval_s)(poll_repository)

    register_views(app, handler, metrics, driftline.health)

    async def publish(messages: list[OutgoingMessage]) -> None:
        # The alerts an Open Inference Protocol request raised, acknowledged before it is answered.
        for m in messages:
            await app.producer.send_and_wait(m.topic, m.key, m.value, m.partition, None, None)

    oip = OpenInference(handler, registry, driftline.health, server_version=_version())
    register_oip_views(app, oip, publish)
    register_report_view(app, settings, registry)
    return driftline


def monitor_settings(settings: Settings) -> MonitorSettingsView:
    """The monitors' knobs, a plain copy of the settings' (without the app's own)."""
    wiring = {
        "enabled",
        "fleet",
        "stats_interval_s",
        "stats_replay_s",
        "stats_replay_records",
        "stats_replay_timeout_s",
    }
    return MonitorSettingsView(**settings.monitoring.model_dump(exclude=wiring))


def held_stats(observer: DriftObserver, topic: str) -> Callable[[], list[OutgoingMessage]]:
    """The statistics records ``observer`` held back (``stats_interval_s``), all of them now."""
    return lambda: [OutgoingMessage(topic, key, value) for key, value in observer.flush_stats(force=True)]


def wire_fleet_monitor(
    app: faust.App,
    settings: Settings,
    worker: DriftObserver,
    metrics: Metrics,
    registry: ModelRegistry,
    incident_store: KafkaIncidentStore,
) -> FleetMonitor:
    """The models' one monitor (:mod:`agent.alerting.fleet_monitor`): a Faust agent on the statistics
    topic, in the app's group, so that each model's partition has one host among the workers. The
    incident records its alerts open go out with them (``incident_store``'s queue)."""
    options = aiokafka_options(settings.kafka)
    topic_name = stats_topic(settings)
    # Beside the worker's own observer (which ships), on the same incident gate, groups and context:
    # an incident is reported once per process, whichever observer raised or closed it.
    observer = DriftObserver(
        worker.incidents,
        context=worker.context,
        settings=monitor_settings(settings),
        metrics=metrics,
        resolve=registry.resolve,
        groups=worker.groups,
    )

    async def publish(messages: list[OutgoingMessage]) -> None:
        # All sent before any is awaited: one produce request, and a reader sees them together.
        sent = [
            await app.producer.send(m.topic, m.key, m.value, m.partition, None, list(m.headers) or None)
            for m in messages
        ]
        await asyncio.gather(*sent)

    async def replay(
        partition: int, until: int, apply: Callable[[list[bytes]], None], first: int | None = None
    ) -> bool:
        bounded = first is None
        return await replay_records(
            options,
            topic_name,
            {partition: until},
            lambda _, records: apply([r.value for r in records if r.value is not None]),
            timeout_s=settings.monitoring.stats_replay_timeout_s,
            since_ms=int((time.time() - settings.monitoring.stats_replay_s) * 1000) if bounded else None,
            last=settings.monitoring.stats_replay_records if bounded else until - (first or 0),
        )

    monitor = FleetMonitor(observer, publish, settings.topics.alerts, replay, incidents=incident_store)

    async def flush_stats() -> None:
        # The blocks the worker's observer held back (stats_interval_s) reach the monitor after a lull.
        try:
            await publish([OutgoingMessage(topic_name, key, value) for key, value in worker.flush_stats()])
        except Exception:
            log.exception("fleet monitor: publishing held-back statistics failed; they are lost")

    if settings.monitoring.stats_interval_s > 0:
        app.timer(interval=settings.monitoring.stats_interval_s)(flush_stats)
    topic = app.topic(
        topic_name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )

    async def monitor_models(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            try:
                await monitor.handle(message.partition, message.offset, event.value)
            except Exception:
                # A raising agent would crash the worker: this is a bug, and one record is lost to it.
                log.exception("fleet monitor: handling a statistics record failed unexpectedly")

    app.agent(topic, name=f"{settings.app_id}.model-monitor")(monitor_models)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(sender: Any, revoked: Iterable[TopicPartition], **_: Any) -> None:
        monitor.revoked(tp.partition for tp in revoked if tp.topic == topic_name)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(sender: Any, assigned: Iterable[TopicPartition], **_: Any) -> None:
        mine = sorted(tp.partition for tp in assigned if tp.topic == topic_name)
        # Where the group stopped on each, before this worker handles any of them (see FleetMonitor).
        try:
            committed = await committed_offsets(options, settings.app_id, topic_name, mine, timeout_s=5.0)
        except Exception as e:
            committed = None
            log.warning("fleet monitor: the group's committed offsets could not be read (%r)", e)
        monitor.assigned(mine, committed)
        log.info("fleet monitor: assigned statistics partitions %s", mine)

    return monitor


def open_incident_points(incidents: Iterable[Incident]) -> list[MetricPoint]:
    """``driftline_incidents`` points: the open incidents (this worker's view of the deployment's)
    by kind and severity, zeros included so that a closed incident's count goes back to 0.

    Example:
        >>> from agent.monitoring.incidents import IncidentKey
        >>> points = open_incident_points([Incident(IncidentKey("m", "data", "x"), "a", 0.0, 0.0)])
        >>> [(p.tags["kind"], p.tags["severity"], p.fields["open"]) for p in points if p.fields["open"]]
        [('data', 'warning', 1.0)]
        >>> len(points)  # every kind and severity
        15
    """
    counts = Counter((i.key.kind, i.severity) for i in incidents)
    return [
        MetricPoint(
            "driftline_incidents",
            {"open": float(counts[kind.value, severity.value])},
            {"kind": kind.value, "severity": severity.value},
        )
        for kind in AlertKind
        for severity in Severity
    ]


def worker_description(image: str | None) -> str:
    """What runs the models, for incidents' context: driftline's version, the libraries that score
    them, and the image when known.

    Example:
        >>> worker_description("example.org/driftline:1.4").split(", ")[-1]
        'image example.org/driftline:1.4'
    """
    parts = [f"driftline {_version()}"]
    for package in ("onnxruntime", "numpy"):
        try:
            parts.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    if image:
        parts.append(f"image {image}")
    return ", ".join(parts)


def _version() -> str:
    try:
        return importlib.metadata.version("driftline")
    except importlib.metadata.PackageNotFoundError:
        return "0"
