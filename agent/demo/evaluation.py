"""The demo's parts, callable without Kafka: what a scripted drift must raise, what the topics held, the
verdict, the summary, the plot and the signed-webhook receiver.

``driftline demo`` (:mod:`agent.cli.demo`) wires these to a real worker. The verdict works in the
scenario's own coordinates: every message on the requests topic is event ``i`` of the schedule (its key
is ``<run id>-<i>``), so reading the run's topics back maps each alert's ``source`` offsets to the events
it was raised on, and a detection delay is "the last event of the batch in which the detector fired"
minus "the first event the schedule changed".

What each kind of scripted drift must produce (:func:`expectations`):

* ``covariate`` on a feature: a **data** alert on that feature, raised on an event inside the drift's
  window (``start <= event < end``);
* ``concept``: a **concept** alert (the joined error rose), raised on an outcome of an event after
  ``start``;
* ``schema`` and ``garbage``: every broken or garbage message on the **dead-letter topic**. A technical
  alert is required only when the broken share is at least twice the monitor's dead-letter rate margin
  (default 5 %): about one broken message in twelve loses its model name and cannot be counted against
  a model, and a 2,000-event window must clear the margin with room for chance. The ``demo`` scenario's
  1 % broken + 0.5 % garbage is meant to show dead letters, not to page anyone: no alert is expected.

Alerts that no scripted drift explains (a data alert on a feature nobody shifted, a latency alert) are
listed in the summary as unscripted; they do not change the exit status.
"""

from __future__ import annotations

import math
import secrets
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import orjson

from schemas.alert import Alert, AlertKind
from schemas.incident import IncidentReport, decode_record

__all__ = [
    "AlertTable",
    "DemoRun",
    "DemoSummary",
    "Detection",
    "EventLog",
    "Expectation",
    "SeenAlert",
    "WebhookDelivery",
    "WebhookReceiver",
    "compress",
    "evaluate",
    "expectations",
    "free_port",
    "plot_demo",
    "rolling_mean",
]

ExpectKind = Literal["data", "concept", "dead_letters"]

# Technical alerts that bad messages can raise (the rates the monitor watches per model).
_BAD_MESSAGE_DETECTORS = frozenset(
    {"dead_letter_rate", "wrong_type_rate", "missing_rate", "unseen_field", "out_of_range_rate"}
)


@dataclass(frozen=True)
class DemoRun:
    """The names of one demo run: its own app id, topics and request ids, so runs never mix.

    Example:
        >>> run = DemoRun("20260101T120000-ab12cd")
        >>> run.app_id
        'driftline-demo-20260101T120000-ab12cd'
        >>> run.topics["dead_letters"], run.request_prefix
        ('driftline-demo-20260101T120000-ab12cd-dead-letters', 'demo-20260101T120000-ab12cd')
    """

    run_id: str

    @classmethod
    def new(cls, now: datetime | None = None) -> DemoRun:
        """A fresh run: the UTC start time (sorts in order) and a random suffix (two runs per second)."""
        when = (now or datetime.now(UTC)).astimezone(UTC)
        return cls(f"{when:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}")

    @property
    def app_id(self) -> str:
        """Faust app id; also the prefix of every topic the run creates (the worker's own included)."""
        return f"driftline-demo-{self.run_id}"

    @property
    def request_prefix(self) -> str:
        """Request ids are ``<prefix>-<event index>``."""
        return f"demo-{self.run_id}"

    @property
    def topics(self) -> dict[str, str]:
        """Topic setting name (``agent.settings.TopicSettings``) -> this run's topic."""
        names = ("requests", "predictions", "outcomes", "alerts", "dead_letters")
        return {n: f"{self.app_id}-{n.replace('_', '-')}" for n in names}


def compress(drifts: Sequence[Any], scale: float) -> list[dict[str, Any]]:
    """Drift fields with every event position multiplied by ``scale`` (a shorter run of the same story).

    Example:
        >>> from producers.schedule import ScheduledDrift
        >>> d = ScheduledDrift(kind="covariate", start=2000, end=6000, feature="x", size=1.5)
        >>> [(c["start"], c["end"]) for c in compress([d], 0.25)]
        [(500, 1500)]
    """
    out = []
    for d in drifts:
        fields = d.model_dump()
        for name in ("start", "end", "ramp", "period"):
            value = fields.get(name)
            if value:
                fields[name] = max(1 if name != "start" else 0, round(value * scale))
        if fields.get("period") is not None:
            fields["period"] = max(2, fields["period"])
        out.append(fields)
    return out


