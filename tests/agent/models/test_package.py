from __future__ import annotations

import hashlib
import json
import pickle
import pickletools
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import pytest

from agent.errors import (
    CorruptModelError,
    DigestMismatchError,
    GraphMismatchError,
    ManifestError,
    PackageError,
    PickleRefusedError,
    PredictionError,
    UnsupportedOpsetError,
)
from agent.models import package as model_module
from agent.models.package import (
    LoadedModel,
    load_package,
    onnxruntime_max_opset,
)
from agent.models.versions import (
    DependencyFinding,
    dependency_findings,
    installed_versions,
    version_difference,
)
from tests.agent.conftest import ExamplePackages

# --- helpers ----------------------------------------------------------------------------------


def edit_manifest(package: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = package / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def resign(package: Path) -> None:
    """Records model.onnx's current digest, as a tamperer who also edits the manifest would."""
    digest = hashlib.sha256((package / "model.onnx").read_bytes()).hexdigest()
    edit_manifest(package, lambda m: m.update(onnx_sha256=digest))


def edit_graph(package: Path, change: Callable[[onnx.ModelProto], None]) -> None:
    graph = onnx.load(package / "model.onnx")
    change(graph)
    onnx.save(graph, package / "model.onnx")
    resign(package)


class _CreatesMarker:
    """Unpickling this calls open(marker, "w"): proof that a loader unpickled the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def live_pickle(marker: Path) -> bytes:
    return pickle.dumps(_CreatesMarker(marker), protocol=4)


def assert_unloaded(path: Path, error: type[PackageError], *fragments: str) -> str:
    model = LoadedModel(path)
    with pytest.raises(error) as caught:
        model.load()
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, message
    assert not model.loaded
    with pytest.raises(PredictionError, match="not loaded"):
        model.predict(np.zeros((1, 30), dtype=np.float32))
    return message


# --- parity -----------------------------------------------------------------------------------


def test_classifier_package_predicts_like_sklearn(example_packages: ExamplePackages) -> None:
    training = example_packages.classifier_training
    X = np.asarray(training.X_holdout, dtype=np.float32)
    with load_package(example_packages.classifier.path) as model:
        out = model.predict(X)
    assert out.values is None and out.labels is not None and out.probabilities is not None
    assert out.probabilities.dtype == np.float32 and out.probabilities.shape == (len(X), 2)
    np.testing.assert_array_equal(out.labels, training.estimator.predict(X))
    np.testing.assert_allclose(out.probabilities, training.estimator.predict_proba(X), atol=1e-5)
    assert len(out) == len(X)


def test_regressor_package_predicts_like_sklearn(example_packages: ExamplePackages) -> None:
    training = example_packages.regressor_training
    X = np.asarray(training.X_holdout, dtype=np.float32)
    with load_package(example_packages.regressor.path) as model:
        out = model.predict(X)
    assert out.labels is None and out.probabilities is None and out.values is not None
    assert out.values.shape == (len(X),)
    np.testing.assert_allclose(out.values, training.estimator.predict(X), rtol=1e-4)


def test_a_batch_is_one_onnxruntime_call(
    example_packages: ExamplePackages, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = load_package(example_packages.classifier.path)
    calls: list[int] = []
    real_run = onnxruntime.InferenceSession.run

    def counting_run(self: onnxruntime.InferenceSession, *args: Any, **kwargs: Any) -> Any:
        calls.append(len(args[1]["input"]))
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(onnxruntime.InferenceSession, "run", counting_run)
    out = model.predict(np.zeros((256, 30), dtype=np.float64))  # float64 is converted, not refused
    assert calls == [256] and len(out) == 256


def test_empty_batch(example_packages: ExamplePackages) -> None:
    out = load_package(example_packages.regressor.path).predict(np.zeros((0, 10), dtype=np.float32))
    assert out.values is not None and out.values.shape == (0,)


def test_wrong_width_and_closed_model_are_prediction_errors(example_packages: ExamplePackages) -> None:
    model = load_package(example_packages.classifier.path)
    with pytest.raises(PredictionError, match=r"expected a \(n, 30\) float32 array, got \(4, 29\)"):
        model.predict(np.zeros((4, 29), dtype=np.float32))
    model.close()
    assert not model.loaded
    with pytest.raises(PredictionError, match="not loaded"):
        model.predict(np.zeros((1, 30), dtype=np.float32))
    assert model.load().loaded  # a closed model can be loaded again


def test_session_uses_one_intra_op_thread_by_default(example_packages: ExamplePackages) -> None:
    model = load_package(example_packages.classifier.path)
    state = model._state
    assert state is not None
    assert state.session.get_session_options().intra_op_num_threads == 1
    assert state.session.get_providers() == ["CPUExecutionProvider"]


def test_a_model_file_or_manifest_path_stands_for_its_package(example_packages: ExamplePackages) -> None:
    path = example_packages.classifier.path
    assert load_package(path / "model.onnx").manifest.name == "breast-cancer"
    assert load_package(path / "manifest.json").manifest.version == "1"


# --- bad packages -----------------------------------------------------------------------------


def test_truncated_onnx_is_corrupt(package_copy: Path) -> None:
    model_file = package_copy / "model.onnx"
    model_file.write_bytes(model_file.read_bytes()[:5000])
    resign(package_copy)
    assert_unloaded(package_copy, CorruptModelError, str(model_file), "not a valid ONNX model")


def test_changed_model_bytes_fail_the_digest(package_copy: Path) -> None:
    model_file = package_copy / "model.onnx"
    data = bytearray(model_file.read_bytes())
    data[-100] ^= 0xFF
    model_file.write_bytes(bytes(data))
    assert_unloaded(package_copy, DigestMismatchError, str(model_file), "SHA-256 is", "records")


def test_missing_model_file(package_copy: Path) -> None:
    (package_copy / "model.onnx").unlink()
    assert_unloaded(package_copy, CorruptModelError, str(package_copy / "model.onnx"), "missing")


def test_missing_manifest(package_copy: Path) -> None:
    (package_copy / "manifest.json").unlink()
    assert_unloaded(package_copy, ManifestError, str(package_copy / "manifest.json"), "manifest is missing")


def test_manifest_that_is_not_json(package_copy: Path) -> None:
    (package_copy / "manifest.json").write_text("{not json")
    assert_unloaded(package_copy, ManifestError, "manifest.json", "not valid JSON")


def test_invalid_manifest_is_reported_compactly(package_copy: Path) -> None:
    def break_it(m: dict[str, Any]) -> None:
        del m["task"]
        m["features"][0]["type"] = "text"

    edit_manifest(package_copy, break_it)
    message = assert_unloaded(package_copy, ManifestError, "manifest.json", "invalid manifest", "task:")
    assert "features.0.type:" in message
    assert "\n" not in message and "errors.pydantic.dev" not in message


def test_unknown_schema_version(package_copy: Path) -> None:
    edit_manifest(package_copy, lambda m: m.update(schema_version="2"))
    assert_unloaded(package_copy, ManifestError, "manifest.json", "schema_version '2' is not supported")


def test_feature_list_that_does_not_match_the_graph(package_copy: Path) -> None:
    def drop_last_feature(m: dict[str, Any]) -> None:
        name = m["features"].pop()["name"]
        del m["reference"]["features"][name]
        del m["importance"]["values"][name]
        del m["reference"]["reconstruction"]  # it covers every feature; the manifest must validate

    edit_manifest(package_copy, drop_last_feature)
    assert_unloaded(
        package_copy, GraphMismatchError, str(package_copy / "model.onnx"), "29 features", "[None, 30]"
    )


def test_output_names_that_do_not_match_the_graph(package_copy: Path) -> None:
    edit_manifest(package_copy, lambda m: m["outputs"].update(label="output_label"))
    assert_unloaded(package_copy, GraphMismatchError, "model.onnx", "graph outputs", "output_label")


def test_renamed_graph_input(package_copy: Path) -> None:
    def rename(graph: onnx.ModelProto) -> None:
        graph.graph.input[0].name = "X"
        for node in graph.graph.node:
            node.input[:] = ["X" if i == "input" else i for i in node.input]

    edit_graph(package_copy, rename)
    assert_unloaded(package_copy, GraphMismatchError, "model.onnx", "exactly one input named 'input'")


def test_opset_newer_than_onnxruntime_supports(package_copy: Path) -> None:
    limit = onnxruntime_max_opset("ai.onnx")
    assert limit is not None and limit >= 21

    def stamp(graph: onnx.ModelProto) -> None:
        for entry in graph.opset_import:
            if entry.domain == "":
                entry.version = limit + 5

    edit_graph(package_copy, stamp)
    assert_unloaded(
        package_copy,
        UnsupportedOpsetError,
        str(package_copy / "model.onnx"),
        f"needs opset {limit + 5} of domain ai.onnx",
        f"supports up to {limit}",
    )


def test_session_errors_about_opsets_are_mapped_when_the_limit_is_unknown(
    package_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model_module, "onnxruntime_max_opset", lambda domain: None)

    def stamp(graph: onnx.ModelProto) -> None:
        for entry in graph.opset_import:
            if entry.domain == "ai.onnx.ml":
                entry.version = 999

    edit_graph(package_copy, stamp)
    assert_unloaded(package_copy, UnsupportedOpsetError, "model.onnx", "cannot run this model", "999")


# --- pickle -----------------------------------------------------------------------------------


def test_the_pickle_payload_is_live() -> None:
    # Control for the refusal tests, checked without unpickling: the payload calls builtins.open.
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(live_pickle(Path("marker")))]
    names = [op for op, _ in ops]
    assert ("SHORT_BINUNICODE", "open") in ops and "STACK_GLOBAL" in names and "REDUCE" in names


@pytest.mark.parametrize("suffix", [".pkl", ".pickle", ".joblib"])
def test_pickle_files_are_refused_unopened(tmp_path: Path, suffix: str) -> None:
    marker = tmp_path / "unpickled"
    path = tmp_path / f"model{suffix}"
    path.write_bytes(live_pickle(marker))
    with pytest.raises(PickleRefusedError) as caught:
        load_package(path)
    message = str(caught.value)
    assert str(path) in message
    assert "arbitrary code" in message and "driftline package --module" in message
    assert not marker.exists()


def test_a_directory_with_a_pickle_instead_of_model_onnx_is_refused(package_copy: Path) -> None:
    marker = package_copy.parent / "unpickled"
    (package_copy / "model.onnx").unlink()
    (package_copy / "model.joblib").write_bytes(live_pickle(marker))
    with pytest.raises(PickleRefusedError, match=r"model\.joblib"):
        load_package(package_copy)
    assert not marker.exists()


def test_a_pickle_named_model_onnx_is_refused_by_its_header(package_copy: Path) -> None:
    marker = package_copy.parent / "unpickled"
    (package_copy / "model.onnx").write_bytes(live_pickle(marker))
    resign(package_copy)  # even with a matching digest
    with pytest.raises(PickleRefusedError, match=r"model\.onnx: refusing to load a pickle file"):
        load_package(package_copy)
    assert not marker.exists()


# --- technical drift --------------------------------------------------------------------------


def test_versions_recorded_at_build_time_are_the_installed_ones(example_packages: ExamplePackages) -> None:
    assert load_package(example_packages.classifier.path).findings == ()


def test_findings_for_each_library_that_moved(package_copy: Path) -> None:
    now = installed_versions()
    assert now["numpy"] and now["scikit-learn"] and now["onnx"]

    def older(version: str, part: int) -> str:
        numbers = [int(x) for x in version.split(".")[:3]] + [0, 0]
        numbers[part] += 1
        return ".".join(str(n) for n in numbers[:3])

    def rewrite(m: dict[str, Any]) -> None:
        m["versions"].update(
            numpy=older(now["numpy"], 0),  # type: ignore[arg-type]
            scikit_learn=older(now["scikit-learn"], 1),  # type: ignore[arg-type]
            onnx=older(now["onnx"], 2),  # type: ignore[arg-type]
        )

    # The digest covers model.onnx only, so the manifest's versions can be edited in place.
    edit_manifest(package_copy, rewrite)
    findings = load_package(package_copy).findings
    assert [(f.package, f.level) for f in findings] == [
        ("numpy", "major"),
        ("scikit-learn", "minor"),
        ("onnx", "patch"),
    ]
    assert all(f.installed == now[f.package] for f in findings)


def test_a_library_missing_at_serving_time_is_a_finding() -> None:
    built = {"python": "3.11.7", "numpy": "2.1.0", "onnxruntime": "1.18.0"}
    installed = {"python": "3.12.1", "onnxruntime": "1.18.0"}
    assert dependency_findings(built, installed) == (
        DependencyFinding("python", "3.11.7", "3.12.1", "minor"),
        DependencyFinding("numpy", "2.1.0", None, "missing"),
    )


def test_a_lean_worker_without_the_build_libraries_has_no_finding_for_them() -> None:
    # scikit-learn, skl2onnx and onnx build a package; a worker installed without the build extra
    # serves it all the same. A different version that is installed is still a finding.
    built = {"scikit-learn": "1.5.0", "skl2onnx": "1.17.0", "onnx": "1.16.0", "onnxruntime": "1.18.0"}
    installed = {"scikit-learn": "1.6.0", "onnxruntime": "1.18.0"}
    assert dependency_findings(built, installed) == (
        DependencyFinding("scikit-learn", "1.5.0", "1.6.0", "minor"),
    )


@pytest.mark.parametrize(
    ("built", "installed", "level"),
    [
        ("1.4.2", "1.4.2", None),
        ("1.4", "1.4.0", None),
        ("1.4.2", "2.0.0", "major"),
        ("1.4.2", "1.5.2", "minor"),
        ("1.4.2", "1.4.3", "patch"),
        ("1.18.0", "1.18.0rc1", "patch"),
        ("weird", "weird", None),
        ("weird", "other", "patch"),
    ],
)
def test_version_difference(built: str, installed: str, level: str | None) -> None:
    assert version_difference(built, installed) == level


def test_loading_twice_and_the_package_being_a_copy(
    example_packages: ExamplePackages, tmp_path: Path
) -> None:
    # A package is self-contained: it loads from anywhere, with any directory name.
    moved = tmp_path / "elsewhere"
    shutil.copytree(example_packages.regressor.path, moved)
    model = LoadedModel(moved, intra_op_num_threads=2)
    assert model.load() is model.load()
    assert model.manifest.name == "diabetes"
