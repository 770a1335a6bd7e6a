"""Session-wide fixtures: one set of real services per test run, shared by every integration test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.models.repository import ModelRepository
from tests.support.services import InfluxEndpoint, influx_endpoint, kafka_endpoint, use_worker_bucket

# Apps that integration tests start as worker processes read their settings from the environment at
# import time: --doctest-modules must not import them.
collect_ignore = ["integration/apps"]


def pytest_configure(config: pytest.Config) -> None:
    use_worker_bucket()  # run in parallel (pytest -n), an InfluxDB bucket per test process


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