@dataclass(frozen=True)
class Expectation:
    """What one scripted drift must produce for the demo to pass (see the module docstring)."""

    what: str
    """The drift, as a person reads it."""
    kind: ExpectKind
    start: int
    end: int | None = None
    subject: str | None = None
    """The shifted feature (``data``)."""
    alert_required: bool = True
    """``dead_letters`` only: whether a technical alert is required as well as the dead letters."""
    note: str = ""

    def matches(self, seen: SeenAlert) -> bool:
        """Whether ``seen`` is the alert this drift must raise (raised on an event inside the drift)."""
        if seen.event is None or seen.event < self.start:
            return False
        if self.end is not None and seen.event >= self.end:
            return False
        alert = seen.alert
        if self.kind == "data":
            return alert.kind is AlertKind.DATA and alert.subject == self.subject
        if self.kind == "concept":
            return alert.kind is AlertKind.CONCEPT
        return alert.kind is AlertKind.TECHNICAL and alert.detector in _BAD_MESSAGE_DETECTORS

    def explains(self, seen: SeenAlert) -> bool:
        """Whether this drift accounts for ``seen``: its own alert, or what follows from it (the model's
        output and its estimated error move with a shifted feature; the shift's end is a change too;
        while it lasts the model may err more on the shifted rows, which keep their labels)."""
        if seen.event is None or seen.event < self.start:
            return False
        alert = seen.alert
        if self.kind == "data":
            during = self.end is None or seen.event < self.end
            return (
                alert.kind in (AlertKind.PREDICTION, AlertKind.PERFORMANCE)
                or (alert.kind is AlertKind.CONCEPT and during)
                or (alert.kind is AlertKind.DATA and alert.subject == self.subject)
                or (  # a shift that carries values beyond the feature's reference range
                    alert.detector == "reference_range_rate" and alert.subject == self.subject
                )
            )
        if self.kind == "concept":
            return alert.kind is AlertKind.CONCEPT
        return alert.kind is AlertKind.TECHNICAL and alert.detector in _BAD_MESSAGE_DETECTORS


def _span(start: int, end: int | None) -> str:
    return f"events {start:,}-{end:,}" if end is not None else f"from event {start:,}"


def expectations(drifts: Sequence[Any], *, rate_margin: float = 0.05) -> list[Expectation]:
    """What the scripted ``drifts`` (``producers.schedule.ScheduledDrift``) must produce.

    Example:
        >>> from producers.scenarios import builtin_scenario
        >>> for e in expectations(builtin_scenario("demo").drifts):
        ...     print(e.kind, e.start, e.end, e.subject, e.alert_required)
        data 2000 6000 worst radius True
        data 2000 6000 worst concave points True
        concept 7000 None None True
        dead_letters 500 None None False
    """
    out: list[Expectation] = []
    bad = [d for d in drifts if d.kind in ("schema", "garbage")]
    for d in drifts:
        if d.kind == "covariate":
            shape = "" if d.shape == "abrupt" else f" ({d.shape})"
            out.append(
                Expectation(
                    f"covariate {d.size:+g} sd on {d.feature!r}{shape}, {_span(d.start, d.end)}",
                    "data",
                    d.start,
                    d.end,
                    subject=d.feature,
                )
            )
        elif d.kind == "concept":
            out.append(
                Expectation(
                    f"concept: {d.size:.0%} of labels changed, {_span(d.start, d.end)}",
                    "concept",
                    d.start,
                    d.end,
                )
            )
    if bad:
        start = min(d.start for d in bad)
        ends = [d.end for d in bad]
        end = None if None in ends else max(e for e in ends if e is not None)
        broken = sum(d.size for d in bad if d.kind == "schema")
        parts = [f"{d.size:.1%} {'broken' if d.kind == 'schema' else 'garbage'}" for d in bad]
        required = broken >= 2 * rate_margin
        note = (
            "dead letters and a technical alert"
            if required
            else f"dead letters only: {broken:.1%} broken is below twice the {rate_margin:.0%} alert margin"
        )
        out.append(
            Expectation(
                f"bad messages: {', '.join(parts)}, {_span(start, end)}",
                "dead_letters",
                start,
                end,
                alert_required=required,
                note=note,
            )
        )
    return out


@dataclass(frozen=True)
class SeenAlert:
    """An alert as the demo saw it on the alerts topic, placed on the schedule by :class:`EventLog`."""

    alert: Alert
    event: int | None = None
    """The last scenario event of the batch the alert was raised on; None if not mapped."""


def _index(key: bytes | None, prefix: bytes) -> int | None:
    if key is None or not key.startswith(prefix):
        return None
    tail = key[len(prefix) :]
    return int(tail) if tail.isdigit() else None


