from __future__ import annotations

import json

from agent.monitoring.join import (
    OUTCOME_MARK,
    WAITING,
    JoinEntry,
    OutcomeJoin,
    Parked,
    decode_batch,
    encode_batch,
)


def entry(at: float, version: str = "1") -> JoinEntry:
    return JoinEntry("m", version, 1.0, at)


def test_match_once_per_partition() -> None:
    join = OutcomeJoin(ttl_s=60, max_entries=100, clock=lambda: 0.0)
    join.remember(0, "a", entry(0.0))
    assert join.match(1, "a") is None  # another partition's request id space
    assert join.match(0, "a") == entry(0.0)
    assert join.match(0, "a") is None
    assert (join.matched, join.unmatched_outcomes, len(join)) == (1, 2, 0)


def test_ttl_drops_old_predictions_and_counts_them() -> None:
    now = [0.0]
    join = OutcomeJoin(ttl_s=10, max_entries=100, clock=lambda: now[0])
    for i in range(5):
        join.remember(0, f"r{i}", entry(float(i)))
    now[0] = 12.5
    assert join.expire() == 3  # made at 0, 1, 2: older than 12.5 - 10
    assert len(join) == 2 and join.expired == 3
    assert join.match(0, "r3") is not None


def test_size_cap_evicts_the_oldest_over_all_partitions() -> None:
    join = OutcomeJoin(ttl_s=60, max_entries=3, clock=lambda: 0.0)
    join.remember(0, "a", entry(1.0))
    join.remember(1, "b", entry(0.5))
    join.remember(0, "c", entry(2.0))
    join.remember(1, "d", entry(3.0))
    assert join.evicted == 1 and join.match(1, "b") is None and join.match(0, "a") is not None


def test_restore_replays_a_changelog_with_tombstones() -> None:
    join = OutcomeJoin(ttl_s=60, max_entries=100, clock=lambda: 100.0)
    records = [
        (b"requests:3:0", encode_batch("m", "1", 90.0, [("a", 1.0), ("b", 1.0)])),
        (b"a", None),  # matched before the restart
        (b"requests:3:2", encode_batch("m", "1", 10.0, [("c", 1.0)])),  # older than the TTL
        (b"requests:3:3", b"not json"),  # unreadable: skipped
        (b"requests:3:4", encode_batch("m", "2", 96.0, [("b", 1.0)])),  # redelivered: newest wins
    ]
    assert join.restore(3, records) == 1
    assert join.match(3, "b") == entry(96.0, version="2")
    assert decode_batch(encode_batch("m", "1", 1.5, [("x", 1.0)])) == [("x", entry(1.5))]


def test_drop_partition_forgets_it() -> None:
    join = OutcomeJoin(ttl_s=60, max_entries=100, clock=lambda: 0.0)
    join.remember(2, "a", entry(0.0))
    join.drop_partition(2)
    assert len(join) == 0 and join.partitions() == []


def test_remember_batch_shares_one_value_per_predicted_class() -> None:
    join = OutcomeJoin(ttl_s=60, max_entries=100, clock=lambda: 0.0)
    join.remember_batch(0, "m", "1", 5.0, [("a", 1.0), ("b", 0.0), ("c", 1.0)])
    values = join._partitions[0]
    assert values[hash("a")] is values[hash("c")] and values[hash("a")] is not values[hash("b")]
    assert join.match(0, "b") == JoinEntry("m", "1", 0.0, 5.0)
    assert join.match(0, "c") == JoinEntry("m", "1", 1.0, 5.0) and len(join) == 1


def test_a_redelivered_request_keeps_the_newest_prediction_and_its_age() -> None:
    now = [0.0]
    join = OutcomeJoin(ttl_s=10, max_entries=100, clock=lambda: now[0])
    join.remember_batch(0, "m", "1", 0.0, [("a", 1.0), ("b", 1.0)])
    join.remember_batch(0, "m", "2", 5.0, [("a", 0.0)])
    assert len(join) == 2
    now[0] = 12.0  # the first batch is past the TTL, the redelivery is not
    assert join.expire() == 1
    assert join.match(0, "a") == JoinEntry("m", "2", 0.0, 5.0) and join.match(0, "b") is None


def test_join_entries_are_not_tracked_by_the_garbage_collector() -> None:
    import gc

    join = OutcomeJoin(ttl_s=60, max_entries=10_000, clock=lambda: 0.0)
    for batch in range(20):
        join.remember_batch(
            batch % 4, "m", "1", float(batch), [(f"r{batch}-{i}", float(i % 2)) for i in range(100)]
        )
    gc.collect()
    assert not any(gc.is_tracked(v) for entries in join._partitions.values() for v in entries.values())


def test_the_cap_evicts_in_chunks_the_oldest_of_all_partitions_first() -> None:
    join = OutcomeJoin(ttl_s=1e9, max_entries=1000, clock=lambda: 0.0)
    for batch in range(30):  # partitions 0-2 in turn; batch b made at time b
        join.remember_batch(batch % 3, "m", "1", float(batch), [(f"{batch}-{i}", 1.0) for i in range(50)])
    # 1,500 remembered, cap 1,000: each eviction drops the excess plus 1 % of the cap
    assert len(join) <= 1000 and join.evicted == 1500 - len(join)
    keys = {key for p in join.partitions() for key in join._partitions[p]}
    kept = sorted({b for b in range(30) for i in range(50) if hash(f"{b}-{i}") in keys})
    assert kept == list(range(30 - len(kept), 30))  # whole oldest batches went, over every partition
    assert all(hash(f"{b}-{i}") in keys for b in kept[1:] for i in range(50))


