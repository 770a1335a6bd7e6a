"""Drift statistics as Prometheus gauges on ``/metrics``: a metrics sink that mirrors the points the
metrics timer writes into the worker's gauges, for users who run Prometheus and Grafana but not InfluxDB.

Every ``influx.metrics_interval_s`` the alerting wiring hands each sink the same metrics points
(:meth:`~agent.alerting.sinks.base.Sink.send_metrics`); this one keeps, per model and column (the
features of the manifest and ``prediction``):

* ``driftline_drift_shift_sd``: the windowed shift from the reference, in reference standard deviations
  (``driftline_feature.shift_sd``);
* ``driftline_drift_window_mean``: the windowed reference-standardised mean (``window_mean``);
* ``driftline_drift_detector_statistic{detector}``: each detector's statistic (``driftline_detector``);

``driftline_model_error{metric}`` (the joined error), ``driftline_model_estimate{metric}`` (a
classifier's estimated error, and the realised error beside it once outcomes are joined) and
``driftline_incidents_open{kind,severity}``.
Label values come from the manifests of the models served, so the series are bounded; a series whose
model is no longer served is removed at the next tick, and past ``max_series`` series no new one is
added (logged once).

Example:
    >>> import asyncio
    >>> from agent.metrics import MetricPoint, Metrics
    >>> metrics = Metrics()
    >>> sink = PrometheusSink(metrics)
    >>> asyncio.run(sink.send_metrics([
    ...     MetricPoint("driftline_feature", {"shift_sd": 1.25, "window_mean": 0.81},
    ...                 {"model": "m", "version": "1", "feature": "income"}),
    ...     MetricPoint("driftline_detector", {"statistic": 7.5},
    ...                 {"model": "m", "version": "1", "feature": "income", "detector": "adwin"}),
    ... ]))
    >>> metrics.registry.get_sample_value("driftline_drift_shift_sd", {"model": "m", "column": "income"})
    1.25
    >>> asyncio.run(sink.send_metrics([]))  # the model is no longer served: its series go
    >>> metrics.registry.get_sample_value("driftline_drift_shift_sd", {"model": "m", "column": "income"})
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from prometheus_client import Gauge

from agent.alerting.sinks.base import Sink
from agent.metrics import MetricPoint, Metrics

__all__ = ["PrometheusSink"]

_ESTIMATE_FIELDS = (
    "estimated_error",
    "realised_error",
    "estimated_error_joined",
    "estimate_gap",
    "estimate_abs_gap",
)

log = logging.getLogger(__name__)


class PrometheusSink(Sink):
    """Sets the drift gauges of ``metrics`` from each tick's metrics points; carries no alerts.

    Parameters:
        metrics: The worker's metrics, whose registry ``/metrics`` serves.
        max_series: Most series over all the drift gauges.
    """

    name = "prometheus"

    def __init__(self, metrics: Metrics, *, max_series: int = 20_000) -> None:
        super().__init__(metrics=metrics)
        self.max_series = max_series
        self._gauges = metrics
        self._set: dict[str, set[tuple[str, ...]]] = {}
        self._warned = False

    async def send_metrics(self, points: Sequence[MetricPoint]) -> None:
        m = self._gauges
        values: dict[str, dict[tuple[str, ...], float]] = {}

        def put(gauge: str, labels: tuple[str, ...], value: float | int | bool | str | None) -> None:
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                values.setdefault(gauge, {})[labels] = float(value)

        for p in points:
            tags, fields = p.tags, p.fields
            if p.measurement == "driftline_feature":
                column = (tags.get("model", ""), tags.get("feature", ""))
                put("shift", column, fields.get("shift_sd"))
                put("mean", column, fields.get("window_mean"))
            elif p.measurement == "driftline_detector":
                put("detector", (tags["model"], tags["feature"], tags["detector"]), fields.get("statistic"))
            elif p.measurement == "driftline_error":
                for metric in ("error_rate", "mae"):
                    put("error", (tags.get("model", ""), metric), fields.get(metric))
            elif p.measurement == "driftline_performance":
                for metric in _ESTIMATE_FIELDS:
                    put("estimate", (tags.get("model", ""), metric), fields.get(metric))
            elif p.measurement == "driftline_incidents":
                put("incidents", (tags["kind"], tags["severity"]), fields.get("open"))
        gauges: dict[str, Gauge] = {
            "shift": m.drift_shift,
            "mean": m.drift_window_mean,
            "detector": m.drift_detector,
            "error": m.model_error,
            "estimate": m.model_estimate,
            "incidents": m.incidents_open,
        }
        total = sum(len(s) for s in self._set.values())
        written = 0
        for key, gauge in gauges.items():
            now = values.get(key, {})
            before = self._set.setdefault(key, set())
            for labels in before - now.keys():
                gauge.remove(*labels)
                before.discard(labels)
                total -= 1
            for labels, value in now.items():
                if labels not in before:
                    if total >= self.max_series:
                        if not self._warned:
                            log.warning("prometheus: %d drift series; not adding more", self.max_series)
                            self._warned = True
                        continue
                    before.add(labels)
                    total += 1
                gauge.labels(*labels).set(value)
                written += 1
        if written:
            self._count_points("written", written)