class EventLog:
    """The run's topics read back, by scenario event index: where each event landed, when it was sent,
    the watched feature's value, the model's output, the error of its joined outcome, dead letters.

    Parameters:
        count: Events in the run.
        request_prefix: Request ids are ``<request_prefix>-<index>``.
        feature: The feature whose value is kept (the primary shifted one).

    Example:
        >>> log = EventLog(3, "r", "x")
        >>> log.add_request("req", 0, 10, b"r-0", b'{"features": {"x": 1.5}}', 1000)
        >>> log.add_request("req", 1, 4, b"r-1", b"garbage", 1010)
        >>> log.add_prediction(b"r-0", b'{"label": 1, "probabilities": {"0": 0.2, "1": 0.8}}')
        >>> log.add_outcome("out", 0, 7, b"r-0", b'{"label": 0}')
        >>> log.add_dead_letter(b"r-1")
        >>> float(log.feature[0]), float(log.output[0]), float(log.error[0]), int(log.dead.sum())
        (1.5, 0.8, 1.0, 1)
        >>> log.position("out", 0, 7), log.sent_at(1)
        (0, 1.01)
    """

    def __init__(self, count: int, request_prefix: str, feature: str | None) -> None:
        self.count = count
        self.prefix = f"{request_prefix}-".encode()
        self.feature_name = feature
        nan = math.nan
        self.sent = np.full(count, nan)
        """Producer timestamp of each event's request (Unix seconds)."""
        self.feature = np.full(count, nan)
        self.output = np.full(count, nan)
        """The model's monitored output: P(second class) for a binary classifier, the top probability
        for a multiclass one, the value for a regressor."""
        self.error = np.full(count, nan)
        """1/0 for a classifier's joined outcome, the absolute error for a regressor's."""
        self.valid = np.zeros(count, dtype=bool)
        self.dead = np.zeros(count, dtype=bool)
        self.predicted: dict[int, Any] = {}
        self._outcomes: dict[int, Any] = {}
        self._positions: dict[tuple[str, int, int], int] = {}
        self.requests_seen = 0
        self.predictions_seen = 0
        self.outcomes_seen = 0
        self.dead_letters_seen = 0

    def _event(self, key: bytes | None) -> int | None:
        i = _index(key, self.prefix)
        return i if i is not None and 0 <= i < self.count else None

    def add_request(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        timestamp_ms: int,
    ) -> None:
        i = self._event(key)
        if i is None:
            return
        self.requests_seen += 1
        self._positions[topic, partition, offset] = i
        self.sent[i] = timestamp_ms / 1000.0
        try:
            body = orjson.loads(value or b"")
        except orjson.JSONDecodeError:
            return
        features = body.get("features") if isinstance(body, dict) else None
        if isinstance(features, dict) and self.feature_name is not None:
            x = features.get(self.feature_name)
            if isinstance(x, int | float) and not isinstance(x, bool):
                self.feature[i] = float(x)

    def add_prediction(self, key: bytes | None, value: bytes | None) -> None:
        i = self._event(key)
        if i is None or value is None:
            return
        self.predictions_seen += 1
        self.valid[i] = True
        body = orjson.loads(value)
        probabilities = body.get("probabilities")
        if isinstance(probabilities, dict) and probabilities:
            p = [float(v) for v in probabilities.values()]
            self.output[i] = p[1] if len(p) == 2 else max(p)
            self.predicted[i] = str(body.get("label"))
        elif body.get("value") is not None:
            self.output[i] = float(body["value"])
            self.predicted[i] = float(body["value"])
        self._join(i)

    def add_outcome(
        self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None
    ) -> None:
        i = self._event(key)
        if i is None or value is None:
            return
        self.outcomes_seen += 1
        self._positions[topic, partition, offset] = i
        body = orjson.loads(value)
        self._outcomes[i] = str(body["label"]) if body.get("label") is not None else body.get("value")
        self._join(i)

    def _join(self, i: int) -> None:
        if i not in self.predicted or i not in self._outcomes:
            return
        predicted, observed = self.predicted[i], self._outcomes[i]
        if isinstance(predicted, str):
            self.error[i] = float(predicted != str(observed))
        elif observed is not None:
            self.error[i] = abs(float(observed) - predicted)

    def add_dead_letter(self, key: bytes | None) -> None:
        self.dead_letters_seen += 1
        i = self._event(key)
        if i is not None:
            self.dead[i] = True

    def position(self, topic: str, partition: int, offset: int) -> int | None:
        """The event whose request (or outcome) is at this offset."""
        return self._positions.get((topic, partition, offset))

    def sent_at(self, event: int) -> float | None:
        """When event ``event`` was sent (Unix seconds), if it was read back."""
        value = float(self.sent[event]) if 0 <= event < self.count else math.nan
        return None if math.isnan(value) else value

    def place(self, alert: Alert) -> SeenAlert:
        """``alert`` with the last event of the batch it was raised on (its ``source`` offset ranges)."""
        events = [
            i
            for r in alert.source
            for offset in range(r.start, r.end + 1)
            if (i := self.position(r.topic, r.partition, offset)) is not None
        ]
        return SeenAlert(alert, max(events) if events else None)


