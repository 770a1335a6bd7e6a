"""Serving one batch of request records: decode -> validate -> group by model -> encode -> infer -> publish.

Most requests take the fast path of :mod:`agent.serving.wire`: decoded by their model's typed
decoder straight into a row of its matrix, their predictions serialised for the whole batch at
once. A payload that path does not take is validated with pydantic and encoded by the model's
:class:`~agent.models.encoding.FeatureEncoder`, as before, so that its dead letter names the same
reason in the same words.

:class:`RequestHandler` is plain Python: it takes consumed records and returns the messages to
publish (predictions and dead letters, plus whatever the observers, such as the drift monitor, add).
The Kafka loop (:mod:`agent.serving.loop`) and the REST endpoint (:mod:`agent.serving.web`) both call
it, so the stream and ``POST /predict`` validate and predict identically.

Nothing a single record carries can make it raise: every bad record becomes a dead letter naming the
reason, and the rest of the batch goes on.
"""

from __future__ import annotations

import logging
import operator
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import compress
from typing import Any, TypeVar, cast

import msgspec
import numpy as np
import numpy.typing as npt
import orjson
from pydantic import ValidationError

from agent.errors import DriftlineError, describe_validation_error
from agent.metrics import Metrics
from agent.models.encoding import EncodedBatch
from agent.models.registry import ModelRegistry, ServedModel
from agent.monitoring.batch import BatchObserver, DeadLetterInfo, ModelBatch, Observed, RecordLike
from agent.serving.messages import OutgoingMessage
from agent.serving.wire import (
    DecodedRequest,
    RequestDecoder,
    TypedRequests,
    parse_event_times,
    prediction_values,
)
from schemas.alert import encode_alert
from schemas.events import DeadLetterReason, Outcome, PredictionRequest
from schemas.incident import encode_incident

__all__ = ["Record", "RequestHandler", "ServingStats"]

log = logging.getLogger(__name__)

_PAYLOAD_PREVIEW = 1024

_E = TypeVar("_E", PredictionRequest, Outcome)

_topic = operator.attrgetter("topic")


