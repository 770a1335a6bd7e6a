"""Loading a model package and scoring batches with ONNX Runtime.

:class:`LoadedModel` follows the model-runtime contract (MLServer's ``MLModel`` style): the
constructor only remembers where the package is, :meth:`LoadedModel.load` does all the heavy and
risky work (reading, verifying, creating the ONNX Runtime session), :meth:`LoadedModel.predict`
scores one batch with one ONNX Runtime call, :meth:`LoadedModel.close` releases the session.

Loading verifies, in order: the path is not a pickle (refused, never opened by an unpickler); the
manifest parses and has a known schema version; ``model.onnx`` has the SHA-256 digest the manifest
records; the ONNX graph parses; the installed onnxruntime supports its opsets and IR version; the
graph's one input and its outputs match the manifest. A regressor's error model (the manifest's
``error_model``, a second ONNX graph in the package) goes through the same checks: its digest, its
opsets and IR version, its one input and one output. Every failure raises a
:class:`~agent.errors.PackageError` subclass whose message starts with the offending file, and leaves
the model unloaded.

Loading also reports technical drift: each library whose installed version differs from the one the
package was built with becomes a :class:`DependencyFinding`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from agent.errors import (
    CorruptModelError,
    DigestMismatchError,
    GraphMismatchError,
    ManifestError,
    PackageError,
    PickleRefusedError,
    PredictionError,
    UnsupportedOpsetError,
    describe_validation_error,
)
from agent.models.onnx_proto import FLOAT, ModelInfo, ProtoError, probe_model, read_model
from agent.models.repository import MANIFEST_FILE, MODEL_FILE
from agent.models.versions import DependencyFinding, dependency_findings
from schemas.manifest import MANIFEST_SCHEMA_VERSION, Manifest

if TYPE_CHECKING:
    import onnxruntime

__all__ = [
    "PICKLE_SUFFIXES",
    "LoadedModel",
    "Predictions",
    "check_runtime_support",
    "load_package",
    "onnxruntime_max_ir_version",
    "onnxruntime_max_opset",
    "refuse_pickle",
    "sha256_file",
]

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
"""File suffixes refused outright: loading any of them would unpickle."""

DEFAULT_DOMAIN = "ai.onnx"
"""How the manifest and the messages name ONNX's default ("") domain."""


# --- pickle refusal ---------------------------------------------------------------------------


def _pickle_message(path: Path) -> str:
    return (
        f"{path}: refusing to load a pickle file: unpickling runs arbitrary code from the file, so "
        "a pickled or joblib-dumped model could take over the process that loads it. Convert the "
        "model to ONNX where it was trained (skl2onnx, onnxmltools, torch.onnx, tf2onnx) and bring "
        "the ONNX file: driftline package --onnx model.onnx --reference reference.csv; or package it "
        "from your training code: driftline package --module path/to/train.py (see examples/)"
    )


def _looks_like_pickle(head: bytes) -> bool:
    # Pickle protocols 2+ open with the PROTO opcode 0x80 and the protocol number. A serialized
    # ONNX ModelProto opens with a field tag (ir_version is field 1: 0x08), never 0x80.
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 9


def refuse_pickle(path: Path) -> None:
    """Raises :class:`~agent.errors.PickleRefusedError` if ``path`` is, or holds, a pickle.

    Judged by suffix (``.pkl``, ``.pickle``, ``.joblib``) and, for files, by the pickle protocol
    header; the file is never handed to an unpickler.

    Example:
        >>> try:
        ...     refuse_pickle(Path("models/churn/3/model.pkl"))
        ... except PickleRefusedError as exc:
        ...     print(str(exc).split(":")[1].strip())
        refusing to load a pickle file
    """
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise PickleRefusedError(_pickle_message(path))
    if path.is_dir():
        # A stray pickle beside a real model.onnx is never read, so only its absence matters.
        if not (path / MODEL_FILE).exists():
            for child in sorted(path.iterdir()):
                if child.suffix.lower() in PICKLE_SUFFIXES:
                    raise PickleRefusedError(_pickle_message(child))
    elif path.is_file():
        with path.open("rb") as f:
            if _looks_like_pickle(f.read(2)):
                raise PickleRefusedError(_pickle_message(path))