@dataclass(frozen=True)
class Detection:
    """The verdict on one :class:`Expectation`."""

    expectation: Expectation
    alert: SeenAlert | None
    ok: bool
    delay_events: int | None = None
    delay_s: float | None = None
    detail: str = ""


def evaluate(
    expected: Sequence[Expectation],
    alerts: Sequence[SeenAlert],
    log: EventLog,
    *,
    bad_events: Iterable[int] = (),
) -> list[Detection]:
    """One :class:`Detection` per expectation: the first matching alert and its delay, in events (the
    alert's event minus the drift's start) and seconds (the alert's ``detected_at`` minus the time the
    drift's first event was sent). ``bad_events`` are the broken and garbage events that were sent.

    Example:
        >>> from datetime import datetime, UTC
        >>> from schemas.alert import OffsetRange, Severity
        >>> log = EventLog(10, "r", None)
        >>> for i in range(10):
        ...     log.add_request("req", 0, i, f"r-{i}".encode(), b"{}", 1_000_000 + 100 * i)
        >>> alert = Alert.create(model="m", model_version="1", kind=AlertKind.DATA, detector="ph",
        ...     subject="x", severity=Severity.WARNING, message="x drifted",
        ...     detected_at=datetime.fromtimestamp(1000.75, UTC),
        ...     source=(OffsetRange(topic="req", partition=0, start=6, end=7),))
        >>> [d] = evaluate([Expectation("shift", "data", 4, None, "x")], [log.place(alert)], log)
        >>> d.ok, d.delay_events, d.delay_s
        (True, 3, 0.35)
    """
    out = []
    ordered = sorted(alerts, key=lambda s: (s.alert.detected_at, s.event or 0))
    bad = sorted(set(bad_events))
    for e in expected:
        seen = next((s for s in ordered if e.matches(s)), None)
        delay_events = delay_s = None
        if seen is not None and seen.event is not None:
            delay_events = seen.event - e.start
            start_time = log.sent_at(e.start)
            if start_time is not None:
                delay_s = round(seen.alert.detected_at.timestamp() - start_time, 3)
        if e.kind != "dead_letters":
            out.append(Detection(e, seen, seen is not None, delay_events, delay_s))
            continue
        lettered = sum(1 for i in bad if log.dead[i])
        detail = f"{lettered:,} of {len(bad):,} bad messages dead-lettered"
        ok = lettered == len(bad) and bool(bad)
        if e.alert_required:
            ok = ok and seen is not None
        else:
            detail += f"; {e.note}"
        out.append(Detection(e, seen, ok, delay_events, delay_s, detail))
    return out


@dataclass(frozen=True)
class WebhookDelivery:
    """One POST the receiver got: an alert, or an incident's notification (``kind`` ``incident``,
    ``subject`` its status: ``opened``, ``updated``, ``resolved``)."""

    alert_id: str
    """The ``webhook-id``: the alert's id, or the notification's."""
    verified: bool
    kind: str = ""
    subject: str = ""
    incident: str = ""
    """The incident's id, for a notification."""
    detail: str = ""
    """A notification's change, in words."""
    covers: frozenset[str] = frozenset()
    """The ids of the alerts a notification's timeline holds (an alert delivery: its own id)."""


def delivered_alerts(deliveries: Iterable[WebhookDelivery]) -> set[str]:
    """The ids of the alerts that reached the receiver in a verified delivery: their own, or in the
    timeline of their incident's notification (with incidents, the default, an alert that joins an
    incident is delivered as that incident's update, under the notification's id).

    Example:
        >>> delivered_alerts([WebhookDelivery("n-1", True, "incident", covers=frozenset({"a", "b"})),
        ...                   WebhookDelivery("c", False, covers=frozenset({"c"}))]) == {"a", "b"}
        True
    """
    return {alert for d in deliveries if d.verified for alert in d.covers}


