"""Alert wording: what each monitor's finding says to a person, and the evidence it carries.

:class:`AlertWriter` turns a finding (a detection, a rate over its threshold, a dependency change) into
an :class:`~schemas.alert.Alert`; the observer (:mod:`agent.monitoring.observer`) decides which
findings become alerts, the writer only words them. Where an alert says it was seen: the partition
offset ranges of the batch in which it fired (:class:`AlertContext`), and the event time of that
batch's first request.

May import: :mod:`agent.monitoring` (its other modules), :mod:`agent.models`, :mod:`schemas`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import NamedTuple

from agent.models.versions import DependencyFinding
from agent.monitoring.batch import RecordLike
from agent.monitoring.columns import WindowStats
from agent.monitoring.detectors import Detection
from agent.monitoring.features import TAIL
from agent.monitoring.join import OutcomeJoin
from agent.monitoring.model_monitor import ModelMonitor
from agent.monitoring.technical import RateWatch, most_often
from schemas.alert import Alert, AlertKind, Evidence, OffsetRange, Severity
from schemas.manifest import CategoricalStatistics, NumericStatistics

__all__ = [
    "EXPLAINED_MARGIN",
    "FINDING_SEVERITY",
    "UNJOINED_OUTCOMES",
    "UNKNOWN_FIELDS",
    "UNKNOWN_MODELS",
    "AlertContext",
    "AlertWriter",
    "WorkerSubject",
    "detection_evidence",
    "explained_by_inputs",
    "offset_ranges",
    "share_moves",
    "times",
]

FINDING_SEVERITY = {
    "major": Severity.CRITICAL,
    "missing": Severity.CRITICAL,
    "minor": Severity.WARNING,
    "patch": Severity.INFO,
}
"""A dependency finding's level -> the severity of its technical alert."""

UNKNOWN_FIELDS = "unknown_fields"
"""Subject of a model's alert on requests carrying fields it has no feature for, whatever their names."""


class WorkerSubject(NamedTuple):
    """What a worker-level alert is about: no one model's, so its model and version are ``*``."""

    model: str
    subject: str


UNJOINED_OUTCOMES = "unjoined_outcomes"
"""Subject of a model's alert on outcomes that match no prediction (the concept monitor is blind)."""

UNKNOWN_MODELS = WorkerSubject("*", "unknown_models")
"""A surge of requests that no model of the worker can answer."""


def offset_ranges(records: Sequence[RecordLike]) -> tuple[OffsetRange, ...]:
    """The ``(topic, partition)`` offset spans that ``records`` cover, sorted."""
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


class AlertContext:
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
            self._source = offset_ranges(self._records)
        return self._source


def detection_evidence(d: Detection, **extra: float | int | str) -> Evidence:
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


EXPLAINED_MARGIN = 0.05
"""How far a classifier's error may rise above the error estimated for the same predictions (plus two
standard errors of the realised rate) and still be read as explained by its inputs."""

EXPLAINED_MARGIN_MAE = 0.25
"""How far a regressor's MAE may rise above the MAE its error model estimated for the same
predictions, as a share of that estimate (plus two standard errors of the realised MAE), and still be
read as explained by its inputs."""


