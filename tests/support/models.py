"""Model packages for tests, built once per session with the real builder (small forests for speed)."""

from __future__ import annotations

from pathlib import Path

from agent.models.repository import ModelRepository
from agent.packaging.builder import build_package
from agent.packaging.examples import breast_cancer, classification_20, diabetes


def build_test_repository(root: Path) -> ModelRepository:
    """breast-cancer/1 (binary, 30 features), diabetes/1 (regression) and classification-20/1."""
    repository = ModelRepository(root)
    build_package(breast_cancer(n_estimators=10), name="breast-cancer", version="1", repository=repository)
    build_package(diabetes(), name="diabetes", version="1", repository=repository)
    build_package(
        classification_20(n_estimators=10, n_samples=2000),
        name="classification-20",
        version="1",
        repository=repository,
    )
    return repository
