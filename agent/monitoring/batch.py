"""What monitoring is given and what it gives back: the contract between serving and monitoring.

The request handler (:mod:`agent.serving.handler`) hands every :class:`BatchObserver` each model batch,
each batch's dead letters and its outcomes; an observer answers with an :class:`Observed`: plain values
(alerts, and the outcome join's changelog records), which the serving layer turns into Kafka messages.
Monitoring knows no transport: no topic, no producer, no message type.

May import: :mod:`agent.models`, :mod:`schemas`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple, Protocol

from agent.models.encoding import EncodedBatch
from agent.models.package import Predictions
from agent.models.registry import ServedModel
from schemas.alert import Alert
from schemas.events import DeadLetterReason, Outcome
from schemas.incident import IncidentReport

__all__ = [
    "BatchObserver",
    "ChangelogRecord",
    "DeadLetterInfo",
    "ModelBatch",
    "Observed",
    "RecordLike",
    "RequestLike",
]


class RecordLike(Protocol):
    """The parts of a consumed Kafka record the handler reads (aiokafka's ``ConsumerRecord`` fits)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


class RequestLike(Protocol):
    """The parts of an accepted request monitoring reads (a ``PredictionRequest`` fits; the handler's
    fast path hands over its own decoded structs)."""

    @property
    def request_id(self) -> str: ...
    @property
    def event_time(self) -> datetime: ...


@dataclass(frozen=True, slots=True)
class DeadLetterInfo:
    """A rejected record and why, before it is serialised."""

    record: RecordLike
    reason: DeadLetterReason
    detail: str
    model: str | None = None
    feature: str | None = None


@dataclass(slots=True)
class ModelBatch:
    """The accepted requests of one model in one batch, with their predictions (for observers)."""

    served: ServedModel
    records: list[RecordLike]
    requests: Sequence[RequestLike]
    encoded: EncodedBatch
    predictions: Predictions
    received_at: float
    inference_seconds: float
    """Duration of the batch's ONNX Runtime call."""


class ChangelogRecord(NamedTuple):
    """A record for the outcome join's topic (:mod:`agent.monitoring.join`): a batch of predictions, or
    an outcome's copy, for the join partition of their request ids."""

    key: bytes
    value: bytes | None
    partition: int


@dataclass(slots=True)
class Observed:
    """What an observer asks the serving layer to publish with the batch's predictions."""

    alerts: list[Alert] = field(default_factory=list)
    """Alerts that passed the incident gate, for the alerts topic."""
    changelog: list[ChangelogRecord] = field(default_factory=list)
    """Records for the outcome join's topic."""
    incidents: list[IncidentReport] = field(default_factory=list)
    """Notifications of incidents across kinds (opened, updated, resolved), for the alerts topic."""
    stats: list[tuple[bytes, bytes]] = field(default_factory=list)
    """A fleet worker's statistics records, ``(key, value)``, for the statistics topic
    (:mod:`agent.monitoring.fleet`)."""

    def extend(self, other: Observed) -> None:
        self.alerts.extend(other.alerts)
        self.changelog.extend(other.changelog)
        self.incidents.extend(other.incidents)
        self.stats.extend(other.stats)


class BatchObserver(Protocol):
    """Sees every model batch, every dead letter and every outcome; answers with what to publish."""

    def observe(self, batch: ModelBatch) -> Observed: ...

    def observe_dead_letters(self, dead: Sequence[DeadLetterInfo]) -> Observed: ...

    def observe_outcomes(self, outcomes: Sequence[tuple[RecordLike, Outcome]]) -> Observed: ...

    def observe_join(self, records: Sequence[RecordLike]) -> Observed: ...

    def observe_idle(self) -> Observed:
        """Called while no record comes (every ~100 ms of an idle serving loop): what time alone
        settles, such as outcomes past the join's grace, is published then, not at the next batch."""
        ...
