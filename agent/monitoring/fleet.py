"""Fleet monitoring: the statistics a worker ships to its model's one monitor, in a declared format.

Every worker of a consumer group serves a share of the partitions. Were each to run its own
detectors, one drift would raise one alert per worker, each worker's detectors would see only its
share of the stream, and a fleet of ``N`` would raise ``N`` times one model's false alarms. So a
fleet worker only *summarises*: its monitors' column sets cut their standardised streams into
blocks (:meth:`~agent.monitoring.columns.ColumnSet.ship`), as they always did, and the completed
blocks' exact integer sums leave as one :class:`ModelStats` per batch that completed any, keyed by
model. One monitor per model, wherever the model's statistics partition is assigned, runs the
detectors over the blocks of every worker (:meth:`~agent.monitoring.columns.ColumnSet.consume`),
decides the alerts and owns the incidents (:meth:`~agent.monitoring.observer.DriftObserver.observe_stats`).

The record is bytes in a declared layout, never pickle::

    b"DLS1"                       magic and version
    uint32 little-endian          length of the header
    header                        UTF-8 JSON: model, version, worker, sources, event_time, parts,
                                  rates (the technical rates' counts, where any), findings (the
                                  package's dependency findings, in a worker's first record)
    body                          per part, in the header's order: counts (int32), sums (int64),
                                  sums of squares (int64), each blocks x streams; raw sums and raw
                                  sums of squares (float64), each blocks x raw; row-major, little-endian

A part names the column set it summarises (``features``, ``reconstruction``, ``estimated``,
``errors``) with its shape, the missing and unseen values counted since the last record, and the
offset ranges of the records that fed it (``errors``: outcomes; the others: requests), so that an
alert's source names the records of its own kind. ``rates`` (a list of
:class:`~agent.monitoring.technical.RateCounts` as JSON, each over a batch or a few) are the counts
behind the model's technical rates since the worker's last record: the monitor's rate windows count
every worker's requests. A worker's own counts (its requests for models nobody serves, among all its
requests) travel the same way, in a record without parts keyed :data:`WORKER_STATS`.

May import: :mod:`agent.monitoring` (its other modules). No transport.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import orjson

from agent.monitoring.batch import RecordLike
from agent.monitoring.blocks import Blocks
from agent.monitoring.technical import RateCounts
from agent.monitoring.transforms import IntArray

__all__ = [
    "MAGIC",
    "WORKER_STATS",
    "Finding",
    "ModelStats",
    "SourceRanges",
    "StatsPart",
    "decode_stats",
    "encode_stats",
]

Finding = tuple[str, str, str | None, str]
"""A dependency finding as a record carries it: package, built with, installed (``None``: not
installed), level (:class:`~agent.models.versions.DependencyFinding`'s fields)."""

MAGIC = b"DLS1"
_LENGTH = struct.Struct("<I")
PARTS = ("features", "reconstruction", "estimated", "errors")
"""The column sets of a model's monitor that a worker ships, by name."""
WORKER_STATS = "*"
"""The model (and version) of a record that carries a worker's own rates rather than a model's: its
requests for models nobody serves, among all its requests. One monitor, wherever this key's
partition is, judges them for the fleet, as a model's monitor judges the model's."""


@dataclass(frozen=True, slots=True)
class StatsPart:
    """The blocks one column set of a worker completed, and what it counted beside them."""

    name: str
    blocks: Blocks
    missing: IntArray | None = None
    """Missing values per column since the last record (``None``: not counted)."""
    unseen: IntArray | None = None
    """Values of categories absent from the reference, per column, since the last record."""
    sources: tuple[tuple[str, int, int, int], ...] | None = None
    """Where this part's events came from, when not all of the record's sources fed it (the
    ``errors`` part counts outcomes, the others requests); ``None``: the record's."""
    segments: tuple[tuple[int, int, str, int, int, int], ...] | None = None
    """Per batch: ``(start, end, topic, partition, first offset, last offset)``, the events
    ``[start, end)`` of this part's blocks (counted from their first) that came from that offset
    range (:meth:`SourceRanges.segments`): a record holds several batches' blocks."""


class SourceRanges:
    """The offset ranges of the records a worker summarised since its last record, per partition, and
    per batch with the events each column set had seen after it (for :meth:`segments`).

    >>> from collections import namedtuple
    >>> R = namedtuple("R", "topic partition offset")
    >>> s = SourceRanges()
    >>> s.add([R("r", 0, o) for o in range(100, 164)], {"features": 64})
    >>> s.add([R("r", 0, o) for o in range(164, 180)], {"features": 80})
    >>> s.segments("features", first_event=0)
    ((0, 64, 'r', 0, 100, 163), (64, 80, 'r', 0, 164, 179))
    >>> s.take()
    (('r', 0, 100, 179),)
    """

    def __init__(self) -> None:
        self._ranges: dict[tuple[str, int], list[int]] = {}
        self._batches: list[tuple[dict[str, int], tuple[tuple[str, int, int, int], ...]]] = []
        self._last_end: dict[str, int] = {}
        self._carry: dict[str, tuple[int, int, tuple[tuple[str, int, int, int], ...]]] = {}

    def add(self, records: Iterable[RecordLike], ends: dict[str, int] | None = None) -> None:
        """One batch's records; ``ends``: each column set's event count once it had them."""
        batch: dict[tuple[str, int], list[int]] = {}
        for r in records:
            key = (r.topic, r.partition)
            span = batch.get(key)
            if span is None:
                batch[key] = [r.offset, r.offset]
            elif r.offset < span[0]:
                span[0] = r.offset
            elif r.offset > span[1]:
                span[1] = r.offset
        ranges = self._ranges
        for key, (a, b) in batch.items():
            span = ranges.get(key)
            if span is None:
                ranges[key] = [a, b]
            else:
                span[0], span[1] = min(span[0], a), max(span[1], b)
        if ends is not None and batch:
            self._batches.append((ends, tuple((t, p, a, b) for (t, p), (a, b) in sorted(batch.items()))))

    def segments(self, name: str, first_event: int) -> tuple[tuple[int, int, str, int, int, int], ...]:
        """Per batch since the last :meth:`take`: ``(start, end, topic, partition, first, last)``, the
        events of column set ``name`` it fed, counted from ``first_event`` (the first event of the
        blocks shipped now), and its offset range on one partition."""
        out: list[tuple[int, int, str, int, int, int]] = []
        start = self._last_end.get(name, 0)
        carried = self._carry.get(name)
        if carried is not None and carried[1] > first_event:
            # The previous record's last batch: its events past that record's last whole block are
            # in the first block of these.
            c0, c1, ranges = carried
            out.extend((c0 - first_event, c1 - first_event, t, p, a, b) for t, p, a, b in ranges)
        for ends, ranges in self._batches:
            end = ends.get(name)
            if end is None or end <= start:
                continue
            out.extend((start - first_event, end - first_event, t, p, a, b) for t, p, a, b in ranges)
            start = end
        return tuple(out)

    def take(self) -> tuple[tuple[str, int, int, int], ...]:
        """``(topic, partition, first offset, last offset)`` per partition; starts afresh."""
        out = tuple((t, p, a, b) for (t, p), (a, b) in sorted(self._ranges.items()))
        self._ranges = {}
        for ends, ranges in self._batches:
            for name, end in ends.items():
                start = self._last_end.get(name, 0)
                if end > start:
                    self._carry[name] = (start, end, ranges)
                    self._last_end[name] = end
        self._batches = []
        return out


@dataclass(frozen=True)
class ModelStats:
    """One worker's blocks of one model version, for the model's monitor."""

    model: str
    version: str
    worker: str
    sources: tuple[tuple[str, int, int, int], ...]
    """The request (or outcome) records summarised since the worker's previous record, as
    ``(topic, partition, first offset, last offset)``: where the blocks' events came from."""
    parts: tuple[StatsPart, ...] = field(default=())
    event_time: float | None = None
    """Event time (seconds since the epoch) of the first request of the batch, if known."""
    rates: tuple[RateCounts, ...] = ()
    """The counts behind the model's technical rates since the worker's previous record, in order,
    each over at most a quarter of a rate window (a batch, or a few): fed one by one, they close the
    monitor's windows where one process would, however many events the record holds."""
    findings: tuple[Finding, ...] = ()
    """The package's dependency findings as this worker loaded it, ``(package, built, installed,
    level)``, in the worker's first record of the version: the monitor alerts each once for the fleet."""

    @property
    def key(self) -> bytes:
        """The record's key: the model's name, so that one partition (one monitor) has all of it."""
        return self.model.encode()

    def part(self, name: str) -> StatsPart | None:
        return next((p for p in self.parts if p.name == name), None)

    @property
    def n_blocks(self) -> int:
        return sum(int(p.blocks.counts.shape[0]) for p in self.parts)


def encode_stats(stats: ModelStats) -> bytes:
    """The record's bytes (layout in the module docstring).

    >>> b = Blocks(np.array([[32, 31]]), np.array([[5, -6]]), np.array([[7, 8]]),
    ...            np.array([[1.5, 2.0]]), np.array([[3.0, 4.0]]), np.array([31]))
    >>> part = StatsPart("features", b, np.array([0, 1]))
    >>> s = ModelStats("m", "1", "w", (("requests", 0, 10, 41),), (part,))
    >>> back = decode_stats(encode_stats(s))
    >>> back.sources, back.parts[0].blocks.counts.tolist(), back.parts[0].missing.tolist()
    ((('requests', 0, 10, 41),), [[32, 31]], [0, 1])
    """
    header_parts = []
    body: list[bytes] = []
    for p in stats.parts:
        b = p.blocks
        n, d = b.counts.shape
        r = b.raw_sums.shape[1] if b.raw_sums.ndim == 2 else 0
        header_parts.append(
            {
                "name": p.name,
                "blocks": n,
                "streams": d,
                "raw": r,
                "missing": None if p.missing is None else [int(v) for v in p.missing],
                "unseen": None if p.unseen is None else [int(v) for v in p.unseen],
                "sources": None if p.sources is None else [list(x) for x in p.sources],
                "segments": None if p.segments is None else [list(x) for x in p.segments],
            }
        )
        body.append(np.ascontiguousarray(b.counts, dtype="<i4").tobytes())
        body.append(np.ascontiguousarray(b.sums, dtype="<i8").tobytes())
        body.append(np.ascontiguousarray(b.sumsqs, dtype="<i8").tobytes())
        body.append(np.ascontiguousarray(b.raw_sums.reshape(n, r), dtype="<f8").tobytes())
        body.append(np.ascontiguousarray(b.raw_sumsqs.reshape(n, r), dtype="<f8").tobytes())
    header = orjson.dumps(
        {
            "model": stats.model,
            "version": stats.version,
            "worker": stats.worker,
            "sources": [list(s) for s in stats.sources],
            "event_time": stats.event_time,
            "parts": header_parts,
            **({"rates": [r.to_json() for r in stats.rates]} if stats.rates else {}),
            **({"findings": [list(f) for f in stats.findings]} if stats.findings else {}),
        }
    )
    return b"".join([MAGIC, _LENGTH.pack(len(header)), header, *body])


def _finding(raw: object) -> Finding:
    if not isinstance(raw, list) or len(raw) != 4:
        raise ValueError(f"a finding is {raw!r}, not [package, built, installed, level]")
    package, built, installed, level = raw
    if not all(isinstance(v, str) for v in (package, built, level)) or not isinstance(installed, str | None):
        raise ValueError(f"a finding is {raw!r}, not [package, built, installed, level] of strings")
    return (package, built, installed, level)


def _sources(raw: object) -> tuple[tuple[str, int, int, int], ...] | None:
    if raw is None:
        return None
    return tuple((str(t), int(p), int(a), int(b)) for t, p, a, b in raw)  # type: ignore[attr-defined]


def decode_stats(raw: bytes) -> ModelStats:
    """A :class:`ModelStats` from its bytes; ``ValueError`` naming what is wrong with them."""
    if raw[:4] != MAGIC:
        raise ValueError(f"not a driftline statistics record (starts {raw[:4]!r}, expected {MAGIC!r})")
    if len(raw) < 8:
        raise ValueError("statistics record truncated in its header length")
    (length,) = _LENGTH.unpack_from(raw, 4)
    try:
        header = orjson.loads(raw[8 : 8 + length])
        model, version, worker = str(header["model"]), str(header["version"]), str(header["worker"])
        sources = _sources(header["sources"]) or ()
        specs: Sequence[dict[str, object]] = header["parts"]
        event_time = header.get("event_time")
        raw_rates = header.get("rates", [])
        if not isinstance(raw_rates, list):
            raise ValueError(f"rates is a {type(raw_rates).__name__}, not a list")
        rates = tuple(RateCounts.from_json(r) for r in raw_rates)
        findings = tuple(_finding(f) for f in header.get("findings", []))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"statistics record with a bad header: {e}") from e
    pos = 8 + length
    parts = []
    for spec in specs:
        n, d, r = int(spec["blocks"]), int(spec["streams"]), int(spec["raw"])  # type: ignore[call-overload]
        arrays = []
        for dtype, cols in (("<i4", d), ("<i8", d), ("<i8", d), ("<f8", r), ("<f8", r)):
            size = n * cols * 8 if dtype != "<i4" else n * cols * 4
            if pos + size > len(raw):
                raise ValueError(f"statistics record truncated in part {spec['name']!r}")
            arrays.append(np.frombuffer(raw, dtype=dtype, count=n * cols, offset=pos).reshape(n, cols))
            pos += size
        counts = arrays[0].astype(np.int64)
        sums, sumsqs = arrays[1].astype(np.int64), arrays[2].astype(np.int64)
        blocks = Blocks(counts, sums, sumsqs, arrays[3].copy(), arrays[4].copy(), np.zeros(n, dtype=np.int64))
        missing, unseen = spec.get("missing"), spec.get("unseen")
        try:
            part_sources = _sources(spec.get("sources"))
            raw_segments: Sequence[Sequence[object]] | None = spec.get("segments")  # type: ignore[assignment]
            segments = (
                None
                if raw_segments is None
                else tuple(
                    (int(a), int(b), str(t), int(p), int(c), int(d))  # type: ignore[call-overload]
                    for a, b, t, p, c, d in raw_segments
                )
            )
        except (TypeError, ValueError) as e:
            raise ValueError(f"statistics record with bad sources in part {spec['name']!r}: {e}") from e
        parts.append(
            StatsPart(
                str(spec["name"]),
                blocks,
                None if missing is None else np.asarray(missing, dtype=np.int64),
                None if unseen is None else np.asarray(unseen, dtype=np.int64),
                part_sources,
                segments,
            )
        )
    if pos != len(raw):
        raise ValueError(f"statistics record with {len(raw) - pos} bytes after its last part")
    return ModelStats(
        model,
        version,
        worker,
        sources,
        tuple(parts),
        None if event_time is None else float(event_time),
        rates,
        findings,
    )
