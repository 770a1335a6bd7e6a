"""Drift monitoring of served models: turns each inference batch into detector updates and alerts.

:class:`DriftObserver` is a :class:`~agent.monitoring.batch.BatchObserver`: the request handler gives
it every model batch, every batch's dead letters and every outcome, and it answers with the alerts that
pass the incident gate and the outcome join's changelog records (plain values: the serving layer
publishes them with the batch's predictions, so they are acknowledged before the requests' offsets are
committed). Per served model version, a :class:`~agent.monitoring.model_monitor.ModelMonitor` keeps

* **data drift**: a :class:`~agent.monitoring.features.FeatureDriftMonitor` over every feature,
  standardised against the package's reference quantiles (categorical features through their
  reference frequencies);
* **multivariate drift**: a :class:`~agent.monitoring.multivariate.ReconstructionMonitor` over
  each request's reconstruction error (how far its numeric features are from moving together as on
  the reference), when the package has a reconstruction;
* **prediction drift**: the same monitor's extra column, the model's output (positive-class
  probability, highest probability, or value) against its reference quantiles;
* **concept drift**: an :class:`~agent.monitoring.concept.ErrorMonitor` over the error of outcomes
  joined to their predictions by request id (:mod:`agent.monitoring.join`);
* **technical drift**: the package's dependency findings (alerted once, when the model is first
  served), and windowed rates of unseen fields, wrong types, missing and out-of-range values (each
  against its reference rate), dead letters, plus Page-Hinkley on inference latency per row.

Every alert passes the incident gate first (one alert per (model, kind, subject) until it recovers
or its cooldown passes). A data, prediction or concept incident recovers when its column's windowed
shift is back under ``recovery_shift_sd`` over a full window of events that came after the column's
last detection; a rate incident when its rate is back under the threshold. The alerts' words are
:mod:`agent.monitoring.wording`'s.

May import: :mod:`agent.monitoring` (its other modules), :mod:`agent.models`, :mod:`agent.metrics`,
:mod:`schemas`. No transport: no Kafka client, topic or message type.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import orjson

from agent.metrics import MetricPoint, Metrics
from agent.models.encoding import tally
from agent.models.registry import ServedModel
from agent.models.versions import DependencyFinding
from agent.monitoring import performance
from agent.monitoring.batch import ChangelogRecord, DeadLetterInfo, ModelBatch, Observed, RecordLike
from agent.monitoring.blocks import Blocks
from agent.monitoring.columns import ColumnSet, StreamStats
from agent.monitoring.context import ServingContext
from agent.monitoring.detectors import Detection
from agent.monitoring.estimation import joined_units, quantise_expected
from agent.monitoring.fleet import WORKER_STATS, Finding, ModelStats, SourceRanges, StatsPart, encode_stats
from agent.monitoring.grouping import IncidentGroups
from agent.monitoring.incidents import IncidentKey, IncidentManager
from agent.monitoring.join import OUTCOME_MARK, WAITING, JoinEntry, OutcomeJoin, Pair, Parked, encode_batch
from agent.monitoring.model_monitor import (
    ModelMonitor,
    MonitorSettingsView,
    class_indices,
    output_quantity,
    recovery_blocks,
    settled_before,
)
from agent.monitoring.multivariate import RECONSTRUCTION_COLUMN
from agent.monitoring.technical import RateCounts, RateWatch, Transition
from agent.monitoring.wording import (
    UNJOINED_OUTCOMES,
    UNKNOWN_FIELDS,
    UNKNOWN_MODELS,
    AlertContext,
    AlertWriter,
)
from schemas.alert import Alert, AlertKind
from schemas.events import DeadLetterReason, Outcome

__all__ = ["DriftObserver"]

log = logging.getLogger(__name__)


class _Source(NamedTuple):
    """Where an outcome was read, from its copy's key on the join topic (for the alert's source)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes | None = None


def _range_ends(sources: Iterable[tuple[str, int, int, int]]) -> list[RecordLike]:
    """Records standing for ``(topic, partition, first offset, last offset)`` ranges: the first and
    the last of each, as an alert's source names them."""
    return [_Source(t, p, o) for t, p, first, last in sources for o in (first, last)]


def _source(record: RecordLike) -> RecordLike:
    try:
        topic, partition, offset = (record.key or b"").decode().rsplit(":", 2)
        return _Source(topic, int(partition), int(offset))
    except ValueError:
        return record


