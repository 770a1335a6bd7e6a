"""Incidents across kinds: the alerts of one model that open close together, as one incident.

One cause raises many alerts: a shifted input is a data alert on its feature, then a prediction-drift
alert, an estimated-performance alert and, once the labels come, a concept alert. The incident gate
(:mod:`agent.monitoring.incidents`) keeps one alert per (model, kind, subject) and assigns each newly
opened one to a *group*: the group of the model's most recently opened drift incident if that opened
within ``group_window_s``, else a new group named after the alert. :class:`IncidentGroups` turns those
groups into :class:`~schemas.incident.IncidentReport` notifications:

* ``opened`` when the group's first alert is admitted;
* ``updated`` when it grows (an alert of a kind and subject not in it yet) or its severity (the
  highest of its alerts) rises;
* ``resolved`` when the last of its incidents recovers.

A reminder of an alert already in it (the gate's cooldown) and the recovery of one of several of its
incidents go into its timeline without a notification of their own. The updates of one group made
within :data:`COALESCE_S` of each other between two drains (in a worker: the alerts of one batch) go
out as one, its ``change`` naming them all (:func:`coalesce`): a noisy sensor that moved every pixel
of a digits model raised 60 alerts in 3,000 events, and its drift incident 49 notifications, 8 once
coalesced (its opening, then one update per batch that brought news).

Every report carries the group's timeline, its root-cause line (:func:`root_cause`) and the serving
context around it (:mod:`agent.monitoring.context`, when given). The group's state is kept per
worker, seeded from the gate's view of the deployment (its incident records carry the group and the
opening alert's words), so a worker that joins a group another worker opened reports ``updated``; the
worker that closes a group's last incident reports ``resolved``.

Example:
    >>> from datetime import datetime, UTC
    >>> from schemas import AlertKind, Severity
    >>> from agent.monitoring.incidents import IncidentManager, InMemoryIncidentStore, IncidentKey
    >>> now = [0.0]
    >>> gate = IncidentManager(InMemoryIncidentStore(), clock=lambda: now[0])
    >>> groups = IncidentGroups(gate, clock=lambda: now[0])
    >>> def admit(kind, subject, severity=Severity.WARNING):
    ...     alert = Alert.create(model="m", model_version="1", kind=kind, detector="adwin",
    ...                          subject=subject, severity=severity, message=f"{subject} moved",
    ...                          opened_at_event=100, detected_at=datetime(2026, 1, 1, tzinfo=UTC))
    ...     if gate.admit(alert):
    ...         groups.admitted(alert)
    >>> admit(AlertKind.DATA, "x05"); admit(AlertKind.DATA, "x11"); admit(AlertKind.DATA, "x12")
    >>> [(r.status, r.alerts, r.change) for r in groups.drain()]  # doctest: +NORMALIZE_WHITESPACE
    [('opened', 1, "opened: data drift on 'x05'"),
     ('updated', 3, "grew: data drift on 'x11'; grew by 1 alert: data drift on 'x12'")]
    >>> now[0] += 5.0  # the next batch
    >>> admit(AlertKind.PREDICTION, "prediction", Severity.CRITICAL)
    >>> [(r.status, r.alerts, r.severity.value) for r in groups.drain()]
    [('updated', 4, 'critical')]
    >>> for member in gate.group_members(gate.open_incidents()[0].group_id):
    ...     _ = gate.recover(member.key)
    >>> [report] = groups.drain()
    >>> report.status, report.open_alerts, report.root_cause
    ('resolved', 0, "data drift on 'x05', 'x11' and 'x12' came first, followed by prediction drift")
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from agent.monitoring.incidents import Incident, IncidentKey, IncidentManager
from schemas.alert import Alert, AlertKind, Severity
from schemas.incident import IncidentReport, IncidentStatus, TimelineEntry

__all__ = ["COALESCE_S", "IncidentGroups", "coalesce", "root_cause"]

log = logging.getLogger(__name__)


_WHAT = {
    AlertKind.DATA: "data drift",
    AlertKind.PREDICTION: "prediction drift",
    AlertKind.PERFORMANCE: "a rise of the estimated error",
    AlertKind.CONCEPT: "a rise of the error",
    AlertKind.TECHNICAL: "technical drift",
}

COALESCE_S = 1.0
"""Updates of one incident made within this many seconds of its first, between two drains, are one."""

ContextSource = Callable[[str, Sequence[TimelineEntry]], tuple[str, ...]]
"""``(model, timeline) -> lines``: what else changed around an incident (a new version swapped in, a
library version, the worker's restart), for its reports."""


def _time(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


def _rank(severity: Severity) -> int:
    return severity.rank


def _severity(text: str) -> Severity:
    try:
        return Severity(text)
    except ValueError:
        return Severity.WARNING


NAMED = 5
"""Most subjects a root-cause line names; the rest are counted (a noisy sensor moved all 64 pixels of a
digits model, and a line naming 46 of them says less than one naming five)."""


def _quoted(subjects: Sequence[str], noun: str = "features") -> str:
    """
    >>> _quoted(["a"]), _quoted(["a", "b"]), _quoted(list("abcdefg"))
    ("'a'", "'a' and 'b'", "'a', 'b', 'c', 'd', 'e' and 2 more features")
    """
    names = [repr(s) for s in subjects]
    if len(names) > NAMED:
        return ", ".join(names[:NAMED]) + f" and {len(names) - NAMED} more {noun}"
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _began(alert: Alert | None) -> int | None:
    if alert is None or alert.opened_at_event is None or alert.evidence.window_events is None:
        return None
    return max(alert.opened_at_event - alert.evidence.window_events, 0)


def root_cause(timeline: Sequence[TimelineEntry]) -> str:
    """One line: which alerts came first, what followed, and the features their alerts blamed.

    The inputs are read as the cause when any of them drifted (a data alert), else the first alert.

    Example:
        >>> at = datetime(2026, 1, 1, tzinfo=UTC)
        >>> def entry(kind, subject, drivers=()):
        ...     return TimelineEntry(at=at, change="opened", alert_id=subject, kind=kind, subject=subject,
        ...                          severity=Severity.WARNING, drivers=drivers)
        >>> print(root_cause([entry(AlertKind.PERFORMANCE, "estimated_error", ("x0",)),
        ...                   entry(AlertKind.CONCEPT, "error", ("x0", "x1"))]))
        a rise of the estimated error came first, followed by a rise of the error; likely drivers: x0, x1
    """
    opened = [e for e in timeline if e.change == "opened"]
    if not opened:
        return ""
    data = [e.subject for e in opened if e.kind is AlertKind.DATA]
    first_kind = AlertKind.DATA if data else opened[0].kind
    if data:
        head = f"data drift on {_quoted(list(dict.fromkeys(data)))}"
    elif first_kind is AlertKind.TECHNICAL:
        technical = [e.subject for e in opened if e.kind is AlertKind.TECHNICAL]
        head = f"technical drift on {_quoted(list(dict.fromkeys(technical)), 'subjects')}"
    else:
        head = _WHAT[first_kind]
    # A technical rate that follows names its subject: the feature whose values left its range.
    followed = list(
        dict.fromkeys(
            f"{_WHAT[e.kind]} on {e.subject!r}" if e.kind is AlertKind.TECHNICAL else _WHAT[e.kind]
            for e in opened
            if e.kind is not first_kind
        )
    )
    line = f"{head} came first" + (f", followed by {', '.join(followed)}" if followed else "")
    drivers = list(dict.fromkeys(d for e in opened for d in e.drivers))
    if drivers:
        line += f"; likely drivers: {', '.join(drivers[:5])}"
    return line


def coalesce(reports: Sequence[IncidentReport], within_s: float = COALESCE_S) -> list[IncidentReport]:
    """``reports`` with each incident's run of ``updated`` reports made within ``within_s`` of the
    run's first merged into one: the latest state (and notification id), and a ``change`` that names
    every change. ``opened`` and ``resolved`` stand alone: receivers hear of an incident as soon as
    its first alert opens it, then of what joined it, then that it is over.

    Example:
        >>> from datetime import timedelta
        >>> at = datetime(2026, 1, 1, tzinfo=UTC)
        >>> def report(status, change, seconds=0.0, alerts=1):
        ...     return IncidentReport(incident_id="i", notification_id=f"i/{change}", status=status,
        ...         change=change, model="m", model_versions=("1",), severity=Severity.WARNING,
        ...         root_cause="", opened_at=at, updated_at=at + timedelta(seconds=seconds),
        ...         alerts=alerts, open_alerts=alerts, timeline=())
        >>> grew = [report("updated", f"grew: drift on 'x{j}'", 0.1, j + 2) for j in range(5)]
        >>> opened, merged = coalesce([report("opened", "opened"), *grew])
        >>> opened.alerts, merged.status, merged.notification_id, merged.alerts
        (1, 'updated', "i/grew: drift on 'x4'", 6)
        >>> print(merged.change)
        grew: drift on 'x0'; grew by 4 alerts: drift on 'x1', drift on 'x2', drift on 'x3' and 1 more
        >>> later = [report("updated", "grew: y", 5.0), report("resolved", "r", 5.0)]
        >>> [r.status for r in coalesce([*grew, *later])]
        ['updated', 'updated', 'resolved']
    """
    out: list[IncidentReport] = []
    runs: dict[str, tuple[int, datetime, list[str]]] = {}
    for r in reports:
        run = runs.get(r.incident_id)
        if r.status == "updated" and run is not None and (r.updated_at - run[1]).total_seconds() <= within_s:
            i, _, changes = run
            changes.append(r.change)
            out[i] = r.model_copy(update={"change": _merged(changes)})
            continue
        if r.status == "updated":
            runs[r.incident_id] = (len(out), r.updated_at, [r.change])
        else:
            runs.pop(r.incident_id, None)
        out.append(r)
    return out


def _merged(changes: Sequence[str]) -> str:
    head, rest = changes[0], changes[1:]
    grew = [c.removeprefix("grew: ") for c in rest if c.startswith("grew: ")]
    parts = [head, *(c for c in rest if not c.startswith("grew: "))]
    if grew:
        shown = ", ".join(grew[:3]) + (f" and {len(grew) - 3} more" if len(grew) > 3 else "")
        parts.append(f"grew by {len(grew)} alert{'s' if len(grew) > 1 else ''}: {shown}")
    return "; ".join(parts)


@dataclass
class _Group:
    incident_id: str
    model: str
    opened_at: float
    timeline: list[TimelineEntry] = field(default_factory=list)
    members: dict[IncidentKey, str] = field(default_factory=dict)
    """Key -> the alert id that opened it in this group."""
    member_severity: dict[IncidentKey, Severity] = field(default_factory=dict)
    """Key -> the highest severity its alerts have had in this group."""
    severity: Severity = Severity.INFO
    notified: bool = False
    """Whether an ``opened`` or ``updated`` report went out for it from this worker."""


class IncidentGroups:
    """Turns the gate's admitted alerts and closed incidents into incident notifications.

    Parameters:
        manager: The incident gate; its ``on_close`` listener is registered here.
        clock: Wall-clock seconds, for the reports' times.
        context: What changed around an incident (:mod:`agent.monitoring.context`), if known.
    """

    def __init__(
        self,
        manager: IncidentManager,
        *,
        clock: Callable[[], float] = time.time,
        context: ContextSource | None = None,
    ) -> None:
        self.manager = manager
        self.clock = clock
        self.context = context
        self._groups: dict[str, _Group] = {}
        self._pending: list[IncidentReport] = []
        self._drains = 0
        manager.on_close(self._closed)

    def admitted(self, alert: Alert) -> None:
        """Records an alert the gate admitted (it opened an incident, or reminded of one)."""
        key = IncidentKey.of(alert)
        incident = self.manager.incident(key)
        if incident is None:
            return  # closed again already (another thread): nothing to group
        group = self._group(incident, exclude=key)
        entry = self._entry(incident, "opened", alert=alert)
        before = group.severity
        severity = _severity(str(alert.severity))
        if key not in group.members or group.members[key] != incident.alert_id:
            group.members[key] = incident.alert_id
            group.member_severity[key] = severity
            group.timeline.append(entry)
            group.severity = max(group.severity, severity, key=_rank)
            if not group.notified and incident.alert_id == group.incident_id:
                self._report(group, "opened", f"opened: {_WHAT[alert.kind]} on {alert.subject!r}")
            else:
                self._report(
                    group, "updated", f"grew: {_WHAT[alert.kind]} on {alert.subject!r}", alert.alert_id
                )
            return
        was = group.member_severity.get(key, severity)
        group.member_severity[key] = max(was, severity, key=_rank)
        if severity.rank > before.rank:
            group.severity = severity
            group.timeline.append(entry.model_copy(update={"change": "severity", "at": _time(self.clock())}))
            self._report(
                group,
                "updated",
                f"severity {before.value} -> {severity.value}: {_WHAT[alert.kind]} on {alert.subject!r}",
                f"severity/{severity.value}",
            )
        elif severity.rank > was.rank:
            # The incident was already that severe (another of its alerts), but this alert was not:
            # an error rate gone on from 5 % to 50 % is news for the receivers even so.
            group.timeline.append(entry.model_copy(update={"change": "severity", "at": _time(self.clock())}))
            self._report(
                group,
                "updated",
                f"{_WHAT[alert.kind]} on {alert.subject!r} is now {severity.value} (was {was.value})",
                f"severity/{key.kind}/{key.subject}/{severity.value}",
            )

    def drain(self) -> list[IncidentReport]:
        """The reports made since the last call, oldest first."""
        self._drains += 1
        if self._drains % 256 == 0:
            self._forget_resolved_elsewhere()
        out, self._pending = self._pending, []
        return coalesce(out)

    # --- internals ----------------------------------------------------------------------------

    def _group(self, incident: Incident, *, exclude: IncidentKey | None = None) -> _Group:
        gid = incident.group_id
        group = self._groups.get(gid)
        if group is not None:
            return group
        # First seen here: seeded with the members the gate knows are open (some may be another
        # worker's), so that the timeline is the deployment's, not only this worker's.
        group = self._groups[gid] = _Group(gid, incident.key.model, incident.opened_at)
        for member in self.manager.group_members(gid):
            if member.key == exclude:
                continue
            group.members[member.key] = member.alert_id
            group.member_severity[member.key] = _severity(member.severity)
            group.timeline.append(self._entry(member, "opened"))
            group.severity = max(group.severity, _severity(member.severity), key=_rank)
            group.opened_at = min(group.opened_at, member.opened_at)
        group.notified = bool(group.members)  # another worker announced it
        return group

    def _entry(
        self,
        incident: Incident,
        change: Literal["opened", "severity", "recovered"],
        *,
        alert: Alert | None = None,
    ) -> TimelineEntry:
        key = incident.key
        try:
            kind = AlertKind(key.kind)
        except ValueError:
            kind = AlertKind.TECHNICAL
        at = incident.opened_at if change == "opened" else self.clock()
        return TimelineEntry(
            at=_time(at),
            change=change,
            alert_id=incident.alert_id,
            kind=kind,
            subject=key.subject,
            severity=alert.severity if alert is not None else _severity(incident.severity),
            detector=alert.detector if alert is not None else incident.detector,
            message=(alert.message if alert is not None else incident.message)[:500],
            model_version=alert.model_version if alert is not None else incident.version,
            event=(
                alert.opened_at_event
                if alert is not None
                else (None if incident.event < 0 else incident.event)
            ),
            drivers=(
                tuple(d.feature for d in alert.evidence.drivers) if alert is not None else incident.drivers
            ),
            began=_began(alert),
        )

    def _closed(self, incident: Incident, closed_at: float) -> None:
        group = self._group(incident, exclude=incident.key)
        group.members.setdefault(incident.key, incident.alert_id)
        if not any(e.alert_id == incident.alert_id and e.change == "opened" for e in group.timeline):
            group.timeline.append(self._entry(incident, "opened"))
        recovered = self._entry(incident, "recovered").model_copy(update={"at": _time(closed_at)})
        group.timeline.append(recovered)
        if self.manager.group_members(group.incident_id):
            return  # the rest of it is still open
        self._report(group, "resolved", f"resolved: all {len(group.members)} alerts recovered")
        del self._groups[group.incident_id]

    def _report(self, group: _Group, status: IncidentStatus, change: str, suffix: str | None = None) -> None:
        now = self.clock()
        open_keys = {m.key for m in self.manager.group_members(group.incident_id)}
        timeline = tuple(sorted(group.timeline, key=lambda e: e.at))
        versions = tuple(sorted({e.model_version for e in timeline if e.model_version}))
        context = self.context(group.model, timeline) if self.context is not None else ()
        cause = root_cause(timeline)
        if context:
            cause = f"{cause}; {context[0]}" if cause else context[0]
        notification = f"{group.incident_id}/{suffix or status}"
        self._pending.append(
            IncidentReport(
                incident_id=group.incident_id,
                notification_id=notification,
                status=status,
                change=change,
                model=group.model,
                model_versions=versions,
                severity=group.severity,
                root_cause=cause,
                opened_at=_time(group.opened_at),
                updated_at=_time(now),
                resolved_at=_time(now) if status == "resolved" else None,
                alerts=len(group.members),
                open_alerts=len(open_keys & set(group.members)),
                timeline=timeline,
                context=context,
            )
        )
        group.notified = True
        log.info("incident %s %s (%s): %s", group.incident_id, status, group.model, change)

    def _forget_resolved_elsewhere(self) -> None:
        # A group whose last incident another worker closed is resolved there; forget it here.
        for gid in [g for g in self._groups if not self.manager.group_members(g)]:
            del self._groups[gid]

    def groups(self) -> Iterable[str]:
        """Ids of the groups this worker keeps."""
        return list(self._groups)