# --- onnxruntime's limits ---------------------------------------------------------------------


def _probe_error(model: bytes) -> str | None:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4
    try:
        onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own pybind exception types
        return str(exc)
    return None


_FAR_FUTURE = 10_000


@functools.cache
def onnxruntime_max_opset(domain: str) -> int | None:
    """Highest opset of ``domain`` (``"ai.onnx"`` or ``""`` for the default) the installed
    onnxruntime officially supports, or ``None`` if it cannot tell.

    onnxruntime has no Python API for this, but it refuses a model stamped with a newer opset with a
    message that names its limit; this asks it once per process with a one-node model.
    """
    onnx_domain = "" if domain == DEFAULT_DOMAIN else domain
    opsets = {onnx_domain: _FAR_FUTURE}
    if onnx_domain:
        opsets[""] = 7
    message = _probe_error(probe_model(opsets, ir_version=8))
    if message is None:
        return None
    found = re.search(r"support for domain (\S+) is till opset (\d+)", message)
    return int(found.group(2)) if found else None


@functools.cache
def onnxruntime_max_ir_version() -> int | None:
    """Highest ONNX IR version the installed onnxruntime loads, or ``None`` if it cannot tell."""
    message = _probe_error(probe_model({"": 7}, ir_version=_FAR_FUTURE))
    if message is None:
        return None
    found = re.search(r"max supported IR version: (\d+)", message)
    return int(found.group(1)) if found else None


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _package_dir(path: Path) -> Path:
    refuse_pickle(path)
    if path.is_file():
        if path.name in (MODEL_FILE, MANIFEST_FILE):
            return path.parent
        raise PackageError(
            f"{path}: not a model package; expected a directory holding {MODEL_FILE} and {MANIFEST_FILE}"
        )
    if not path.is_dir():
        raise PackageError(f"{path}: no such model package directory")
    return path


def _read_manifest(path: Path) -> Manifest:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(f"{path}: manifest is missing") from None
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read the manifest: {exc}") from exc
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ManifestError(f"{path}: manifest is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: manifest must be a JSON object")
    version = data.get("schema_version")
    if version != MANIFEST_SCHEMA_VERSION:
        raise ManifestError(
            f"{path}: manifest schema_version {version!r} is not supported "
            f"(this driftline reads {MANIFEST_SCHEMA_VERSION!r})"
        )
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(
            f"{path}: invalid manifest: {describe_validation_error(exc, 5, whole='(top level)')}"
        ) from exc


def _parse_onnx(path: Path, data: bytes) -> ModelInfo:
    try:
        model = read_model(data)
    except ProtoError as exc:  # all mean "not ONNX"
        raise CorruptModelError(f"{path}: not a valid ONNX model: {exc}") from exc
    if model.ir_version == 0 or not model.n_nodes:
        raise CorruptModelError(f"{path}: not a valid ONNX model: no IR version or an empty graph")
    return model


def check_runtime_support(
    source: object, opsets: Iterable[tuple[str, int]], ir_version: int, *, advice: str
) -> dict[str, int]:
    """The model's opsets by domain (``ai.onnx`` for the default one, the highest of each); raises
    :class:`~agent.errors.UnsupportedOpsetError` naming ``source`` if the installed onnxruntime
    cannot run one of them or the IR version. ``advice`` follows the opset message; ``{limit}`` in it
    is the supported opset."""
    import onnxruntime

    found: dict[str, int] = {}
    for domain, version in opsets:
        name = domain or DEFAULT_DOMAIN
        found[name] = max(found.get(name, 0), int(version))
    for domain, version in found.items():
        limit = onnxruntime_max_opset(domain)
        if limit is not None and version > limit:
            raise UnsupportedOpsetError(
                f"{source}: needs opset {version} of domain {domain}, but the installed onnxruntime "
                f"{onnxruntime.__version__} supports up to {limit}{advice.format(limit=limit)}"
            )
    max_ir = onnxruntime_max_ir_version()
    if max_ir is not None and ir_version > max_ir:
        raise UnsupportedOpsetError(
            f"{source}: has ONNX IR version {ir_version}, but the installed onnxruntime "
            f"{onnxruntime.__version__} loads up to {max_ir}"
        )
    return found