def explained_by_inputs(monitor: ModelMonitor, d: Detection) -> tuple[str, dict[str, float | str]]:
    """Whether an error rise, detection ``d``, is explained by the model's inputs: the error estimated
    for the same joined predictions when they were made (a classifier's from its confidence, a
    regressor's by its error model: :mod:`agent.monitoring.estimation`) against the realised one.
    Words for the alert's message and its evidence; nothing without at least 50 such predictions.

    Estimated ~ realised: the inputs moved to where the model is less sure, and it errs as it said it
    would. Realised well above: the labels no longer follow the inputs as they did (a change in
    P(y | x), which only labels show), whatever the inputs do.
    """
    errors = monitor.errors
    window = monitor.joined.recent(max(d.window_count, 1))
    if errors is None or window is None or window.count < 50:
        return "", {}
    same = f"the same {window.count:,} predictions"
    if errors.kind == "classification":
        se = math.sqrt(max(window.realised * (1.0 - window.realised), 1e-4) / window.count)
        unexplained = window.realised - window.estimated > EXPLAINED_MARGIN + 2.0 * se
        estimated, realised = f"{window.estimated:.1%}", f"{window.realised:.1%}"
        how, targets = "from the model's confidence", "labels"
    else:
        # An absolute error's spread, relative to its mean, as on the holdout.
        se = errors.reference_std / errors.reference_mean * window.realised / math.sqrt(window.count)
        unexplained = window.realised - window.estimated > EXPLAINED_MARGIN_MAE * window.estimated + 2.0 * se
        estimated, realised = f"an MAE of {window.estimated:.4g}", f"{window.realised:.4g}"
        how, targets = "by its error model", "targets"
    if unexplained:
        why = (
            f"; the inputs explain {estimated} ({realised} realised over {same}, estimated {how} "
            f"when it made them): the {targets} no longer follow the inputs as they did"
        )
    else:
        why = f"; the inputs explain it: {estimated} was estimated for {same}"
    extra: dict[str, float | str] = {
        "estimated_error_same": window.estimated,
        "realised_error_same": window.realised,
        "same_predictions": window.count,
        "unexplained_by_inputs": float(unexplained),
    }
    return why, extra


def times(ratio: float) -> str:
    """A ratio as alerts write it: two significant digits, three where two would read "1x".

    >>> times(2.43), times(0.5), times(1.045), times(0.962), times(1.0)
    ('2.4x', '0.5x', '1.04x', '0.962x', '1x')
    """
    return f"{ratio:.3g}x" if round(ratio, 1) == 1.0 else f"{ratio:.2g}x"


