"""Model packages built once per test session for the loader, repository and builder tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.models.repository import ModelRepository
from agent.packaging.builder import BuiltPackage, build_package
from agent.packaging.examples import breast_cancer, diabetes
from agent.packaging.training import TrainingResult


@dataclass(frozen=True)
class ExamplePackages:
    """The bundled breast-cancer classifier and diabetes regressor, built with the real builder."""

    repository: ModelRepository
    classifier: BuiltPackage
    classifier_training: TrainingResult
    regressor: BuiltPackage
    regressor_training: TrainingResult


@pytest.fixture(scope="session")
def example_packages(tmp_path_factory: pytest.TempPathFactory) -> ExamplePackages:
    """Read-only: copy a package directory (``shutil.copytree``) before changing it."""
    repository = ModelRepository(tmp_path_factory.mktemp("example-models"))
    cancer, sugar = breast_cancer(), diabetes()
    return ExamplePackages(
        repository,
        build_package(cancer, name="breast-cancer", version="1", repository=repository),
        cancer,
        build_package(sugar, name="diabetes", version="1", repository=repository),
        sugar,
    )


@pytest.fixture
def package_copy(example_packages: ExamplePackages, tmp_path: Path) -> Path:
    """A private copy of the breast-cancer package that a test may break."""
    import shutil

    target = tmp_path / "breast-cancer" / "1"
    shutil.copytree(example_packages.classifier.path, target)
    return target
