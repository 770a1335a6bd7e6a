"""Estimated performance and attribution, as the observer uses them: alerts, recoveries and metrics.

The observer (:mod:`agent.monitoring.observer`) hands each batch to :func:`observe_estimate`, which
feeds the model's estimated-error monitor (:mod:`agent.monitoring.estimation`: a classifier's from its
calibrated confidence, a regressor's from its error model) and words a ``performance`` alert for
each rise it detects; :func:`attach_drivers` names the likely drivers
(:mod:`agent.monitoring.attribution`) in every prediction, performance and concept alert before the
incident gate sees it; :func:`estimate_recovered` says when the estimated error is back at or below
its reference; :func:`performance_points` are the metrics: the recent estimated error and, once
outcomes are joined, the realised error beside the estimate over the same predictions.

May import: :mod:`agent.monitoring` (its other modules), :mod:`agent.metrics`, :mod:`schemas`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from agent.metrics import MetricPoint
from agent.monitoring.attribution import EXPLAINED_KINDS, column_shifts, explain, rank_drivers
from agent.monitoring.batch import ModelBatch
from agent.monitoring.detectors import Detection
from agent.monitoring.estimation import EstimatedErrorMonitor
from agent.monitoring.incidents import IncidentKey
from agent.monitoring.model_monitor import ModelMonitor, settled_before
from agent.monitoring.wording import AlertContext, AlertWriter, detection_evidence
from schemas.alert import Alert, AlertKind, Driver, Severity

__all__ = [
    "PERFORMANCE_SUBJECT",
    "attach_drivers",
    "drivers",
    "estimate_recovered",
    "observe_estimate",
    "performance_alert",
    "performance_key",
    "performance_points",
]

PERFORMANCE_SUBJECT = "estimated_error"
"""The subject of a performance alert (and of its incident)."""


def performance_key(monitor: ModelMonitor) -> IncidentKey:
    return IncidentKey(monitor.name, AlertKind.PERFORMANCE.value, PERFORMANCE_SUBJECT)


def performance_alert(writer: AlertWriter, monitor: ModelMonitor, d: Detection, ctx: AlertContext) -> Alert:
    """A rise of the estimated error, worded like the concept alert of the real error."""
    assert monitor.estimated is not None
    reference = monitor.estimated.reference_mean
    severity = Severity.CRITICAL if d.shift_sd >= 2.0 else Severity.WARNING
    if monitor.estimated.kind == "regression":
        # In the target's units: a mean absolute error, not a rate.
        message = (
            f"the estimated mean absolute error of {monitor.name}/{monitor.version} rose from "
            f"{reference:.4g} on its holdout to {d.window_mean:.4g} over the last {d.window_count:,} "
            f"predictions (from its error model, no labels needed); {d.detector} fired at prediction "
            f"{d.event_index}"
        )
        metric = "estimated_mae"
    else:
        message = (
            f"the estimated error of {monitor.name}/{monitor.version} rose: {d.window_mean:.1%} over the "
            f"last {d.window_count:,} predictions vs {reference:.1%} on its holdout (from its calibrated "
            f"confidence, no labels needed); {d.detector} fired at prediction {d.event_index}"
        )
        metric = "estimated_error"
    return writer.alert(
        monitor,
        AlertKind.PERFORMANCE,
        d.detector,
        PERFORMANCE_SUBJECT,
        severity,
        message,
        detection_evidence(d, metric=metric),
        ctx,
    )


def observe_estimate(
    writer: AlertWriter, monitor: ModelMonitor, batch: ModelBatch, ctx: AlertContext
) -> list[Alert]:
    """Feeds one batch to the model's estimated-error monitor; the performance alerts it raises.

    A classifier's expected errors come from its calibrated confidence, a regressor's from its error
    model, run on the batch's matrix and predictions."""
    estimated = monitor.estimated
    if estimated is None:
        return []
    p = batch.predictions
    if isinstance(estimated, EstimatedErrorMonitor):
        if p.probabilities is None:
            estimated.last_expected = np.zeros(0)  # nothing for the join to pair with this batch
            return []
        detections = estimated.update(p.probabilities)
    else:
        if p.values is None:
            estimated.last_expected = np.zeros(0)
            return []
        detections = estimated.update_expected(
            batch.served.model.estimate_errors(batch.encoded.matrix, p.values)
        )
    if detections:
        monitor.last_estimate_detection = estimated.n_events
    # Rises only (a fall of the estimate is good news): the monitor reports nothing else. As for data
    # drift, a rise under ``recovery_shift_sd`` reference sds is not reported: the incident would count
    # as recovered at once, and over long windows ADWIN finds rises too small to matter (an error
    # model's slight dependence on a feature the error does not depend on).
    least = monitor.settings.recovery_shift_sd
    return [performance_alert(writer, monitor, d, ctx) for d in detections if d.shift_sd >= least]