def _check_graph(path: Path, model: ModelInfo, manifest: Manifest) -> None:
    inputs = [i for i in model.inputs if i.name not in model.initializers]
    if [i.name for i in inputs] != ["input"]:
        raise GraphMismatchError(
            f"{path}: the graph must have exactly one input named 'input', has {[i.name for i in inputs]}"
        )
    (graph_input,) = inputs
    if graph_input.elem_type != FLOAT:
        raise GraphMismatchError(f"{path}: input 'input' must be float32, is {graph_input.elem_type_name}")
    dims = graph_input.dims
    n_features = len(manifest.features)
    if len(dims) != 2 or dims[1] != n_features:
        raise GraphMismatchError(
            f"{path}: input 'input' has shape {dims}, but the manifest lists {n_features} "
            f"features, so it must be [None, {n_features}]"
        )
    outputs = {o.name: o for o in model.outputs}
    expected = manifest.outputs.names
    if sorted(outputs) != sorted(expected):
        raise GraphMismatchError(
            f"{path}: graph outputs {sorted(outputs)} do not match the manifest's outputs {sorted(expected)}"
        )
    probabilities = manifest.outputs.probabilities
    if probabilities is not None:
        n_classes = len(manifest.outputs.class_labels or ())
        width = outputs[probabilities].dims[-1:]
        if width and width[0] is not None and width[0] != n_classes:
            raise GraphMismatchError(
                f"{path}: output {probabilities!r} has {width[0]} columns, but the manifest lists "
                f"{n_classes} classes"
            )


def _check_error_graph(path: Path, model: ModelInfo, manifest: Manifest) -> None:
    assert manifest.error_model is not None
    inputs = [i for i in model.inputs if i.name not in model.initializers]
    if [i.name for i in inputs] != ["input"]:
        raise GraphMismatchError(
            f"{path}: the error model must have exactly one input named 'input', has "
            f"{[i.name for i in inputs]}"
        )
    (graph_input,) = inputs
    if graph_input.elem_type != FLOAT:
        raise GraphMismatchError(f"{path}: input 'input' must be float32, is {graph_input.elem_type_name}")
    width = manifest.error_model.width(len(manifest.features))
    if len(graph_input.dims) != 2 or graph_input.dims[1] != width:
        raise GraphMismatchError(
            f"{path}: input 'input' has shape {graph_input.dims}, but the error model reads "
            f"{manifest.error_model.inputs}, so it must be [None, {width}]"
        )
    if len(model.outputs) != 1 or model.outputs[0].elem_type != FLOAT:
        raise GraphMismatchError(
            f"{path}: the error model must have one float32 output, has "
            f"{[(o.name, o.elem_type_name) for o in model.outputs]}"
        )


