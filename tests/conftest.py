"""Session-wide fixtures: one set of real services per test run, shared by every integration test."""

from __future__ import annotations

import asyncio
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.models.repository import ModelRepository
from tests.support.kafka import delete_topics_naming
from tests.support.services import InfluxEndpoint, influx_endpoint, kafka_endpoint, use_worker_bucket

# Apps that integration tests start as worker processes read their settings from the environment at
# import time: --doctest-modules must not import them.
collect_ignore = ["integration/apps"]


def pytest_configure(config: pytest.Config) -> None:
    use_worker_bucket()  # run in parallel (pytest -n), an InfluxDB bucket per test process


_SUFFIXES: set[str] = set()
"""Every suffix :func:`unique` handed out in this process: the topics named with them go at its end."""


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a real Kafka broker (see tests/support/services.py for where from).

    At the end of the session the topics named with the session's :func:`unique` suffixes are deleted:
    a run creates hundreds, and a local broker that kept every run's took longer to start each time
    (14,783 partitions, 12 GB, and `scripts/services up` gave up after its 90 s)."""
    bootstrap, stop = kafka_endpoint()
    try:
        yield bootstrap
    finally:
        try:
            asyncio.run(delete_topics_naming(bootstrap, _SUFFIXES))
        except Exception as exc:  # a broker already gone, or slow: the topics stay, the run's result holds
            warnings.warn(f"the session's topics were not deleted: {exc!r}", stacklevel=1)
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
    suffix = uuid.uuid4().hex[:10]
    _SUFFIXES.add(suffix)
    return suffix


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    """A repository with breast-cancer/1, diabetes/1 and classification-20/1, built once per run.

    Tests must not change it; copy it (``shutil.copytree``) to add or break packages.
    """
    from tests.support.models import build_test_repository

    return build_test_repository(tmp_path_factory.mktemp("models"))


@pytest.fixture
def repository_copy(model_repository: ModelRepository, tmp_path: Path) -> ModelRepository:
    """A private copy of :func:`model_repository` that a test may change."""
    import shutil

    root = tmp_path / "models"
    shutil.copytree(model_repository.root, root)
    return ModelRepository(root)