@dataclass
class DemoSummary:
    """Everything the demo reports at the end; :meth:`format` is what it prints."""

    run_id: str
    events: int
    requests: int
    outcomes: int
    broken: int
    garbage: int
    predictions: int
    dead_letters: int
    alerts: list[SeenAlert]
    detections: list[Detection]
    webhook: list[WebhookDelivery] = field(default_factory=list)
    influx_alerts: int | None = None
    influx_note: str = ""
    duration_s: float = 0.0
    rate: float = 0.0
    plot: Path | None = None
    report: Path | None = None
    """The drift report page (``driftline report``'s)."""
    file_rows: int = 0
    """The rows of the CSV file the stream replayed (``--data``); 0 for an example's scenario."""
    shuffled: bool = False
    """Whether those rows went out in an order drawn from the seed (``--shuffle``), not file order."""

    @property
    def missed(self) -> list[str]:
        """The scripted drifts that were not detected, as the summary names them."""
        return [d.expectation.what for d in self.detections if not d.ok]

    @property
    def unscripted(self) -> list[SeenAlert]:
        """Alerts that no scripted drift explains."""
        expected = [d.expectation for d in self.detections]
        return [s for s in self.alerts if not any(e.explains(s) for e in expected)]

    def estimate_ahead(self) -> tuple[int, int] | None:
        """``(event of the first performance alert, event of the first concept alert after it)``,
        when the estimate spoke first."""
        firsts: dict[AlertKind, int] = {}
        for s in sorted((s for s in self.alerts if s.event is not None), key=lambda s: s.event or 0):
            firsts.setdefault(s.alert.kind, s.event or 0)
        performance, concept = firsts.get(AlertKind.PERFORMANCE), firsts.get(AlertKind.CONCEPT)
        if performance is None or concept is None or concept < performance:
            return None
        return performance, concept

    @property
    def exit_code(self) -> int:
        """0 when every scripted drift was detected, 1 otherwise."""
        return 1 if self.missed else 0

    def format(self) -> str:
        """The summary as printed at the end of the demo.

        Example:
            >>> s = DemoSummary("r1", events=100, requests=97, outcomes=97, broken=2, garbage=1,
            ...                 predictions=97, dead_letters=3, alerts=[], detections=[], duration_s=75)
            >>> print(s.format())  # doctest: +NORMALIZE_WHITESPACE
            run r1 finished in 1 min 15 s
              events        100 sent: 97 requests with 97 outcomes, 3 bad (2 broken, 1 garbage)
              predictions   97
              dead letters  3
              alerts        0
              webhook       no deliveries
              InfluxDB      not queried
            no drift was scripted
        """
        kinds = Counter(s.alert.kind.value for s in self.alerts)
        by_kind = ", ".join(
            f"{k} {kinds[k]}"
            for k in ("data", "prediction", "performance", "concept", "technical")
            if kinds[k]
        )
        verified = sum(1 for d in self.webhook if d.verified)
        rejected = len(self.webhook) - verified
        unique = len({d.alert_id for d in self.webhook if d.verified and d.kind != "incident"})
        notes = [d for d in self.webhook if d.verified and d.kind == "incident"]
        statuses = Counter(d.subject for d in notes)
        received = []
        if unique or not notes:
            received.append(f"{unique} distinct alerts")
        if notes:
            received.append(
                f"{len({d.incident for d in notes})} incidents: {statuses['opened']} opened, "
                f"{statuses['updated']} updated, {statuses['resolved']} resolved"
            )
        minutes, seconds = divmod(round(self.duration_s), 60)
        took = f"{minutes} min {seconds} s" if minutes else f"{seconds} s"
        lines = [
            f"run {self.run_id} finished in {took}",
            f"  events        {self.events:,} sent: {self.requests:,} requests with "
            f"{self.outcomes:,} outcomes, {self.broken + self.garbage:,} bad "
            f"({self.broken:,} broken, {self.garbage:,} garbage)",
            f"  predictions   {self.predictions:,}",
            f"  dead letters  {self.dead_letters:,}",
            f"  alerts        {len(self.alerts)}" + (f": {by_kind}" if by_kind else ""),
        ]
        ahead = self.estimate_ahead()
        if ahead is not None:
            performance, concept = ahead
            lines.append(
                f"  estimate      the estimated error rose at event {performance:,} (no label needed), "
                f"{concept - performance:,} events before the first concept alert (event {concept:,})"
            )
        if self.webhook:
            lines.append(
                f"  webhook       {len(self.webhook)} deliveries, {verified} signatures verified "
                f"({'; '.join(received)}), {rejected} rejected"
            )
        else:
            lines.append("  webhook       no deliveries")
        if self.influx_alerts is None:
            lines.append(f"  InfluxDB      {self.influx_note or 'not queried'}")
        else:
            lines.append(
                f"  InfluxDB      {self.influx_alerts} of {len(self.alerts)} alerts read back"
                + (f" {self.influx_note}" if self.influx_note else "")
            )
        if self.detections:
            lines.append("")
            lines.append("  scripted drift -> detection (delay from the drift's first event)")
            for d in self.detections:
                lines.append(f"  [{'ok' if d.ok else 'MISSED'}] {d.expectation.what}")
                lines.append(f"         {self._detected(d)}")
        others = self.unscripted
        if others:
            lines.append("")
            lines.append(f"  {len(others)} unscripted alert(s) (no scripted drift explains them):")
            for s in others:
                where = f"event {s.event:,}" if s.event is not None else "event unknown"
                lines.append(f"    {s.alert.kind.value} {s.alert.subject!r} ({s.alert.detector}) at {where}")
            from_file = self.file_rows > 0
            if from_file and not self.shuffled:
                lines.append(
                    "  the rows were replayed in file order: a file sorted or grouped (by time, class or "
                    "source) drifts by itself, and these may be real changes in it; --shuffle replays "
                    "them in a seeded random order"
                )
            outputs = (AlertKind.PREDICTION, AlertKind.PERFORMANCE)
            if from_file and any(s.alert.kind in outputs for s in others):
                lines.append(
                    "  if the file holds rows the model was trained on, its outputs on them can be more "
                    "extreme than on the holdout its output reference comes from (an output alert)"
                )
            if from_file and self.file_rows * 10 <= self.events:
                lines.append(
                    f"  the file's {self.file_rows:,} rows were replayed {self.events / self.file_rows:.0f} "
                    f"times over: a sample that small differs from the reference by chance (feature "
                    f"means by about {1 / self.file_rows**0.5:.2f} reference sd), and the detectors see it"
                )
        if self.plot is not None:
            lines.append("")
            lines.append(f"  plot          {self.plot}")
        if self.report is not None:
            lines.append(f"  report        {self.report}")
        lines.append("")
        if not self.detections:
            lines.append("no drift was scripted")
        elif self.missed:
            lines.append("MISSED: " + "; ".join(self.missed))
        else:
            lines.append("every scripted drift was detected")
        return "\n".join(lines)

    def _detected(self, d: Detection) -> str:
        parts = []
        if d.detail:
            parts.append(d.detail)
        if d.alert is not None:
            a = d.alert.alert
            what = f"{a.kind.value} alert on {a.subject!r} ({a.detector})"
            if d.delay_events is not None:
                delay = f"{d.delay_events:+,} events"
                if d.delay_s is not None:
                    delay += f", {d.delay_s:.1f} s"
                elif self.rate > 0:
                    delay += f", ~{d.delay_events / self.rate:.1f} s at {self.rate:g}/s"
                what += f" at event {d.alert.event:,} ({delay})"
            parts.append(what)
        elif d.expectation.kind != "dead_letters" or d.expectation.alert_required:
            parts.append("no matching alert")
        return "; ".join(parts)


