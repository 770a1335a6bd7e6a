"""Writing a package atomically, with its versions (agent/packaging/write.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import ConfigurationError, PackageError
from agent.models.package import onnxruntime_max_opset
from agent.models.repository import ModelRepository
from agent.models.versions import installed_versions
from agent.packaging import write as writing
from agent.packaging.convert import target_opsets
from agent.packaging.write import write_package
from tests.agent.conftest import ExamplePackages
from tests.support.models import leftovers


def test_versions_and_opsets_are_recorded(example_packages: ExamplePackages) -> None:
    versions = example_packages.classifier.manifest.versions
    assert {k: v for k, v in versions.packages().items()} == installed_versions()
    limit = onnxruntime_max_opset("ai.onnx")
    assert limit is not None and 1 <= versions.opsets["ai.onnx"] <= limit
    assert target_opsets()[""] <= limit


def test_existing_package_needs_force(example_packages: ExamplePackages, tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    built = example_packages.regressor
    data = (built.path / "model.onnx").read_bytes()
    first = write_package(repo, built.manifest, data)
    (first / "stale-extra-file").write_text("from the old package")
    with pytest.raises(ConfigurationError, match="already exists; pass --force"):
        write_package(repo, built.manifest, data)
    again = write_package(repo, built.manifest, data, force=True)
    assert again == first and sorted(p.name for p in again.iterdir()) == ["manifest.json", "model.onnx"]
    assert leftovers(tmp_path) == []


def test_a_failed_write_leaves_nothing_behind(
    example_packages: ExamplePackages, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = example_packages.regressor
    real = writing._write_synced

    def fail_on_manifest(path: Path, data: bytes) -> None:
        if path.name == "manifest.json":
            raise OSError("disk full")
        real(path, data)

    monkeypatch.setattr(writing, "_write_synced", fail_on_manifest)
    repo = ModelRepository(tmp_path)
    with pytest.raises(OSError, match="disk full"):
        write_package(repo, built.manifest, (built.path / "model.onnx").read_bytes())
    assert repo.scan() == {} and leftovers(tmp_path) == []
    assert not (tmp_path / "diabetes" / "1").exists()


def test_bytes_must_match_the_manifest_digest(example_packages: ExamplePackages, tmp_path: Path) -> None:
    with pytest.raises(PackageError, match="does not match the model bytes"):
        write_package(ModelRepository(tmp_path), example_packages.regressor.manifest, b"other bytes")
