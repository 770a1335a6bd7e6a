"""Session-wide fixtures: one set of real services per test run, shared by every integration test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.support.services import InfluxEndpoint, influx_endpoint, kafka_endpoint


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a real Kafka broker (see tests/support/services.py for where from)."""
    bootstrap, stop = kafka_endpoint()
    try:
        yield bootstrap
    finally:
        stop()


@pytest.fixture(scope="session")
def influx() -> Iterator[InfluxEndpoint]:
    """A real InfluxDB 2.x with an org, a bucket and a token."""
    endpoint, stop = influx_endpoint()
    try:
        yield endpoint
    finally:
        stop()


@pytest.fixture
def unique() -> str:
    """A short suffix that keeps topic and group names of one test apart from every other test's."""
    return uuid.uuid4().hex[:10]
