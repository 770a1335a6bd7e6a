"""The Kafka incident store's queue, handed over to a publisher (:meth:`KafkaIncidentStore.taken`). A
store that is not started only queues, so this needs no broker; ``tests/integration/test_incidents_kafka.py``
has it on the real one."""

from __future__ import annotations

import json

import pytest

from agent.alerting.incident_store import KafkaIncidentStore
from agent.monitoring.incidents import Incident, IncidentKey

A = IncidentKey("m", "data", "a")
B = IncidentKey("m", "data", "b")


def incident(key: IncidentKey) -> Incident:
    return Incident(key, f"alert-{key.subject}", opened_at=1.0, last_alerted_at=1.0)


async def test_records_taken_are_written_once_and_in_order_or_go_back_to_the_front() -> None:
    store = KafkaIncidentStore("incidents", {"bootstrap_servers": "127.0.0.1:9"})
    store.put(A, incident(A))
    store.put(B, None)  # closed: a tombstone
    with pytest.raises(ConnectionError):
        async with store.taken() as records:
            assert [json.loads(m.key) for m in records] == [list(A), list(B)]
            assert json.loads(records[0].value)["alert_id"] == "alert-a" and records[1].value is None
            assert {m.topic for m in records} == {"incidents"}
            assert all(dict(m.headers).keys() == {"driftline-writer"} for m in records)
            store.put(A, None)  # a later change, queued while the publisher works
            raise ConnectionError("broker away")
    assert store.written == 0
    # The failed ones are back in front of the later change: the topic gets them in the order put.
    async with store.taken() as records:
        assert [(json.loads(m.key)[-1], m.value is None) for m in records] == [
            ("a", False),
            ("b", True),
            ("a", True),
        ]
    assert store.written == 3
    async with store.taken() as records:
        assert records == []


def test_a_store_not_started_offers_a_publisher_nothing() -> None:
    # Before start() has made sure of the compacted topic, a publisher's own producer would create it
    # (not compacted) where brokers create topics: the records wait for the store's writer.
    store = KafkaIncidentStore("incidents", {"bootstrap_servers": "127.0.0.1:9"})
    store.put(A, incident(A))
    assert store.pending == 0
