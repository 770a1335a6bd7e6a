"""A drift alert, as published on the alerts topic, written to InfluxDB and POSTed to webhooks.

The id is deterministic: the same incident (model, version, kind, subject, detector and the event at
which it opened) always gets the same id, so a receiver can drop the duplicates that at-least-once
delivery, a worker restart or two workers seeing the same drift may cause.

Example:
    >>> from datetime import datetime, UTC
    >>> a = Alert.create(
    ...     model="breast-cancer", model_version="1", kind=AlertKind.DATA, detector="page_hinkley_up",
    ...     subject="mean radius", severity=Severity.WARNING,
    ...     message="mean radius drifted up by 0.8 reference std",
    ...     evidence=Evidence(reference_mean=0.5, reference_std=0.29, recent_mean=0.73, recent_std=0.27,
    ...                       shift_in_std=0.8, statistic=6.1, window_events=640),
    ...     opened_at_event=12_345, detected_at=datetime(2026, 1, 1, tzinfo=UTC),
    ... )
    >>> same = ("breast-cancer", "1", AlertKind.DATA, "mean radius", "page_hinkley_up", 12_345)
    >>> a.alert_id == Alert.make_id(*same)
    True
    >>> len(a.alert_id)
    32
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

__all__ = [
    "Alert",
    "AlertKind",
    "Driver",
    "Evidence",
    "OffsetRange",
    "Severity",
    "decode_alert",
    "encode_alert",
]


class AlertKind(StrEnum):
    """What drifted."""

    DATA = "data"
    """A feature's distribution (covariate drift)."""
    PREDICTION = "prediction"
    """The model's output distribution."""
    CONCEPT = "concept"
    """The relation between inputs and outcomes: the model's error."""
    TECHNICAL = "technical"
    """Dependencies, schema, missing or out-of-range values, latency, dead letters."""
    PERFORMANCE = "performance"
    """The model's estimated error, from its calibrated confidence, before any label arrives."""


class Severity(StrEnum):
    """How urgent: ``info`` < ``warning`` < ``critical``.

    >>> Severity.CRITICAL.rank > Severity.WARNING.rank > Severity.INFO.rank
    True
    """

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """0, 1, 2 for info, warning, critical: severities compare by it."""
        return ("info", "warning", "critical").index(self.value)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Driver(_Frozen):
    """A feature that likely explains an alert: its recent shift in one statistic, weighted by how much
    the model's output depends on it (its permutation importance in the package).

    Example:
        >>> Driver(feature="worst radius", statistic="mean", shift=1.4, importance=0.31, score=0.434).text()
        'worst radius +1.4 sd (importance 0.31)'
        >>> Driver(feature="mean texture", statistic="spread", shift=1.6, importance=0.12, score=0.06).text()
        'mean texture spread x1.6 (importance 0.12)'
    """

    feature: str
    statistic: str
    """What moved: ``mean`` (the shift is in reference standard deviations of the standardised
    stream) or ``spread`` (the shift is the ratio of the recent spread to the reference's)."""
    shift: float
    importance: float
    """The feature's share of the model's output sensitivity (0-1)."""
    score: float
    """The ranking key: the size of the shift times the importance."""

    def text(self) -> str:
        """How the alert's message names it."""
        moved = f"spread x{self.shift:.2g}" if self.statistic == "spread" else f"{self.shift:+.1f} sd"
        if self.statistic not in ("mean", "spread"):
            moved = f"{self.statistic} {self.shift:+.2g}"
        return f"{self.feature} {moved} (importance {self.importance:.2f})"


