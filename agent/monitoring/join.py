"""The outcome join: predictions remembered by request id until their outcome arrives, or a TTL passes.

An outcome is joined to its prediction wherever its producer put it. The join is split into
**join partitions** by a hash of the request id (CRC-32, :meth:`OutcomeJoin.partition_of`), which
driftline computes for both sides, and both sides go through one internal **join topic** with a
partition per join partition, as Kafka Streams' repartition topics and Faust's ``group_by`` do:

* the serving path writes each batch's predictions there, one record per join partition
  (``encode_batch``: the request ids and what was predicted);
* each outcome, read from the outcomes topic on whatever partition its producer's partitioner chose
  (librdkafka's default, CRC-32, puts 3 in 4 keys on another partition number than Java's murmur2 with
  4 partitions), is copied there, to the join partition of its request id (``b"o"`` + its JSON, keyed
  by where it was read: ``topic:partition:offset``);
* the worker that owns a join partition (the serving group consumes the join topic too) reads both
  in the order they were written and matches them. A prediction's record is written when it is made,
  an outcome's copy after the outcome was read: an outcome that follows its prediction finds it.

The join topic is also the join's changelog: a worker that is assigned a join partition replays it
from its beginning up to the group's committed offset (predictions remembered, outcomes taking theirs
away), and consumes on from there; a restarted worker, or the next owner after a rebalance, still
joins the outcomes of predictions made before. Why this and not co-partitioned topics: the request
and outcome producers need not share a partitioner (nor know each other), and only driftline sees
both sides.

Why not a Faust table: a table can only be written from inside a Faust agent's event (it takes the
changelog partition from the current event), and the serving path does not go through Faust's
per-event machinery (see :mod:`agent.serving.loop`).

Memory is bounded by ``max_entries`` per worker (oldest dropped first, counted), and entries older
than ``ttl_s`` are dropped and counted as unmatched. An entry costs a dict slot and a 64-bit key:
the join keeps the request id's hash (Python's own, SipHash with a per-process key: the join lives
and is restored in one process), not its string, which would cost 50-90 bytes more. Two ids of one
join partition with the same 64-bit hash would join wrongly: among 1,000,000 entries, a chance of
about 3 in 10^8 that any pair does, and an attacker cannot choose ids that collide without the
process's key. The predictions of one batch that share a predicted value (a classifier's class)
share one plain tuple, and a plain tuple of strings and floats is not tracked by the garbage
collector, so full collections do not walk the join (``bench/join_cost.py`` measures both).

Example:
    >>> join = OutcomeJoin(ttl_s=60, max_entries=10, clock=lambda: 100.0)
    >>> join.remember_batch(0, "m", "1", 100.0, [("r-1", 1.0), ("r-2", 0.0)])
    >>> join.match(0, "r-1")
    JoinEntry(model='m', version='1', predicted=1.0, at=100.0, expected_error=nan)
    >>> join.remember_batch(0, "m", "1", 100.0, [("r-3", 1.0, 0.25)])  # with its estimated error
    >>> join.match(0, "r-3").expected_error
    0.25
    >>> join.match(0, "r-1") is None
    True
    >>> len(join)
    1
"""

from __future__ import annotations

import contextlib
import heapq
import math
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import orjson

__all__ = ["OUTCOME_MARK", "JoinEntry", "OutcomeJoin", "decode_batch", "encode_batch"]

OUTCOME_MARK = b"o"
"""First byte of an outcome's copy on the join topic (a prediction batch's record is a JSON object)."""

_Value = tuple[str, str, float, float, float]
"""What the join stores per request id: a plain tuple (model, version, predicted, at, expected error),
shared by the predictions of a batch with the same predicted value and expected error."""

_SHARED_VALUES = 512
"""Distinct (predicted, expected error) values per batch whose tuples are shared (a classifier's
classes times the expected errors, which the observer rounds to half a point); beyond that (a
regressor) every prediction gets its own."""

Pair = tuple[str, float] | tuple[str, float, float]
"""``(request id, predicted)``, or ``(request id, predicted, expected error)``."""