def estimate_recovered(monitor: ModelMonitor, threshold_sd: float) -> bool:
    """Whether the estimated error is back: the recent window's shift under ``threshold_sd`` (at or
    below the reference; lower is good news), over a window with no prediction from before the last
    detection."""
    estimated = monitor.estimated
    if estimated is None or not estimated.n_events:
        return False
    # Over its whole window, unlike the joined error's recovery (recovery_blocks): an estimate follows
    # the inputs, and an incident it holds open keeps a drift's late alerts (a prediction column
    # seeing the inputs come back) in the drift's incident instead of opening another.
    window = estimated.window_stats()
    return (
        window.count > 0
        and window.shift_sd < threshold_sd
        and max(monitor.last_estimate_detection, estimated.columns.last_fall)
        <= settled_before(estimated.n_events, estimated.config)
    )


MIN_DRIVER_BLOCKS = 8
"""The features' shifts are read over at least this many recent blocks (256 events by default): a
shorter window's sampling noise (0.06 sd over 256 events) would hide all but large shifts under the
attribution's noise floor (:data:`~agent.monitoring.attribution.NOISE_Z` sampling sds)."""


def drivers(monitor: ModelMonitor, events: int | None = None, *, top: int = 3) -> list[Driver]:
    """The features that most likely explain a change in the model's output or error now: their shifts
    over about the last ``events`` events (the alert's window since its change point; the whole
    recent window when not given)."""
    manifest = monitor.served.manifest
    importance = manifest.importance.values if manifest.importance is not None else None
    features = monitor.features
    config = features.config
    last = None
    if events is not None:
        last = min(max(math.ceil(events / config.block_size), MIN_DRIVER_BLOCKS), config.window_blocks)
    shifts = column_shifts(features.window_stats(last), manifest.feature_names, features.reference_moments())
    return rank_drivers(shifts, importance, top=top)


def attach_drivers(monitor: ModelMonitor, alerts: Sequence[Alert]) -> list[Alert]:
    """``alerts`` with the likely drivers named in each prediction, performance and concept alert,
    each over its own window since the change its detector saw."""
    return [
        explain(a, drivers(monitor, a.evidence.window_events)) if a.kind in EXPLAINED_KINDS else a
        for a in alerts
    ]


def performance_points(monitor: ModelMonitor, tags: dict[str, str]) -> list[MetricPoint]:
    """``driftline_performance``: the recent estimated error over the last predictions and, once
    outcomes are joined, the realised error of the last joined predictions beside the error estimated
    for those same predictions, and their gap (estimated - realised)."""
    estimated = monitor.estimated
    if estimated is None or not estimated.n_events:
        return []
    fields: dict[str, float] = {}
    window = estimated.window_stats()
    if window.count:
        fields["estimated_error"] = window.mean
        fields["predictions"] = float(window.count)
    check = monitor.estimate_check.current()
    if check.count and math.isfinite(check.realised):
        fields.update(
            realised_error=check.realised,
            estimated_error_joined=check.estimated,
            estimate_gap=check.gap,
            estimate_abs_gap=abs(check.gap),
            joined=float(check.count),
        )
    return [MetricPoint("driftline_performance", fields, dict(tags))] if fields else []
