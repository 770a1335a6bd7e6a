"""The stream generator: rows from a source, a drift schedule applied, messages out, no Kafka.

:class:`EventStream` turns a row source (an example model's dataset, a replayed CSV) and a
:class:`~producers.schedule.Scenario` into :class:`Message` items: one message on the requests topic
per event (a valid ``PredictionRequest``, or a broken or garbage one where the schedule says so) and,
for a share of the valid ones, an ``Outcome`` right after it. Values are the JSON bytes of the
``schemas.events`` models, keyed by request id (UTF-8).

Everything random comes from one seed, split into independent streams (rows, outcome choice, one per
scheduled drift) so that the stream is byte-identical for the same arguments, and adding a drift to a
schedule leaves the rows it draws unchanged: a ``covariate`` stream is the ``calm`` stream of the same
seed with one feature shifted. Rows are drawn in fixed chunks, so a shorter stream is a prefix of a
longer one.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt
import orjson

from producers.errors import ProducerError
from producers.schedule import Scenario, ScheduledDrift

__all__ = [
    "DEFAULT_START_TIME",
    "EventStream",
    "Label",
    "Message",
    "MessageKind",
    "RowSource",
    "StreamStats",
    "next_class",
    "to_labels",
]

Label = int | float | str
"""A class label (classifiers) or a target value (regressors)."""

DEFAULT_START_TIME = datetime(2026, 1, 1, tzinfo=UTC)
"""Event time of the first event unless told otherwise; fixed, so that a run can be repeated exactly."""

# Rows and random decisions are drawn this many events at a time, whatever the stream's length, which
# is what makes a shorter stream a prefix of a longer one.
_CHUNK = 1024

_SCHEMA_BREAKS = ("renamed", "missing", "wrong_type", "missing_field")
_REQUIRED_FIELDS = ("request_id", "model", "features")


class MessageKind(StrEnum):
    """What a generated message is."""

    REQUEST = "request"
    """A valid ``PredictionRequest`` (requests topic)."""
    OUTCOME = "outcome"
    """An ``Outcome`` (outcomes topic)."""
    BROKEN = "broken"
    """JSON that breaks the request contract: a renamed or missing feature or field, a wrong type."""
    GARBAGE = "garbage"
    """Not JSON at all: random bytes or a truncated request."""

    @property
    def topic(self) -> Literal["requests", "outcomes"]:
        """Which topic the message goes to."""
        return "outcomes" if self is MessageKind.OUTCOME else "requests"


class Message(NamedTuple):
    """One message to publish: key and value bytes, and what it is (which also names its topic)."""

    key: bytes
    value: bytes
    kind: MessageKind


@dataclass
class StreamStats:
    """Counts of one pass over an :class:`EventStream`, updated as messages are yielded.

    ``affected[i]`` counts the events that drift ``i`` of the schedule changed: shifted rows
    (covariate), altered outcomes (concept), broken or garbage messages.
    """

    requests: int = 0
    outcomes: int = 0
    broken: int = 0
    garbage: int = 0
    affected: list[int] = field(default_factory=list)

    @property
    def events(self) -> int:
        """Messages on the requests topic: valid, broken and garbage."""
        return self.requests + self.broken + self.garbage

    @property
    def bad(self) -> int:
        """Broken and garbage messages."""
        return self.broken + self.garbage

    @property
    def drifts_applied(self) -> int:
        """Scheduled drifts that changed at least one event."""
        return sum(1 for n in self.affected if n)


class RowSource(Protocol):
    """Where an :class:`EventStream` takes its rows from."""

    @property
    def model(self) -> str:
        """Model name for the requests."""
        ...

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Feature names, in the order of a row's values."""
        ...

    @property
    def reference_std(self) -> Mapping[str, float]:
        """Reference standard deviation of each feature a covariate drift may shift."""
        ...

    @property
    def has_labels(self) -> bool:
        """Whether rows come with labels, so that outcomes can be sent."""
        ...

    @property
    def lenient(self) -> frozenset[str]:
        """Features the model lets through when missing (its missing-value policy allows or imputes
        them): a request that lacks one is no broken request."""
        ...

    @property
    def outcome_field(self) -> Literal["label", "value"]:
        """The ``Outcome`` field a label goes to."""
        ...

    def take(self, start: int, n: int, rng: np.random.Generator) -> tuple[list[list[Any]], list[Any]]:
        """Rows of events ``start .. start + n - 1`` (fresh lists the stream may change), and their
        labels (``None`` where unknown)."""
        ...

    def alter_label(self, label: Label) -> Label:
        """The label under a changed labelling rule (concept drift)."""
        ...


