"""Prometheus metrics of one worker, served as text on ``GET /metrics``, and the metrics points that the
metrics sinks (InfluxDB) write.

Each :class:`Metrics` has its own collector registry (tests build several in one process). Counters
are updated once per batch, not per event, so they cost nothing on the hot path. Nothing secret is
ever a label value.

Example:
    >>> m = Metrics()
    >>> m.events_in.labels(topic="requests").inc(3)
    >>> m.dead_letters.labels(reason="decode_error", model="").inc()
    >>> text = m.render().decode()
    >>> 'driftline_events_in_total{topic="requests"} 3.0' in text
    True
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE", "FieldValue", "MetricPoint", "Metrics", "worker_tags"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

_BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


FieldValue = float | int | bool | str


@dataclass(frozen=True, slots=True)
class MetricPoint:
    """One metrics sample: a measurement with fields, tags and a time.

    Parameters:
        measurement: E.g. ``driftline_throughput``, ``driftline_feature``, ``driftline_detector``.
        fields: The values (events/s, latency, a window mean, a detector statistic, accuracy...).
            Integers are written as floats, so that a field's type never flips between two writes
            (InfluxDB rejects a point whose field changes type).
        tags: What the values are about (``model``, ``version``, ``feature``, ``detector``...).
        time: When the values were taken; None: when the sink writes them.
    """

    measurement: str
    fields: Mapping[str, FieldValue]
    tags: Mapping[str, str] = field(default_factory=dict)
    time: datetime | None = None


def worker_tags(app_id: str, web_port: int) -> dict[str, str]:
    """The tags naming one worker in metrics points: its deployment (``app``) and ``host:port``.

    The web port tells apart the workers of one host, and unlike a process id it stays the same across
    a restart, so a restarted worker continues its own series instead of starting a new one.
    """
    return {"app": app_id, "worker": f"{socket.gethostname()}:{web_port}"}


class Metrics:
    """The counters, gauges and histograms driftline exposes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events_in = Counter("driftline_events_in", "Records consumed, by topic.", ["topic"], registry=r)
        self.predictions = Counter(
            "driftline_predictions", "Predictions published.", ["model", "version"], registry=r
        )
        self.dead_letters = Counter(
            "driftline_dead_letters",
            "Events sent to the dead-letter topic, by reason (and model, when known).",
            ["reason", "model"],
            registry=r,
        )
        self.names_refused = Counter(
            "driftline_names_refused",
            "Names carried by requests that were refused state of their own beyond a cardinality bound: "
            "an unknown model's name as a label here (what=model, per request), a watch of its own for an "
            "unknown field (what=field, per request), a package loaded for a model version (what=version, "
            "per version and repository scan).",
            ["what"],
            registry=r,
        )
        self.outcomes = Counter(
            "driftline_outcomes",
            "Outcomes read by the outcome join: joined to their prediction, or unmatched (no prediction "
            "known for their request id: not made yet, expired, evicted, or already joined).",
            ["result"],
            registry=r,
        )
        self.batch_size = Histogram(
            "driftline_batch_size", "Records per consumed batch.", buckets=_BATCH_BUCKETS, registry=r
        )
        self.model_batch_size = Histogram(
            "driftline_model_batch_rows",
            "Rows per ONNX Runtime call.",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "driftline_inference_seconds",
            "Duration of one ONNX Runtime call (one batch).",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "driftline_batch_seconds",
            "Processing time of one consumed batch (decode, inference, monitoring, encode).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.model_info = Gauge(
            "driftline_model_served",
            "1 for each model version being served.",
            ["model", "version"],
            registry=r,
        )
        self.alerts = Counter("driftline_alerts", "Alerts raised.", ["model", "kind"], registry=r)
        # Alert path (agent/incidents.py, agent/sinks/): per-sink delivery outcomes.
        self.alerts_suppressed = Counter(
            "driftline_alerts_suppressed",
            "Alerts not published because their incident is already open (incident gate).",
            ["model", "kind"],
            registry=r,
        )
        self.alerts_delivered = Counter(
            "driftline_alerts_delivered",
            "Alerts a sink delivered (webhook: one per receiver).",
            ["sink"],
            registry=r,
        )
        self.alerts_failed = Counter(
            "driftline_alerts_failed",
            "Alerts a sink gave up on, by reason (error, rejected, attempts, queue_full, spool_full, ...).",
            ["sink", "reason"],
            registry=r,
        )
        self.alerts_spooled = Counter(
            "driftline_alerts_spooled",
            "Alerts kept on disk because the sink's service could not be reached.",
            ["sink"],
            registry=r,
        )
        self.sink_retries = Counter(
            "driftline_sink_retries", "Attempts a sink repeated after a failure.", ["sink"], registry=r
        )
        self.metric_points = Counter(
            "driftline_metric_points",
            "Metrics points a sink handled, by outcome (written, spooled, dropped).",
            ["sink", "outcome"],
            registry=r,
        )
        self.spool_bytes = Gauge(
            "driftline_spool_bytes", "Bytes waiting in a sink's on-disk spool.", ["sink"], registry=r
        )
        # Drift statistics (agent/alerting/sinks/prometheus.py sets them from the metrics points), for
        # Prometheus users without InfluxDB. Labels are bounded: models served x the columns of their
        # manifests (features and "prediction"), two detector families, four kinds x three severities.
        self.drift_shift = Gauge(
            "driftline_drift_shift_sd",
            "Windowed shift of a monitored column from its reference, in reference standard deviations.",
            ["model", "column"],
            registry=r,
        )
        self.drift_window_mean = Gauge(
            "driftline_drift_window_mean",
            "Windowed mean of a monitored column, reference-standardised (0.5 when it matches).",
            ["model", "column"],
            registry=r,
        )
        self.drift_detector = Gauge(
            "driftline_drift_detector_statistic",
            "A drift detector's current statistic on a monitored column (adwin, page_hinkley).",
            ["model", "column", "detector"],
            registry=r,
        )
        self.model_error = Gauge(
            "driftline_model_error",
            "Windowed error of the joined outcomes: error_rate (classifiers) or mae (regressors).",
            ["model", "metric"],
            registry=r,
        )
        self.model_estimate = Gauge(
            "driftline_model_estimate",
            "A model's estimated error without labels (estimated_error, over its recent predictions: a "
            "classifier's error rate, a regressor's mean absolute error in the target's units) and, over "
            "its last joined predictions, the realised error beside the estimate for them "
            "(realised_error, estimated_error_joined, estimate_gap = estimated - realised, "
            "estimate_abs_gap).",
            ["model", "metric"],
            registry=r,
        )
        self.incidents_open = Gauge(
            "driftline_incidents_open",
            "Open incidents of the deployment as this worker sees them, by kind and severity.",
            ["kind", "severity"],
            registry=r,
        )
        self.alerts_before_start = Counter(
            "driftline_alerts_before_first_start",
            "Alerts on the alerts topic from before this app id's first start (its consumer group had "
            "never committed), not sent to the sinks again.",
            registry=r,
        )
        self.alert_records_invalid = Counter(
            "driftline_alert_records_invalid",
            "Records on the alerts topic that are not a valid alert (logged and skipped).",
            registry=r,
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return bytes(generate_latest(self.registry))