@dataclass(frozen=True, slots=True)
class Record:
    """A record built by hand (REST items, tests), shaped like a consumed Kafka record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class ServingStats:
    """Counts since start and batch latencies since the last :meth:`take_latencies`, for the metrics
    points written to InfluxDB (Prometheus has its own histograms)."""

    predictions: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    _latencies_ms: list[float] = field(default_factory=list)

    def record_batch(self, predictions: int, latency_ms: float) -> None:
        self.predictions += predictions
        if len(self._latencies_ms) < 100_000:  # bounded if nobody drains it
            self._latencies_ms.append(latency_ms)

    def take_latencies(self) -> list[float]:
        taken, self._latencies_ms = self._latencies_ms, []
        return taken


class RequestHandler:
    """Turns consumed request records into prediction and dead-letter messages.

    Parameters:
        registry: The models to serve.
        predictions_topic / dead_letters_topic: Where results go.
        outcomes_topic: Records from this topic are outcomes, handed to the observers' join.
        max_event_bytes: Larger payloads are dead-lettered unparsed.
        metrics: Counters to update (once per batch).
        observers: Called with every model batch and the batch's dead letters.
        alerts_topic: Where the observers' alerts are published.
        changelog_topic: The outcome join's topic (:mod:`agent.monitoring.join`): the observers'
            records for it are published there, and records consumed from it handed to their
            ``observe_join`` (``None``: the join stays in memory, outcomes are joined as they come).
        stats_topic: The fleet's statistics topic: the observers' statistics records are published
            there, keyed by model (``None``: the observers keep none).
    """

    def __init__(
        self,
        registry: ModelRegistry,
        *,
        predictions_topic: str,
        dead_letters_topic: str,
        max_event_bytes: int,
        metrics: Metrics | None = None,
        observers: Sequence[BatchObserver] = (),
        outcomes_topic: str | None = None,
        alerts_topic: str = "driftline-alerts",
        changelog_topic: str | None = None,
        stats_topic: str | None = None,
    ) -> None:
        self.registry = registry
        self.alerts_topic = alerts_topic
        self.changelog_topic = changelog_topic
        self.stats_topic = stats_topic
        self.outcomes_topic = outcomes_topic
        self.predictions_topic = predictions_topic
        self.dead_letters_topic = dead_letters_topic
        self.max_event_bytes = max_event_bytes
        self.metrics = metrics or Metrics()
        self.stats = ServingStats()
        self.observers = list(observers)
        self.wire = RequestDecoder()
        self._late: list[DeadLetterInfo] = []
        """Requests the fast path took that pydantic refused once their group was served."""

    def handle(self, records: Sequence[RecordLike], *, observe: bool = True) -> list[OutgoingMessage]:
        """Predictions and dead letters for ``records``; never raises for what a record carries.

        ``observe=False`` skips the observers (the drift monitor): REST answers are not monitored.
        """
        started = time.perf_counter()
        received_at = time.time()
        out: list[OutgoingMessage] = []
        dead: list[DeadLetterInfo] = []
        groups: dict[ServedModel, tuple[list[RecordLike], list[DecodedRequest]]] = {}
        outcomes: list[tuple[RecordLike, Outcome]] = []
        joined: list[RecordLike] = []
        # A batch mostly asks one model: resolve it again only when the name or version changes.
        asked: tuple[str, str | None] | None = None
        group: tuple[list[RecordLike], list[DecodedRequest]] | None = None
        served: ServedModel | None = None
        for record in records:
            if record.topic == self.changelog_topic:
                joined.append(record)  # written by driftline: predictions and outcomes to join
                continue
            if record.topic == self.outcomes_topic:
                outcome = self._decode(record, Outcome, dead)
                if outcome is not None:
                    outcomes.append((record, outcome))
                continue
            request = self._decode_request(record, dead)
            if request is None:
                continue
            if asked != (request.model, request.model_version):
                asked = (request.model, request.model_version)
                served = self.registry.resolve(request.model, request.model_version)
                group = None if served is None else groups.get(served)
                if served is not None:
                    self.wire.learn(served)
            if group is None:
                if not isinstance(request, PredictionRequest):
                    # Decoded fast, its event time not checked yet. A request that opens a group or
                    # names an unknown model is validated in full first, so that groups open, and
                    # dead letters name their reason, as pydantic's checks order them.
                    request = self._decode(record, PredictionRequest, dead)
                    if request is None:
                        continue
                if served is None:
                    detail = self.registry.why_not(request.model, request.model_version)
                    dead.append(DeadLetterInfo(record, DeadLetterReason.UNKNOWN_MODEL, detail, request.model))
                    continue
                group = groups[served] = ([], [])
            group[0].append(record)
            group[1].append(request)

        observers = self.observers if observe else []
        decoded, self._late = len(dead), []
        for served, (group_records, requests) in groups.items():
            self._serve(served, group_records, requests, received_at, out, dead, observers)
        if self._late:
            # Where pydantic would have refused them: among the dead letters of the decoding, in
            # record order, before those of the encoding and inference.
            position = {id(record): i for i, record in enumerate(records)}
            dead[:decoded] = sorted(dead[:decoded] + self._late, key=lambda d: position[id(d.record)])

        if outcomes:
            for observer in observers:
                self._emit(observer.observe_outcomes(outcomes), out)
        if joined:
            for observer in observers:
                self._emit(observer.observe_join(joined), out)
        if dead:
            out.extend(self._dead_letter_messages(dead))
            for observer in observers:
                self._emit(observer.observe_dead_letters(dead), out)
        m = self.metrics
        # Per record's topic: a batch may mix requests and outcomes (it was counted under its first
        # record's topic: 40,392 requests and 39,608 outcomes on a replay of 40,000 of each).
        for topic, n in Counter(map(_topic, records)).items():
            m.events_in.labels(topic=topic).inc(n)
        m.batch_size.observe(len(records))
        m.batch_seconds.observe(time.perf_counter() - started)
        return out

    def idle(self) -> list[OutgoingMessage]:
        """What the observers publish while no record comes (:meth:`BatchObserver.observe_idle`):
        the serving loop calls it when a poll returns nothing."""
        out: list[OutgoingMessage] = []
        for observer in self.observers:
            self._emit(observer.observe_idle(), out)
        return out

    def _decode_request(self, record: RecordLike, dead: list[DeadLetterInfo]) -> DecodedRequest | None:
        """The record's request, by its model's typed decoder if it takes it, else by pydantic."""
        value = record.value
        if value and len(value) <= self.max_event_bytes:
            request: DecodedRequest | None = self.wire.decode(value)
            if request is not None:
                return request
        return self._decode(record, PredictionRequest, dead)

    def _decode(self, record: RecordLike, model: type[_E], dead: list[DeadLetterInfo]) -> _E | None:
        """The record's value as ``model`` (a request or an outcome), or a dead letter saying why not."""
        value = record.value
        if value is None or not value:
            dead.append(DeadLetterInfo(record, DeadLetterReason.DECODE_ERROR, "empty message value"))
            return None
        if len(value) > self.max_event_bytes:
            dead.append(
                DeadLetterInfo(
                    record,
                    DeadLetterReason.TOO_LARGE,
                    f"payload is {len(value)} bytes; the limit is {self.max_event_bytes} "
                    "(DRIFTLINE_SERVING__MAX_EVENT_BYTES)",
                )
            )
            return None
        try:
            return model.model_validate_json(value)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            if first["type"] in ("json_invalid", "json_type"):
                reason = DeadLetterReason.DECODE_ERROR
                detail = f"not a JSON object: {first['msg']}"
            else:
                reason = DeadLetterReason.INVALID
                detail = describe_validation_error(exc)
            dead.append(DeadLetterInfo(record, reason, detail))
            return None

    def _serve(
        self,
        served: ServedModel,
        records: list[RecordLike],
        requests: list[DecodedRequest],
        received_at: float,
        out: list[OutgoingMessage],
        dead: list[DeadLetterInfo],
        observers: Sequence[BatchObserver],
    ) -> None:
        name, version = served.name, served.version
        records, requests, encoded = self._encode(served, records, requests, dead)
        if not encoded.accepted:
            return
        started = time.perf_counter()
        try:
            predictions = served.model.predict(encoded.matrix)
        except DriftlineError as exc:
            # The whole model batch fails together; each request still gets its dead letter.
            log.error("inference failed for %s/%s: %s", name, version, exc)
            for record in records:
                dead.append(
                    DeadLetterInfo(record, DeadLetterReason.INVALID, f"inference failed: {exc}", name)
                )
            return
        took = time.perf_counter() - started
        m = self.metrics
        m.inference_seconds.labels(model=name).observe(took)
        m.model_batch_size.labels(model=name).observe(len(records))
        m.predictions.labels(model=name, version=version).inc(len(records))

        now = datetime.now(UTC)
        latency_ms = round((time.time() - received_at) * 1000.0, 3)
        self.stats.record_batch(len(records), latency_ms)
        topic = self.predictions_topic
        common: dict[str, Any] = {
            "schema_version": "1",
            "model": name,
            "model_version": version,
            "predicted_at": now,
            "latency_ms": latency_ms,
        }
        # The fields every prediction of the batch shares are serialised once: each message is that
        # object's members followed by its own (``{"schema_version":..,`` + ``"request_id":..}``).
        head = orjson.dumps(common)[:-1] + b","
        keys, values = prediction_values(
            head,
            [r.request_id for r in requests],
            [r.event_time for r in requests],
            predictions,
            served.class_keys or (),
        )
        out.extend(
            OutgoingMessage(topic, key, value, record.partition)
            for key, value, record in zip(keys, values, records, strict=True)
        )

        if observers:
            batch = ModelBatch(served, records, requests, encoded, predictions, received_at, took)
            for observer in observers:
                self._emit(observer.observe(batch), out)

    def _encode(
        self,
        served: ServedModel,
        records: list[RecordLike],
        requests: list[DecodedRequest],
        dead: list[DeadLetterInfo],
    ) -> tuple[list[RecordLike], list[DecodedRequest], EncodedBatch]:
        """The model's matrix of the group's requests, with their records and requests cut to its rows.

        Requests the model's typed decoder took go straight into the matrix. The others, and those
        whose event time or values the fast path leaves to pydantic, are validated by pydantic and
        encoded by the model's :class:`~agent.models.encoding.FeatureEncoder`, which dead-letters
        what it cannot encode.
        """
        typed = self.wire.typed(served)
        wire_type: object = typed.request_type if typed is not None else None
        fast = [i for i, request in enumerate(requests) if type(request) is wire_type]
        rows = None
        if typed is not None and fast:
            fast, rows = self._fast_rows(typed, fast, requests)
        careful: list[int] = []
        if len(fast) < len(requests):
            taken = set(fast)
            refused = False
            for i, request in enumerate(requests):
                if i in taken:
                    continue
                if not isinstance(request, PredictionRequest):
                    validated = self._decode(records[i], PredictionRequest, self._late)
                    if validated is None:
                        refused = True
                        continue
                    requests[i] = validated
                careful.append(i)
            if refused:
                # The group is what validation let through, as if pydantic had refused these first.
                kept = sorted(fast + careful)
                rank = {position: i for i, position in enumerate(kept)}
                records = [records[i] for i in kept]
                requests = [requests[i] for i in kept]
                fast = [rank[i] for i in fast]
                careful = [rank[i] for i in careful]
        strict = [cast(PredictionRequest, requests[i]).features for i in careful]
        encoded = served.encoder.encode(strict)
        if typed is not None and rows is not None:
            encoded = typed.columns.merge(rows, fast, encoded, careful)
        else:
            encoded.accepted = [careful[i] for i in encoded.accepted]
            encoded.rejected = [(careful[i], why) for i, why in encoded.rejected]
        for index, rejection in encoded.rejected:
            dead.append(
                DeadLetterInfo(
                    records[index], rejection.reason, rejection.detail, served.name, rejection.feature
                )
            )
        if len(encoded.accepted) < len(records):
            records = [records[i] for i in encoded.accepted]
            requests = [requests[i] for i in encoded.accepted]
        return records, requests, encoded

    @staticmethod
    def _fast_rows(
        typed: TypedRequests, fast: list[int], requests: list[DecodedRequest]
    ) -> tuple[list[int], npt.NDArray[np.float32]]:
        """The positions and the matrix of the typed requests at ``fast`` whose event time and values
        the fast path takes; each of those gets its event time as a datetime."""
        wired: list[Any] = [requests[i] for i in fast]
        texts = [request.event_time for request in wired]
        times: list[datetime | None]
        if msgspec.UNSET in texts:
            now = datetime.now(UTC)  # pydantic's default: the time of validation
            parsed = iter(parse_event_times([t for t in texts if t is not msgspec.UNSET]))
            times = [now if t is msgspec.UNSET else next(parsed) for t in texts]
        else:
            times = parse_event_times(texts)
        if None in times:  # left to pydantic: the careful way, whatever the values
            kept = [at is not None for at in times]
            fast = list(compress(fast, kept))
            wired = list(compress(wired, kept))
            times = list(compress(times, kept))
        for request, at in zip(wired, times, strict=True):
            request.event_time = at
        matrix, valid = typed.columns.matrix([request.features for request in wired])
        if not valid.all():
            fast = list(compress(fast, valid.tolist()))
        return fast, matrix

    def _emit(self, observed: Observed, out: list[OutgoingMessage]) -> None:
        # The observers' plain values become messages published with the batch's predictions, so
        # they are acknowledged before the batch's offsets are committed.
        for alert in observed.alerts:
            out.append(OutgoingMessage(self.alerts_topic, alert.alert_id.encode(), encode_alert(alert)))
        for report in observed.incidents:
            # Not the opening alert's id (which it shares): a consumer keying by alert id tells them
            # apart, and every notification of one incident lands on one partition, in order.
            key = f"incident/{report.incident_id}".encode()
            out.append(OutgoingMessage(self.alerts_topic, key, encode_incident(report)))
        topic = self.changelog_topic
        if topic is not None:
            out.extend(OutgoingMessage(topic, r.key, r.value, r.partition) for r in observed.changelog)
        if self.stats_topic is not None:
            # Keyed by model: one partition, hence one monitor, has all of a model's blocks.
            out.extend(OutgoingMessage(self.stats_topic, key, value) for key, value in observed.stats)

    def _dead_letter_messages(self, dead: list[DeadLetterInfo]) -> Iterable[OutgoingMessage]:
        now = datetime.now(UTC)
        counts: dict[tuple[str, str], int] = {}
        refused = 0
        for d in dead:
            record = d.record
            value = record.value or b""
            body = {
                "schema_version": "1",
                "source_topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "key": record.key.decode("utf-8", "replace") if record.key is not None else None,
                "payload": value[:_PAYLOAD_PREVIEW].decode("utf-8", "replace"),
                "payload_size": len(value),
                "reason": d.reason.value,
                "detail": d.detail,
                "time": now,
            }
            model = d.model or ""
            if model and self.registry.resolve(model) is None:
                # A name no model has: one label per junk name made /metrics grow without bound
                # (20,000 such requests: 3.7 MB). The dead letter itself still names it.
                model = ""
                refused += 1
            label = (d.reason.value, model)
            counts[label] = counts.get(label, 0) + 1
            yield OutgoingMessage(self.dead_letters_topic, record.key, orjson.dumps(body), None)
        if refused:
            self.metrics.names_refused.labels(what="model").inc(refused)
        for (reason, model), n in counts.items():
            self.metrics.dead_letters.labels(reason=reason, model=model).inc(n)
            self.stats.dead_letters[reason] = self.stats.dead_letters.get(reason, 0) + n