def to_labels(values: npt.NDArray[Any]) -> list[Label]:
    """Python labels of an array: ints stay ints, floats floats, anything else a string."""
    if values.dtype.kind in "iub":
        return [int(v) for v in values.tolist()]
    if values.dtype.kind == "f":
        return [float(v) for v in values.tolist()]
    return [str(v) for v in values.tolist()]


def next_class(classes: Sequence[Label], label: Label) -> Label:
    """The class after ``label`` in ``classes``, cyclically: a flip for a binary model.

    Example:
        >>> next_class((0, 1), 1), next_class(("a", "b", "c"), "b")
        (0, 'c')
    """
    return classes[(classes.index(label) + 1) % len(classes)]


@dataclass(frozen=True)
class _Active:
    """A scheduled drift prepared for the stream: its index, position and random streams."""

    index: int
    drift: ScheduledDrift
    column: int
    std: float
    uniform: np.random.Generator
    detail: random.Random


class EventStream:
    """A seeded, scheduled stream of requests and outcomes, as :class:`Message` items.

    Iterating yields the whole stream; iterating again yields the same bytes. :attr:`stats` counts
    the latest pass.

    Parameters:
        source: Where rows come from (:class:`~producers.datasets.Dataset`, a replayed CSV).
        scenario: The drift schedule; checked against the source's features.
        seed: Seeds every random choice.
        count: Events (messages on the requests topic); ``scenario.count`` if ``None``.
        outcome_share: Share of valid requests followed by their outcome, in ``[0, 1]``.
        outcome_delay_s: How much later than its request an outcome's ``event_time`` is (the
            publisher also holds it back that long).
        run_id: Request ids are ``f"{run_id}-{index}"``; defaults to ``f"{scenario.name}-s{seed}"``.
            Give each run against the same agent its own, since outcomes join on the id.
        model_name: The requests' ``model``; the source's model name if ``None``.
        model_version: The requests' ``model_version``; left out (the newest served) if ``None``.
        start_time: Event time of event 0.
        event_interval_s: Event time between consecutive events.

    Example:
        >>> from producers.datasets import load_dataset
        >>> from producers.schedule import ScheduledDrift
        >>> drift = ScheduledDrift(kind="garbage", start=2, size=1.0)
        >>> stream = EventStream(load_dataset("breast-cancer"), Scenario(name="doc", drifts=[drift]),
        ...                      seed=7, count=4, outcome_share=0.5)
        >>> [(m.key.decode(), m.kind.value) for m in stream]  # doctest: +NORMALIZE_WHITESPACE
        [('doc-s7-0', 'request'), ('doc-s7-0', 'outcome'), ('doc-s7-1', 'request'),
         ('doc-s7-1', 'outcome'), ('doc-s7-2', 'garbage'), ('doc-s7-3', 'garbage')]
        >>> stream.stats.requests, stream.stats.outcomes, stream.stats.garbage, stream.stats.affected
        (2, 2, 2, [2])
    """

    def __init__(
        self,
        source: RowSource,
        scenario: Scenario,
        *,
        seed: int = 0,
        count: int | None = None,
        outcome_share: float = 1.0,
        outcome_delay_s: float = 0.0,
        run_id: str | None = None,
        model_name: str | None = None,
        model_version: str | None = None,
        start_time: datetime = DEFAULT_START_TIME,
        event_interval_s: float = 0.01,
    ) -> None:
        if count is not None and count < 0:
            raise ProducerError(f"count must be 0 or more, got {count}")
        if not 0.0 <= outcome_share <= 1.0:
            raise ProducerError(f"outcome share must be in [0, 1], got {outcome_share}")
        if outcome_delay_s < 0 or event_interval_s < 0:
            raise ProducerError("the outcome delay and the event interval cannot be negative")
        if start_time.tzinfo is None:
            raise ProducerError("start_time must be timezone-aware")
        if seed < 0:
            raise ProducerError(f"seed must be 0 or more, got {seed}")
        scenario.check(
            source.feature_names, shiftable=source.reference_std.keys(), has_labels=source.has_labels
        )
        self.source = source
        self.scenario = scenario
        self.seed = seed
        self.count = scenario.count if count is None else count
        self.outcome_share = outcome_share
        self.outcome_delay = timedelta(seconds=outcome_delay_s)
        self.run_id = run_id if run_id is not None else f"{scenario.name}-s{seed}"
        self.model_name = model_name if model_name is not None else source.model
        self.model_version = model_version
        self.start_time = start_time
        # Whole microseconds, so an event's time is exact integer arithmetic, not a float sum.
        self.event_interval = timedelta(microseconds=round(event_interval_s * 1e6))
        self.stats = StreamStats(affected=[0] * len(scenario.drifts))

    def table(self) -> str:
        """The schedule as a text table, for this stream's length."""
        return self.scenario.table(self.count)

    def __iter__(self) -> Iterator[Message]:
        stats = self.stats = StreamStats(affected=[0] * len(self.scenario.drifts))
        source = self.source
        names = source.feature_names
        column = {name: j for j, name in enumerate(names)}
        # Child i of a SeedSequence depends only on the seed and i: 0 rows, 1 outcome choice, 2 + k
        # drift k. So a drift added to a schedule does not change the rows or the other drifts.
        children = np.random.SeedSequence(self.seed).spawn(2 + len(self.scenario.drifts))
        rows_rng = np.random.default_rng(children[0])
        outcome_rng = np.random.default_rng(children[1])
        active = [
            _Active(
                index=k,
                drift=d,
                column=column.get(d.feature, -1) if d.feature is not None else -1,
                std=source.reference_std.get(d.feature, 0.0) if d.feature is not None else 0.0,
                uniform=np.random.default_rng(children[2 + k]),
                detail=random.Random(int(children[2 + k].generate_state(1, np.uint64)[0])),
            )
            for k, d in enumerate(self.scenario.drifts)
        ]
        dumps = orjson.dumps
        options = orjson.OPT_UTC_Z
        prefix = f"{self.run_id}-"
        model = self.model_name
        version = self.model_version
        labelled = source.has_labels and self.outcome_share > 0
        outcome_field = source.outcome_field
        start, step, delay = self.start_time, self.event_interval, self.outcome_delay

        for lo in range(0, self.count, _CHUNK):
            n = min(_CHUNK, self.count - lo)
            # Always a whole chunk of rows and draws, used or not (see _CHUNK).
            rows, labels = source.take(lo, _CHUNK, rows_rng)
            wants_outcome = (outcome_rng.random(_CHUNK) < self.outcome_share).tolist()
            shifts: list[tuple[_Active, list[float]]] = []
            concept: list[tuple[_Active, list[bool]]] = []
            altered = np.zeros(_CHUNK, dtype=bool)
            # The drift that spoils each event's request, if any: garbage wins over breakage, and
            # an earlier drift of the schedule over a later one of the same kind.
            bad_at: list[_Active | None] = [None] * _CHUNK
            for a in sorted(active, key=lambda a: (a.drift.kind != "schema", -a.index)):
                level = a.drift.intensities(lo, lo + _CHUNK)
                u = a.uniform.random(_CHUNK)
                if a.drift.kind == "covariate":
                    shifts.append((a, (level * (a.drift.size * a.std)).tolist()))
                    continue
                fired = u < level * a.drift.size
                if a.drift.kind == "concept":
                    concept.append((a, fired.tolist()))
                    altered |= fired
                else:
                    for k in np.flatnonzero(fired).tolist():
                        bad_at[k] = a
            shifts.sort(key=lambda item: item[0].index)
            concept.sort(key=lambda item: item[0].index)
            altered_at = altered.tolist()

            for k in range(n):
                i = lo + k
                row = rows[k]
                for a, by_event in shifts:
                    shift = by_event[k]
                    if shift:
                        value = row[a.column]
                        # Only numbers shift; a replayed string or missing value stays what it is.
                        if type(value) is float or type(value) is int:
                            row[a.column] = value + shift
                            stats.affected[a.index] += 1
                request_id = f"{prefix}{i}"
                key = request_id.encode()
                event_time = start + step * i
                body: dict[str, Any] = {
                    "schema_version": "1",
                    "request_id": request_id,
                    "model": model,
                    "event_time": event_time,
                    "features": dict(zip(names, row, strict=True)),
                }
                if version is not None:
                    body["model_version"] = version

                bad = bad_at[k]
                if bad is not None:
                    stats.affected[bad.index] += 1
                    if bad.drift.kind == "garbage":
                        stats.garbage += 1
                        payload = _garbage(dumps(body, option=options), bad.detail)
                        yield Message(key, payload, MessageKind.GARBAGE)
                    else:
                        _break(body, names, bad.drift.feature, bad.detail, source.lenient)
                        stats.broken += 1
                        yield Message(key, dumps(body, option=options), MessageKind.BROKEN)
                    continue
                stats.requests += 1
                yield Message(key, dumps(body, option=options), MessageKind.REQUEST)

                label = labels[k]
                if not (labelled and wants_outcome[k]) or label is None:
                    continue
                if altered_at[k]:
                    # One alteration however many concept drifts fire: two flips would cancel.
                    label = source.alter_label(label)
                    for a, fired_at in concept:
                        if fired_at[k]:
                            stats.affected[a.index] += 1
                outcome = {
                    "schema_version": "1",
                    "request_id": request_id,
                    "model": model,
                    outcome_field: label,
                    "event_time": event_time + delay,
                }
                stats.outcomes += 1
                yield Message(key, dumps(outcome, option=options), MessageKind.OUTCOME)