class AlertTable:
    """The live alert table: a header, then one row per alert as it arrives.

    Example:
        >>> from datetime import datetime, UTC
        >>> from schemas.alert import Severity
        >>> t = AlertTable(width=80, tz=UTC)
        >>> print(t.header())
        TIME      MODEL          KIND        SUBJECT         MESSAGE
        >>> a = Alert.create(model="breast-cancer", model_version="1", kind=AlertKind.DATA,
        ...     detector="ph", subject="worst radius", severity=Severity.CRITICAL,
        ...     message="feature 'worst radius' of breast-cancer/1 drifted up (+1.52 reference sd)",
        ...     detected_at=datetime(2026, 1, 1, 12, 0, 5, tzinfo=UTC))
        >>> print(t.row(a))
        12:00:05  breast-cancer  data        worst radius    feature 'worst radius' of …
    """

    _WIDTHS = (8, 13, 10, 14)

    def __init__(self, width: int = 120, tz: Any = None) -> None:
        self.width = max(width, 60)
        self.tz = tz

    def _line(self, cells: Sequence[str]) -> str:
        fixed = [c[:w].ljust(w) for c, w in zip(cells, self._WIDTHS, strict=False)]
        head = "  ".join(fixed) + "  "
        room = self.width - len(head)
        message = cells[-1]
        if len(message) > room:
            message = message[: max(room - 1, 1)] + "…"
        return (head + message).rstrip()

    def header(self) -> str:
        return self._line(("TIME", "MODEL", "KIND", "SUBJECT", "MESSAGE"))

    def row(self, alert: Alert) -> str:
        when = alert.detected_at.astimezone(self.tz).strftime("%H:%M:%S")
        return self._line((when, alert.model, alert.kind.value, alert.subject, alert.message))


