"""The outcome join: predictions remembered by request id until their outcome arrives, or a TTL passes.

Requests, predictions and outcomes are keyed by request id, so an outcome arrives on the same
partition number of the outcomes topic as its request did on the requests topic. The serving loop
consumes both topics with one co-partitioned assignment, so each worker joins exactly the requests
it served. State is kept per partition and backed by a **changelog topic** partitioned like the
requests (one record per batch of remembered predictions, keyed by the batch's first offset, and a
tombstone keyed by request id when one is matched), read back when a partition is assigned: a
restarted worker, or the next owner after a rebalance, still joins the outcomes of predictions made
before.

Why not a Faust table: a table can only be written from inside a Faust agent's event (it takes the
changelog partition from the current event), and the serving path does not go through Faust's
per-event machinery (see :mod:`agent.streaming`). This is the same mechanism (a compacted changelog
partitioned like its source, replayed on assignment) without the per-event cost.

Memory is bounded by ``max_entries`` per worker (oldest dropped first, counted), and entries older
than ``ttl_s`` are dropped and counted as unmatched.

Example:
    >>> join = OutcomeJoin(ttl_s=60, max_entries=10, clock=lambda: 100.0)
    >>> join.remember(0, "r-1", JoinEntry("m", "1", 1.0, 100.0))
    >>> join.match(0, "r-1")
    JoinEntry(model='m', version='1', predicted=1.0, at=100.0)
    >>> join.match(0, "r-1") is None
    True
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import NamedTuple

import orjson

__all__ = ["JoinEntry", "OutcomeJoin", "decode_batch", "encode_batch"]


class JoinEntry(NamedTuple):
    """What the join keeps of one prediction."""

    model: str
    version: str
    predicted: float
    """The predicted class index (classifiers) or value (regressors)."""
    at: float
    """Wall-clock time of the prediction (seconds)."""


def encode_batch(model: str, version: str, at: float, pairs: Iterable[tuple[str, float]]) -> bytes:
    """One changelog record for a batch's predictions: ``(request id, predicted)`` pairs.

    One record per batch rather than per prediction: the changelog then costs one ``orjson.dumps``
    per batch on the serving path.
    """
    return orjson.dumps({"m": model, "v": version, "at": at, "p": list(pairs)})


def decode_batch(raw: bytes) -> list[tuple[str, JoinEntry]]:
    data = orjson.loads(raw)
    model, version, at = str(data["m"]), str(data["v"]), float(data["at"])
    return [(str(rid), JoinEntry(model, version, float(predicted), at)) for rid, predicted in data["p"]]


class OutcomeJoin:
    """Per-partition maps request id -> :class:`JoinEntry`, oldest first, with a TTL and a size cap.

    Parameters:
        ttl_s: An unmatched prediction older than this is dropped (and counted).
        max_entries: Most entries kept over all partitions; the oldest go first (counted).
        clock: Wall clock, injected by tests.
    """

    def __init__(self, ttl_s: float, max_entries: int, clock: Callable[[], float] = time.time) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self._partitions: dict[int, OrderedDict[str, JoinEntry]] = {}
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

    def remember(self, partition: int, request_id: str, entry: JoinEntry) -> None:
        entries = self._partitions.get(partition)
        if entries is None:
            entries = self._partitions[partition] = OrderedDict()
        if request_id in entries:
            # A duplicate request (at-least-once redelivery): keep the newest prediction.
            del entries[request_id]
            self._size -= 1
        entries[request_id] = entry
        self._size += 1
        if self._size > self.max_entries:
            self._evict_oldest()

    def match(self, partition: int, request_id: str) -> JoinEntry | None:
        """The prediction for ``request_id``, removed from the join; ``None`` if unknown."""
        entries = self._partitions.get(partition)
        entry = entries.pop(request_id, None) if entries is not None else None
        if entry is None:
            self.unmatched_outcomes += 1
            return None
        self._size -= 1
        self.matched += 1
        return entry

    def expire(self) -> int:
        """Drops entries older than the TTL; returns how many."""
        cutoff = self.clock() - self.ttl_s
        dropped = 0
        for entries in self._partitions.values():
            while entries:
                _, oldest = next(iter(entries.items()))
                if oldest.at >= cutoff:
                    break
                entries.popitem(last=False)
                dropped += 1
        self._size -= dropped
        self.expired += dropped
        return dropped

    def restore(self, partition: int, records: Iterable[tuple[bytes, bytes | None]]) -> int:
        """Replays changelog records of one partition (batch records, and tombstones keyed by
        request id); returns the entries kept."""
        entries: OrderedDict[str, JoinEntry] = OrderedDict()
        cutoff = self.clock() - self.ttl_s
        for key, value in records:
            if value is None:
                entries.pop(key.decode("utf-8", "replace"), None)
                continue
            try:
                batch = decode_batch(value)
            except (ValueError, TypeError, KeyError):
                continue  # a record this version cannot read is skipped, not fatal
            for request_id, entry in batch:
                if entry.at >= cutoff:
                    entries.pop(request_id, None)
                    entries[request_id] = entry
        self.drop_partition(partition)
        self._partitions[partition] = entries
        self._size += len(entries)
        while self._size > self.max_entries:
            self._evict_oldest()
        return len(entries)

    def drop_partition(self, partition: int) -> None:
        """Forgets a partition's entries (its partition was revoked: the next owner restores them)."""
        entries = self._partitions.pop(partition, None)
        if entries:
            self._size -= len(entries)

    def partitions(self) -> list[int]:
        return sorted(self._partitions)

    def _evict_oldest(self) -> None:
        oldest_partition = None
        oldest_at = float("inf")
        for partition, entries in self._partitions.items():
            if entries:
                at = next(iter(entries.values())).at
                if at < oldest_at:
                    oldest_partition, oldest_at = partition, at
        if oldest_partition is None:
            return
        self._partitions[oldest_partition].popitem(last=False)
        self._size -= 1
        self.evicted += 1
