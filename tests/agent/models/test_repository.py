from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import ConfigurationError, PackageError
from agent.models.repository import ModelRepository, next_version, version_key
from tests.agent.conftest import ExamplePackages


def make_repository(root: Path, packages: dict[str, list[str]]) -> ModelRepository:
    for name, versions in packages.items():
        for version in versions:
            (root / name / version).mkdir(parents=True)
            (root / name / version / "manifest.json").write_text("{}")
    return ModelRepository(root)


def test_newest_version_is_numeric_not_lexical(tmp_path: Path) -> None:
    repo = make_repository(tmp_path, {"churn": ["1.9", "1.10", "1.2", "1"], "fraud": ["9", "10", "2"]})
    assert repo.versions("churn") == ["1", "1.2", "1.9", "1.10"]
    assert repo.resolve("churn").version == "1.10"
    assert repo.resolve("fraud").version == "10"
    assert repo.names() == ["churn", "fraud"]


@pytest.mark.parametrize(
    "ordered",
    [
        ["1", "1.0.1", "1.1", "2"],
        ["0.9", "0.10", "0.10.1", "1.0"],
        ["2.0a1", "2.0b2", "2.0rc1", "2.0", "2.0.1"],
        ["2024.1", "2024.2", "2024.10"],
    ],
)
def test_version_order(ordered: list[str]) -> None:
    assert sorted(reversed(ordered), key=version_key) == ordered


def test_pinned_version_wins_over_newest(tmp_path: Path) -> None:
    repo = make_repository(tmp_path, {"churn": ["1", "2", "3"], "fraud": ["1", "2"]})
    assert repo.resolve("churn", pinned="2").version == "2"
    selected = repo.select({"churn": "1"})
    assert {name: ref.version for name, ref in selected.items()} == {"churn": "1", "fraud": "2"}
    assert selected["churn"].path == tmp_path / "churn" / "1"


def test_missing_pins_and_models_name_the_path(tmp_path: Path) -> None:
    repo = make_repository(tmp_path, {"churn": ["1", "2"]})
    with pytest.raises(PackageError, match=r"churn/7: model 'churn' has no version '7' \(available: 1, 2\)"):
        repo.resolve("churn", pinned="7")
    with pytest.raises(PackageError, match="no packages of model 'fraud'"):
        repo.resolve("fraud")
    with pytest.raises(PackageError, match="pinned model 'fraud' is not in"):
        repo.select({"fraud": "1"})


def test_staging_and_unfinished_directories_are_not_packages(tmp_path: Path) -> None:
    repo = make_repository(tmp_path, {"churn": ["1"]})
    (tmp_path / "churn" / ".2.staging-abc").mkdir()
    (tmp_path / "churn" / ".2.staging-abc" / "manifest.json").write_text("{}")
    (tmp_path / "churn" / "3").mkdir()  # no manifest yet
    (tmp_path / ".hidden" / "1").mkdir(parents=True)
    (tmp_path / "README.md").write_text("not a model")
    assert repo.scan().keys() == {"churn"}
    assert repo.versions("churn") == ["1"]


def test_an_empty_or_absent_repository(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "nowhere")
    assert repo.scan() == {} and repo.newest("churn") is None
    assert repo.next_version("churn") == "1"


@pytest.mark.parametrize(
    ("newest", "expected"), [(None, "1"), ("1", "2"), ("1.9", "1.10"), ("2.0rc1", "2.0rc2"), ("v3", "v4")]
)
def test_next_version(newest: str | None, expected: str) -> None:
    assert next_version(newest) == expected


def test_next_version_needs_a_number() -> None:
    with pytest.raises(ConfigurationError, match="pass --version"):
        next_version("stable")


@pytest.mark.parametrize(("name", "version"), [("../evil", "1"), ("churn", ".hidden"), ("churn", "a/b")])
def test_package_dir_refuses_unsafe_names(tmp_path: Path, name: str, version: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid model"):
        ModelRepository(tmp_path).package_dir(name, version)


def test_scan_finds_built_packages(example_packages: ExamplePackages) -> None:
    repo = example_packages.repository
    assert repo.names() == ["breast-cancer", "diabetes"]
    ref = repo.resolve("diabetes")
    assert ref.model_path.is_file() and ref.manifest_path.is_file()