class WebhookReceiver:
    """A local receiver of driftline's signed webhooks: verifies each signature, remembers each delivery.

    Answers 204 to a delivery whose signature verifies and 401 to one that does not (the sink then
    counts it as rejected, it is not retried). Binds to 127.0.0.1 on a free port.

    Parameters:
        secret: The shared signing secret.
        on_delivery: Called with each delivery, on the event loop (the demo prints it).
    """

    def __init__(self, secret: str, on_delivery: Callable[[WebhookDelivery], None] | None = None) -> None:
        self.secret = secret
        self.on_delivery = on_delivery
        self.deliveries: list[WebhookDelivery] = []
        self._runner: Any = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/alerts"

    async def start(self) -> WebhookReceiver:
        from aiohttp import web

        app = web.Application()
        app.router.add_post("/alerts", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: Any) -> Any:
        from aiohttp import web

        from agent.alerting.sinks.webhook import ID_HEADER, verify_signature

        # Verify the raw bytes before parsing anything: the signature covers the body as sent.
        body = await request.read()
        verified = verify_signature(self.secret, body, request.headers)
        kind = subject = incident = detail = ""
        covers: frozenset[str] = frozenset()
        if verified:
            try:
                record = decode_record(body)
            except ValueError:
                verified = False
            else:
                if isinstance(record, IncidentReport):
                    kind, subject, incident, detail = (
                        "incident",
                        record.status,
                        record.incident_id,
                        record.change,
                    )
                    covers = frozenset(entry.alert_id for entry in record.timeline)
                else:
                    kind, subject = record.kind.value, record.subject
                    covers = frozenset([record.alert_id])
        delivery = WebhookDelivery(
            request.headers.get(ID_HEADER, ""), verified, kind, subject, incident, detail, covers
        )
        self.deliveries.append(delivery)
        if self.on_delivery is not None:
            self.on_delivery(delivery)
        return web.Response(status=204 if verified else 401)