def _garbage(payload: bytes, rnd: random.Random) -> bytes:
    if rnd.random() < 0.5:
        return rnd.randbytes(rnd.randint(1, 64))
    # Any proper prefix of a JSON object is invalid JSON: its closing brace is missing.
    return payload[: rnd.randint(1, len(payload) - 1)]


def _break(
    body: dict[str, Any],
    names: Sequence[str],
    feature: str | None,
    rnd: random.Random,
    lenient: frozenset[str] = frozenset(),
) -> None:
    how = rnd.choice(_SCHEMA_BREAKS)
    if how == "missing_field":
        del body[rnd.choice(_REQUIRED_FIELDS)]
        return
    name = feature if feature is not None else rnd.choice(names)
    if name in lenient and how in ("renamed", "missing"):
        # The model takes this feature missing (and an unknown field is counted, not refused): only
        # a wrong type breaks the request. No extra draw: other models' streams stay as they were.
        how = "wrong_type"
    features = body["features"]
    if how == "renamed":
        # How upstream renames tend to look: a changed separator or a version suffix.
        renamed = name.replace(" ", "_") if " " in name else f"{name}_v2"
        features[renamed] = features.pop(name)
    elif how == "missing":
        del features[name]
    else:
        value = features[name]
        features[name] = 1 if isinstance(value, str) else ("" if value is None else str(value))