def _blocks(events: int, block_size: int) -> int:
    return max(-(-events // block_size), 1)


def share_moves(monitor: ModelMonitor, d: Detection, prefix: str = "", top: int = 2) -> str:
    """The ``top`` categories of a categorical column whose shares moved most over detection ``d``'s
    events (``'8' 9% -> 21%``), from its share streams; empty when it has none. A mix's location
    says only that mass moved toward rarer or more frequent categories, which on ten classes of
    about 10 % each names none of them."""
    features = monitor.features
    stats = [
        s
        for s in features.stream_stats(_blocks(d.window_count, features.config.block_size))
        if s.stream.column == d.column and s.stream.measure == "share" and s.count
    ]
    stats.sort(key=lambda s: -abs(s.mean - s.stream.mean))
    moved = [f"{prefix}{s.stream.category!r} {s.stream.mean:.0%} -> {s.mean:.0%}" for s in stats[:top]]
    return ", ".join(moved)


class AlertWriter:
    """Words the monitors' findings as alerts, stamped with ``clock``'s time.

    Parameters:
        clock: Wall clock (seconds since the epoch), for the alerts' ``detected_at``.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock

    def alert(
        self,
        monitor: ModelMonitor,
        kind: AlertKind,
        detector: str,
        subject: str,
        severity: Severity,
        message: str,
        evidence: Evidence,
        ctx: AlertContext,
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

    def dependency_alerts(
        self, monitor: ModelMonitor, findings: Sequence[DependencyFinding], ctx: AlertContext
    ) -> list[Alert]:
        out = []
        for f in findings:
            installed = f.installed or "not installed"
            out.append(
                self.alert(
                    monitor,
                    AlertKind.TECHNICAL,
                    "dependency_versions",
                    f.package,
                    FINDING_SEVERITY.get(f.level, Severity.WARNING),
                    f"{monitor.name}/{monitor.version} was built with {f.package} {f.built}; "
                    f"serving with {installed} ({f.level} change)",
                    Evidence(extra={"built": f.built, "installed": installed, "level": f.level}),
                    ctx,
                )
            )
        return out

    def drift_alert(
        self,
        monitor: ModelMonitor,
        d: Detection,
        direction: str,
        window: WindowStats | None,
        ctx: AlertContext,
    ) -> Alert:
        """A data (feature) or prediction (output, predicted class) drift alert for detection ``d``,
        worded by the measure that fired: location, spread or a category's share."""
        manifest = monitor.served.manifest
        prediction = d.column in monitor.features.output_columns
        kind = AlertKind.PREDICTION if prediction else AlertKind.DATA
        ref: NumericStatistics | CategoricalStatistics | None = None
        if not prediction:
            ref = manifest.reference.features[d.name]
        elif d.name == "prediction":
            ref = manifest.reference.output.statistics
        what = f"feature {d.name!r}"
        if prediction:
            what = "the model's predicted class" if d.name == "predicted_class" else "the model's output"
        # The shift since the detector's estimated change point, in standard deviations of the
        # monitored stream (for a normal feature's location, close to its raw shift in sd).
        severity = Severity.CRITICAL if abs(d.shift_sd) >= 1.0 else Severity.WARNING
        model = f"{monitor.name}/{monitor.version}"
        fired = f"{d.detector} fired at event {d.event_index}"
        if d.measure == "share":
            category = d.category or "?"
            rose = "rose" if d.shift_sd > 0 else "fell"
            whose = (
                f"class {category!r} among the predictions"
                if d.name == "predicted_class"
                else (f"{category!r} in {what}")
            )
            message = (
                f"share of {whose} of {model} {rose} from {d.reference_mean:.0%} to {d.window_mean:.0%} "
                f"(over {d.window_count:,} events); {fired}"
            )
            evidence = detection_evidence(
                d,
                measure="share",
                category=category,
                reference_value=d.reference_mean,
                recent_value=d.window_mean,
            )
        elif d.measure == "tails":
            grew = "grew" if d.shift_sd > 0 else "thinned"
            ref_std = ref.std if isinstance(ref, NumericStatistics) else None
            ratio = d.raw_std / ref_std if ref_std and math.isfinite(d.raw_std) else math.nan
            spread = f"; recent sd {times(ratio)} the reference's" if math.isfinite(ratio) else ""
            message = (
                f"tails of {what} of {model} {grew}: {d.window_mean:.1%} of recent values beyond the "
                f"reference's {TAIL * 100:g}th and {100 - TAIL * 100:g}th percentiles vs "
                f"{d.reference_mean:.1%}{spread}; {fired}"
            )
            tails: dict[str, float | str] = {
                "measure": "tails",
                "reference_value": d.reference_mean,
                "recent_value": d.window_mean,
            }
            if math.isfinite(ratio):
                tails["spread_ratio"] = ratio
            evidence = detection_evidence(d, **tails)
        elif d.measure == "spread":
            grew = "grew" if d.shift_sd > 0 else "shrank"
            ref_std = ref.std if isinstance(ref, NumericStatistics) else None
            ratio = d.raw_std / ref_std if ref_std and math.isfinite(d.raw_std) else math.nan
            # The direction is the standardised stream's (the distance from the reference median);
            # the raw sd, pulled by clipped or tied values, can disagree: then no "shrank 1.1x".
            agrees = math.isfinite(ratio) and (ratio > 1) == (d.shift_sd > 0)
            size = f" {times(ratio)}" if agrees else ""
            detail = f"recent sd {d.raw_std:.4g} vs reference {ref_std:.4g}; " if math.isfinite(ratio) else ""
            message = (
                f"spread of {what} of {model} {grew}{size} ({detail}distance from the reference median "
                f"{d.shift_sd:+.2f} sd); {fired}"
            )
            extra: dict[str, float | str] = {"measure": "spread", "standardised_shift": d.shift_sd}
            if math.isfinite(ratio):
                assert ref_std is not None
                extra.update(reference_value=ref_std, recent_value=d.raw_std, spread_ratio=ratio)
            evidence = detection_evidence(d, **extra)
        else:
            recent_raw = moves = ""
            # The mean over the events the shift was measured on (the evidence's recent_value), so
            # that the message's mean and its direction speak of the same events; the monitor's
            # sliding window where the detection carries none.
            if math.isfinite(d.raw_mean):
                recent_raw = f"; recent mean {d.raw_mean:.4g} over {d.window_count:,} events"
            elif window is not None and not math.isnan(window.raw_mean):
                recent_raw = f"; recent mean {window.raw_mean:.4g}"
            ref_mean = ""
            if isinstance(ref, NumericStatistics) and ref.mean is not None:
                ref_mean = f" vs reference {ref.mean:.4g}"
            size = f"{d.shift_sd:+.2f} reference sd"
            message = f"{what} of {model} drifted {direction} ({size}{recent_raw}{ref_mean}); {fired}"
            if isinstance(ref, CategoricalStatistics) or (prediction and d.name == "predicted_class"):
                # A categorical column's location is its mean position in the frequency-ordered mix.
                toward = "rarer" if d.shift_sd > 0 else "more frequent"
                mix = "the model's predicted classes" if prediction else f"feature {d.name!r}"
                kinds = "classes" if prediction else "categories"
                moves = share_moves(monitor, d, "class " if prediction else "")
                message = (
                    f"the mix of {mix} of {model} moved toward its {toward} {kinds} "
                    f"({size}{'; ' + moves if moves else ''}); {fired}"
                )
            location: dict[str, float | str] = {"measure": "location", "standardised_shift": d.shift_sd}
            if moves:
                location["share_moves"] = moves
            if isinstance(ref, NumericStatistics) and ref.mean is not None and math.isfinite(d.raw_mean):
                location.update(reference_value=ref.mean, recent_value=d.raw_mean)
            evidence = detection_evidence(d, **location)
        return self.alert(monitor, kind, d.detector, d.name, severity, message, evidence, ctx)

    def reconstruction_alert(self, monitor: ModelMonitor, d: Detection, ctx: AlertContext) -> Alert:
        """A rise of the features' reconstruction error: they move together differently."""
        reconstruction = monitor.reconstruction
        assert reconstruction is not None
        reference = reconstruction.reference
        # The error over the detection's own events (its segment of the window as it fired): the
        # window's last events are another record's in a fleet, where a record holds many blocks
        # past a detection in its middle (CI: an alert of a rise whose text said the error fell).
        recent_mean = d.raw_mean
        if not math.isfinite(recent_mean):
            blocks = _blocks(d.window_count, reconstruction.config.block_size)
            recent_mean = reconstruction.window_stats(blocks).raw_mean
        shift = reconstruction.shift_of(recent_mean)
        severity = Severity.CRITICAL if shift >= 3.0 else Severity.WARNING
        return self.alert(
            monitor,
            AlertKind.DATA,
            d.detector,
            d.name,
            severity,
            f"features of {monitor.name}/{monitor.version} move together differently (reconstruction "
            f"error {shift:+.1f} sd: recent mean {recent_mean:.3g} vs reference {reference.mean:.3g}, "
            f"over {d.window_count:,} events; {len(reconstruction.errors.reconstruction.features)} "
            f"numeric features); {d.detector} fired at event {d.event_index}",
            Evidence(
                reference_mean=reference.mean,
                reference_std=reference.std,
                recent_mean=recent_mean,
                recent_std=None,
                shift_in_std=shift,
                statistic=d.statistic,
                window_events=d.window_count,
                extra={
                    "event_index": d.event_index,
                    "statistic_name": "reconstruction_error",
                    "standardised_shift": d.shift_sd,
                    "error_from": reconstruction.errors.reconstruction.error_from,
                },
            ),
            ctx,
        )

    def concept_alert(self, monitor: ModelMonitor, d: Detection, ctx: AlertContext) -> Alert:
        """A rise of the joined outcomes' error."""
        assert monitor.errors is not None
        classification = monitor.errors.kind == "classification"
        if classification:
            reference = f"reference error rate {monitor.errors.reference_mean:.1%}"
            recent = f"recent error rate {d.window_mean:.1%}"
        else:
            reference = f"reference MAE {monitor.errors.reference_mean:.4g}"
            recent = f"recent MAE {d.window_mean * monitor.errors.reference_mean:.4g}"
        severity = Severity.CRITICAL if d.shift_sd >= 2.0 else Severity.WARNING
        why, extra = explained_by_inputs(monitor, d)
        return self.alert(
            monitor,
            AlertKind.CONCEPT,
            d.detector,
            "error",
            severity,
            f"the error of {monitor.name}/{monitor.version} rose: {recent} vs {reference} "
            f"({d.window_count} joined outcomes); {d.detector} fired at outcome {d.event_index}{why}",
            detection_evidence(d, metric="error_rate" if classification else "mae_ratio", **extra),
            ctx,
        )

    def rate_alert(
        self,
        monitor: ModelMonitor,
        watch: RateWatch,
        detector: str,
        subject: str,
        what: str,
        ctx: AlertContext,
        *,
        detail: str = "",
        extra: dict[str, float | int | str] | None = None,
    ) -> Alert:
        """A windowed rate (missing, out-of-range values, unknown fields) over its threshold;
        ``detail`` ends the message, ``extra`` adds to the evidence."""
        share = watch.last_share
        return self.alert(
            monitor,
            AlertKind.TECHNICAL,
            detector,
            subject,
            Severity.WARNING,
            f"{share:.1%} of {monitor.name}/{monitor.version} requests carry {what} in {subject!r} "
            f"(reference {watch.baseline:.1%}, alert above {watch.threshold:.1%}){detail}",
            Evidence(
                reference_mean=watch.baseline,
                recent_mean=share,
                window_events=watch.last_events,
                extra={"threshold": watch.threshold, **(extra or {})},
            ),
            ctx,
        )

    def unknown_category_alert(
        self, monitor: ModelMonitor, index: int, watch: RateWatch, seen: dict[str, int], ctx: AlertContext
    ) -> Alert:
        """Feature ``index`` carries categories the model was not built with past the rate margin;
        names the ones met most often in the window (``seen``: a bounded tally, so "at least")."""
        feature = monitor.served.manifest.features[index]
        policy = feature.missing
        served_as = f"imputed {policy.value!r}" if policy.action == "impute" else "NaN"
        top = most_often(seen)
        detail = ""
        extra: dict[str, float | int | str] = {}
        if top:
            listed = ", ".join(f"{value!r} ({hits:,})" for value, hits in top)
            detail = f"; most often {listed}"
            extra = {"top_value": top[0][0], "top_value_requests": top[0][1], "values_named": len(seen)}
        return self.rate_alert(
            monitor,
            watch,
            "unknown_category_rate",
            feature.name,
            f"a category the model was not built with (served as missing: {served_as})",
            ctx,
            detail=detail,
            extra=extra,
        )

    def type_alert(self, monitor: ModelMonitor, feature: str, watch: RateWatch, ctx: AlertContext) -> Alert:
        return self.alert(
            monitor,
            AlertKind.TECHNICAL,
            "wrong_type_rate",
            feature,
            Severity.WARNING,
            f"{watch.last_share:.1%} of {monitor.name} requests carry a wrong type in {feature!r} "
            "(dead-lettered); did a producer change its schema?",
            Evidence(
                recent_mean=watch.last_share,
                window_events=watch.last_events,
                extra={"threshold": watch.threshold},
            ),
            ctx,
        )

    def dead_letter_alert(self, monitor: ModelMonitor, ctx: AlertContext) -> Alert:
        share = monitor.dead_letters.last_share
        return self.alert(
            monitor,
            AlertKind.TECHNICAL,
            "dead_letter_rate",
            "dead_letters",
            Severity.WARNING,
            f"{share:.1%} of {monitor.name} requests are dead-lettered",
            Evidence(recent_mean=share, window_events=monitor.dead_letters.last_events),
            ctx,
        )

    def unknown_fields_alert(self, monitor: ModelMonitor, watch: RateWatch, ctx: AlertContext) -> Alert:
        share = watch.last_share
        return self.alert(
            monitor,
            AlertKind.TECHNICAL,
            "unseen_fields_rate",
            UNKNOWN_FIELDS,
            Severity.WARNING,
            f"{share:.1%} of {monitor.name}/{monitor.version} requests carry fields the model has no "
            f"feature for (alert above {watch.threshold:.1%}); did a producer change its schema?",
            Evidence(
                recent_mean=share, window_events=watch.last_events, extra={"threshold": watch.threshold}
            ),
            ctx,
        )

    def unknown_models_alert(self, watch: RateWatch, ctx: AlertContext) -> Alert:
        share = watch.last_share
        return Alert.create(
            model=UNKNOWN_MODELS.model,
            model_version=UNKNOWN_MODELS.model,
            kind=AlertKind.TECHNICAL,
            detector="unknown_model_rate",
            subject=UNKNOWN_MODELS.subject,
            severity=Severity.WARNING,
            message=f"{share:.1%} of this worker's requests name a model (or version) it does not serve "
            f"(alert above {watch.threshold:.1%}); they are dead-lettered (unknown_model)",
            evidence=Evidence(
                recent_mean=share, window_events=watch.last_events, extra={"threshold": watch.threshold}
            ),
            opened_at_event=0,
            first_event_time=ctx.first_event_time,
            detected_at=datetime.fromtimestamp(self.clock(), UTC),
            source=ctx.source,
        )

    def unjoined_outcomes_alert(
        self,
        monitor: ModelMonitor,
        watch: RateWatch,
        join: OutcomeJoin | None,
        ttl_s: float,
        ctx: AlertContext,
        *,
        max_entries: int,
        grace_s: float = 0.0,
    ) -> Alert:
        """``join``: the join that missed them, whose counts the alert quotes; ``None`` for a fleet's
        monitor, whose outcomes were joined by every worker."""
        share = watch.last_share
        extra = {"threshold": watch.threshold, "join_ttl_s": ttl_s, "join_grace_s": grace_s}
        # A fleet's workers each count their own join's expired and evicted predictions.
        counted = "; each worker's join counts those that expired or were evicted (driftline_join)"
        if join is not None:
            counted = f"; so far {join.expired:,} expired and {join.evicted:,} were evicted unmatched"
            extra |= {"expired": float(join.expired), "evicted": float(join.evicted)}
        return self.alert(
            monitor,
            AlertKind.TECHNICAL,
            "unjoined_outcome_rate",
            UNJOINED_OUTCOMES,
            Severity.WARNING,
            f"{share:.1%} of the last {watch.last_events:,} outcomes of {monitor.name} matched no prediction "
            f"(alert above {watch.threshold:.1%}): the concept monitor sees only the rest. A prediction "
            f"waits {ttl_s:,.0f} s for its outcome (DRIFTLINE_MONITORING__JOIN_TTL_S) among at most "
            f"{max_entries:,} (DRIFTLINE_MONITORING__JOIN_MAX_ENTRIES){counted}, and an outcome read "
            f"before its prediction waits {grace_s:,.0f} s for it (DRIFTLINE_MONITORING__JOIN_GRACE_S). "
            "Outcomes later or earlier than that, or whose request ids are not the requests', are not "
            "joined",
            Evidence(recent_mean=share, window_events=watch.last_events, extra=extra),
            ctx,
        )

    def latency_alert(
        self, monitor: ModelMonitor, per_row_us: float, ctx: AlertContext, worker: str = ""
    ) -> Alert:
        """Inference on ``worker`` (its name, if it has one) got slower: a property of its machine, so
        the alert says which one."""
        where = f" on worker {worker}" if worker else ""
        ratio = monitor.latency.last_ratio
        extra: dict[str, float | str] = {"unit": "us_per_row", "ratio_to_baseline": ratio}
        if worker:
            extra["worker"] = worker
        return self.alert(
            monitor,
            AlertKind.TECHNICAL,
            "page_hinkley_up",
            "inference_latency",
            Severity.WARNING,
            f"inference latency of {monitor.name}/{monitor.version} rose to {per_row_us:.1f} us per "
            f"row, {ratio:.1f}x its level at that batch size over the last second{where}",
            Evidence(recent_mean=per_row_us, extra=extra),
            ctx,
        )
