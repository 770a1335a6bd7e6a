"""The outage helpers as plain parts: the repeat summary, the broker watch, the reconnect backoff.

tests/integration/test_outage.py stops a real broker under a real worker and counts its log lines.
"""

from __future__ import annotations

import itertools
import logging
import time
from types import SimpleNamespace
from typing import Any

import pytest

from agent.kafka_outage import BACKOFF_MAX_S, BrokerWatch, RepeatSummary, _with_backoff, reconnect_backoff


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(message: str, *args: object, level: int = logging.ERROR, name: str = "aiokafka.client") -> Any:
    return logging.LogRecord(name, level, __file__, 1, message, args, None)


def test_one_record_of_a_kind_per_window_and_the_next_says_how_many_were_held_back() -> None:
    clock = Clock()
    summary = RepeatSummary(window_s=60, clock=clock)
    passed = []
    for i in range(1000):  # 1,000 connection errors in 50 s, each naming its node
        clock.now = i * 0.05
        r = record("Unable connect to node with id %s: %s", i % 3, "refused")
        if summary.filter(r):
            passed.append(r.getMessage())
    # Other kinds, and lower levels, are not held back by it.
    assert summary.filter(record("Unable to update metadata from %s", [1]))
    assert summary.filter(record("Unable connect to node with id %s: %s", 1, "x", name="aiokafka.conn"))
    assert summary.filter(record("Unable connect to node with id %s: %s", 1, "x", level=logging.WARNING))
    assert all(summary.filter(record("Discovered coordinator %s", 1, level=logging.INFO)) for _ in range(5))
    clock.now = 61.0
    late = record("Unable connect to node with id %s: %s", 2, "refused")
    assert summary.filter(late)
    assert passed == ["Unable connect to node with id 0: refused"]
    assert late.getMessage() == (
        "Unable connect to node with id 2: refused [and 999 more like it in the last 61 s, not logged]"
    )
    assert late.args == () and summary.held_back == 999


def test_a_library_that_formats_its_own_messages_does_not_grow_the_summary_without_bound() -> None:
    summary = RepeatSummary(window_s=60, clock=Clock())
    assert all(summary.filter(record(f"error {i}")) for i in range(5000))
    assert len(summary._kinds) == 1000


def test_the_watch_says_once_that_a_broker_is_gone_and_once_that_it_is_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, summary = Clock(), RepeatSummary(clock=Clock())
    watch = BrokerWatch(summary, clock=clock)
    with caplog.at_level(logging.INFO, logger="agent.kafka_outage"):
        for _ in range(50):
            watch.failed("127.0.0.1:9092")
        summary.held_back += 42
        clock.now = 75.0
        watch.connected("127.0.0.1:9092")
        watch.connected("127.0.0.1:9092")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert messages[0].startswith("Kafka unreachable: cannot connect to broker 127.0.0.1:9092.")
    assert messages[1] == (
        "Kafka reachable again: connected to broker 127.0.0.1:9092 after 75.0 s "
        "(42 repeated Kafka client log records not logged meanwhile)"
    )
    assert watch.unreachable == []


def test_the_backoff_doubles_up_to_its_cap_within_its_jitter() -> None:
    for failures, exact in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, BACKOFF_MAX_S), (30, BACKOFF_MAX_S)]:
        waits = [reconnect_backoff(failures, 0.1) for _ in range(200)]
        assert 0.8 * exact <= min(waits) and max(waits) <= 1.2 * exact, (failures, min(waits), max(waits))


async def test_connections_to_a_node_that_refuses_them_are_attempted_with_a_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    attempts: list[float] = []
    answers = [None] * 5 + ["connection"]

    async def get_conn(client: Any, node_id: int, **kwargs: Any) -> Any:
        attempts.append(time.monotonic())
        return answers[len(attempts) - 1]

    broker = SimpleNamespace(host="127.0.0.1", port=9092)
    client = SimpleNamespace(_retry_backoff=0.02, cluster=SimpleNamespace(broker_metadata=lambda _: broker))
    wrapped = _with_backoff(get_conn, BrokerWatch())
    with caplog.at_level(logging.INFO, logger="agent.kafka_outage"):
        # What aiokafka's retry loops do: ask again as soon as the previous attempt answered None.
        got = [await wrapped(client, 1) for _ in range(6)]
    assert got == answers
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    # 20, 40, 80, 160, 320 ms, each within 20 % (and the loop's own lateness).
    for gap, exact in zip(gaps, [0.02, 0.04, 0.08, 0.16, 0.32], strict=True):
        assert 0.8 * exact <= gap <= 1.2 * exact + 0.25, gaps
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "Kafka unreachable",
        "Kafka reachable again",
    ]
    # Connected again: the next attempt does not wait.
    started = time.monotonic()
    answers.append("connection")
    await wrapped(client, 1)
    assert time.monotonic() - started < 0.01