def _load_error_model(
    directory: Path, manifest: Manifest, threads: int
) -> tuple[onnxruntime.InferenceSession, str] | None:
    """The verified session of the package's error model and its output's name, if it has one."""
    error_model = manifest.error_model
    if error_model is None:
        return None
    path = directory / error_model.file
    refuse_pickle(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CorruptModelError(f"{path}: error model file is missing") from None
    except OSError as exc:
        raise CorruptModelError(f"{path}: cannot read the error model: {exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != error_model.sha256:
        raise DigestMismatchError(
            f"{path}: SHA-256 is {digest}, but {MANIFEST_FILE} records {error_model.sha256}: the "
            "error model file was changed or replaced after packaging"
        )
    graph = _parse_onnx(path, data)
    check_runtime_support(
        path,
        graph.opsets.items(),
        graph.ir_version,
        advice="; upgrade onnxruntime or rebuild the package with `driftline package`, which "
        "targets the installed onnxruntime",
    )
    _check_error_graph(path, graph, manifest)
    session = _create_session(path, data, threads)
    return session, session.get_outputs()[0].name


def _create_session(path: Path, data: bytes, threads: int) -> onnxruntime.InferenceSession:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # We scale by processes, not threads: one intra-op thread per process by default keeps
    # several workers on one host from oversubscribing its cores.
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    try:
        return onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT's pybind exception types share no useful base class
        message = str(exc)
        if type(exc).__name__ == "NotImplemented" or re.search(r"opset|IR version", message):
            raise UnsupportedOpsetError(
                f"{path}: the installed onnxruntime {onnxruntime.__version__} cannot run this "
                f"model: {message.strip()}"
            ) from exc
        raise CorruptModelError(f"{path}: onnxruntime cannot load the model: {message.strip()}") from exc


@dataclass(frozen=True)
class Predictions:
    """The model's output for one batch, one entry per input row.

    Parameters:
        labels: Classifiers: predicted class labels, ``(n,)``, int64 or str as in
            ``manifest.outputs.class_labels``.
        probabilities: Classifiers: ``(n, n_classes)`` float32, columns in
            ``manifest.outputs.class_labels`` order.
        values: Regressors: ``(n,)`` float32.
    """

    labels: npt.NDArray[Any] | None = None
    probabilities: npt.NDArray[np.float32] | None = None
    values: npt.NDArray[np.float32] | None = None

    def __len__(self) -> int:
        for array in (self.labels, self.values):
            if array is not None:
                return len(array)
        return 0


@dataclass(frozen=True)
class _Loaded:
    manifest: Manifest
    session: onnxruntime.InferenceSession
    output_names: list[str]
    findings: tuple[DependencyFinding, ...]
    error_model: tuple[onnxruntime.InferenceSession, str] | None = None


class LoadedModel:
    """A model package served with ONNX Runtime.

    Parameters:
        path: The package directory (or its ``model.onnx`` / ``manifest.json``).
        intra_op_num_threads: ONNX Runtime threads per batch; 1 because driftline scales by
            processes.

    Example:
        >>> model = LoadedModel("models/does-not-exist/1")
        >>> model.loaded
        False
        >>> try:
        ...     model.load()
        ... except PackageError as exc:
        ...     print(exc)
        models/does-not-exist/1: no such model package directory
        >>> model.loaded
        False
    """

    def __init__(self, path: Path | str, *, intra_op_num_threads: int = 1) -> None:
        if intra_op_num_threads < 1:
            raise ValueError("intra_op_num_threads must be at least 1")
        self.path = Path(path)
        self.intra_op_num_threads = intra_op_num_threads
        self._state: _Loaded | None = None

    def __repr__(self) -> str:
        state = "loaded" if self._state else "not loaded"
        return f"<LoadedModel {str(self.path)!r} {state}>"

    @property
    def loaded(self) -> bool:
        """Whether :meth:`load` succeeded and :meth:`close` has not been called since."""
        return self._state is not None

    @property
    def manifest(self) -> Manifest:
        """The verified manifest; only after :meth:`load`."""
        return self._require().manifest

    @property
    def findings(self) -> tuple[DependencyFinding, ...]:
        """Technical drift: libraries installed at versions other than the package was built with."""
        return self._require().findings

    def load(self) -> Self:
        """Verifies the package and creates the ONNX Runtime session; a no-op if already loaded.

        Raises a :class:`~agent.errors.PackageError` subclass naming the file and the problem;
        on failure the model stays unloaded.
        """
        if self._state is not None:
            return self
        directory = _package_dir(self.path)
        manifest_path, model_path = directory / MANIFEST_FILE, directory / MODEL_FILE
        refuse_pickle(model_path)
        manifest = _read_manifest(manifest_path)
        try:
            data = model_path.read_bytes()
        except FileNotFoundError:
            raise CorruptModelError(f"{model_path}: model file is missing") from None
        except OSError as exc:
            raise CorruptModelError(f"{model_path}: cannot read the model: {exc}") from exc
        digest = hashlib.sha256(data).hexdigest()
        if digest != manifest.onnx_sha256:
            raise DigestMismatchError(
                f"{model_path}: SHA-256 is {digest}, but {manifest_path.name} records "
                f"{manifest.onnx_sha256}: the model file was changed or replaced after packaging"
            )
        graph = _parse_onnx(model_path, data)
        check_runtime_support(
            model_path,
            graph.opsets.items(),
            graph.ir_version,
            advice="; upgrade onnxruntime or rebuild the package with `driftline package`, which "
            "targets the installed onnxruntime",
        )
        _check_graph(model_path, graph, manifest)
        del graph
        error_model = _load_error_model(directory, manifest, self.intra_op_num_threads)
        session = _create_session(model_path, data, self.intra_op_num_threads)
        output_names = [o.name for o in session.get_outputs()]
        findings = dependency_findings(manifest.versions.packages())
        for finding in findings:
            log.info("%s/%s technical drift: %s", manifest.name, manifest.version, finding)
        # Assigned last and at once, so a failure anywhere above leaves nothing half-loaded.
        self._state = _Loaded(manifest, session, output_names, findings, error_model)
        return self

    def predict(self, matrix: npt.NDArray[np.floating[Any]]) -> Predictions:
        """Scores a batch ``(n, n_features)`` (float32; other float dtypes are converted) in one
        ONNX Runtime call. Raises :class:`~agent.errors.PredictionError` on a bad batch."""
        state = self._require()
        n_features = len(state.manifest.features)
        if not isinstance(matrix, np.ndarray) or matrix.ndim != 2 or matrix.shape[1] != n_features:
            shape = getattr(matrix, "shape", type(matrix).__name__)
            raise PredictionError(
                f"{state.manifest.name}/{state.manifest.version}: expected a (n, {n_features}) "
                f"float32 array, got {shape}"
            )
        batch = np.ascontiguousarray(matrix, dtype=np.float32)
        try:
            results = state.session.run(state.output_names, {"input": batch})
        except Exception as exc:  # ORT's pybind exception types share no useful base class
            raise PredictionError(
                f"{state.manifest.name}/{state.manifest.version}: onnxruntime failed on a batch "
                f"of {len(batch)} rows: {exc}"
            ) from exc
        by_name = dict(zip(state.output_names, results, strict=True))
        outputs = state.manifest.outputs
        if outputs.value is not None:
            return Predictions(values=by_name[outputs.value].reshape(len(batch)))
        assert outputs.label is not None and outputs.probabilities is not None
        return Predictions(labels=by_name[outputs.label], probabilities=by_name[outputs.probabilities])

    @property
    def has_error_model(self) -> bool:
        """Whether the package carries an error model (a regressor's, for :meth:`estimate_errors`)."""
        return self._require().error_model is not None

    def estimate_errors(
        self, matrix: npt.NDArray[np.floating[Any]], values: npt.NDArray[np.floating[Any]]
    ) -> npt.NDArray[np.float64]:
        """The error model's expected absolute error of each row of a batch the model scored
        (``matrix`` as given to :meth:`predict`, ``values`` its predictions), at least 0, in one ONNX
        Runtime call. Raises :class:`~agent.errors.PredictionError` on a bad batch or when the package
        has no error model."""
        state = self._require()
        manifest = state.manifest
        if state.error_model is None or manifest.error_model is None:
            raise PredictionError(f"{manifest.name}/{manifest.version}: the package has no error model")
        session, output = state.error_model
        batch = np.ascontiguousarray(matrix, dtype=np.float32)
        if manifest.error_model.inputs == "features+prediction":
            column = np.asarray(values, dtype=np.float32).reshape(-1, 1)
            batch = np.ascontiguousarray(np.concatenate([batch, column], axis=1))
        try:
            (result,) = session.run([output], {"input": batch})
        except Exception as exc:  # ORT's pybind exception types share no useful base class
            raise PredictionError(
                f"{manifest.name}/{manifest.version}: onnxruntime failed on the error model for a "
                f"batch of {len(batch)} rows: {exc}"
            ) from exc
        # A model of a non-negative quantity can still dip below 0 between its training rows.
        return np.maximum(np.asarray(result, dtype=np.float64).reshape(len(batch)), 0.0)

    def close(self) -> None:
        """Releases the ONNX Runtime session; the model can be loaded again."""
        self._state = None

    def __enter__(self) -> Self:
        return self.load()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _require(self) -> _Loaded:
        if self._state is None:
            raise PredictionError(f"{self.path}: model is not loaded; call load() first")
        return self._state


def load_package(path: Path | str, *, intra_op_num_threads: int = 1) -> LoadedModel:
    """Verifies the package at ``path`` and returns it loaded, ready to :meth:`~LoadedModel.predict`.

    Refuses pickle files with :class:`~agent.errors.PickleRefusedError`; every other problem is a
    :class:`~agent.errors.PackageError` subclass naming the file.
    """
    return LoadedModel(path, intra_op_num_threads=intra_op_num_threads).load()