class Evidence(_Frozen):
    """The numbers behind an alert: reference versus the recent window.

    For data and prediction drift the means and spreads are of the reference-standardised stream
    (reference percentiles: 0.5 and ``1/sqrt(12)`` with no drift); ``shift_in_std`` is the recent
    mean's distance from the reference mean in reference standard deviations of the raw feature,
    where known. Other kinds fill what applies and may add named values in ``extra``.

    A data or prediction drift alert says in ``extra`` which statistic of its column moved:
    ``measure`` (``location``, ``spread``, ``tails`` or ``share``), ``reference_value`` and
    ``recent_value`` (the raw means for a location, the raw standard deviations for a spread, the
    shares for tails and a category's share), ``category`` for a share and ``spread_ratio`` (recent
    raw sd / reference sd) for a spread or tails; the means and spreads above are then of that
    statistic's stream.
    """

    reference_mean: float | None = None
    reference_std: float | None = None
    recent_mean: float | None = None
    recent_std: float | None = None
    shift_in_std: float | None = None
    statistic: float | None = None
    """The detector's test statistic when it fired."""
    window_events: int | None = None
    """Events in the recent window."""
    extra: dict[str, float | int | str] = Field(default_factory=dict)
    # Left out of the JSON when empty: alerts without drivers read as before.
    drivers: tuple[Driver, ...] = Field(default=(), exclude_if=lambda value: not value)
    """Prediction, performance and concept alerts: the features that likely explain them, most likely
    first."""


class OffsetRange(_Frozen):
    """Where the affected events were read: ``[start, end]`` offsets of one topic partition."""

    topic: str
    partition: int
    start: int
    end: int


class Alert(_Frozen):
    """One drift alert."""

    schema_version: Literal["1"] = "1"
    alert_id: str
    """Deterministic: see :meth:`make_id`."""
    model: str
    model_version: str
    kind: AlertKind
    detector: str
    """E.g. ``adwin``, ``page_hinkley_up``, ``dependency_versions``, ``unseen_fields``."""
    subject: str
    """The feature or metric that drifted (``mean radius``, ``prediction``, ``error``, ``onnxruntime``)."""
    severity: Severity
    message: str
    """One line a person understands."""
    evidence: Evidence = Field(default_factory=Evidence)
    opened_at_event: int | None = None
    """Index, in the worker's monitored stream, of the event at which the incident opened."""
    first_event_time: AwareDatetime | None = None
    """Event time of the first affected event, where known."""
    detected_at: AwareDatetime
    source: tuple[OffsetRange, ...] = ()
    """The topic partitions and offset ranges the drift was seen in."""

    @staticmethod
    def make_id(
        model: str, model_version: str, kind: AlertKind | str, subject: str, detector: str, opened_at: Any
    ) -> str:
        """The deterministic id: a SHA-256 prefix of the incident's identity."""
        text = "\x1f".join(str(p) for p in (model, model_version, str(kind), subject, detector, opened_at))
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    @classmethod
    def create(
        cls,
        *,
        model: str,
        model_version: str,
        kind: AlertKind,
        detector: str,
        subject: str,
        severity: Severity,
        message: str,
        detected_at: datetime,
        evidence: Evidence | None = None,
        opened_at_event: int | None = None,
        first_event_time: datetime | None = None,
        source: tuple[OffsetRange, ...] = (),
    ) -> Alert:
        """An alert whose id is derived from its identity fields."""
        return cls(
            alert_id=cls.make_id(model, model_version, kind, subject, detector, opened_at_event),
            model=model,
            model_version=model_version,
            kind=kind,
            detector=detector,
            subject=subject,
            severity=severity,
            message=message,
            evidence=evidence or Evidence(),
            opened_at_event=opened_at_event,
            first_event_time=first_event_time,
            detected_at=detected_at,
            source=source,
        )


def encode_alert(alert: Alert) -> bytes:
    """The alert's JSON, as published, written to InfluxDB's ``alert_id`` and POSTed to webhooks."""
    return alert.model_dump_json().encode()


def decode_alert(raw: bytes | str) -> Alert:
    """Parses and validates an alert record's value; raises ``ValueError`` (pydantic's
    ``ValidationError``) if it is not a valid alert."""
    return Alert.model_validate_json(raw)