class DriftObserver:
    """Feeds every model batch to its :class:`ModelMonitor` and answers with the alerts that pass the gate.

    Parameters:
        incidents: The incident gate.
        settings: Monitoring knobs.
        metrics: Counters (alerts raised per model and kind).
        clock: Wall clock, for alert times.
        persist_join: Whether to answer with the outcome join's changelog records.
        resolve: ``(name, version) -> ServedModel``, for joined predictions another worker made.
        context: What this worker saw change in how each model is served, for the incidents' reports;
            a fresh one (naming no worker) when not given.
        ship_stats: A fleet worker: the detectors' column sets only summarise, and their blocks are
            answered as statistics records (:attr:`Observed.stats`) for the model's one monitor, which
            runs :meth:`observe_stats`; so are the counts behind the technical rates (the model's, and
            the worker's requests for models nobody serves) and the package's dependency findings.
            Latency, the worker's machine's own, is judged here.
        worker: This worker's name, in its statistics records.
        ship_interval_s: A fleet worker ships a model's blocks at most this often (the blocks of the
            batches between wait for the next record, or for :meth:`flush_stats`): fewer, larger
            records cost the model's monitor less (each wakes Faust's consumer).
        groups: Another observer's incident groups, for a second observer on the same gate (a fleet
            worker's and its models' monitor): one incident is then reported once, by one of them.
    """

    def __init__(
        self,
        incidents: IncidentManager,
        *,
        settings: MonitorSettingsView | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        persist_join: bool = False,
        resolve: Callable[[str, str | None], ServedModel | None] | None = None,
        context: ServingContext | None = None,
        ship_stats: bool = False,
        worker: str = "",
        groups: IncidentGroups | None = None,
        ship_interval_s: float = 0.0,
    ) -> None:
        self.incidents = incidents
        self.ship_stats = ship_stats
        self.ship_interval_s = ship_interval_s
        self._last_ship: dict[ModelMonitor, float] = {}
        self._held_since: dict[ModelMonitor, float] = {}
        self.worker = worker
        self._sources: dict[ModelMonitor, tuple[SourceRanges, SourceRanges]] = {}
        """Per monitor, the ranges of the requests and of the outcomes it summarised since it shipped."""
        self._shipped: dict[ModelMonitor, tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]] = {}
        self._rates: dict[ModelMonitor, list[RateCounts]] = {}
        """A fleet worker's technical-rate counts per monitor, not yet shipped, in order."""
        self._findings: dict[ModelMonitor, tuple[Finding, ...]] = {}
        """A fleet worker's dependency findings per monitor, for its next record."""
        self._own_rates: list[RateCounts] = []
        """A fleet worker's own counts (requests for models nobody serves), not yet shipped."""
        self._own_sources = SourceRanges()
        """Where the requests for models nobody serves among them were read."""
        self._own_last_ship = -math.inf
        self._unknown_versions: set[tuple[str, str]] = set()
        self._rebuilt: set[ModelMonitor] = set()
        """Monitors fed a replay and no live record since."""
        # A model's monitor: per column set, the event span each statistics record's blocks took in
        # its merged stream and where they came from (the last window's worth), for the alerts' sources.
        self._spans: dict[
            tuple[ModelMonitor, str],
            deque[tuple[int, int, tuple[tuple[str, int, int, int], ...], int | None]],
        ] = {}
        # Cross-kind incidents: the alerts of one model that open close together, as one notification.
        self.context = context or ServingContext(clock=clock)
        self.groups = groups or IncidentGroups(incidents, clock=clock, context=self.context.lines)
        self.persist_join = persist_join
        # Finds the model of a joined prediction that this worker did not serve itself (it was
        # made before a restart or a rebalance): ModelRegistry.resolve.
        self.resolve = resolve
        self.settings = settings or MonitorSettingsView()
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.writer = AlertWriter(clock)
        self._monitors: dict[ServedModel, ModelMonitor] = {}
        self._by_version: dict[tuple[str, str], ModelMonitor] = {}
        s = self.settings
        self.join = OutcomeJoin(s.join_ttl_s, s.join_max_entries, clock=clock, grace_s=s.join_grace_s)
        self._batches = 0
        self.unknown_models = RateWatch(0.0, s.rate_margin, s.rate_window_events)
        """Requests that no served model can answer, among all the worker's requests."""
        self.unjoined: dict[str, RateWatch] = {}
        """Per model name: outcomes that matched no prediction, among the outcomes this worker joins."""
        self.raised: list[Alert] = []
        """Alerts that passed the gate, newest last (bounded), for tools and tests."""

    def monitor(self, served: ServedModel) -> ModelMonitor:
        """The monitor of ``served``, created on first use."""
        monitor = self._monitors.get(served)
        if monitor is None:
            monitor = self._monitors[served] = ModelMonitor(served, self.settings)
            self._by_version[served.name, served.version] = monitor
            if self.ship_stats:
                for columns in monitor.column_sets().values():
                    columns.ship()
            _log_budget(monitor)
        return monitor

    def monitors(self) -> list[ModelMonitor]:
        return list(self._monitors.values())

    def forget(self, model: str, version: str) -> None:
        """Drops the monitor of ``model``/``version`` (a fleet monitor whose partition moved away);
        :data:`~agent.monitoring.fleet.WORKER_STATS`: the fleet's watch of requests for models nobody
        serves starts afresh (its new host rebuilds it by reading the partition back)."""
        if (model, version) == (WORKER_STATS, WORKER_STATS):
            s = self.settings
            self.unknown_models = RateWatch(0.0, s.rate_margin, s.rate_window_events)
            return
        monitor = self._by_version.pop((model, version), None)
        if monitor is not None:
            self._monitors.pop(monitor.served, None)
            self._sources.pop(monitor, None)
            self._shipped.pop(monitor, None)
            self._rates.pop(monitor, None)
            self._findings.pop(monitor, None)
            self._rebuilt.discard(monitor)
            self._last_ship.pop(monitor, None)
            self._held_since.pop(monitor, None)
            for name in list(monitor.column_sets()):
                self._spans.pop((monitor, name), None)

    # --- BatchObserver ------------------------------------------------------------------------

    def observe(self, batch: ModelBatch) -> Observed:
        monitor = self.monitor(batch.served)
        ctx = AlertContext(batch.records, batch.requests[0].event_time if batch.requests else None)
        alerts: list[Alert] = []
        if not monitor.findings_alerted:
            monitor.findings_alerted = True
            findings = batch.served.model.findings
            if self.ship_stats:  # alerted once for the fleet by the model's monitor (observe_stats)
                self._findings[monitor] = tuple((f.package, f.built, f.installed, f.level) for f in findings)
            else:
                alerts.extend(self.writer.dependency_alerts(monitor, findings, ctx))
            # This version's first request here: the moment incidents are told against.
            manifest = batch.served.manifest
            self.context.served(
                monitor.name, monitor.version, packaged_at=manifest.created_at, findings=findings
            )
        features = monitor.features
        outputs = None
        if features.output_reference is not None:
            outputs = output_quantity(batch.served.manifest, batch.predictions)
        classes = None
        if features.class_reference is not None:
            classes = class_indices(monitor.label_index, batch.predictions)
            if classes is None:  # a classifier's batch without labels: none of its classes is known
                classes = np.full(len(batch.records), np.nan)
        detections = features.update_batch(batch.encoded.matrix, outputs, classes)
        for d in detections:
            monitor.last_detection[d.name] = monitor.features.n_events
        alerts.extend(self._drift_alerts(monitor, detections, ctx))
        alerts.extend(self._confirmations(monitor, ctx))
        if monitor.reconstruction is not None:
            alerts.extend(self._reconstruction_alerts(monitor, batch.encoded.matrix, alerts, ctx))
        if monitor.estimated is not None:
            alerts.extend(performance.observe_estimate(self.writer, monitor, batch, ctx))
        counts = self._batch_rates(monitor, batch)
        if self.ship_stats:  # the model's monitor watches the rates of every worker together
            self._pend_rates(monitor, counts)
        else:
            alerts.extend(self._rate_alerts(monitor, counts, ctx))
        n = len(batch.records)
        if self.ship_stats:
            self._pend_own(RateCounts(requests=n))
        else:
            alerts.extend(self._unknown_model_change(self.unknown_models.update(0, n), ctx))
        per_row_us = batch.inference_seconds / max(n, 1) * 1e6
        if monitor.latency.update(per_row_us, rows=n, now=self.clock()):
            alerts.append(self.writer.latency_alert(monitor, per_row_us, ctx, self.worker))
        self._recoveries(monitor)
        if monitor.reconstruction is not None:
            self._reconstruction_recovery(monitor)
        if monitor.estimated is not None:
            self._estimate_recovery(monitor)
        observed = Observed(self._gate(performance.attach_drivers(monitor, alerts)))
        if self.settings.concept_drift and monitor.errors is not None:
            observed.changelog.extend(self._remember(batch))
            if not self.persist_join and self.join.has_waited:
                # Remembered here: outcomes read before these predictions may have waited for them.
                waited = self._score(self._waited())
                observed.alerts.extend(waited.alerts)
                observed.incidents.extend(waited.incidents)
                observed.stats.extend(waited.stats)
        observed.incidents.extend(self.groups.drain())
        if self.ship_stats:
            event_time = batch.requests[0].event_time.timestamp() if batch.requests else None
            observed.stats.extend(self._ship(monitor, batch.records, event_time))
        return observed

    # --- fleet: the worker's half ------------------------------------------------------------------

    def flush_stats(self, *, force: bool = False) -> list[tuple[bytes, bytes]]:
        """Every monitor's blocks held back by :attr:`ship_interval_s` for at least that long (all of
        them if ``force``), as statistics records: a timer of the app calls it, so that the last
        blocks before a lull reach the model's monitor."""
        out: list[tuple[bytes, bytes]] = []
        for monitor in list(self._monitors.values()):
            out.extend(self._ship(monitor, (), force=force))
        out.extend(self._ship_own(force=force))
        return out

    def _pend_own(self, counts: RateCounts) -> None:
        """The worker's own counts, held for its next record of them, as a model's are
        (:meth:`_pend_rates`)."""
        self._hold(self._own_rates, counts)

    def _hold(self, held: list[RateCounts], counts: RateCounts) -> None:
        """Appends ``counts`` to ``held``, merged into the last counts up to a quarter of a rate window
        of requests and of outcomes (the monitor feeds each to its watches: a record of many batches
        must not close a window over all of them at once), and beyond 256 held regardless."""
        chunk = max(self.settings.rate_window_events // 4, 1)
        last = held[-1] if held else None
        if last is not None and (
            (last.events + counts.events <= chunk and last.outcomes + counts.outcomes <= chunk)
            or len(held) >= 256
        ):
            last.add(counts)
        else:
            held.append(counts)

    def _ship_own(self, *, force: bool = False) -> list[tuple[bytes, bytes]]:
        """The worker's own counts since its last record of them, as one statistics record keyed
        :data:`~agent.monitoring.fleet.WORKER_STATS` (none if none, or if the last one left less than
        :attr:`ship_interval_s` ago, unless ``force``)."""
        now = time.monotonic()
        if not self._own_rates or (not force and now - self._own_last_ship < self.ship_interval_s):
            return []
        self._own_last_ship = now
        rates, self._own_rates = tuple(self._own_rates), []
        stats = ModelStats(WORKER_STATS, WORKER_STATS, self.worker, self._own_sources.take(), (), None, rates)
        return [(stats.key, encode_stats(stats))]

    def _observe_own(self, stats: ModelStats, *, replay: bool) -> Observed:
        """A worker's own counts: the fleet's window of requests for models nobody serves."""
        records = _range_ends(stats.sources)
        ctx = AlertContext(records)
        alerts: list[Alert] = []
        for counts in stats.rates:
            change = self.unknown_models.update(counts.unknown_model, counts.events)
            if not replay:
                alerts.extend(self._gate(self._unknown_model_change(change, ctx)))
        if replay:
            return Observed()
        return Observed(alerts, incidents=self.groups.drain())

    def _ship(
        self,
        monitor: ModelMonitor,
        records: Sequence[RecordLike],
        event_time: float | None = None,
        *,
        force: bool = False,
        outcomes: bool = False,
    ) -> list[tuple[bytes, bytes]]:
        """The blocks ``monitor``'s column sets completed, as one statistics record (none if none, or
        if the last record left less than :attr:`ship_interval_s` ago, unless ``force``).

        ``records`` fed the monitor's requests' column sets, or its errors if ``outcomes``."""
        sources = self._sources.get(monitor)
        if sources is None:
            sources = self._sources[monitor] = (SourceRanges(), SourceRanges())
        sets = monitor.column_sets()
        sources[outcomes].add(records, {name: columns.n_events for name, columns in sets.items()})
        if event_time is not None and monitor not in self._held_since:
            self._held_since[monitor] = event_time
        now = time.monotonic()
        if not force and now - self._last_ship.get(monitor, -math.inf) < self.ship_interval_s:
            return []
        parts: list[tuple[str, Blocks, npt.NDArray[np.int64] | None, npt.NDArray[np.int64] | None]] = []
        for name, columns in sets.items():
            blocks = columns.take_blocks()
            if blocks is None:
                continue
            missing = unseen = None
            if name == "features":
                zero = np.zeros_like(columns.missing)
                before_missing, before_unseen = self._shipped.get(monitor, (zero, zero))
                missing = columns.missing - before_missing
                unseen = columns.unseen - before_unseen
                self._shipped[monitor] = (columns.missing.copy(), columns.unseen.copy())
            parts.append((name, blocks, missing, unseen))
        rates = tuple(self._rates.pop(monitor, ()))
        findings = self._findings.pop(monitor, ())
        if not parts and not rates and not findings:
            return []
        self._last_ship[monitor] = now
        first_event = self._held_since.pop(monitor, event_time)
        shipped = []
        for name, blocks, missing, unseen in parts:
            # The blocks end at the last whole block of the events the set has seen.
            k = sets[name].block_size
            first = (sets[name].n_events // k - blocks.counts.shape[0]) * k
            segments = sources[name == "errors"].segments(name, first)
            shipped.append((name, blocks, missing, unseen, segments))
        of_requests, of_outcomes = sources[False].take(), sources[True].take()
        stats = ModelStats(
            monitor.name,
            monitor.version,
            self.worker,
            of_requests + of_outcomes,
            tuple(
                StatsPart(
                    name, blocks, missing, unseen, of_outcomes if name == "errors" else of_requests, segments
                )
                for name, blocks, missing, unseen, segments in shipped
            ),
            first_event,
            rates,
            findings,
        )
        return [(stats.key, encode_stats(stats))]

    # --- fleet: the model's monitor ----------------------------------------------------------------

    def _settle_after_replay(self, monitor: ModelMonitor) -> None:
        """A monitor rebuilt by a replay judges recoveries only on a full window of what it consumed
        live, as a restarted worker's does (:func:`settled_before`): the replay stops before the first
        uncommitted record, which may be the very one whose detection opened an incident, and the
        window it rebuilt, mostly from before the change, would close that incident at once (and the
        record, read again, alert the drift a second time)."""
        for name in monitor.features.names:
            monitor.last_detection[name] = max(monitor.last_detection.get(name, 0), monitor.features.n_events)
        if monitor.reconstruction is not None:
            n = monitor.reconstruction.n_events
            monitor.last_detection[RECONSTRUCTION_COLUMN] = max(
                monitor.last_detection.get(RECONSTRUCTION_COLUMN, 0), n
            )
        if monitor.estimated is not None:
            monitor.last_estimate_detection = max(monitor.last_estimate_detection, monitor.estimated.n_events)
        if monitor.errors is not None:
            monitor.last_error_detection = max(monitor.last_error_detection, monitor.errors.n_events)

    def _remember_span(
        self,
        monitor: ModelMonitor,
        name: str,
        start: int,
        columns: ColumnSet,
        sources: tuple[tuple[str, int, int, int], ...],
        end: int | None = None,
        origin: int | None = None,
    ) -> None:
        """Events ``[start, end)`` of the set's merged stream (``end``: all it has) came from ``sources``;
        ``origin``: the merged event of the first offset of the one range, each event an offset."""
        spans = self._spans.get((monitor, name))
        if spans is None:
            spans = self._spans[monitor, name] = deque()
        spans.append((start, columns.n_events if end is None else end, sources, origin))

    def _forget_spans(self, monitor: ModelMonitor, name: str, columns: ColumnSet) -> None:
        """Drops the spans past the set's detection window: only once a record's detections took their
        sources, since a record can hold more events than a window and a detection in its middle."""
        spans = self._spans.get((monitor, name))
        oldest = columns.n_events - columns.window_events
        while spans and spans[0][1] <= oldest:
            spans.popleft()

    def _sources_of(self, monitor: ModelMonitor, name: str, detections: list[Detection]) -> list[RecordLike]:
        """Records standing for the offset ranges of the blocks each detection's window covers."""
        spans = self._spans.get((monitor, name), ())
        out: list[RecordLike] = []
        for d in detections:
            first = d.event_index + 1 - max(d.window_count, 1)
            for start, end, sources, origin in spans:
                if end > first and start <= d.event_index:
                    if origin is None:
                        out.extend(_range_ends(sources))
                    else:  # one offset per event: only those of the window
                        [(t, p, a, _)] = sources
                        lo, hi = max(first, start), min(d.event_index + 1, end)
                        out.extend(_Source(t, p, a + e - origin) for e in (lo, hi - 1))
        return out

    def observe_stats(self, stats: ModelStats, *, replay: bool = False) -> Observed:
        """One worker's blocks of one model version: the detectors run on them as on this monitor's
        own, and the alerts that pass the gate are answered (``replay``: the state only, as when the
        record was first consumed; no alert, no recovery, nothing answered).

        A version no model repository here knows is skipped (logged once). A worker's own counts
        (:data:`~agent.monitoring.fleet.WORKER_STATS`) feed this monitor's watch of requests for models
        nobody serves."""
        if stats.model == WORKER_STATS:
            return self._observe_own(stats, replay=replay)
        monitor = self._by_version.get((stats.model, stats.version))
        if monitor is None:
            served = self.resolve(stats.model, stats.version) if self.resolve is not None else None
            if served is None:
                if (stats.model, stats.version) not in self._unknown_versions:
                    self._unknown_versions.add((stats.model, stats.version))
                    log.warning(
                        "statistics of %s/%s skipped: no such model version here", stats.model, stats.version
                    )
                return Observed()
            monitor = self.monitor(served)
        if replay:
            self._rebuilt.add(monitor)
        elif monitor in self._rebuilt:
            self._rebuilt.discard(monitor)
            self._settle_after_replay(monitor)
        records = _range_ends(stats.sources)
        started = None if stats.event_time is None else datetime.fromtimestamp(stats.event_time, UTC)
        ctx = AlertContext(records, started)
        sets = monitor.column_sets()
        least = self.settings.recovery_shift_sd
        alerts: list[Alert] = []
        # Every worker ships the findings of the package as it loaded it: each alerted once.
        heard = [f for f in stats.findings if (f[0], f[2]) not in monitor.findings_heard]
        monitor.findings_heard.update((f[0], f[2]) for f in heard)
        if heard and not replay:
            shipped = [DependencyFinding(p, b, i, level) for p, b, i, level in heard]  # type: ignore[arg-type]
            alerts.extend(self.writer.dependency_alerts(monitor, shipped, ctx))
        for counts in stats.rates:  # before the errors' blocks: what their concept alerts compare
            error_monitor = monitor.errors
            if counts.estimated and error_monitor is not None:
                wrong_unit, expected_unit = joined_units(error_monitor.kind, error_monitor.reference_mean)
                wrong, expected = counts.estimated_wrong * wrong_unit, counts.expected_steps * expected_unit
                monitor.joined.add(counts.estimated, wrong, expected)
        for part in stats.parts:
            columns = sets.get(part.name)
            if columns is None:
                log.warning(
                    "statistics of %s/%s: no column set %r here", stats.model, stats.version, part.name
                )
                continue
            start = columns.n_events
            try:
                detections = columns.consume(part.blocks)
            except ValueError as e:
                log.warning("statistics of %s/%s, %s skipped: %s", stats.model, stats.version, part.name, e)
                continue
            if part.segments:
                whole = Counter((first, last) for first, last, *_ in part.segments)
                for first, last, topic, partition, a, b in part.segments:
                    s0, s1 = start + max(first, 0), min(start + last, columns.n_events)
                    if s1 > s0:
                        # A batch of one partition: its events are its offsets, in order.
                        exact = whole[first, last] == 1 and b - a + 1 == last - first
                        origin = start + first if exact else None
                        self._remember_span(
                            monitor, part.name, s0, columns, ((topic, partition, a, b),), s1, origin
                        )
            else:
                self._remember_span(
                    monitor,
                    part.name,
                    start,
                    columns,
                    stats.sources if part.sources is None else part.sources,
                )
            here = ctx
            if detections and not replay:
                # Where the blocks since each detection's change point came from, not only this record.
                here = AlertContext(self._sources_of(monitor, part.name, detections), started)
            self._forget_spans(monitor, part.name, columns)
            if part.missing is not None and part.missing.shape == columns.missing.shape:
                columns.missing += part.missing
            if part.unseen is not None and part.unseen.shape == columns.unseen.shape:
                columns.unseen += part.unseen
            n = columns.n_events
            if part.name == "features":
                for d in detections:
                    monitor.last_detection[d.name] = n
                alerts.extend(self._drift_alerts(monitor, detections, here))
            elif part.name == "reconstruction":
                for d in detections:
                    monitor.last_detection[d.name] = n
                alerts.extend(self._reconstruction_detections(monitor, detections, alerts, here))
            elif part.name == "estimated":
                if detections:
                    monitor.last_estimate_detection = n
                alerts.extend(
                    performance.performance_alert(self.writer, monitor, d, here)
                    for d in detections
                    if d.shift_sd >= least
                )
            elif part.name == "errors":
                if detections:
                    monitor.last_error_detection = n
                alerts.extend(self.writer.concept_alert(monitor, d, here) for d in detections)
        alerts.extend(self._confirmations(monitor, ctx))  # in a replay too: the state, as first run
        rated: list[Alert] = []
        for counts in stats.rates:
            found = self._rate_alerts(monitor, counts, ctx, live=not replay)
            # Gated one by one: a rate that rises and falls back within one record opens its
            # incident before the window that closes it, as in one process.
            rated.extend(self._gate(found))
        if replay:
            return Observed()
        self._recoveries(monitor)
        if monitor.reconstruction is not None:
            self._reconstruction_recovery(monitor)
        if monitor.estimated is not None:
            self._estimate_recovery(monitor)
        if monitor.errors is not None:
            self._concept_recovery(monitor)
        observed = Observed(rated + self._gate(performance.attach_drivers(monitor, alerts)))
        observed.incidents.extend(self.groups.drain())
        return observed

    def _remember(self, batch: ModelBatch) -> list[ChangelogRecord]:
        p = batch.predictions
        if p.probabilities is not None:
            predicted = np.argmax(p.probabilities, axis=1).astype(np.float64).tolist()
        else:
            assert p.values is not None
            predicted = p.values.astype(np.float64).tolist()
        name, version, now = batch.served.name, batch.served.version, self.clock()
        by_partition: dict[int, list[Pair]] = {}
        partition_of = self.join.partition_of
        estimated = self.monitor(batch.served).estimated
        # A classifier with a calibration (or a regressor with an error model): each prediction's
        # expected error goes with it, so that its outcome can set the realised error beside the
        # estimate. A regressor's is in the target's units: kept as it is (its predictions share no
        # join tuples anyway).
        expected: list[float] | None = None
        if estimated is not None and len(estimated.last_expected) == len(predicted):
            if estimated.kind == "classification":
                expected = quantise_expected(estimated.last_expected)
            else:
                expected = estimated.last_expected.tolist()
        for i, (request, value) in enumerate(zip(batch.requests, predicted, strict=True)):
            rid = request.request_id
            partition = partition_of(rid)
            pairs = by_partition.get(partition)
            if pairs is None:
                pairs = by_partition[partition] = []
            if expected is None:
                pairs.append((rid, value))
            else:
                pairs.append((rid, value, expected[i]))
        out = []
        first = batch.records[0]
        for partition, pairs in by_partition.items():
            if self.persist_join:
                # To the join topic: the owner of the join partition remembers them (observe_join).
                key = f"{first.topic}:{first.partition}:{first.offset}:{partition}".encode()
                out.append(ChangelogRecord(key, encode_batch(name, version, now, pairs), partition))
            else:
                self.join.remember_batch(partition, name, version, now, pairs)
        self._batches += 1
        if self._batches % 100 == 0:
            self.join.expire()
        return out

    def observe_outcomes(self, outcomes: Sequence[tuple[RecordLike, Outcome]]) -> Observed:
        """Outcomes read from the outcomes topic: copied to the join partition of their request id
        (with the join topic), or joined at once (without)."""
        out = Observed()
        if not self.settings.concept_drift:
            return out
        partition_of, match = self.join.partition_of, self.join.match
        matched = []
        for record, outcome in outcomes:
            # Keyed by where it was read; as the join topic carries it, and as it waits (the grace).
            key = f"{record.topic}:{record.partition}:{record.offset}".encode()
            copy = Parked(key, OUTCOME_MARK + (record.value or b""))
            partition = partition_of(outcome.request_id)
            if self.persist_join:
                out.changelog.append(ChangelogRecord(copy.key, copy.value, partition))
            elif (entry := match(partition, outcome.request_id, copy)) is not WAITING:
                matched.append((record, outcome, entry))
        return out if self.persist_join else self._score(matched + self._waited())

    def _waited(self) -> list[tuple[RecordLike, Outcome, JoinEntry | None]]:
        """Outcomes that waited for their prediction (the join's grace): joined to those that came
        since, and unmatched past the grace."""
        join = self.join
        out: list[tuple[RecordLike, Outcome, JoinEntry | None]] = []
        for parked, entry in [*join.take_late(), *((p, None) for p in join.expire_waiting())]:
            try:  # kept as bytes while it waited: decoded again
                outcome = Outcome.model_validate_json(parked.value[1:])
            except ValueError:
                continue
            out.append((_source(_Source("", 0, 0, parked.key)), outcome, entry))
        return out

    def observe_idle(self) -> Observed:
        """Outcomes past the join's grace while no record came: on an idle worker they are counted
        unmatched (and may raise the unjoined-outcomes alert) when their grace ends, not whenever the
        next batch comes."""
        if not self.settings.concept_drift or not self.join.has_waited:
            return Observed()
        return self._score(self._waited())

    def observe_join(self, records: Sequence[RecordLike]) -> Observed:
        """Records of the join topic's partitions this worker owns, in their order: prediction batches
        are remembered, outcomes' copies joined to them."""
        if not self.settings.concept_drift:
            return Observed()
        join = self.join
        matched: list[tuple[RecordLike, Outcome, JoinEntry | None]] = []
        for record in records:
            value = record.value
            if value is None:
                continue  # an earlier version's tombstone: only replays (restore) need it
            if value[:1] == OUTCOME_MARK:
                try:
                    outcome = Outcome.model_validate_json(value[1:])
                except ValueError:
                    continue  # validated before it was copied: only a foreign writer gets here
                entry = join.match(record.partition, outcome.request_id, Parked(record.key or b"", value))
                if entry is not WAITING:  # else it waits for its prediction (the join's grace)
                    matched.append((_source(record), outcome, entry))
                continue
            try:  # a batch of predictions (encode_batch)
                data = orjson.loads(value)
                model, version, at, pairs = str(data["m"]), str(data["v"]), float(data["at"]), data["p"]
            except (ValueError, TypeError, KeyError):
                continue
            join.remember_batch(record.partition, model, version, at, pairs)
        return self._score(matched + self._waited())

    def _score(self, matched: Sequence[tuple[RecordLike, Outcome, JoinEntry | None]]) -> Observed:
        """Feeds each joined outcome's error to its model's error monitor; counts the unmatched."""
        out = Observed()
        errors: dict[ModelMonitor, tuple[list[float], list[RecordLike]]] = {}
        estimates: dict[ModelMonitor, tuple[list[float], list[float]]] = {}
        joined = sum(entry is not None for _, _, entry in matched)
        if joined:
            self.metrics.outcomes.labels(result="joined").inc(joined)
        if len(matched) > joined:
            self.metrics.outcomes.labels(result="unmatched").inc(len(matched) - joined)
        for record, outcome, entry in matched:
            if entry is None:
                continue
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
                if entry.expected_error == entry.expected_error:  # not NaN: estimated when predicted
                    pair = estimates.setdefault(monitor, ([], []))
                    pair[0].append(error)
                    pair[1].append(entry.expected_error)
            else:
                if outcome.value is None:
                    continue
                error = abs(outcome.value - entry.predicted)
                if entry.expected_error == entry.expected_error:  # not NaN: from its error model
                    pair = estimates.setdefault(monitor, ([], []))
                    pair[0].append(error)
                    pair[1].append(entry.expected_error)
            bucket = errors.get(monitor)
            if bucket is None:
                bucket = errors[monitor] = ([], [])
            bucket[0].append(error)
            bucket[1].append(record)
        for monitor, (realised, estimated) in estimates.items():
            monitor.estimate_check.add(realised, estimated)
            error_monitor = monitor.errors
            if error_monitor is not None:
                n, wrong, expected = len(realised), float(sum(realised)), float(sum(estimated))
                if self.ship_stats:  # for the model's monitor, which raises the concept alerts
                    wrong_unit, expected_unit = joined_units(error_monitor.kind, error_monitor.reference_mean)
                    counts = RateCounts(
                        estimated=n,
                        estimated_wrong=round(wrong / wrong_unit),
                        expected_steps=round(expected / expected_unit),
                    )
                    self._pend_rates(monitor, counts)
                else:
                    monitor.joined.add(n, wrong, expected)
        alerts: list[Alert] = self._unjoined_alerts(matched)
        for monitor, (values, records) in errors.items():
            assert monitor.errors is not None
            detections = monitor.errors.update_many(values)
            if detections:
                monitor.last_error_detection = monitor.errors.n_events
            ctx = AlertContext(records)
            # The error monitor reports rises only (a falling error is good news).
            raised = [self.writer.concept_alert(monitor, d, ctx) for d in detections]
            alerts.extend(performance.attach_drivers(monitor, raised))
            self._concept_recovery(monitor)
            if self.ship_stats:
                out.stats.extend(self._ship(monitor, records, outcomes=True))
        out.alerts.extend(self._gate(alerts))
        out.incidents.extend(self.groups.drain())
        return out

    def _unjoined_alerts(
        self, matched: Sequence[tuple[RecordLike, Outcome, JoinEntry | None]]
    ) -> list[Alert]:
        """Outcomes that match no prediction (later than the join keeps its predictions, or with
        request ids that are not the requests'), per model, over windows of outcomes: past the rate
        margin the model's concept monitor is mostly blind, and says so. A fleet worker only counts
        them, for the model's one monitor (:meth:`_unjoined_change` there): each worker joins the
        outcomes of its own join partitions, and would otherwise raise the alert once per worker."""
        by_model: dict[str, list[tuple[RecordLike, bool]]] = {}
        for record, outcome, entry in matched:
            by_model.setdefault(outcome.model, []).append((record, entry is None))
        alerts: list[Alert] = []
        for name, seen in by_model.items():
            monitor = self._monitor_named(name)
            if monitor is None:
                continue  # no model of that name here: no watch (outcomes naming junk cost no memory)
            missed = sum(missed for _, missed in seen)
            if self.ship_stats:
                self._pend_rates(monitor, RateCounts(outcomes=len(seen), unjoined=missed))
                continue
            ctx = AlertContext([record for record, _ in seen])
            alerts.extend(self._unjoined_change(monitor, missed, len(seen), ctx, self.join))
        return alerts

    def _unjoined_change(
        self,
        monitor: ModelMonitor,
        missed: int,
        outcomes: int,
        ctx: AlertContext,
        join: OutcomeJoin | None,
        *,
        live: bool = True,
    ) -> list[Alert]:
        """Feeds ``missed`` of ``outcomes`` to the model's unjoined-outcome watch: its alert, if a
        window closes over the margin; its recovery, if one closes back under (``live=False``, a
        replay: the watch's state only). ``join``: the join that counted them, quoted by the alert;
        ``None`` for counts shipped by a fleet's workers, each of which joined its own share."""
        s = self.settings
        watch = self.unjoined.get(monitor.name)
        if watch is None:
            watch = self.unjoined[monitor.name] = RateWatch(0.0, s.rate_margin, s.rate_window_events)
        change = watch.update(missed, outcomes)
        if change is None or not live:
            return []
        if change == "recover":
            self.incidents.recover(IncidentKey(monitor.name, AlertKind.TECHNICAL.value, UNJOINED_OUTCOMES))
            return []
        return [
            self.writer.unjoined_outcomes_alert(
                monitor,
                watch,
                join,
                s.join_ttl_s,
                ctx,
                max_entries=self.join.max_entries,
                grace_s=s.join_grace_s,
            )
        ]

    def _recover_rises(self, key: IncidentKey, columns: ColumnSet) -> None:
        """Closes the incident of a rises-only column back at its reference, and starts its
        detectors afresh against the reference (ColumnSet.reanchor): a new rise is a rise again."""
        self.incidents.recover(key)
        columns.reanchor()

    def _concept_recovery(self, monitor: ModelMonitor) -> None:
        errors = monitor.errors
        assert errors is not None
        # Over about 512 outcomes since the last detection, not the whole window: its large blocks
        # would hold the incident open for 20,000 outcomes of a normal error (recovery_blocks).
        blocks = recovery_blocks(errors.config)
        window = errors.window_stats(blocks)
        key = IncidentKey(monitor.name, AlertKind.CONCEPT.value, "error")
        # Only rises are alerted: an error back under the bound, or well below the reference, is over.
        if (
            window.count
            and window.shift_sd < self.settings.recovery_shift_sd
            and max(monitor.last_error_detection, errors.columns.last_fall)
            <= settled_before(errors.n_events, errors.config, blocks)
            and self.incidents.is_open(key)
        ):
            self._recover_rises(key, errors.columns)

    def metric_points(self, *, join: bool = True) -> list[MetricPoint]:
        """Windowed statistics for the metrics sinks: per feature and output, and the joined error
        (none from a fleet worker, whose detectors run in the model's monitor), and the outcome
        join's counts (unless ``join`` is False)."""
        points: list[MetricPoint] = []
        for monitor in [] if self.ship_stats else self._monitors.values():
            tags = {"model": monitor.name, "version": monitor.version}
            windows = monitor.features.window_stats()
            if monitor.reconstruction is not None:
                windows.append(monitor.reconstruction.window_stats())
            for w in windows:
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
            detectors = monitor.features.detector_statistics()
            if monitor.reconstruction is not None:
                detectors += monitor.reconstruction.detector_statistics()
            for column, detector, statistic in detectors:
                if math.isfinite(statistic):
                    points.append(
                        MetricPoint(
                            "driftline_detector",
                            {"statistic": statistic},
                            {**tags, "feature": column, "detector": detector},
                        )
                    )
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
            points.extend(performance.performance_points(monitor, tags))
        if not join:
            return points
        outcome_join = self.join
        points.append(
            MetricPoint(
                "driftline_join",
                {
                    "pending": float(len(outcome_join)),
                    "matched": float(outcome_join.matched),
                    "expired": float(outcome_join.expired),
                    "evicted": float(outcome_join.evicted),
                    "unmatched_outcomes": float(outcome_join.unmatched_outcomes),
                    "waiting_outcomes": float(outcome_join.waiting),
                    "late_outcomes": float(outcome_join.late),
                },
            )
        )
        return points

    def restore_partition(
        self, partition: int, records: Iterable[tuple[bytes, bytes | None]], *, more: bool = False
    ) -> int:
        """Rebuilds the join of one join partition from its topic's records; ``more``: these follow
        records already restored (a restore read in parts). Returns the predictions it holds."""
        if more:
            return self.join.replay(partition, records)
        return self.join.restore(partition, records)

    def drop_partition(self, partition: int) -> None:
        self.join.drop_partition(partition)

    def observe_dead_letters(self, dead: Sequence[DeadLetterInfo]) -> Observed:
        """Dead letters count among their model's requests (a model whose requests are all
        dead-lettered is watched too: its windows fill with them), and requests that no model here
        answers among the worker's."""
        alerts: list[Alert] = []
        by_model: dict[str, list[DeadLetterInfo]] = {}
        unknown = 0
        for d in dead:
            if d.reason is DeadLetterReason.UNKNOWN_MODEL:
                unknown += 1
            if d.model is not None:
                by_model.setdefault(d.model, []).append(d)
        ctx = AlertContext([d.record for d in dead])
        if self.ship_stats:
            # Judged for the fleet by one monitor (observe_stats): each worker would raise its own.
            self._own_sources.add(d.record for d in dead if d.reason is DeadLetterReason.UNKNOWN_MODEL)
            self._pend_own(RateCounts(dead_letters=len(dead), unknown_model=unknown))
        else:
            alerts.extend(self._unknown_model_change(self.unknown_models.update(unknown, len(dead)), ctx))
        for name, letters in by_model.items():
            monitor = self._monitor_named(name)
            if monitor is None:
                continue
            ctx = AlertContext([d.record for d in letters])
            wrong: dict[str, int] = {}
            for d in letters:
                if d.reason is DeadLetterReason.WRONG_TYPE and d.feature:
                    wrong[d.feature] = wrong.get(d.feature, 0) + 1
            counts = RateCounts(dead_letters=len(letters), wrong_type=wrong)
            if self.ship_stats:
                self._pend_rates(monitor, counts)
            else:
                alerts.extend(self._rate_alerts(monitor, counts, ctx))
        return Observed(self._gate(alerts), incidents=self.groups.drain())

    def _monitor_named(self, name: str) -> ModelMonitor | None:
        """The monitor of the version of ``name`` served now, created if its requests were all
        dead-lettered so far; ``None`` for a name no model has."""
        if self.resolve is not None:
            served = self.resolve(name, None)
            if served is not None:
                return self.monitor(served)
        for monitor in self._monitors.values():
            if monitor.name == name:
                return monitor
        return None

    def _unknown_model_change(self, change: Transition, ctx: AlertContext) -> list[Alert]:
        key = IncidentKey(UNKNOWN_MODELS.model, AlertKind.TECHNICAL.value, UNKNOWN_MODELS.subject)
        if change == "recover":
            self.incidents.recover(key)
        if change != "fire":
            return []
        return [self.writer.unknown_models_alert(self.unknown_models, ctx)]

    def _drift_alerts(
        self, monitor: ModelMonitor, detections: list[Detection], ctx: AlertContext
    ) -> list[Alert]:
        if not detections:
            return []
        stats = {w.name: w for w in monitor.features.window_stats()}
        bound, z = self.settings.recovery_shift_sd, self.settings.alert_margin_z
        out = []
        for d in detections:
            direction = "up" if d.shift_sd > 0 else "down"
            if d.detector.endswith(("_up", "_down")):
                direction = d.detector.rsplit("_", 1)[1]
            toward_reference = (direction == "down") == (d.shift_sd > 0)
            if abs(d.shift_sd) - z / math.sqrt(max(d.window_count, 1)) < bound or toward_reference:
                # The stream moved back to (or toward) the reference: not a new drift. Its incident
                # closes once a full window is back under the bound (_recoveries), not on this one
                # detection: a worker reading a partition that lags behind the others sees the stream
                # step back and forth around a drift's onset. A move away from the reference that is
                # not clearly beyond the bound (its measured shift less alert_margin_z standard
                # errors: ADWIN's cut overstates the shift of a short segment) is judged again on
                # the blocks after it (_confirmations).
                if not toward_reference:
                    monitor.unconfirmed[d.name] = (d, monitor.features.n_events)
                continue
            monitor.unconfirmed.pop(d.name, None)
            out.append(self.writer.drift_alert(monitor, d, direction, stats.get(d.name), ctx))
        return out

    def _confirmations(self, monitor: ModelMonitor, ctx: AlertContext) -> list[Alert]:
        """Detections away from the reference that did not measure clearly beyond
        ``recovery_shift_sd`` (see ``alert_margin_z``), judged again on the blocks that came after
        them, which ADWIN's choice of change point has not touched. The drift is alerted as soon as
        those blocks put the stream that fired clearly beyond the bound (their mean shift less
        ``alert_margin_z`` standard errors, in the same direction), or when they fill the window
        (64 blocks, 2,048 events) at or over the bound; otherwise it is dropped then. Every
        detection restarts its column's detectors on the new level, so a drift whose first
        detection fell a little under the bound (a 0.2 sd step first measured at 0.148 sd over the
        events since its change point) would otherwise never be alerted. The full window measures a
        shift to about 0.022 sd: the bound is 6.8 of those from a reference that is exact."""
        pending = monitor.unconfirmed
        if not pending:
            return []
        columns = monitor.features.columns
        n, size = columns.n_events, columns.block_size
        full = columns.window_events // size
        # Whole blocks since the detection's batch, less one that may mix earlier events.
        after = {name: min(full, (n - at) // size - 1) for name, (_, at) in pending.items()}
        if max(after.values()) < 1:
            return []
        bound, z = self.settings.recovery_shift_sd, self.settings.alert_margin_z
        by_blocks: dict[int, list[StreamStats]] = {}
        out: list[Alert] = []
        for name, blocks in after.items():
            if blocks < 1:
                continue
            d, _ = pending[name]
            streams = by_blocks.get(blocks)
            if streams is None:
                streams = by_blocks[blocks] = columns.stream_stats(last=blocks)
            s = next(
                (
                    s
                    for s in streams
                    if s.stream.column == d.column
                    and s.stream.measure == d.measure
                    and s.stream.category == d.category
                ),
                None,
            )
            done = blocks >= full
            if s is None or not s.count or not math.isfinite(s.shift_sd):
                if done:
                    del pending[name]
                continue
            same_way = (s.shift_sd > 0) == (d.shift_sd > 0)
            clear = same_way and abs(s.shift_sd) - z / math.sqrt(s.count) >= bound
            if not (clear or done):
                continue
            del pending[name]
            if self.incidents.is_open(monitor.column_incidents[d.column]):
                continue
            if not same_way or abs(s.shift_sd) < bound:
                continue
            confirmed = replace(d, window_mean=s.mean, window_count=s.count, shift_sd=s.shift_sd)
            direction = "up" if s.shift_sd > 0 else "down"
            window = next((w for w in monitor.features.window_stats() if w.name == name), None)
            out.append(self.writer.drift_alert(monitor, confirmed, direction, window, ctx))
        return out

    def _reconstruction_alerts(
        self,
        monitor: ModelMonitor,
        matrix: npt.NDArray[np.floating],
        batch_alerts: Sequence[Alert],
        ctx: AlertContext,
    ) -> list[Alert]:
        reconstruction = monitor.reconstruction
        assert reconstruction is not None
        detections = reconstruction.update_batch(matrix)
        for d in detections:
            monitor.last_detection[d.name] = reconstruction.n_events
        return self._reconstruction_detections(monitor, detections, batch_alerts, ctx)

    def _reconstruction_detections(
        self,
        monitor: ModelMonitor,
        detections: list[Detection],
        batch_alerts: Sequence[Alert],
        ctx: AlertContext,
    ) -> list[Alert]:
        # Rises only (the monitor reports nothing else), and only those beyond the recovery bound.
        detections = [d for d in detections if d.shift_sd >= self.settings.recovery_shift_sd]
        if not detections:
            return []
        # A feature that drifts on its own also leaves more unexplained by the components: while one
        # of the model's features is alerted (in this batch, or its incident still open), that alert
        # already says what changed, and a second one on the same rows would only be noise.
        features = set(monitor.served.manifest.feature_names)
        if any(a.kind is AlertKind.DATA and a.subject in features for a in batch_alerts) or any(
            key.subject in features and self.incidents.is_open(key) for key in monitor.column_incidents
        ):
            log.debug(
                "%s/%s: reconstruction error rose with a feature alerted", monitor.name, monitor.version
            )
            return []
        return [self.writer.reconstruction_alert(monitor, d, ctx) for d in detections]

    def _reconstruction_recovery(self, monitor: ModelMonitor) -> None:
        reconstruction = monitor.reconstruction
        assert reconstruction is not None
        key = IncidentKey(monitor.name, AlertKind.DATA.value, RECONSTRUCTION_COLUMN)
        if not self.incidents.is_open(key):
            return
        w = reconstruction.window_stats()
        settled = settled_before(reconstruction.n_events, reconstruction.config)
        if (
            w.count
            and w.shift_sd < self.settings.recovery_shift_sd
            and max(monitor.last_detection.get(RECONSTRUCTION_COLUMN, 0), reconstruction.columns.last_fall)
            <= settled
        ):
            self._recover_rises(key, reconstruction.columns)

    def _batch_rates(self, monitor: ModelMonitor, batch: ModelBatch) -> RateCounts:
        """What ``batch`` adds to ``monitor``'s rate watches."""
        enc = batch.encoded
        counts = RateCounts(
            requests=len(batch.records),
            missing={i: v for i, v in enumerate(enc.missing.tolist()) if v},
            out_of_range={i: int(enc.out_of_range[i]) for i in monitor.out_of_range},
            unknown_categories={i: int(enc.unknown_categories[i]) for i in monitor.unknown_categories},
            unknown_values={i: v for i, v in enc.unknown_values.items() if i in monitor.unknown_categories},
            unseen_fields=dict(enc.unseen_fields),
            with_unseen=enc.with_unseen,
            checked=len(enc.accepted) + len(enc.rejected),
        )
        if monitor.outside_reference:
            columns, low, high = monitor.reference_bounds
            values = enc.matrix[:, columns]
            # NaN (missing) compares False both ways: not outside.
            outside = ((values < low) | (values > high)).sum(axis=0).tolist()
            counts.outside_reference = dict(zip(columns.tolist(), outside, strict=True))
        return counts

    def _pend_rates(self, monitor: ModelMonitor, counts: RateCounts) -> None:
        """A fleet worker's counts, held for its next statistics record, in order (merged as
        :meth:`_hold` says). Unknown field names beyond a few times ``max_watched_fields`` in one record are
        counted as refused here, so that a flood of junk names cannot swell it (they still count in
        ``with_unseen``)."""
        held = self._rates.get(monitor)
        if held is None:
            held = self._rates[monitor] = []
        names: set[str] = set()
        for c in held:
            names.update(c.unseen_fields)
        room = 4 * max(self.settings.max_watched_fields, 1)
        if len(names) + len(counts.unseen_fields) > room:
            refused = 0
            kept: dict[str, int] = {}
            for name, hits in counts.unseen_fields.items():
                if name in names or len(names) + len(kept) < room:
                    kept[name] = hits
                else:
                    refused += hits
            counts.unseen_fields = kept
            if refused:
                self.metrics.names_refused.labels(what="field").inc(refused)
        self._hold(held, counts)

    def _rate_alerts(
        self, monitor: ModelMonitor, counts: RateCounts, ctx: AlertContext, *, live: bool = True
    ) -> list[Alert]:
        """Feeds ``counts`` to ``monitor``'s rate watches: the alerts of the windows they close, and
        the recoveries (``live=False``, a replay: the watches' state only)."""
        out: list[Alert] = []
        n = counts.requests
        names = monitor.features.names

        def recover(subject: str) -> None:
            if live:
                self.incidents.recover(IncidentKey(monitor.name, AlertKind.TECHNICAL.value, subject))

        def changed(change: Transition, watch: RateWatch, detector: str, subject: str, what: str) -> None:
            if change == "recover":
                recover(subject)
            elif change == "fire" and live:
                out.append(self.writer.rate_alert(monitor, watch, detector, subject, what, ctx))

        for i, watch in enumerate(monitor.missing):
            hits = counts.missing.get(i, 0)
            changed(watch.update(hits, n), watch, "missing_rate", names[i], "missing values")
        for i, watch in monitor.out_of_range.items():
            hits = counts.out_of_range.get(i, 0)
            changed(watch.update(hits, n), watch, "out_of_range_rate", names[i], "out-of-range values")
        for i, watch in monitor.unknown_categories.items():
            hits = counts.unknown_categories.get(i, 0)
            seen = monitor.unknown_seen[i]
            tally(seen, counts.unknown_values.get(i, {}))
            closed = watch.windows
            change = watch.update(hits, n)
            if change == "fire" and live:
                out.append(self.writer.unknown_category_alert(monitor, i, watch, seen, ctx))
            elif change == "recover":
                recover(names[i])
            if watch.windows != closed:
                seen.clear()  # the next window names its own
        for i, watch in monitor.outside_reference.items():
            hits = counts.outside_reference.get(i, 0)
            changed(
                watch.update(hits, n),
                watch,
                "reference_range_rate",
                names[i],
                "values outside the reference range",
            )
        refused = 0
        for field_name, hits in counts.unseen_fields.items():
            if field_name not in monitor.unseen and not self._watch_field(monitor, field_name):
                refused += hits
        if refused and live:
            self.metrics.names_refused.labels(what="field").inc(refused)
        for field_name, watch in monitor.unseen.items():
            hits = counts.unseen_fields.get(field_name, 0)
            changed(watch.update(hits, n), watch, "unseen_field", field_name, "an unknown field")
        s = self.settings
        for feature in counts.wrong_type:
            if feature not in monitor.wrong_type:
                monitor.wrong_type[feature] = RateWatch(0.0, s.rate_margin, s.rate_window_events)
        for feature, watch in monitor.wrong_type.items():
            # Among all the model's requests: served and dead-lettered.
            change = watch.update(counts.wrong_type.get(feature, 0), counts.events)
            if change == "fire" and live:
                out.append(self.writer.type_alert(monitor, feature, watch, ctx))
            elif change == "recover":
                recover(feature)
        watch = monitor.unknown_fields
        change = watch.update(counts.with_unseen, counts.checked)
        # Whatever the names: one alert, unless a name of its own explains it (and alerts by name).
        if change == "fire" and live and not any(w.over for w in monitor.unseen.values()):
            out.append(self.writer.unknown_fields_alert(monitor, watch, ctx))
        elif change == "recover":
            recover(UNKNOWN_FIELDS)
        change = monitor.dead_letters.update(counts.dead_letters, counts.events)
        if change == "fire" and live:
            out.append(self.writer.dead_letter_alert(monitor, ctx))
        elif change == "recover":
            recover("dead_letters")
        if counts.outcomes:
            out.extend(self._unjoined_change(monitor, counts.unjoined, counts.outcomes, ctx, None, live=live))
        return out

    def _watch_field(self, monitor: ModelMonitor, name: str) -> bool:
        """Gives the unknown field ``name`` a watch of its own, in the place of one that has been idle
        for a full window if all ``max_watched_fields`` are taken; False if none is idle. (One watch
        per name, unbounded, made each junk field name a watch walked on every batch.)"""
        unseen = monitor.unseen
        if len(unseen) >= self.settings.max_watched_fields:
            idle = next((n for n, w in unseen.items() if w.idle), None)
            if idle is None:
                return False
            del unseen[idle]
        s = self.settings
        unseen[name] = RateWatch(0.0, s.rate_margin, s.rate_window_events)
        return True

    def _recoveries(self, monitor: ModelMonitor) -> None:
        # Only a column with an open incident can recover, and most batches have none: the window
        # statistics (about a third of the monitor's fixed cost per batch) are only worked out then.
        is_open = self.incidents.is_open
        if not any(is_open(key) for key in monitor.column_incidents):
            return
        threshold = self.settings.recovery_shift_sd
        settled = settled_before(monitor.features.n_events, monitor.features.config)
        # A column is back when every stream of it is (its location, spread and shares alike).
        shifts = monitor.features.largest_shifts().tolist()
        # The feature monitor's columns come first; the reconstruction column (if any) recovers apart.
        columns = monitor.column_incidents[: len(shifts)]
        for key, shift in zip(columns, shifts, strict=True):
            recovered = shift < threshold and monitor.last_detection.get(key.subject, 0) <= settled
            if recovered and self.incidents.is_open(key):  # NaN (an empty window) is not < threshold
                self.incidents.recover(key)

    def _estimate_recovery(self, monitor: ModelMonitor) -> None:
        key = performance.performance_key(monitor)
        if self.incidents.is_open(key) and performance.estimate_recovered(
            monitor, self.settings.recovery_shift_sd
        ):
            assert monitor.estimated is not None
            self._recover_rises(key, monitor.estimated.columns)

    def _gate(self, alerts: list[Alert]) -> list[Alert]:
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
            out.append(alert)
            self.groups.admitted(alert)
        return out


def _log_budget(monitor: ModelMonitor) -> None:
    budget = monitor.budget
    message = (
        "%s/%s: false-alarm budget %.3g per 1e6 events over %d streams: ph_threshold %.2f, "
        "adwin_delta %.2g (expected %.3g per 1e6)"
    )
    args = (
        monitor.name,
        monitor.version,
        budget.per_million,
        budget.n_streams,
        budget.config.ph_threshold,
        budget.config.adwin_delta,
        budget.expected_per_million,
    )
    if budget.clipped:
        log.warning(message + "; %s clipped to its bounds", *args, " and ".join(budget.clipped))
    else:
        log.info(message, *args)
