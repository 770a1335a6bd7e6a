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

An outcome can still reach its join partition before its prediction: the worker reads the requests
and the outcomes topics side by side, and from a backlog (a worker started after its producers, or
catching up after an outage) one topic's partitions may be read ahead of the other's, and outcomes sent
right after their requests race them. With ``grace_s``, an outcome whose prediction is not known yet
**waits** for it that long (:meth:`OutcomeJoin.match` returns :data:`WAITING`): a prediction that
comes meanwhile joins it (:meth:`OutcomeJoin.take_late`), and past the grace it counts as unmatched
(:meth:`OutcomeJoin.expire_waiting`, called with every batch and, on an idle worker, by the
serving loop's idle polls through ``DriftObserver.observe_idle``). Waiting outcomes are few and
bounded (a tenth of ``max_entries``; beyond, an outcome is unmatched at once), and they are in the
join topic too: a restore parks those whose prediction it did not meet, which join as any other if it
comes, and are dropped without being counted again if not. A restore cannot tell a copy that its
previous owner joined to a prediction older than the restore's window (``ttl_s`` back) from one
still waiting, so it counts neither: an outcome that was still waiting when its partition moved, and
whose prediction never comes, is counted by no worker. (Marking each expired outcome on the join
topic would count the second kind; but without a mark for each joined one as well, which would
double the topic's records, the first kind would then be counted unmatched after every restart.) A
waiting outcome is kept as its copy's bytes (:class:`Parked`, ~350 bytes), not decoded (~1 KB).

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

    An outcome ahead of its prediction waits for it, with a grace period:

    >>> join = OutcomeJoin(ttl_s=60, max_entries=10, clock=lambda: 100.0, grace_s=30)
    >>> copy = Parked(b"outcomes:0:7", OUTCOME_MARK + b'{"request_id": "r-9", "model": "m", "label": 1}')
    >>> join.match(0, "r-9", waiting=copy) is WAITING
    True
    >>> join.remember_batch(0, "m", "1", 100.0, [("r-9", 1.0), ("r-10", 0.0)])
    >>> [(parked.key, entry.predicted) for parked, entry in join.take_late()]
    [(b'outcomes:0:7', 1.0)]
    >>> len(join), join.matched
    (1, 1)
"""

from __future__ import annotations

import contextlib
import heapq
import math
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final, NamedTuple

import orjson

__all__ = ["OUTCOME_MARK", "WAITING", "JoinEntry", "OutcomeJoin", "Parked", "decode_batch", "encode_batch"]

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


WAITING: Final = JoinEntry("", "", math.nan, math.nan)
"""What :meth:`OutcomeJoin.match` answers for an outcome that now waits for its prediction."""


class Parked(NamedTuple):
    """An outcome waiting for its prediction, as its copy on the join topic: keyed by where the
    outcome was read (``topic:partition:offset``), :data:`OUTCOME_MARK` and its JSON."""

    key: bytes
    value: bytes


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
        n_partitions: Join partitions (set again when the worker is assigned some).
        grace_s: How long an outcome read before its prediction waits for it.
    """

    def __init__(
        self,
        ttl_s: float,
        max_entries: int,
        clock: Callable[[], float] = time.time,
        n_partitions: int = 1,
        grace_s: float = 0.0,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self.grace_s = grace_s
        """How long an outcome read before its prediction waits for it (0: not at all)."""
        self.max_waiting = max(max_entries // 10, 1)
        self._waiting: dict[int, dict[int, tuple[Parked, float, bool]]] = {}
        """Per partition: hash of the request id -> (the outcome, when it was parked, whether a restore
        parked it), oldest first."""
        self._n_waiting = 0
        self._late: list[tuple[Parked, JoinEntry]] = []
        self._replaying = False
        self.late = 0
        """Outcomes joined to a prediction that came after them (within the grace)."""
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
        waiting = self._waiting.get(partition)
        if waiting:
            pairs = list(pairs)  # read twice: the outcomes that wait for some of them
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
        if waiting:
            for item in pairs:
                key = hash(item[0])
                if key not in waiting or key not in entries:
                    continue
                parked, value = waiting.pop(key), entries.pop(key)
                self._n_waiting -= 1
                self._size -= 1
                if not self._replaying:  # else joined before the restore: already scored
                    self.matched += 1
                    self.late += 1
                    self._late.append((parked[0], JoinEntry._make(value)))
        if self._size > self.max_entries:
            self._evict(self._size - self.max_entries + self.max_entries // 100)

    def match(self, partition: int, request_id: str, waiting: Parked | None = None) -> JoinEntry | None:
        """The prediction for ``request_id``, removed from the join; ``None`` if unknown.

        With ``waiting`` (the outcome) and a grace period, an outcome whose prediction is not known
        yet waits for it: :data:`WAITING` (unless :attr:`max_waiting` outcomes wait already)."""
        entries = self._partitions.get(partition)
        key = hash(request_id)
        value = entries.pop(key, None) if entries is not None else None
        if value is None:
            if waiting is not None and self.grace_s > 0 and self._n_waiting < self.max_waiting:
                self._park(partition, key, waiting)
                return WAITING
            self.unmatched_outcomes += 1
            return None
        self._size -= 1
        self.matched += 1
        return JoinEntry._make(value)

    def _park(self, partition: int, key: int, item: Parked, *, restored: bool = False) -> None:
        waiting = self._waiting.get(partition)
        if waiting is None:
            waiting = self._waiting[partition] = {}
        if key in waiting:
            del waiting[key]  # the same outcome again (redelivered): its grace starts over
            self._n_waiting -= 1
        waiting[key] = (item, self.clock(), restored)
        self._n_waiting += 1

    @property
    def waiting(self) -> int:
        """Outcomes waiting for their prediction."""
        return self._n_waiting

    @property
    def has_waited(self) -> bool:
        """Some outcomes wait, or waited and found their prediction since :meth:`take_late`."""
        return bool(self._n_waiting or self._late)

    def take_late(self) -> list[tuple[Parked, JoinEntry]]:
        """The outcomes that waited and whose prediction came since the last call, with it."""
        late, self._late = self._late, []
        return late

    def expire_waiting(self) -> list[Parked]:
        """The outcomes that waited longer than the grace, counted unmatched and given back (those
        a restore parked are dropped: they may have been counted before it)."""
        if not self._n_waiting:
            return []
        cutoff = self.clock() - self.grace_s
        out: list[Parked] = []
        for waiting in self._waiting.values():
            doomed = []
            for key, (item, at, restored) in waiting.items():
                if at > cutoff:
                    break
                doomed.append(key)
                if not restored:
                    out.append(item)
            for key in doomed:
                del waiting[key]
            self._n_waiting -= len(doomed)
        self.unmatched_outcomes += len(out)
        return out

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
        self._replaying = True
        try:
            return self._replay(partition, records)
        finally:
            self._replaying = False

    def _replay(self, partition: int, records: Iterable[tuple[bytes, bytes | None]]) -> int:
        cutoff = self.clock() - self.ttl_s
        for key, value in records:
            if value is None:
                self._forget(partition, key.decode("utf-8", "replace"))
                continue
            if value[:1] == OUTCOME_MARK:
                with contextlib.suppress(ValueError, TypeError, KeyError):
                    request_id = str(orjson.loads(value[1:])["request_id"])
                    joined = self._forget(partition, request_id)
                    if not joined and self.grace_s > 0 and self._n_waiting < self.max_waiting:
                        self._park(partition, hash(request_id), Parked(key, value), restored=True)
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
        self._n_waiting -= len(self._waiting.pop(partition, ()))

    def partitions(self) -> list[int]:
        return sorted(self._partitions)

    def _forget(self, partition: int, request_id: str) -> bool:
        """Drops ``request_id``'s prediction; whether there was one."""
        entries = self._partitions.get(partition)
        if entries is not None and entries.pop(hash(request_id), None) is not None:
            self._size -= 1
            return True
        return False

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