def rolling_mean(values: npt.NDArray[np.float64], window: int) -> npt.NDArray[np.float64]:
    """Mean of the non-NaN values among the last ``window`` positions; NaN where fewer than a quarter
    of them are known.

    Example:
        >>> rolling_mean(np.array([1.0, np.nan, 3.0, 5.0]), 2).tolist()
        [1.0, 1.0, 3.0, 4.0]
    """
    n = len(values)
    known = ~np.isnan(values)
    sums = np.concatenate([[0.0], np.cumsum(np.where(known, values, 0.0))])
    counts = np.concatenate([[0], np.cumsum(known)])
    i = np.arange(n)
    lo = np.maximum(i + 1 - window, 0)
    total, seen = sums[i + 1] - sums[lo], counts[i + 1] - counts[lo]
    out = np.full(n, math.nan)
    enough = seen >= max(1, window // 4)
    out[enough] = total[enough] / seen[enough]
    return out


_KIND_COLOURS: Mapping[str, str] = {
    "data": "tab:red",
    "prediction": "tab:purple",
    "performance": "tab:green",
    "concept": "tab:orange",
    "technical": "tab:gray",
}


def plot_demo(
    path: Path,
    log: EventLog,
    drifts: Sequence[Any],
    alerts: Sequence[SeenAlert],
    *,
    title: str,
    rate: float = 0.0,
    references: Mapping[str, float] | None = None,
    window: int | None = None,
    estimated: npt.NDArray[np.float64] | None = None,
) -> Path:
    """Draws the watched statistics over the run, the scripted drifts and the alerts; writes a PNG.

    Four panels against the event index: the shifted feature's rolling mean, the model's output, the
    error of the joined outcomes, and the share of dead-lettered events. Scripted drifts are shaded
    (covariate on the first, concept on the third, bad messages on the last) with their start as a
    dashed line; each alert is a vertical line in its kind's colour through every panel.
    ``references`` may hold ``feature``, ``output`` and ``error`` reference levels (dotted lines) and
    ``dead``, the share of dead letters above which the monitor alerts. ``estimated``, each event's
    estimated error (from the model's calibrated confidence), is drawn on the error panel beside the
    real one, and the first estimated-performance alert is marked there, with how far ahead of the
    first concept alert it came.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: never a display, whatever the environment says
    import matplotlib.pyplot as plt
    from matplotlib.artist import Artist
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    n = log.count
    w = window or max(50, min(200, n // 40))
    x = np.arange(n)
    refs = dict(references or {})
    fig, axes = plt.subplots(4, 1, sharex=True, figsize=(12, 10), constrained_layout=True)
    feature_ax, output_ax, error_ax, dead_ax = axes
    panels = [
        (
            feature_ax,
            rolling_mean(log.feature, w),
            f"{log.feature_name or 'feature'}\n(rolling mean)",
            "feature",
        ),
        (output_ax, rolling_mean(log.output, w), "model output\n(rolling mean)", "output"),
        (error_ax, rolling_mean(log.error, w), "error of joined\noutcomes (rolling)", "error"),
        (dead_ax, rolling_mean(log.dead.astype(np.float64), w), "dead-lettered\nshare (rolling)", "dead"),
    ]
    for ax, series, label, ref in panels:
        ax.plot(x, series, color="tab:blue", linewidth=1.2)
        ax.set_ylabel(label, fontsize=9)
        ax.grid(True, alpha=0.3)
        if ref == "dead" and ref in refs:
            ax.axhline(refs[ref], color="tab:red", linestyle="-.", linewidth=1)
        elif ref is not None and ref in refs:
            ax.axhline(refs[ref], color="black", linestyle=":", linewidth=1)
    if estimated is not None:
        error_ax.plot(x, rolling_mean(estimated, w), color="tab:green", linewidth=1.2, linestyle="--")
    _mark_estimate(error_ax, alerts)
    shade = {"covariate": (feature_ax, "tab:red"), "concept": (error_ax, "tab:orange")}
    labels: dict[tuple[int, int], list[str]] = {}
    for d in drifts:
        end = d.end if d.end is not None else n
        if d.start >= n:
            continue
        ax, colour = shade.get(d.kind, (dead_ax, "tab:gray"))
        ax.axvspan(d.start, min(end, n), color=colour, alpha=0.12)
        for a in axes:
            a.axvline(d.start, color=colour, linestyle="--", linewidth=0.9, alpha=0.7)
        # Drifts that start together on one panel (broken and garbage messages) share one label.
        what = f"{d.kind} {d.describe_size()}" + (f" {d.feature}" if d.feature else "")
        labels.setdefault((list(axes).index(ax), d.start), []).append(what)
    for (panel, start), texts in labels.items():
        axes[panel].annotate(
            ", ".join(texts),
            xy=(start, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -12),
            textcoords="offset points",
            fontsize=8,
            color="black",
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1},
        )
    placed = sorted((s for s in alerts if s.event is not None), key=lambda s: s.event or 0)
    clusters: list[list[SeenAlert]] = []
    for s in placed:
        colour = _KIND_COLOURS.get(s.alert.kind.value, "black")
        for a in axes:
            a.axvline(s.event, color=colour, linewidth=1.6, alpha=0.85)
        # Alerts a few events apart (a shift moves the feature and the output together) share a label.
        if clusters and (s.event or 0) - (clusters[-1][0].event or 0) <= n // 50:
            clusters[-1].append(s)
        else:
            clusters.append([s])
    for cluster in clusters:
        feature_ax.annotate(
            "\n".join(f"{s.alert.kind.value}: {s.alert.subject}" for s in cluster),
            xy=(cluster[0].event or 0, 0.03),
            xycoords=("data", "axes fraction"),
            xytext=(-3, 0),
            textcoords="offset points",
            rotation=90,
            ha="right",
            va="bottom",
            fontsize=8,
            color=_KIND_COLOURS.get(cluster[0].alert.kind.value, "black"),
        )
    legend: list[Artist] = [
        Line2D([0], [0], color=c, linewidth=1.6, label=f"{k} alert") for k, c in _KIND_COLOURS.items()
    ]
    legend += [
        Patch(color="tab:red", alpha=0.2, label="covariate shift"),
        Patch(color="tab:orange", alpha=0.2, label="concept change"),
        Patch(color="tab:gray", alpha=0.2, label="bad messages"),
        Line2D([0], [0], color="black", linestyle=":", label="reference level"),
        Line2D([0], [0], color="tab:red", linestyle="-.", label="dead-letter alert margin"),
    ]
    if estimated is not None:
        legend.append(
            Line2D([0], [0], color="tab:green", linestyle="--", label="estimated error (no labels)")
        )
    fig.legend(handles=legend, loc="outside lower center", ncol=5, fontsize=8)
    dead_ax.set_xlabel(f"event (rolling window {w:,} events)")
    dead_ax.set_xlim(0, max(n - 1, 1))
    if rate > 0:
        top = feature_ax.secondary_xaxis(
            "top",
            functions=(lambda e: e / rate, lambda s: s * rate),  # seconds at the sending rate
        )
        top.set_xlabel(f"seconds at {rate:g} events/s", fontsize=9)
    fig.suptitle(title, fontsize=11)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def _mark_estimate(ax: Any, alerts: Sequence[SeenAlert]) -> None:
    """Marks the first estimated-performance alert on the error panel, and how far ahead of the first
    concept alert after it it came."""
    placed = sorted((s for s in alerts if s.event is not None), key=lambda s: s.event or 0)
    performance = next((s for s in placed if s.alert.kind is AlertKind.PERFORMANCE), None)
    if performance is None or performance.event is None:
        return
    concept = next(
        (s for s in placed if s.alert.kind is AlertKind.CONCEPT and (s.event or 0) >= performance.event), None
    )
    text = "estimated error rose:\nno label needed"
    if concept is not None and concept.event is not None:
        text += f"\n{concept.event - performance.event:,} events before\nthe concept alert"
    ax.plot([performance.event], [0.97], marker="v", markersize=10, color="tab:green",
            transform=ax.get_xaxis_transform(), clip_on=False)  # fmt: skip
    ax.annotate(
        text,
        xy=(performance.event, 0.95),
        xycoords=("data", "axes fraction"),
        xytext=(6, -4),
        textcoords="offset points",
        ha="left",
        va="top",
        fontsize=8,
        color="tab:green",
        bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "tab:green", "pad": 2},
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for the worker's REST endpoint)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
