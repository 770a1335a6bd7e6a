"""Drift monitoring of served models: turns each inference batch into detector updates and alerts.

:class:`DriftObserver` is a :class:`~agent.serving.BatchObserver`: the request handler gives it every
model batch and every batch's dead letters, and it answers with alert messages for the alerts topic
(published with the batch's predictions, so they are acknowledged before the requests' offsets are
committed). Per served model version, a :class:`ModelMonitor` keeps

* **data drift**: a :class:`~agent.drift.FeatureDriftMonitor` over every feature, standardised
  against the package's reference quantiles (categorical features through their reference
  frequencies);
* **prediction drift**: the same monitor's extra column, the model's output (positive-class
  probability, highest probability, or value) against its reference quantiles;
* **technical drift**: the package's dependency findings (alerted once, when the model is first
  served), and windowed rates of unseen fields, wrong types, missing and out-of-range values (each
  against its reference rate), dead letters, plus Page-Hinkley on inference latency per row.

Every alert passes the incident gate first (one alert per (model, kind, subject) until it recovers
or its cooldown passes). A data, prediction or concept incident recovers when its column's windowed
shift is back under ``recovery_shift_sd`` over a full window of events that came after the column's
last detection; a rate incident when its rate is back under the threshold.

Where an alert says it was seen: the partition offset ranges of the batch in which the detector
fired, and the event time of that batch's first request (the detectors fire within a few hundred
events of a step change; see bench/calibrate_drift.py for the delays).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import numpy as np
import numpy.typing as npt
from river import drift as river_drift

from agent.drift import (
    CategoricalTransform,
    ColumnTransform,
    Detection,
    DriftConfig,
    ErrorMonitor,
    FeatureDriftMonitor,
    PercentileTransform,
    ReferenceTransform,
)
from agent.incidents import IncidentKey, IncidentManager
from agent.join import OutcomeJoin, encode_batch
from agent.metrics import Metrics
from agent.model import DependencyFinding, Predictions
from agent.registry import ServedModel
from agent.serving import DeadLetterInfo, ModelBatch, RecordLike
from agent.sinks.base import MetricPoint
from agent.sinks.kafka import encode_alert
from agent.streaming import OutgoingMessage
from schemas.alert import Alert, AlertKind, Evidence, OffsetRange, Severity
from schemas.events import DeadLetterReason, Outcome
from schemas.manifest import CategoricalStatistics, Manifest, NumericStatistics

__all__ = [
    "DriftObserver",
    "LatencyWatch",
    "ModelMonitor",
    "MonitorSettingsView",
    "RateWatch",
    "output_quantity",
]

log = logging.getLogger(__name__)

Transition = Literal["fire", "recover"] | None


@dataclass(frozen=True)
class MonitorSettingsView:
    """The monitoring knobs (a plain copy of ``Settings().monitoring``)."""

    recovery_shift_sd: float = 0.15
    rate_window_events: int = 2000
    rate_margin: float = 0.05
    latency_warmup_batches: int = 50
    latency_threshold: float = 20.0
    concept_drift: bool = True
    join_ttl_s: float = 900.0
    join_max_entries: int = 1_000_000


class RateWatch:
    """Share of events with some property over tumbling windows, against an allowed rate.

    Fires when a full window's share exceeds ``baseline + margin``, recovers when a later window is
    back under it. Windows count events, not batches, so the result does not depend on batching.

    Example:
        >>> w = RateWatch(baseline=0.01, margin=0.05, window=100)
        >>> [w.update(hits, 50) for hits in (0, 1, 10, 10, 0, 0)]
        [None, None, None, 'fire', None, 'recover']
        >>> w.last_share
        0.0
    """

    def __init__(self, baseline: float, margin: float, window: int) -> None:
        self.baseline = baseline
        self.threshold = baseline + margin
        self.window = window
        self.over = False
        self.last_share = 0.0
        self._hits = 0
        self._events = 0

    def update(self, hits: int, events: int) -> Transition:
        """Counts ``hits`` among ``events`` more events; says if a window closed over or back under."""
        self._hits += hits
        self._events += events
        if self._events < self.window:
            return None
        share = self._hits / self._events
        self.last_share = share
        self._hits = self._events = 0
        over = share > self.threshold
        if over == self.over:
            return None
        self.over = over
        return "fire" if over else "recover"


class LatencyWatch:
    """Page-Hinkley (upward) on per-row inference latency, relative to its own warm-up level.

    The first ``warmup`` batches set the baseline (their median); after that each batch feeds
    ``log(latency / baseline)`` (capped at ``log(10)``: one stalled batch cannot fire it alone) to
    river's Page-Hinkley with an allowance of ``log(1.5)``: latency has to stay well above 1.5x its
    baseline for dozens of batches before the cumulative sum reaches ``threshold``.

    Example:
        >>> w = LatencyWatch(warmup=20, threshold=20.0)
        >>> steady = [w.update(10.0 + (i % 3)) for i in range(500)]
        >>> any(steady)
        False
        >>> slower = [w.update(30.0) for _ in range(200)]
        >>> slower.index(True)
        35
    """

    def __init__(self, warmup: int, threshold: float) -> None:
        self.warmup = warmup
        self.threshold = threshold
        self.baseline: float | None = None
        self._seen: list[float] = []
        self._ph: river_drift.PageHinkley | None = None

    def update(self, per_row_us: float) -> bool:
        """Feeds one batch's per-row latency; True when a sustained rise is detected."""
        if self._ph is None:
            self._seen.append(per_row_us)
            if len(self._seen) >= self.warmup:
                self.baseline = max(float(np.median(self._seen)), 1e-9)
                self._ph = river_drift.PageHinkley(
                    min_instances=1, delta=math.log(1.5), threshold=self.threshold, alpha=1.0, mode="up"
                )
                self._seen = []
            return False
        assert self.baseline is not None
        x = min(math.log(max(per_row_us, 1e-9) / self.baseline), math.log(10.0))
        self._ph.update(x)  # type: ignore[no-untyped-call]
        if self._ph.drift_detected:
            # The new level becomes the baseline after another warm-up.
            self._ph = None
            return True
        return False