def test_a_replay_of_the_join_topic_keeps_the_predictions_still_waiting() -> None:
    join = OutcomeJoin(ttl_s=60, max_entries=100, clock=lambda: 100.0, n_partitions=4)
    batch = encode_batch("m", "1", 90.0, [("r-1", 1.0), ("r-2", 0.0), ("r-3", 1.0)])
    old = encode_batch("m", "1", 30.0, [("r-4", 1.0)])  # beyond the TTL
    records = [
        (b"requests:0:0:2", batch),
        (b"requests:1:7:2", old),
        (b"outcomes:3:12", OUTCOME_MARK + b'{"request_id": "r-2", "model": "m", "label": 0}'),
        (b"r-3", None),  # a tombstone, as earlier versions wrote for a match
        (b"outcomes:3:13", OUTCOME_MARK + b"not json"),  # skipped, not fatal
    ]
    assert join.restore(2, records) == 1
    assert join.match(2, "r-1") == JoinEntry("m", "1", 1.0, 90.0)
    assert len(join) == 0


def test_request_ids_spread_over_the_join_partitions() -> None:
    join = OutcomeJoin(ttl_s=60, max_entries=10, n_partitions=4)
    counts = [0] * 4
    for i in range(10_000):
        counts[join.partition_of(f"req-{i}")] += 1
    assert min(counts) > 2_300, counts


def test_the_join_keeps_no_request_id_string() -> None:
    """An entry is keyed by the id's 64-bit hash: the id's string is not kept (50-90 bytes each)."""
    join = OutcomeJoin(ttl_s=60, max_entries=100, clock=lambda: 0.0)
    ids = [f"request-{i:012d}" for i in range(50)]
    join.remember_batch(0, "m", "1", 0.0, [(rid, 1.0) for rid in ids])
    assert all(type(key) is int for key in join._partitions[0])
    assert all(join.match(0, f"request-{i:012d}") is not None for i in range(50))  # a new, equal string
    assert len(join) == 0 and join.match(0, ids[0]) is None


# --- an outcome read before its prediction waits for it (the grace) ---------------------------------


def copy(offset: int, request_id: str) -> Parked:
    """Outcome ``offset``'s copy on the join topic."""
    body = json.dumps({"request_id": request_id, "model": "m", "label": 1}).encode()
    return Parked(f"outcomes:0:{offset}".encode(), OUTCOME_MARK + body)


def test_an_outcome_ahead_of_its_prediction_waits_for_it_within_the_grace() -> None:
    now = [0.0]
    join = OutcomeJoin(ttl_s=900, max_entries=100, clock=lambda: now[0], grace_s=60)
    a, b, c = copy(0, "a"), copy(1, "b"), copy(2, "c")
    assert join.match(0, "a", waiting=a) is WAITING
    assert join.match(0, "b", waiting=b) is WAITING
    assert join.match(1, "c", waiting=c) is WAITING
    assert join.waiting == 3 and join.unmatched_outcomes == 0
    now[0] = 20.0
    join.remember_batch(0, "m", "1", 20.0, [("a", 1.0), ("x", 0.0)])
    assert join.take_late() == [(a, entry(20.0))] and join.take_late() == []
    assert (join.waiting, len(join), join.matched, join.late) == (2, 1, 1, 1)  # 'x' waits for its own
    now[0] = 61.0
    assert join.expire_waiting() == [b, c]  # waited since 0: over the grace
    assert (join.waiting, join.unmatched_outcomes) == (0, 2)
    join.remember_batch(0, "m", "1", 61.0, [("b", 1.0)])  # too late for its outcome: it stays
    assert join.take_late() == [] and len(join) == 2


def test_without_a_grace_or_past_its_bound_an_outcome_is_unmatched_at_once() -> None:
    assert OutcomeJoin(ttl_s=60, max_entries=100, grace_s=0).match(0, "a", waiting=copy(0, "a")) is None
    join = OutcomeJoin(ttl_s=60, max_entries=20, grace_s=60)  # waits for at most 2 outcomes
    assert [join.match(0, r, waiting=copy(i, r)) for i, r in enumerate("abc")] == [WAITING, WAITING, None]
    assert (join.waiting, join.unmatched_outcomes) == (2, 1)
    join.drop_partition(0)  # revoked: the next owner restores them from the join topic
    assert join.waiting == 0


def test_a_restore_keeps_the_outcomes_still_waiting_and_joins_them_when_their_prediction_comes() -> None:
    now = [100.0]
    join = OutcomeJoin(ttl_s=900, max_entries=100, clock=lambda: now[0], grace_s=60)
    waiting = copy(2, "b")
    records = [
        copy(0, "a"),  # read before its prediction, and joined to it after: both gone
        (b"requests:0:0", encode_batch("m", "1", 90.0, [("a", 1.0), ("c", 0.0)])),
        waiting,  # its prediction not written yet when the worker stopped
    ]
    assert join.restore(0, records) == 1  # 'c' waits for its outcome
    assert (join.waiting, join.take_late(), join.matched, join.unmatched_outcomes) == (1, [], 0, 0)
    join.remember_batch(0, "m", "1", 101.0, [("b", 0.0)])  # read live: the outcome that waited joins
    assert join.take_late() == [(waiting, JoinEntry("m", "1", 0.0, 101.0))]
    assert join.restore(0, [waiting]) == 0
    now[0] = 200.0
    assert join.expire_waiting() == [] and join.unmatched_outcomes == 0  # maybe counted before: not again