class JoinEntry(NamedTuple):
    """What the join keeps of one prediction."""

    model: str
    version: str
    predicted: float
    """The predicted class index (classifiers) or value (regressors)."""
    at: float
    """Wall-clock time of the prediction (seconds)."""
    expected_error: float = math.nan
    """The error estimated for the prediction when it was made (classifiers with a calibration);
    NaN when unknown."""


def encode_batch(model: str, version: str, at: float, pairs: Iterable[Pair]) -> bytes:
    """One changelog record for a batch's predictions: ``(request id, predicted[, expected error])``.

    One record per batch rather than per prediction: the changelog then costs one ``orjson.dumps``
    per batch on the serving path.
    """
    return orjson.dumps({"m": model, "v": version, "at": at, "p": list(pairs)})


def decode_batch(raw: bytes) -> list[tuple[str, JoinEntry]]:
    data = orjson.loads(raw)
    model, version, at = str(data["m"]), str(data["v"]), float(data["at"])
    return [(str(item[0]), _entry(model, version, at, item)) for item in data["p"]]


def _entry(model: str, version: str, at: float, item: Any) -> JoinEntry:
    expected = float(item[2]) if len(item) > 2 else math.nan
    return JoinEntry(model, version, float(item[1]), at, expected)


class OutcomeJoin:
    """Per-partition maps hash of the request id -> prediction, oldest first, with a TTL and a size cap.

    Each partition is a plain ``dict`` (insertion ordered: oldest first, a redelivered request moves
    to the end), not an ``OrderedDict``, whose linked list costs ~50 bytes more per entry. A dict
    does not drop its front cheaply one entry at a time, so the cap evicts in chunks of 1 % of it.

    Parameters:
        ttl_s: An unmatched prediction older than this is dropped (and counted).
        max_entries: Most entries kept over all partitions; the oldest go first (counted).
        clock: Wall clock, injected by tests.
    """

    def __init__(
        self, ttl_s: float, max_entries: int, clock: Callable[[], float] = time.time, n_partitions: int = 1
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self.n_partitions = n_partitions
        """Join partitions (the join topic's partitions): set when the worker is assigned some."""
        self._partitions: dict[int, dict[int, _Value]] = {}
        self._size = 0
        self.expired = 0
        """Predictions dropped unmatched after the TTL."""
        self.evicted = 0
        """Predictions dropped unmatched because the join was full."""
        self.matched = 0
        self.unmatched_outcomes = 0
        """Outcomes whose prediction was not (or no longer) known."""

    def __len__(self) -> int:
        return self._size

    def partition_of(self, request_id: str) -> int:
        """The join partition of ``request_id``: CRC-32 of its UTF-8 bytes, modulo the partitions.

        >>> OutcomeJoin(60, 10, n_partitions=4).partition_of("r-1")
        1
        """
        return zlib.crc32(request_id.encode()) % self.n_partitions

    def remember(self, partition: int, request_id: str, entry: JoinEntry) -> None:
        """Remembers one prediction (:meth:`remember_batch` is the serving path's form)."""
        pair = (request_id, entry.predicted, entry.expected_error)
        self.remember_batch(partition, entry.model, entry.version, entry.at, [pair])

    def remember_batch(
        self, partition: int, model: str, version: str, at: float, pairs: Iterable[Pair]
    ) -> None:
        """Remembers a batch's ``(request id, predicted[, expected error])`` items of one partition,
        made by one model version at ``at``. A request id already known (an at-least-once
        redelivery) keeps the newest."""
        entries = self._partitions.get(partition)
        if entries is None:
            entries = self._partitions[partition] = {}
        before = len(entries)
        shared: dict[tuple[float, float], _Value] = {}
        nan = math.nan
        for item in pairs:
            request_id, predicted = item[0], item[1]
            expected = item[2] if len(item) > 2 else nan
            value = shared.get((predicted, expected))
            if value is None:
                value = (model, version, predicted, at, expected)
                if len(shared) < _SHARED_VALUES:
                    shared[predicted, expected] = value
            key = hash(request_id)
            if key in entries:
                del entries[key]  # re-inserted at the end: its age is the newest prediction's
            entries[key] = value
        self._size += len(entries) - before
        if self._size > self.max_entries:
            self._evict(self._size - self.max_entries + self.max_entries // 100)

    def match(self, partition: int, request_id: str) -> JoinEntry | None:
        """The prediction for ``request_id``, removed from the join; ``None`` if unknown."""
        entries = self._partitions.get(partition)
        value = entries.pop(hash(request_id), None) if entries is not None else None
        if value is None:
            self.unmatched_outcomes += 1
            return None
        self._size -= 1
        self.matched += 1
        return JoinEntry._make(value)

    def expire(self) -> int:
        """Drops entries older than the TTL; returns how many."""
        cutoff = self.clock() - self.ttl_s
        dropped = 0
        for entries in self._partitions.values():
            doomed = []
            for key, value in entries.items():
                if value[3] >= cutoff:
                    break
                doomed.append(key)
            for key in doomed:
                del entries[key]
            dropped += len(doomed)
        self._size -= dropped
        self.expired += dropped
        return dropped

    def restore(self, partition: int, records: Iterable[tuple[bytes, bytes | None]]) -> int:
        """Replays the join topic's records of one partition (prediction batches, outcomes' copies,
        and the tombstones keyed by request id that earlier versions wrote for a match) into an empty
        partition; returns the entries kept."""
        self.drop_partition(partition)
        self._partitions[partition] = {}
        return self.replay(partition, records)

    def replay(self, partition: int, records: Iterable[tuple[bytes, bytes | None]]) -> int:
        """Applies more of a partition's records in their order (a restore read in parts); returns the
        entries the partition holds now."""
        cutoff = self.clock() - self.ttl_s
        for key, value in records:
            if value is None:
                self._forget(partition, key.decode("utf-8", "replace"))
                continue
            if value[:1] == OUTCOME_MARK:
                with contextlib.suppress(ValueError, TypeError, KeyError):
                    self._forget(partition, str(orjson.loads(value[1:])["request_id"]))
                continue
            try:
                data = orjson.loads(value)
                model, version, at = str(data["m"]), str(data["v"]), float(data["at"])
                pairs: list[Pair] = [
                    (str(item[0]), float(item[1]), float(item[2]))
                    if len(item) > 2
                    else (str(item[0]), float(item[1]))
                    for item in data["p"]
                ]
            except (ValueError, TypeError, KeyError):
                continue  # a record this version cannot read is skipped, not fatal
            if at >= cutoff:
                self.remember_batch(partition, model, version, at, pairs)
        return len(self._partitions.get(partition, ()))

    def drop_partition(self, partition: int) -> None:
        """Forgets a partition's entries (its partition was revoked: the next owner restores them)."""
        entries = self._partitions.pop(partition, None)
        if entries:
            self._size -= len(entries)

    def partitions(self) -> list[int]:
        return sorted(self._partitions)

    def _forget(self, partition: int, request_id: str) -> None:
        entries = self._partitions.get(partition)
        if entries is not None and entries.pop(hash(request_id), None) is not None:
            self._size -= 1

    def _evict(self, count: int) -> None:
        """Drops the ``count`` oldest entries over all partitions (a merge of their fronts)."""
        fronts: list[tuple[float, int, int]] = []
        iterators: dict[int, Iterator[tuple[int, _Value]]] = {}
        for partition, entries in self._partitions.items():
            iterators[partition] = it = iter(entries.items())
            first = next(it, None)
            if first is not None:
                fronts.append((first[1][3], partition, first[0]))
        heapq.heapify(fronts)
        doomed: list[tuple[int, int]] = []
        while fronts and len(doomed) < count:
            _, partition, key = heapq.heappop(fronts)
            doomed.append((partition, key))
            following = next(iterators[partition], None)
            if following is not None:
                heapq.heappush(fronts, (following[1][3], partition, following[0]))
        for partition, key in doomed:
            del self._partitions[partition][key]
        self._size -= len(doomed)
        self.evicted += len(doomed)