def output_quantity(manifest: Manifest, predictions: Predictions) -> npt.NDArray[np.float64]:
    """The monitored output per row: P(positive class), the highest probability, or the value."""
    quantity = manifest.reference.output.quantity
    if quantity == "value":
        assert predictions.values is not None
        return predictions.values.astype(np.float64)
    assert predictions.probabilities is not None
    probabilities = np.asarray(predictions.probabilities, dtype=np.float64)
    if quantity == "positive_probability":
        return probabilities[:, 1]
    return np.asarray(probabilities.max(axis=1), dtype=np.float64)


def _column_transform(stats: NumericStatistics | CategoricalStatistics) -> ColumnTransform:
    if isinstance(stats, CategoricalStatistics):
        # The serving matrix holds a category's index as a float, so the transform is keyed by it.
        return CategoricalTransform({float(i): f for i, f in enumerate(stats.frequencies.values())})
    if not stats.quantiles:
        # Every reference value was missing: nothing to compare against; a flat transform.
        return PercentileTransform([0.0, 0.0])
    return PercentileTransform(stats.quantiles)


def _error_monitor(manifest: Manifest) -> ErrorMonitor | None:
    """The concept-drift monitor, against the error the package measured on its holdout."""
    t = manifest.training
    if manifest.task == "regression":
        return ErrorMonitor.for_regression(t.mae) if t.mae else None
    if t.accuracy is None:
        return None
    # A perfect (or hopeless) holdout score gives no rate to standardise against: bound it.
    return ErrorMonitor.for_classification(min(max(1.0 - t.accuracy, 0.01), 0.99))


def _detection_evidence(d: Detection, **extra: float | str) -> Evidence:
    """A detector's numbers as alert evidence: reference vs the window since the change point."""
    return Evidence(
        reference_mean=d.reference_mean,
        reference_std=d.reference_std,
        recent_mean=d.window_mean,
        recent_std=d.window_std,
        shift_in_std=d.shift_sd,
        statistic=d.statistic,
        window_events=d.window_count,
        extra={"event_index": d.event_index, **extra},
    )


