"""The registry serves the newest package that passes verification, from its first scan on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from agent.models.registry import ModelRegistry
from agent.models.repository import ModelRepository


def add_version(root: Path, name: str, version: str, *, tampered: bool) -> None:
    """A copy of version 1 as ``version``; ``tampered``: model.onnx changed after packaging."""
    target = root / name / version
    shutil.copytree(root / name / "1", target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["version"] = version
    (target / "manifest.json").write_text(json.dumps(manifest))
    if tampered:
        onnx = (target / "model.onnx").read_bytes()
        (target / "model.onnx").write_bytes(b"\x08\x07" + onnx[2:])


def served(registry: ModelRegistry, name: str) -> str | None:
    model = registry.resolve(name)
    return None if model is None else model.version


def test_a_bad_newest_package_at_start_leaves_the_previous_one_serving(
    repository_copy: ModelRepository,
) -> None:
    root = repository_copy.root
    add_version(root, "breast-cancer", "2", tampered=True)
    registry = ModelRegistry(root)
    report = registry.refresh()
    # Served from the first scan on: it used to serve no version of the model until the next scan
    # (the worker's repository poll), dead-lettering its requests meanwhile.
    assert served(registry, "breast-cancer") == "1"
    assert "breast-cancer/1" in report.loaded and list(report.failed) == ["breast-cancer/2"]
    assert "SHA-256" in report.failed["breast-cancer/2"]
    assert registry.refresh().loaded == [] and served(registry, "breast-cancer") == "1"


def test_a_bad_new_package_falls_back_to_the_newest_good_one(repository_copy: ModelRepository) -> None:
    root = repository_copy.root
    registry = ModelRegistry(root)
    registry.refresh()
    add_version(root, "diabetes", "2", tampered=False)
    add_version(root, "diabetes", "3", tampered=True)
    report = registry.refresh()
    assert served(registry, "diabetes") == "2"
    assert report.loaded == ["diabetes/2"] and list(report.failed) == ["diabetes/3"]


def test_a_bad_pinned_package_is_not_served_and_not_replaced(repository_copy: ModelRepository) -> None:
    root = repository_copy.root
    add_version(root, "breast-cancer", "2", tampered=True)
    registry = ModelRegistry(root, pinned={"breast-cancer": "2"})
    report = registry.refresh()
    assert served(registry, "breast-cancer") is None and list(report.failed) == ["breast-cancer/2"]
    assert served(registry, "diabetes") == "1"
