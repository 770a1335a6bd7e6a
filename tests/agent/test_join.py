from __future__ import annotations

from agent.join import JoinEntry, OutcomeJoin, decode_batch, encode_batch


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