_FINDING_SEVERITY = {
    "major": Severity.CRITICAL,
    "missing": Severity.CRITICAL,
    "minor": Severity.WARNING,
    "patch": Severity.INFO,
}


def _settled_before(n_events: int, config: DriftConfig) -> int:
    """The latest event count of a column's last detection for which its window of recent blocks may
    judge a recovery: the window must hold no event from before that detection (nor from before the
    monitor started). Right after a detection the window still holds mostly events from before the
    change and looks back to normal: the incident just opened would close at once, and the same
    ongoing drift be alerted again (by a restarted worker, whose detectors start from the reference)."""
    return n_events - config.window_blocks * config.block_size


def _ranges(records: Sequence[RecordLike]) -> tuple[OffsetRange, ...]:
    spans: dict[tuple[str, int], list[int]] = {}
    for r in records:
        span = spans.get((r.topic, r.partition))
        if span is None:
            spans[r.topic, r.partition] = [r.offset, r.offset]
        else:
            span[0] = min(span[0], r.offset)
            span[1] = max(span[1], r.offset)
    return tuple(
        OffsetRange(topic=t, partition=p, start=a, end=b) for (t, p), (a, b) in sorted(spans.items())
    )


class _Context:
    """Where and when the current batch was seen, for the alerts it raises.

    The offset ranges are only worked out when an alert needs them: most batches raise none.
    """

    def __init__(self, records: Sequence[RecordLike] = (), first_event_time: datetime | None = None) -> None:
        self._records = records
        self._source: tuple[OffsetRange, ...] | None = None
        self.first_event_time = first_event_time

    @property
    def source(self) -> tuple[OffsetRange, ...]:
        if self._source is None:
            self._source = _ranges(self._records)
        return self._source


@dataclass(eq=False)
class ModelMonitor:
    """All drift monitors of one served model version."""

    served: ServedModel
    settings: MonitorSettingsView
    features: FeatureDriftMonitor = field(init=False)
    missing: list[RateWatch] = field(init=False)
    out_of_range: dict[int, RateWatch] = field(init=False)
    wrong_type: dict[str, RateWatch] = field(default_factory=dict)
    unseen: dict[str, RateWatch] = field(default_factory=dict)
    dead_letters: RateWatch = field(init=False)
    latency: LatencyWatch = field(init=False)
    errors: ErrorMonitor | None = field(init=False)
    label_index: dict[str, int] = field(init=False)
    findings_alerted: bool = False
    last_detection: dict[str, int] = field(default_factory=dict)
    """Column -> the feature monitor's event count when a detector last fired on it."""
    last_error_detection: int = 0
    """The error monitor's event count when a detector last fired on it."""
    column_incidents: tuple[IncidentKey, ...] = field(init=False)
    """The incident key of every monitored column (data drift per feature, prediction drift)."""

    def __post_init__(self) -> None:
        m = self.served.manifest
        ref = m.reference
        columns = [_column_transform(ref.features[f.name]) for f in m.features]
        output = ref.output.statistics
        self.features = FeatureDriftMonitor(
            m.feature_names,
            ReferenceTransform(columns),
            output_reference=PercentileTransform(output.quantiles) if output.quantiles else None,
            output_name="prediction",
        )
        s = self.settings
        self.missing = [
            RateWatch(ref.features[f.name].missing_rate, s.rate_margin, s.rate_window_events)
            for f in m.features
        ]
        self.out_of_range = {
            i: RateWatch(0.0, s.rate_margin, s.rate_window_events)
            for i, f in enumerate(m.features)
            if f.range
        }
        self.dead_letters = RateWatch(0.0, s.rate_margin, s.rate_window_events)
        self.latency = LatencyWatch(s.latency_warmup_batches, s.latency_threshold)
        self.label_index = {str(label): i for i, label in enumerate(m.outputs.class_labels or ())}
        self.errors = _error_monitor(m)
        self.column_incidents = tuple(
            IncidentKey(
                m.name, (AlertKind.PREDICTION if w.name == "prediction" else AlertKind.DATA).value, w.name
            )
            for w in self.features.window_stats()
        )

    @property
    def name(self) -> str:
        return self.served.name

    @property
    def version(self) -> str:
        return self.served.version


