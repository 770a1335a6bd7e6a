"""The incident gate: one alert per incident, until it recovers or its cooldown has passed.

A detector that sees drift keeps seeing it on every batch until the stream is back to normal; without a
gate each of those batches would page someone. An *incident* is keyed by (model, kind, subject): the
first alert for a key opens it and is published; later alerts for the same key are suppressed until

* the monitor says the key has recovered (:meth:`IncidentManager.recover`), which closes the incident,
  so the next alert opens a new one; or
* ``cooldown_s`` has passed since the incident's last published alert: the drift is still there, and
  one reminder is published (the incident stays open).
* an alert is more severe than the incident has been (a warning become critical): published at once,
  as news, whatever the cooldown (the incident stays open, at its new severity).

The state lives in an :class:`IncidentStore`. :class:`~agent.alerting.incident_store.KafkaIncidentStore`
keeps it in a compacted topic
(one record per open incident, a tombstone when it closes) so that a restarted worker does not alert an
ongoing incident again, and tails that topic so that every worker of a deployment shares one view: a
second worker seeing the same drift does not alert either. The window in which two workers can both
open the same incident is the time the first one's record takes to reach the second (about a Kafka
round trip); receivers that must never see a duplicate drop it by ``(model, kind, subject)`` and time.

Wall-clock time (``time.time``) is used on purpose: incident times are shared between processes and
survive restarts, which a monotonic clock's are not.

Example:
    >>> from datetime import datetime, UTC
    >>> from schemas import Alert, AlertKind, Severity
    >>> now = [0.0]
    >>> gate = IncidentManager(InMemoryIncidentStore(), cooldown_s=900, clock=lambda: now[0])
    >>> def alert(event: int) -> Alert:
    ...     return Alert.create(
    ...         model="m", model_version="1", kind=AlertKind.DATA, detector="adwin", subject="x",
    ...         severity=Severity.WARNING, message="x drifted", opened_at_event=event,
    ...         detected_at=datetime(2026, 1, 1, tzinfo=UTC),
    ...     )
    >>> [gate.admit(alert(i)) for i in range(3)]  # a storm: only the first is published
    [True, False, False]
    >>> now[0] = 900.0  # still drifting after the cooldown: one reminder
    >>> gate.admit(alert(3)), gate.admit(alert(4))
    (True, False)
    >>> worse = alert(5).model_copy(update={"severity": Severity.CRITICAL})
    >>> gate.admit(worse), gate.admit(worse)  # an escalation is news at once, then gated again
    (True, False)
    >>> gate.recover(IncidentKey("m", "data", "x"))  # back to normal: the next drift alerts at once
    True
    >>> gate.admit(alert(6))
    True
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import NamedTuple, Protocol

from agent.metrics import Metrics
from schemas import Alert, AlertKind, Severity

__all__ = [
    "FEATURE_RATES",
    "GROUPED_KINDS",
    "InMemoryIncidentStore",
    "Incident",
    "IncidentKey",
    "IncidentListener",
    "IncidentManager",
    "IncidentStore",
    "group_family",
]

log = logging.getLogger(__name__)


GROUPED_KINDS = frozenset({"data", "prediction", "performance", "concept"})
"""Kinds whose incidents of one model are grouped when they open close together: drifts, which all
close when their column is back near its reference. Technical incidents stay apart from them: some
never close (a dependency version that differs stays different), and would hold a group open
forever; what they say is context (:mod:`agent.monitoring.context`)."""

FEATURE_RATES = frozenset(
    {"missing_rate", "out_of_range_rate", "reference_range_rate", "unknown_category_rate"}
)
"""Technical rates of one feature (the subject): they join the group of that feature's open data drift,
whose cause they share (a shift that puts values beyond the reference's range). In the other order
(the rate's window closed just before the drift was detected), the feature's data drift joins the
rate's group, unless another drift of the model is open to join."""


def group_family(kind: str, detector: str) -> str | None:
    """Which incidents of a model an incident may share a group with: ``"drift"`` (the
    :data:`GROUPED_KINDS`), ``"rates"`` (technical rates, which close once the rate is back: missing,
    out-of-range and outside-reference values, wrong types, unseen fields, dead letters), or none (a
    dependency finding, latency). A noisy sensor put 11 pixels of a digits model outside their
    reference range at once: 11 incidents, each opened with a notification of its own, before rates
    grouped.

    >>> group_family("data", "adwin"), group_family("technical", "reference_range_rate")
    ('drift', 'rates')
    >>> group_family("technical", "dependency_versions") is None
    True
    """
    if kind in GROUPED_KINDS:
        return "drift"
    if kind == "technical" and detector.endswith("_rate"):
        return "rates"
    return None


def _stands_alone(alert: Alert) -> bool:
    """A rise of the error that the model's inputs do not explain (its evidence says so: the error
    estimated for the same predictions stayed well below it): the labels changed, not the inputs, so
    it does not join an incident of input drift that happens to be open."""
    return alert.kind is AlertKind.CONCEPT and alert.evidence.extra.get("unexplained_by_inputs") == 1.0


class IncidentKey(NamedTuple):
    """What an incident is about: at most one is open per key."""

    model: str
    kind: str
    """An :class:`~schemas.AlertKind` value (``data``, ``prediction``, ``concept``, ``technical``)."""
    subject: str

    @classmethod
    def of(cls, alert: Alert) -> IncidentKey:
        """The key of the incident ``alert`` belongs to."""
        return cls(alert.model, str(alert.kind), alert.subject)


@dataclass(frozen=True)
class Incident:
    """An open incident, as stored: times are wall-clock seconds since the epoch."""

    key: IncidentKey
    alert_id: str
    """Id of the alert that opened it."""
    opened_at: float
    last_alerted_at: float
    """When its last alert (the opening one or a reminder) was admitted."""
    alerts: int = 1
    """Alerts published for it: the opening one plus reminders."""
    severity: str = "warning"
    """Severity of its most severe alert so far (records written before it was stored read as ``warning``)."""
    group: str = ""
    """Id of the cross-kind incident it belongs to (:mod:`agent.monitoring.grouping`); empty in records
    written before groups: then it is a group of its own (:attr:`group_id`)."""
    version: str = ""
    """Model version of its opening alert."""
    detector: str = ""
    message: str = ""
    """Its opening alert's message (cut to 500 characters), for the group's timeline on any worker."""
    event: int = -1
    """Its opening alert's ``opened_at_event`` (-1: unknown)."""
    drivers: tuple[str, ...] = ()
    """The likely drivers its opening alert named."""

    @property
    def group_id(self) -> str:
        return self.group or self.alert_id

    def to_json(self) -> bytes:
        data = asdict(self)
        data["key"] = list(self.key)
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Incident:
        data = json.loads(raw)
        return cls(
            key=IncidentKey(*data["key"]),
            alert_id=str(data["alert_id"]),
            opened_at=float(data["opened_at"]),
            last_alerted_at=float(data["last_alerted_at"]),
            alerts=int(data.get("alerts", 1)),
            severity=str(data.get("severity", "warning")),
            group=str(data.get("group", "")),
            version=str(data.get("version", "")),
            detector=str(data.get("detector", "")),
            message=str(data.get("message", "")),
            event=int(data.get("event", -1)),
            drivers=tuple(str(d) for d in data.get("drivers", ())),
        )


IncidentListener = Callable[[IncidentKey, Incident | None], None]
"""Called with a key and its incident, or None when it closed."""


class IncidentStore(Protocol):
    """Where incidents are kept, and how changes made elsewhere (another worker) come in."""

    def attach(self, listener: IncidentListener) -> None:
        """Registers ``listener`` for changes this store did not make itself, including the ones
        restored at start."""

    def put(self, key: IncidentKey, incident: Incident | None) -> None:
        """Records ``incident`` (None: closed). Must not block: it is called from the serving loop."""

    async def start(self) -> None:
        """Restores the stored incidents (through the listeners) before returning."""

    async def stop(self) -> None:
        """Writes what is still pending and releases the store's clients."""


class InMemoryIncidentStore:
    """A store in process memory: for tests, and for a single worker that may re-alert after a restart.

    Several managers attached to one instance behave like workers sharing a Kafka store: each change
    one makes reaches the others' listeners at once.
    """

    def __init__(self) -> None:
        self.incidents: dict[IncidentKey, Incident] = {}
        self._listeners: list[IncidentListener] = []

    def attach(self, listener: IncidentListener) -> None:
        self._listeners.append(listener)
        for key, incident in self.incidents.items():
            listener(key, incident)

    def put(self, key: IncidentKey, incident: Incident | None) -> None:
        if incident is None:
            self.incidents.pop(key, None)
        else:
            self.incidents[key] = incident
        # The writer already applied its own change; every listener re-applying it is harmless.
        for listener in self._listeners:
            listener(key, incident)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


def _escalates(alert: Alert, incident: Incident) -> bool:
    """Whether ``alert`` is more severe than its open ``incident`` has been so far."""
    try:
        before = Severity(incident.severity)
    except ValueError:
        return False
    return Severity(alert.severity).rank > before.rank


class IncidentManager:
    """Decides whether an alert is published: one per open incident, reminders after ``cooldown_s``.

    Thread-safe: ``admit`` and ``recover`` may be called from the serving loop or from a worker thread,
    while the store's listener applies other workers' changes.

    Parameters:
        store: Where incidents persist (in a worker, the Kafka-backed store of
            :mod:`agent.alerting.incident_store`).
        cooldown_s: An incident still open this long after its last alert is alerted again.
        clock: Wall-clock seconds; injected by tests.
        metrics: Counts suppressed alerts (``driftline_alerts_suppressed``), if given.
        group_window_s: An alert that opens an incident joins the group of the same model's open
            incidents of its family (:func:`group_family`: drifts of every kind, or technical rates) if
            one of them opened at most this long before; else it starts a group.
    """

    def __init__(
        self,
        store: IncidentStore,
        *,
        cooldown_s: float = 900.0,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
        group_window_s: float = 900.0,
    ) -> None:
        if cooldown_s <= 0:
            raise ValueError("cooldown_s must be positive")
        if group_window_s < 0:
            raise ValueError("group_window_s must not be negative")
        self.store = store
        self.cooldown_s = cooldown_s
        self.group_window_s = group_window_s
        self._clock = clock
        self._metrics = metrics
        self._open: dict[IncidentKey, Incident] = {}
        self._lock = threading.Lock()
        self.admitted = 0
        self.suppressed = 0
        self._close_listeners: list[Callable[[Incident, float], None]] = []
        store.attach(self._apply)

    def on_close(self, listener: Callable[[Incident, float], None]) -> None:
        """Registers ``listener(incident, closed_at)``, called by :meth:`recover` when it closes an
        incident, on the caller's thread; only this manager's own closes (one call per incident in a
        deployment), not the ones other workers' records bring in."""
        self._close_listeners.append(listener)

    def admit(self, alert: Alert) -> bool:
        """True if ``alert`` should be published: it opens an incident, or reminds of one after the
        cooldown. False while its incident is open and was alerted less than ``cooldown_s`` ago."""
        key = IncidentKey.of(alert)
        now = self._clock()
        cooldown = self.cooldown_s
        with self._lock:
            current = self._open.get(key)
            if current is None:
                family = group_family(key.kind, alert.detector)
                joined = None if _stands_alone(alert) else self._group_for(key, family, alert.detector, now)
                incident = Incident(
                    key,
                    alert.alert_id,
                    opened_at=now,
                    last_alerted_at=now,
                    severity=str(alert.severity),
                    group=joined or alert.alert_id,
                    version=alert.model_version,
                    detector=alert.detector,
                    message=alert.message[:500],
                    event=-1 if alert.opened_at_event is None else alert.opened_at_event,
                    drivers=tuple(d.feature for d in alert.evidence.drivers),
                )
            elif (escalates := _escalates(alert, current)) or now - current.last_alerted_at >= cooldown:
                # After the cooldown, a reminder; before it, only an escalation (a warning become
                # critical: an error rate that went on from 5 % to 50 %) is news worth publishing.
                # The incident's severity is the highest its alerts have had: a later, milder
                # reminder does not lower it (nor make the next critical alert an escalation again).
                severity = str(alert.severity) if escalates else current.severity
                incident = replace(current, last_alerted_at=now, alerts=current.alerts + 1, severity=severity)
            else:
                self.suppressed += 1
                if self._metrics is not None:
                    self._metrics.alerts_suppressed.labels(model=key.model, kind=key.kind).inc()
                return False
            self._open[key] = incident
            self.admitted += 1
        self.store.put(key, incident)
        if current is None:
            log.info("incident opened: %s/%s/%s by alert %s", *key, alert.alert_id)
        else:
            age = now - current.opened_at
            log.info("incident %s/%s/%s still open after %.0f s: reminder %s", *key, age, alert.alert_id)
        return True

    def recover(self, key: IncidentKey) -> bool:
        """Closes the incident for ``key`` (the monitor saw the stream back to normal); the next alert
        for it is published at once. Returns whether an incident was open. Cheap when none is."""
        with self._lock:
            incident = self._open.pop(key, None)
        if incident is None:
            return False
        self.store.put(key, None)
        now = self._clock()
        log.info("incident closed: %s/%s/%s after %.0f s", *key, now - incident.opened_at)
        for listener in self._close_listeners:
            try:
                listener(incident, now)
            except Exception:
                log.exception("incident closed: a listener failed")  # never the serving loop's problem
        return True

    def _group_for(self, opening: IncidentKey, family: str | None, detector: str, now: float) -> str | None:
        # Under the lock. A feature's own rate (its values missing, out of range, ...) joins the group
        # of that feature's open data drift: one cause; and that feature's data drift joins the rate's
        # group when no drift is open to join. Else the group of the model's most recently opened
        # incident of the same family, if that was recent; rates apart from those that joined a drift.
        if family is None:
            return None
        model = opening.model
        recent = [
            (key, i)
            for key, i in self._open.items()
            if key.model == model and now - i.opened_at <= self.group_window_s
        ]
        drift_groups = {i.group_id for key, i in recent if group_family(key.kind, i.detector) == "drift"}
        if detector in FEATURE_RATES:
            for key, incident in recent:
                if key.kind == "data" and key.subject == opening.subject:
                    return incident.group_id
        elif opening.kind == "data" and not drift_groups:
            # The other order: the feature's rate opened first (its window closed just before the
            # drift was detected). With no drift to join, the drift joins the rate's incident.
            for key, incident in recent:
                if (
                    key.kind == "technical"
                    and incident.detector in FEATURE_RATES
                    and key.subject == opening.subject
                ):
                    return incident.group_id
        latest: Incident | None = None
        for key, incident in recent:
            if group_family(key.kind, incident.detector) != family:
                continue
            if family == "rates" and incident.group_id in drift_groups:
                continue
            if latest is None or incident.opened_at > latest.opened_at:
                latest = incident
        return None if latest is None else latest.group_id

    def incident(self, key: IncidentKey) -> Incident | None:
        """The open incident for ``key``, if any."""
        with self._lock:
            return self._open.get(key)

    def group_members(self, group: str) -> list[Incident]:
        """The open incidents of cross-kind group ``group``, oldest first."""
        with self._lock:
            members = [i for i in self._open.values() if i.group_id == group]
        return sorted(members, key=lambda i: i.opened_at)

    def is_open(self, key: IncidentKey) -> bool:
        """Whether an incident for ``key`` is open (here or, as far as known, on another worker)."""
        with self._lock:
            return key in self._open

    def open_incidents(self) -> list[Incident]:
        """The open incidents, oldest first."""
        with self._lock:
            return sorted(self._open.values(), key=lambda i: i.opened_at)

    def _apply(self, key: IncidentKey, incident: Incident | None) -> None:
        with self._lock:
            if incident is None:
                self._open.pop(key, None)
            else:
                self._open[key] = incident