class DriftObserver:
    """Feeds every model batch to its :class:`ModelMonitor` and publishes the alerts that pass the gate.

    Parameters:
        incidents: The incident gate.
        alerts_topic: Where alerts are published.
        settings: Monitoring knobs.
        metrics: Counters (alerts raised per model and kind).
        clock: Wall clock, for alert times.
        changelog_topic: Where the outcome join's changelog records go (``None``: not persisted).
        resolve: ``(name, version) -> ServedModel``, for joined predictions another worker made.
    """

    def __init__(
        self,
        incidents: IncidentManager,
        *,
        alerts_topic: str,
        settings: MonitorSettingsView | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        changelog_topic: str | None = None,
        resolve: Callable[[str, str], ServedModel | None] | None = None,
    ) -> None:
        self.incidents = incidents
        self.alerts_topic = alerts_topic
        self.changelog_topic = changelog_topic
        # Finds the model of a joined prediction that this worker did not serve itself (it was
        # made before a restart or a rebalance): ModelRegistry.resolve.
        self.resolve = resolve
        self.settings = settings or MonitorSettingsView()
        self.metrics = metrics or Metrics()
        self.clock = clock
        self._monitors: dict[ServedModel, ModelMonitor] = {}
        self._by_version: dict[tuple[str, str], ModelMonitor] = {}
        s = self.settings
        self.join = OutcomeJoin(s.join_ttl_s, s.join_max_entries, clock=clock)
        self._batches = 0
        self.raised: list[Alert] = []
        """Alerts that passed the gate, newest last (bounded), for tools and tests."""

    def monitor(self, served: ServedModel) -> ModelMonitor:
        """The monitor of ``served``, created on first use."""
        monitor = self._monitors.get(served)
        if monitor is None:
            monitor = self._monitors[served] = ModelMonitor(served, self.settings)
            self._by_version[served.name, served.version] = monitor
        return monitor

    def monitors(self) -> list[ModelMonitor]:
        return list(self._monitors.values())

    # --- BatchObserver ------------------------------------------------------------------------

    def observe(self, batch: ModelBatch) -> Iterable[OutgoingMessage]:
        monitor = self.monitor(batch.served)
        ctx = _Context(batch.records, batch.requests[0].event_time if batch.requests else None)
        alerts: list[Alert] = []
        if not monitor.findings_alerted:
            monitor.findings_alerted = True
            alerts.extend(self._dependency_alerts(monitor, batch.served.model.findings, ctx))
        outputs = output_quantity(batch.served.manifest, batch.predictions)
        if monitor.features.output_reference is None:
            detections = monitor.features.update_batch(batch.encoded.matrix)
        else:
            detections = monitor.features.update_batch(batch.encoded.matrix, outputs)
        for d in detections:
            monitor.last_detection[d.name] = monitor.features.n_events
        alerts.extend(self._drift_alerts(monitor, detections, ctx))
        alerts.extend(self._rate_alerts(monitor, batch, ctx))
        n = len(batch.records)
        per_row_us = batch.inference_seconds / max(n, 1) * 1e6
        if monitor.latency.update(per_row_us):
            alerts.append(
                self._alert(
                    monitor,
                    AlertKind.TECHNICAL,
                    "page_hinkley_up",
                    "inference_latency",
                    Severity.WARNING,
                    f"inference latency of {monitor.name}/{monitor.version} rose to "
                    f"{per_row_us:.1f} us per row",
                    Evidence(recent_mean=per_row_us, extra={"unit": "us_per_row"}),
                    ctx,
                )
            )
        self._recoveries(monitor)
        messages = self._publish(alerts)
        if self.settings.concept_drift and monitor.errors is not None:
            messages.extend(self._remember(batch))
        return messages

    def _remember(self, batch: ModelBatch) -> list[OutgoingMessage]:
        p = batch.predictions
        if p.probabilities is not None:
            predicted = np.argmax(p.probabilities, axis=1).astype(np.float64).tolist()
        else:
            assert p.values is not None
            predicted = p.values.astype(np.float64).tolist()
        name, version, now = batch.served.name, batch.served.version, self.clock()
        by_partition: dict[int, list[tuple[str, float]]] = {}
        first_offset: dict[int, int] = {}
        for record, request, value in zip(batch.records, batch.requests, predicted, strict=True):
            pairs = by_partition.get(record.partition)
            if pairs is None:
                pairs = by_partition[record.partition] = []
                first_offset[record.partition] = record.offset
            pairs.append((request.request_id, value))
        out = []
        topic = self.changelog_topic
        for partition, pairs in by_partition.items():
            self.join.remember_batch(partition, name, version, now, pairs)
            if topic is not None:
                key = f"{batch.records[0].topic}:{partition}:{first_offset[partition]}".encode()
                out.append(OutgoingMessage(topic, key, encode_batch(name, version, now, pairs), partition))
        self._batches += 1
        if self._batches % 100 == 0:
            self.join.expire()
        return out

    def observe_outcomes(self, outcomes: Sequence[tuple[RecordLike, Outcome]]) -> list[OutgoingMessage]:
        """Joins outcomes to their predictions and feeds each model's error monitor."""
        if not self.settings.concept_drift:
            return []
        out: list[OutgoingMessage] = []
        errors: dict[ModelMonitor, tuple[list[float], list[RecordLike]]] = {}
        for record, outcome in outcomes:
            entry = self.join.match(record.partition, outcome.request_id)
            if entry is None:
                continue
            if self.changelog_topic is not None:
                out.append(
                    OutgoingMessage(self.changelog_topic, outcome.request_id.encode(), None, record.partition)
                )
            monitor = self._by_version.get((entry.model, entry.version))
            if monitor is None and self.resolve is not None:
                served = self.resolve(entry.model, entry.version)
                monitor = self.monitor(served) if served is not None else None
            if monitor is None or monitor.errors is None:
                continue
            if monitor.errors.kind == "classification":
                observed = monitor.label_index.get(str(outcome.label))
                if observed is None:
                    continue  # a label the model does not know: no error to count
                error = float(observed != int(entry.predicted))
            else:
                if outcome.value is None:
                    continue
                error = abs(outcome.value - entry.predicted)
            bucket = errors.get(monitor)
            if bucket is None:
                bucket = errors[monitor] = ([], [])
            bucket[0].append(error)
            bucket[1].append(record)
        alerts: list[Alert] = []
        for monitor, (values, records) in errors.items():
            assert monitor.errors is not None
            detections = monitor.errors.update_many(values)
            if detections:
                monitor.last_error_detection = monitor.errors.n_events
            ctx = _Context(records)
            # The error monitor reports rises only (a falling error is good news).
            alerts.extend(self._concept_alert(monitor, d, ctx) for d in detections)
            window = monitor.errors.window_stats()
            key = IncidentKey(monitor.name, AlertKind.CONCEPT.value, "error")
            if (
                window.count
                and abs(window.shift_sd) < self.settings.recovery_shift_sd
                and monitor.last_error_detection
                <= _settled_before(monitor.errors.n_events, monitor.errors.config)
                and self.incidents.is_open(key)
            ):
                self.incidents.recover(key)
        out.extend(self._publish(alerts))
        return out

    def _concept_alert(self, monitor: ModelMonitor, d: Detection, ctx: _Context) -> Alert:
        assert monitor.errors is not None
        classification = monitor.errors.kind == "classification"
        if classification:
            reference = f"reference error rate {monitor.errors.reference_mean:.1%}"
            recent = f"recent error rate {d.window_mean:.1%}"
        else:
            reference = f"reference MAE {monitor.errors.reference_mean:.4g}"
            recent = f"recent MAE {d.window_mean * monitor.errors.reference_mean:.4g}"
        severity = Severity.CRITICAL if d.shift_sd >= 2.0 else Severity.WARNING
        return self._alert(
            monitor,
            AlertKind.CONCEPT,
            d.detector,
            "error",
            severity,
            f"the error of {monitor.name}/{monitor.version} rose: {recent} vs {reference} "
            f"({d.window_count} joined outcomes); {d.detector} fired at outcome {d.event_index}",
            _detection_evidence(
                d,
                metric="error_rate" if classification else "mae_ratio",
            ),
            ctx,
        )

    def metric_points(self) -> list[MetricPoint]:
        """Windowed statistics for the metrics sinks: per feature and output, and the joined error."""
        points: list[MetricPoint] = []
        for monitor in self._monitors.values():
            tags = {"model": monitor.name, "version": monitor.version}
            for w in monitor.features.window_stats():
                if not w.count:
                    continue
                fields: dict[str, float] = {
                    "window_mean": w.mean,
                    "window_std": w.std,
                    "shift_sd": w.shift_sd,
                }
                if not math.isnan(w.raw_mean):
                    fields["raw_mean"] = w.raw_mean
                fields["missing"] = float(w.missing)
                points.append(MetricPoint("driftline_feature", fields, {**tags, "feature": w.name}))
            if monitor.errors is not None and monitor.errors.n_events:
                e = monitor.errors.window_stats()
                metric = "error_rate" if monitor.errors.kind == "classification" else "mae"
                value = (
                    e.mean
                    if monitor.errors.kind == "classification"
                    else e.mean * monitor.errors.reference_mean
                )
                points.append(
                    MetricPoint("driftline_error", {metric: value, "joined": float(e.count)}, dict(tags))
                )
        join = self.join
        points.append(
            MetricPoint(
                "driftline_join",
                {
                    "pending": float(len(join)),
                    "matched": float(join.matched),
                    "expired": float(join.expired),
                    "evicted": float(join.evicted),
                    "unmatched_outcomes": float(join.unmatched_outcomes),
                },
            )
        )
        return points

    def restore_partition(self, partition: int, records: Iterable[tuple[bytes, bytes | None]]) -> int:
        """Rebuilds the join of one requests partition from its changelog records."""
        return self.join.restore(partition, records)

    def drop_partition(self, partition: int) -> None:
        self.join.drop_partition(partition)

    def observe_dead_letters(self, dead: Sequence[DeadLetterInfo]) -> Iterable[OutgoingMessage]:
        alerts: list[Alert] = []
        by_model: dict[str, list[DeadLetterInfo]] = {}
        for d in dead:
            if d.model is not None:
                by_model.setdefault(d.model, []).append(d)
        for monitor in self._monitors.values():
            letters = by_model.get(monitor.name)
            if not letters:
                continue
            ctx = _Context([d.record for d in letters])
            wrong: dict[str, int] = {}
            for d in letters:
                if d.reason is DeadLetterReason.WRONG_TYPE and d.feature:
                    wrong[d.feature] = wrong.get(d.feature, 0) + 1
            for feature, hits in wrong.items():
                watch = monitor.wrong_type.get(feature)
                if watch is None:
                    s = self.settings
                    watch = monitor.wrong_type[feature] = RateWatch(0.0, s.rate_margin, s.rate_window_events)
                # The denominator is counted in observe(); here only the hits arrive.
                if watch.update(hits, 0) == "fire":
                    alerts.append(self._type_alert(monitor, feature, watch, ctx))
            if monitor.dead_letters.update(len(letters), 0) == "fire":
                alerts.append(self._dead_letter_alert(monitor, ctx))
        return self._publish(alerts)

    # --- alert builders -----------------------------------------------------------------------

    def _alert(
        self,
        monitor: ModelMonitor,
        kind: AlertKind,
        detector: str,
        subject: str,
        severity: Severity,
        message: str,
        evidence: Evidence,
        ctx: _Context,
    ) -> Alert:
        return Alert.create(
            model=monitor.name,
            model_version=monitor.version,
            kind=kind,
            detector=detector,
            subject=subject,
            severity=severity,
            message=message,
            evidence=evidence,
            opened_at_event=monitor.features.n_events,
            first_event_time=ctx.first_event_time,
            detected_at=datetime.fromtimestamp(self.clock(), UTC),
            source=ctx.source,
        )

    def _dependency_alerts(
        self, monitor: ModelMonitor, findings: Sequence[DependencyFinding], ctx: _Context
    ) -> list[Alert]:
        out = []
        for f in findings:
            installed = f.installed or "not installed"
            out.append(
                self._alert(
                    monitor,
                    AlertKind.TECHNICAL,
                    "dependency_versions",
                    f.package,
                    _FINDING_SEVERITY.get(f.level, Severity.WARNING),
                    f"{monitor.name}/{monitor.version} was built with {f.package} {f.built}; "
                    f"serving with {installed} ({f.level} change)",
                    Evidence(extra={"built": f.built, "installed": installed, "level": f.level}),
                    ctx,
                )
            )
        return out

    def _drift_alerts(self, monitor: ModelMonitor, detections: list[Detection], ctx: _Context) -> list[Alert]:
        if not detections:
            return []
        manifest = monitor.served.manifest
        stats = {w.name: w for w in monitor.features.window_stats()}
        out = []
        for d in detections:
            prediction = d.name == "prediction" and d.column == len(manifest.features)
            kind = AlertKind.PREDICTION if prediction else AlertKind.DATA
            ref = manifest.reference.output.statistics if prediction else manifest.reference.features[d.name]
            window = stats.get(d.name)
            direction = "up" if d.shift_sd > 0 else "down"
            if d.detector.endswith(("_up", "_down")):
                direction = d.detector.rsplit("_", 1)[1]
            toward_reference = (direction == "down") == (d.shift_sd > 0)
            if abs(d.shift_sd) < self.settings.recovery_shift_sd or toward_reference:
                # The stream moved back to (or toward) the reference: not a new drift. Its incident
                # closes once a full window is back under the bound (_recoveries), not on this one
                # detection: a worker reading a partition that lags behind the others sees the stream
                # step back and forth around a drift's onset.
                continue
            what = "the model's output" if prediction else f"feature {d.name!r}"
            # The shift since the detector's estimated change point, in standard deviations of the
            # reference-standardised stream (for a normal feature close to its raw shift in sd).
            severity = Severity.CRITICAL if abs(d.shift_sd) >= 1.0 else Severity.WARNING
            recent_raw = ""
            if window is not None and not math.isnan(window.raw_mean):
                recent_raw = f"; recent mean {window.raw_mean:.4g}"
            ref_mean = ""
            if isinstance(ref, NumericStatistics) and ref.mean is not None:
                ref_mean = f" vs reference {ref.mean:.4g}"
            size = f"{d.shift_sd:+.2f} reference sd"
            out.append(
                self._alert(
                    monitor,
                    kind,
                    d.detector,
                    d.name,
                    severity,
                    f"{what} of {monitor.name}/{monitor.version} drifted {direction} "
                    f"({size}{recent_raw}{ref_mean}); {d.detector} fired at event {d.event_index}",
                    _detection_evidence(d, standardised_shift=d.shift_sd),
                    ctx,
                )
            )
        return out

    def _rate_alerts(self, monitor: ModelMonitor, batch: ModelBatch, ctx: _Context) -> list[Alert]:
        out: list[Alert] = []
        enc = batch.encoded
        n = len(batch.records)
        manifest = batch.served.manifest
        for i, watch in enumerate(monitor.missing):
            change = watch.update(int(enc.missing[i]) if len(enc.missing) else 0, n)
            name = manifest.features[i].name
            out.extend(self._rate_change(monitor, change, watch, "missing_rate", name, "missing values", ctx))
        for i, watch in monitor.out_of_range.items():
            change = watch.update(int(enc.out_of_range[i]), n)
            name = manifest.features[i].name
            out.extend(
                self._rate_change(
                    monitor, change, watch, "out_of_range_rate", name, "out-of-range values", ctx
                )
            )
        for field_name in enc.unseen_fields:
            if field_name not in monitor.unseen:
                s = self.settings
                monitor.unseen[field_name] = RateWatch(0.0, s.rate_margin, s.rate_window_events)
        for field_name, watch in monitor.unseen.items():
            change = watch.update(enc.unseen_fields.get(field_name, 0), n)
            out.extend(
                self._rate_change(monitor, change, watch, "unseen_field", field_name, "an unknown field", ctx)
            )
        for watch in monitor.wrong_type.values():
            watch.update(0, n)
        if monitor.dead_letters.update(0, n) == "recover":
            self.incidents.recover(IncidentKey(monitor.name, AlertKind.TECHNICAL.value, "dead_letters"))
        return out

    def _rate_change(
        self,
        monitor: ModelMonitor,
        change: Transition,
        watch: RateWatch,
        detector: str,
        subject: str,
        what: str,
        ctx: _Context,
    ) -> list[Alert]:
        if change == "recover":
            self.incidents.recover(IncidentKey(monitor.name, AlertKind.TECHNICAL.value, subject))
            return []
        if change != "fire":
            return []
        share = watch.last_share
        return [
            self._alert(
                monitor,
                AlertKind.TECHNICAL,
                detector,
                subject,
                Severity.WARNING,
                f"{share:.1%} of {monitor.name}/{monitor.version} requests carry {what} in {subject!r} "
                f"(reference {watch.baseline:.1%}, alert above {watch.threshold:.1%})",
                Evidence(
                    reference_mean=watch.baseline,
                    recent_mean=share,
                    window_events=watch.window,
                    extra={"threshold": watch.threshold},
                ),
                ctx,
            )
        ]

    def _type_alert(self, monitor: ModelMonitor, feature: str, watch: RateWatch, ctx: _Context) -> Alert:
        return self._alert(
            monitor,
            AlertKind.TECHNICAL,
            "wrong_type_rate",
            feature,
            Severity.WARNING,
            f"{watch.last_share:.1%} of {monitor.name} requests carry a wrong type in {feature!r} "
            "(dead-lettered); did a producer change its schema?",
            Evidence(
                recent_mean=watch.last_share, window_events=watch.window, extra={"threshold": watch.threshold}
            ),
            ctx,
        )

    def _dead_letter_alert(self, monitor: ModelMonitor, ctx: _Context) -> Alert:
        share = monitor.dead_letters.last_share
        return self._alert(
            monitor,
            AlertKind.TECHNICAL,
            "dead_letter_rate",
            "dead_letters",
            Severity.WARNING,
            f"{share:.1%} of {monitor.name} requests are dead-lettered",
            Evidence(recent_mean=share, window_events=monitor.dead_letters.window),
            ctx,
        )

    def _recoveries(self, monitor: ModelMonitor) -> None:
        # Only a column with an open incident can recover, and most batches have none: the window
        # statistics (about a third of the monitor's fixed cost per batch) are only worked out then.
        is_open = self.incidents.is_open
        if not any(is_open(key) for key in monitor.column_incidents):
            return
        threshold = self.settings.recovery_shift_sd
        settled = _settled_before(monitor.features.n_events, monitor.features.config)
        for w in monitor.features.window_stats():
            if w.count and abs(w.shift_sd) < threshold and monitor.last_detection.get(w.name, 0) <= settled:
                kind = AlertKind.PREDICTION if w.name == "prediction" else AlertKind.DATA
                key = IncidentKey(monitor.name, kind.value, w.name)
                if self.incidents.is_open(key):
                    self.incidents.recover(key)

    def _publish(self, alerts: list[Alert]) -> list[OutgoingMessage]:
        out = []
        for alert in alerts:
            if not self.incidents.admit(alert):
                continue
            self.metrics.alerts.labels(model=alert.model, kind=alert.kind.value).inc()
            log.warning(
                "ALERT %s %s/%s %s: %s",
                alert.kind.value,
                alert.model,
                alert.model_version,
                alert.subject,
                alert.message,
            )
            self.raised.append(alert)
            del self.raised[:-1000]
            out.append(OutgoingMessage(self.alerts_topic, alert.alert_id.encode(), encode_alert(alert)))
        return out
