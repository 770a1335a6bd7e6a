"""Building a model package from a fitted scikit-learn estimator.

The steps, each a plain function a test can call on its own:

1. :func:`convert` the estimator to ONNX with skl2onnx: one float32 input named ``input``, no ZipMap
   on classifiers (it is several times slower than a plain probabilities tensor), opsets capped at
   what the installed onnxruntime supports (:func:`target_opsets`).
2. :func:`check_parity`: ONNX Runtime and scikit-learn must agree on the holdout rows (labels
   identical, probabilities within 1e-5; regression values within 1e-4 relative), or the build
   stops with :class:`~agent.errors.ParityError` saying by how much they disagree.
3. :func:`reference_statistics` of the inputs and of the model's output on the reference data.
4. :func:`write_package` atomically: files are written into a hidden staging directory next to the
   target and renamed into place, so a scan never sees half a package.

:func:`build_package` runs them in order with :class:`Progress` reporting on stderr. A training
module hands the builder a :class:`TrainingResult`; see ``examples/train_example.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import math
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

import numpy as np
import numpy.typing as npt
from pydantic import JsonValue, ValidationError

from agent.errors import ConfigurationError, PackageError, ParityError, describe_validation_error
from agent.models.package import (
    DEFAULT_DOMAIN,
    PICKLE_SUFFIXES,
    onnxruntime_max_opset,
    refuse_pickle,
)
from agent.models.repository import MANIFEST_FILE, MODEL_FILE, ModelRepository
from schemas.manifest import (
    BuildVersions,
    CategoricalStatistics,
    Feature,
    FeatureStatistics,
    Manifest,
    MissingPolicy,
    NumericStatistics,
    Outputs,
    OutputStatistics,
    ReferenceStatistics,
    Task,
    TrainingSummary,
)

if TYPE_CHECKING:
    import onnxruntime

__all__ = [
    "PROBABILITY_TOLERANCE",
    "VALUE_RELATIVE_TOLERANCE",
    "BuiltPackage",
    "ConvertedModel",
    "ParityReport",
    "Progress",
    "TrainingResult",
    "build_package",
    "check_parity",
    "convert",
    "hyperparameters",
    "load_training_function",
    "reference_statistics",
    "target_opsets",
    "write_package",
]

PROBABILITY_TOLERANCE = 1e-5
"""Largest absolute difference allowed between ONNX and scikit-learn class probabilities."""

VALUE_RELATIVE_TOLERANCE = 1e-4
"""Largest relative difference allowed between ONNX and scikit-learn regression values."""

_MAX_REFERENCE_PARITY_ROWS = 5000


@dataclass(frozen=True)
class TrainingResult:
    """What a training function hands to ``driftline package``.

    ``X`` matrices have one column per feature, in ``feature_names`` order, exactly as the model
    will be fed at serving time: numbers for numeric features, the float index into
    ``categories[name]`` for categorical ones, NaN for a missing value.

    Parameters:
        estimator: The fitted scikit-learn estimator (or pipeline), trained on ``X_reference``.
        X_reference: Training (reference) inputs, ``(n, n_features)``; the reference statistics
            that drift is measured against are taken from these rows.
        y_reference: Training targets.
        feature_names: Column names, in column order.
        X_holdout: Rows not used in training; parity and scores are checked on them. Without
            them, both use (up to 5000 of) the reference rows.
        y_holdout: Holdout targets.
        categories: Categorical feature name -> its categories, in index order. Features not named
            here are numeric.
        missing: Feature name -> missing-value policy; the default is to reject.
        ranges: Numeric feature name -> allowed ``(min, max)``.

    Example:
        >>> from sklearn.linear_model import LinearRegression
        >>> X = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 1.0], [3.0, 0.0]])
        >>> y = X[:, 0] * 2 + 1
        >>> result = TrainingResult(
        ...     LinearRegression().fit(X, y), X, y, ["x", "switch"],
        ...     categories={"switch": ["off", "on"]},
        ... )
        >>> [(f.name, f.type) for f in result.features()]
        [('x', 'numeric'), ('switch', 'categorical')]
    """

    estimator: Any
    X_reference: npt.ArrayLike
    y_reference: npt.ArrayLike
    feature_names: Sequence[str]
    X_holdout: npt.ArrayLike | None = None
    y_holdout: npt.ArrayLike | None = None
    categories: Mapping[str, Sequence[str]] = field(default_factory=dict)
    missing: Mapping[str, MissingPolicy] = field(default_factory=dict)
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    def features(self) -> tuple[Feature, ...]:
        """The manifest's feature list; :class:`~agent.errors.ConfigurationError` if inconsistent."""
        names = list(self.feature_names)
        for mapping, what in ((self.categories, "categories"), (self.missing, "missing"),
                              (self.ranges, "ranges")):  # fmt: skip
            unknown = sorted(set(mapping) - set(names))
            if unknown:
                raise ConfigurationError(f"TrainingResult.{what} names unknown features {unknown}")
        features = []
        for name in names:
            try:
                categories = self.categories.get(name)
                features.append(
                    Feature(
                        name=name,
                        type="numeric" if categories is None else "categorical",
                        categories=None if categories is None else tuple(categories),
                        range=self.ranges.get(name),
                        missing=self.missing.get(name, MissingPolicy()),
                    )
                )
            except ValidationError as exc:
                detail = describe_validation_error(exc, 5, whole="(top level)")
                raise ConfigurationError(f"TrainingResult, feature {name!r}: {detail}") from exc
        return tuple(features)


# --- progress ---------------------------------------------------------------------------------


class Progress:
    """Reports slow steps with their elapsed time on a stream (stderr by default).

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> progress = Progress(out, clock=iter([0.0, 0.25, 1.0, 1.5]).__next__)
        >>> with progress.step("train"):
        ...     pass
        >>> with progress.step("convert"):
        ...     pass
        >>> print(out.getvalue(), end="")
        train ... 0.25 s
        convert ... 0.50 s
        >>> progress.timings
        {'train': 0.25, 'convert': 0.5}
    """

    def __init__(
        self, stream: TextIO | None = None, *, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.stream = stream
        self.clock = clock
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Times the ``with`` block under ``name``."""
        self._write(f"{name} ... ")
        started = self.clock()
        try:
            yield
        except BaseException:
            self._write(f"failed after {self.clock() - started:.2f} s\n")
            raise
        elapsed = self.clock() - started
        self.timings[name] = elapsed
        self._write(f"{elapsed:.2f} s\n")

    def _write(self, text: str) -> None:
        if self.stream is not None:
            self.stream.write(text)
            self.stream.flush()


# --- conversion -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvertedModel:
    """An estimator converted to ONNX, with its outputs identified."""

    onnx_bytes: bytes
    outputs: Outputs
    opsets: dict[str, int]


def target_opsets() -> dict[str, int]:
    """Opsets to convert to: the newest that skl2onnx has tested, onnx defines and the installed
    onnxruntime supports, for the default and the ``ai.onnx.ml`` domains."""
    import onnx.defs
    from skl2onnx import get_latest_tested_opset_version

    main = min(int(get_latest_tested_opset_version()), int(onnx.defs.onnx_opset_version()))
    ml = int(onnx.defs.onnx_ml_opset_version())
    ort_main, ort_ml = onnxruntime_max_opset(DEFAULT_DOMAIN), onnxruntime_max_opset("ai.onnx.ml")
    return {
        "": main if ort_main is None else min(main, ort_main),
        "ai.onnx.ml": ml if ort_ml is None else min(ml, ort_ml),
    }


def _classifiers(estimator: Any) -> Iterator[Any]:
    from sklearn.base import is_classifier

    if is_classifier(estimator):
        yield estimator
    steps = getattr(estimator, "steps", None)
    if steps:
        yield from _classifiers(steps[-1][1])


def _class_labels(estimator: Any) -> tuple[int, ...] | tuple[str, ...]:
    classes = np.asarray(estimator.classes_)
    if classes.dtype.kind in "iu":
        return tuple(int(c) for c in classes)
    if classes.dtype.kind in "OUS" and all(isinstance(c, str) for c in classes.tolist()):
        return tuple(str(c) for c in classes)
    raise ConfigurationError(
        f"class labels must be integers or strings, got {classes.dtype} {classes.tolist()[:5]}; "
        "encode y before fitting"
    )


def task_of(estimator: Any) -> Task:
    """What a fitted estimator predicts, from scikit-learn's own estimator tags."""
    from sklearn.base import is_classifier, is_regressor

    if is_classifier(estimator):
        n_classes = len(estimator.classes_)
        if n_classes < 2:
            raise ConfigurationError("the classifier was fitted on a single class")
        return "binary_classification" if n_classes == 2 else "multiclass_classification"
    if is_regressor(estimator):
        return "regression"
    raise ConfigurationError(
        f"{type(estimator).__name__} is neither a classifier nor a regressor; package the "
        "fitted predictor (or a Pipeline ending in one)"
    )


def convert(estimator: Any, n_features: int, opsets: Mapping[str, int] | None = None) -> ConvertedModel:
    """Converts a fitted estimator to ONNX under driftline's input/output contract."""
    from onnx import TensorProto
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    task = task_of(estimator)
    options: dict[int, dict[str, Any]] = {id(c): {"zipmap": False} for c in _classifiers(estimator)}
    try:
        model = convert_sklearn(
            estimator,
            initial_types=[("input", FloatTensorType([None, n_features]))],
            options=options or None,
            target_opset=dict(opsets or target_opsets()),
        )
    except Exception as exc:  # skl2onnx raises bare RuntimeError/TypeError/... for unsupported models
        raise PackageError(
            f"skl2onnx cannot convert {type(estimator).__name__} to ONNX: {type(exc).__name__}: {exc}"
        ) from exc
    outputs = list(model.graph.output)
    names = [o.name for o in outputs]
    if task == "regression":
        if len(outputs) != 1 or outputs[0].type.tensor_type.elem_type != TensorProto.FLOAT:
            raise PackageError(f"expected one float output from the regressor, got {names}")
        described = Outputs(value=outputs[0].name)
    else:
        floats = [o.name for o in outputs if o.type.tensor_type.elem_type == TensorProto.FLOAT]
        labels = [o.name for o in outputs if o.type.tensor_type.elem_type != TensorProto.FLOAT]
        if len(floats) != 1 or len(labels) != 1:
            raise PackageError(
                f"expected a label and a probabilities output from the classifier, got {names}"
            )
        described = Outputs(label=labels[0], probabilities=floats[0], class_labels=_class_labels(estimator))
    found: dict[str, int] = {}
    for entry in model.opset_import:
        domain = entry.domain or DEFAULT_DOMAIN
        found[domain] = max(found.get(domain, 0), int(entry.version))
    return ConvertedModel(bytes(model.SerializeToString()), described, found)


# --- parity -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParityReport:
    """How closely the ONNX model reproduces the estimator on the checked rows.

    ``max_abs_diff`` is over probabilities (classifiers) or values (regressors); ``max_rel_diff``
    only matters for regressors. ``label_ties`` counts rows whose label differs only because the
    estimator's top probabilities tie (within the probability tolerance): a random forest of 100
    trees split 50/50 gives exactly 0.5 and 0.5 in float64, scikit-learn's argmax takes the first
    class, and ONNX Runtime's float32 sums land a hair apart either way. Either label is the
    model's answer there, so a tie is not a mismatch.
    """

    rows: int
    checked_on: Literal["holdout", "reference"]
    label_mismatches: int
    label_ties: int
    max_abs_diff: float
    max_rel_diff: float
    passed: bool

    def __str__(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        ties = f" ({self.label_ties} tied rows decided the other way)" if self.label_ties else ""
        return (
            f"parity {verdict} on {self.rows} {self.checked_on} rows: "
            f"{self.label_mismatches} label mismatches{ties}, max abs diff {self.max_abs_diff:.3g}, "
            f"max rel diff {self.max_rel_diff:.3g}"
        )


def _session(onnx_bytes: bytes) -> onnxruntime.InferenceSession:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def _run(
    session: onnxruntime.InferenceSession, outputs: Outputs, X: npt.NDArray[np.float64]
) -> dict[str, npt.NDArray[Any]]:
    names = list(outputs.names)
    results = session.run(names, {"input": np.ascontiguousarray(X, dtype=np.float32)})
    return dict(zip(names, results, strict=True))


def compare_predictions(
    task: Task,
    expected: Mapping[str, npt.NDArray[Any]],
    actual: Mapping[str, npt.NDArray[Any]],
    checked_on: Literal["holdout", "reference"] = "holdout",
    class_labels: Sequence[Any] = (),
) -> ParityReport:
    """Compares scikit-learn's (``expected``) and ONNX's (``actual``) predictions.

    Both map ``labels``/``probabilities`` (classifiers) or ``values`` (regressors) to arrays;
    ``class_labels`` gives the probability columns' classes (to recognise ties, see
    :class:`ParityReport`).

    Example:
        >>> tie = [0.5, 0.5]
        >>> report = compare_predictions(
        ...     "binary_classification",
        ...     {"labels": np.array([0, 1, 0]), "probabilities": np.array([[0.9, 0.1], [0.2, 0.8], tie])},
        ...     {
        ...         "labels": np.array([0, 0, 1]),
        ...         "probabilities": np.array([[0.9, 0.1], [0.5, 0.5], [0.49999994, 0.50000006]]),
        ...     },
        ...     class_labels=(0, 1),
        ... )
        >>> print(report)
        parity FAILED on 3 holdout rows: 1 label mismatches (1 tied rows decided the other way), \
max abs diff 0.3, max rel diff 0
    """
    if task == "regression":
        want = np.asarray(expected["values"], dtype=np.float64).ravel()
        got = np.asarray(actual["values"], dtype=np.float64).ravel()
        diff = np.abs(got - want)
        # Relative to each value, but not below a thousandth of the largest: float32 cannot give
        # relative precision to a value that is a cancellation of much larger terms.
        floor = max(float(np.max(np.abs(want), initial=0.0)) * 1e-3, np.finfo(np.float64).tiny)
        rel = diff / np.maximum(np.abs(want), floor)
        max_abs = float(np.max(diff, initial=0.0))
        max_rel = float(np.max(rel, initial=0.0))
        mismatches = ties = 0
        passed = max_rel <= VALUE_RELATIVE_TOLERANCE and bool(np.all(np.isfinite(got)))
        rows = len(want)
    else:
        want_p = np.asarray(expected["probabilities"], dtype=np.float64)
        got_p = np.asarray(actual["probabilities"], dtype=np.float64)
        if want_p.shape != got_p.shape:
            raise ParityError(f"probabilities have shape {got_p.shape}, expected {want_p.shape}")
        max_abs = float(np.max(np.abs(got_p - want_p), initial=0.0))
        max_rel = 0.0
        got_labels = np.asarray(actual["labels"])
        differs = np.flatnonzero(got_labels != np.asarray(expected["labels"]))
        column = {label: i for i, label in enumerate(class_labels)}
        ties = 0
        for row in differs:
            label = got_labels[row]
            col = column.get(label.item() if isinstance(label, np.generic) else label)
            if col is not None and want_p[row].max() - want_p[row, col] <= PROBABILITY_TOLERANCE:
                ties += 1
        mismatches = len(differs) - ties
        passed = mismatches == 0 and max_abs <= PROBABILITY_TOLERANCE
        rows = len(want_p)
    if math.isnan(max_abs):
        passed = False
    return ParityReport(rows, checked_on, mismatches, ties, max_abs, max_rel, passed)


def _sklearn_predictions(task: Task, estimator: Any, X: npt.NDArray[np.float64]) -> dict[str, Any]:
    # Through float32 first: that is what the ONNX model is fed, and scikit-learn's trees compare
    # float32 thresholds anyway, so both sides see the same numbers.
    X32 = X.astype(np.float32).astype(np.float64)
    if task == "regression":
        return {"values": np.asarray(estimator.predict(X32))}
    return {
        "labels": np.asarray(estimator.predict(X32)),
        "probabilities": np.asarray(estimator.predict_proba(X32)),
    }


def _onnx_predictions(
    task: Task, converted: ConvertedModel, session: onnxruntime.InferenceSession, X: npt.NDArray[np.float64]
) -> dict[str, npt.NDArray[Any]]:
    out = _run(session, converted.outputs, X)
    if task == "regression":
        assert converted.outputs.value is not None
        return {"values": out[converted.outputs.value].reshape(len(X))}
    assert converted.outputs.label is not None and converted.outputs.probabilities is not None
    return {"labels": out[converted.outputs.label], "probabilities": out[converted.outputs.probabilities]}


def check_parity(
    estimator: Any,
    converted: ConvertedModel,
    X: npt.NDArray[np.float64],
    checked_on: Literal["holdout", "reference"] = "holdout",
    session: onnxruntime.InferenceSession | None = None,
) -> ParityReport:
    """Runs both models on ``X`` and raises :class:`~agent.errors.ParityError` if they disagree."""
    task = task_of(estimator)
    session = session or _session(converted.onnx_bytes)
    report = compare_predictions(
        task,
        _sklearn_predictions(task, estimator, X),
        _onnx_predictions(task, converted, session, X),
        checked_on,
        converted.outputs.class_labels or (),
    )
    if not report.passed:
        limit = (
            f"values must agree within {VALUE_RELATIVE_TOLERANCE:g} relative"
            if task == "regression"
            else f"labels must be identical except at ties, probabilities within {PROBABILITY_TOLERANCE:g}"
        )
        raise ParityError(
            f"the ONNX conversion of {type(estimator).__name__} does not reproduce it: {report} "
            f"({limit}); refusing to write the package"
        )
    return report


# --- statistics, scores, hyperparameters ------------------------------------------------------


def _as_matrix(X: npt.ArrayLike, n_features: int, what: str) -> npt.NDArray[np.float64]:
    try:
        matrix = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"TrainingResult.{what} must be numeric (categorical columns as category indexes): {exc}"
        ) from exc
    if matrix.ndim != 2 or matrix.shape[1] != n_features or matrix.shape[0] == 0:
        raise ConfigurationError(
            f"TrainingResult.{what} has shape {matrix.shape}, expected (n >= 1, {n_features})"
        )
    if np.isinf(matrix).any():
        raise ConfigurationError(f"TrainingResult.{what} contains infinite values")
    return matrix


def _prepared(features: Sequence[Feature], X: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    """Rows the serving code would accept; imputes in place like it would."""
    keep = np.ones(len(X), dtype=bool)
    for i, feature in enumerate(features):
        missing = np.isnan(X[:, i])
        if not missing.any():
            continue
        if feature.missing.action == "impute":
            value = feature.missing.value
            assert value is not None
            X[missing, i] = feature.category_index(value) if isinstance(value, str) else float(value)
        elif feature.missing.action == "reject":
            keep &= ~missing
    return keep


def reference_statistics(
    features: Sequence[Feature],
    X: npt.NDArray[np.float64],
    task: Task,
    outputs: Outputs,
    predicted: Mapping[str, npt.NDArray[Any]],
) -> ReferenceStatistics:
    """Per-feature statistics of ``X`` (raw, missing values included) and of the model's output
    ``predicted`` (``labels``/``probabilities`` or ``values``) on the rows it was run on."""
    stats: dict[str, FeatureStatistics] = {}
    for i, feature in enumerate(features):
        column = X[:, i]
        try:
            if feature.categories is not None:
                stats[feature.name] = CategoricalStatistics.from_indices(column, feature.categories)
            else:
                stats[feature.name] = NumericStatistics.from_values(column)
        except ValueError as exc:
            raise ConfigurationError(f"feature {feature.name!r}: {exc}") from exc
    if task == "regression":
        output = OutputStatistics(
            quantity="value", statistics=NumericStatistics.from_values(predicted["values"])
        )
    else:
        probabilities = np.asarray(predicted["probabilities"], dtype=np.float64)
        labels = np.asarray(predicted["labels"])
        classes = outputs.class_labels or ()
        frequencies = {str(c): float(np.mean(labels == c)) for c in classes}
        if task == "binary_classification":
            output = OutputStatistics(
                quantity="positive_probability",
                statistics=NumericStatistics.from_values(probabilities[:, 1]),
                label_frequencies=frequencies,
            )
        else:
            output = OutputStatistics(
                quantity="max_probability",
                statistics=NumericStatistics.from_values(probabilities.max(axis=1)),
                label_frequencies=frequencies,
            )
    return ReferenceStatistics(rows=len(X), features=stats, output=output)


def _scores(
    task: Task, y: npt.NDArray[Any], predicted: Mapping[str, npt.NDArray[Any]], classes: Sequence[Any]
) -> dict[str, float | None]:
    from sklearn import metrics

    if task == "regression":
        values = predicted["values"]
        r2 = float(metrics.r2_score(y, values)) if len(y) > 1 else None
        return {"mae": float(metrics.mean_absolute_error(y, values)),
                "r2": r2 if r2 is not None and math.isfinite(r2) else None}  # fmt: skip
    accuracy = float(metrics.accuracy_score(y, predicted["labels"]))
    probabilities = predicted["probabilities"]
    try:
        if task == "binary_classification":
            auc = float(metrics.roc_auc_score(y, probabilities[:, 1]))
        else:
            auc = float(
                metrics.roc_auc_score(
                    y, probabilities, multi_class="ovr", average="macro", labels=list(classes)
                )
            )
    except ValueError:  # a class absent from y: AUC is undefined
        auc = None
    return {"accuracy": accuracy, "roc_auc": auc if auc is not None and math.isfinite(auc) else None}


def _json_safe(value: Any) -> JsonValue:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else str(float(value))
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    # Nested estimators, callables, random states: their repr is what a reader can use.
    return repr(value)


def hyperparameters(estimator: Any) -> dict[str, JsonValue]:
    """``estimator.get_params(deep=False)`` made JSON-safe (non-finite floats and objects as text).

    Example:
        >>> from sklearn.ensemble import RandomForestClassifier
        >>> params = hyperparameters(RandomForestClassifier(n_estimators=10, max_depth=None))
        >>> params["n_estimators"], params["max_depth"], params["criterion"]
        (10, None, 'gini')
    """
    params = estimator.get_params(deep=False)
    return {str(k): _json_safe(v) for k, v in sorted(params.items())}


def build_versions(opsets: Mapping[str, int]) -> BuildVersions:
    """The versions of this process's libraries, with the converted model's opsets."""
    import onnx
    import onnxruntime
    import skl2onnx
    import sklearn

    return BuildVersions(
        python=platform.python_version(),
        numpy=np.__version__,
        scikit_learn=sklearn.__version__,
        skl2onnx=skl2onnx.__version__,
        onnx=onnx.__version__,
        onnxruntime=onnxruntime.__version__,
        opsets=dict(opsets),
    )


# --- writing ----------------------------------------------------------------------------------


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_package(
    repository: ModelRepository, manifest: Manifest, onnx_bytes: bytes, *, force: bool = False
) -> Path:
    """Writes ``model.onnx`` and ``manifest.json`` to ``NAME/VERSION/`` atomically.

    The files are written and synced in a hidden staging directory beside the target, which is then
    renamed into place; with ``force`` an existing package is first renamed aside and deleted after
    the new one is in place. Returns the package directory.
    """
    if hashlib.sha256(onnx_bytes).hexdigest() != manifest.onnx_sha256:
        raise PackageError("manifest.onnx_sha256 does not match the model bytes being written")
    target = repository.package_dir(manifest.name, manifest.version)
    if target.exists() and not force:
        raise ConfigurationError(f"{target}: package already exists; pass --force to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Hidden (leading ".") so that repository scans skip it; same directory, so rename is atomic.
    staging = Path(tempfile.mkdtemp(prefix=f".{manifest.version}.staging-", dir=target.parent))
    replaced: Path | None = None
    try:
        _write_synced(staging / MODEL_FILE, onnx_bytes)
        _write_synced(staging / MANIFEST_FILE, (manifest.model_dump_json(indent=2) + "\n").encode())
        staging.chmod(0o755)
        _sync_dir(staging)
        if target.exists():
            replaced = target.parent / f".{manifest.version}.replaced-{uuid.uuid4().hex[:8]}"
            os.rename(target, replaced)
        try:
            os.rename(staging, target)
        except OSError as exc:
            if replaced is not None:
                os.rename(replaced, target)
                replaced = None
            raise PackageError(f"{target}: cannot move the package into place: {exc}") from exc
        _sync_dir(target.parent)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        if replaced is not None:
            shutil.rmtree(replaced, ignore_errors=True)
    return target


# --- training modules -------------------------------------------------------------------------


def load_training_function(module: str, function: str = "train") -> Callable[[], TrainingResult]:
    """The training function ``function`` of ``module`` (a ``.py`` path or a dotted module name).

    The returned callable imports nothing more; calling it runs the user's training and checks
    that it returned a :class:`TrainingResult`. A file's directory is put on ``sys.path`` while it
    is imported, so it can import its sibling modules.
    """
    path = Path(module)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        refuse_pickle(path)
    is_file = path.suffix == ".py" or os.sep in module or "/" in module
    if is_file:
        if not path.is_file():
            raise ConfigurationError(f"--module {module}: no such file")
        name = f"_driftline_training_{path.stem}_{uuid.uuid4().hex[:8]}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ConfigurationError(f"--module {module}: cannot import it as Python")
        loaded = importlib.util.module_from_spec(spec)
        # Registered before running so that dataclasses and relative lookups inside it work.
        sys.modules[name] = loaded
        with _on_sys_path(path.resolve().parent):
            try:
                spec.loader.exec_module(loaded)
            except Exception as exc:
                sys.modules.pop(name, None)
                raise ConfigurationError(
                    f"--module {module}: importing it failed: {type(exc).__name__}: {exc}"
                ) from exc
    else:
        try:
            loaded = importlib.import_module(module)
        except ImportError as exc:
            raise ConfigurationError(f"--module {module}: cannot import it: {exc}") from exc
    fn = getattr(loaded, function, None)
    if not callable(fn):
        raise ConfigurationError(f"--module {module}: has no function {function!r}")

    def train() -> TrainingResult:
        result = fn()
        if not isinstance(result, TrainingResult):
            raise ConfigurationError(
                f"{module}:{function}() returned {type(result).__name__}, expected "
                "agent.packaging.builder.TrainingResult (see examples/train_example.py)"
            )
        return result

    return train


@contextlib.contextmanager
def _on_sys_path(directory: Path) -> Iterator[None]:
    entry = str(directory)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)


# --- the whole build --------------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltPackage:
    """A package written to the repository."""

    path: Path
    manifest: Manifest
    parity: ParityReport
    timings: dict[str, float]


def _estimator_path(estimator: Any) -> str:
    cls = type(estimator)
    return f"{cls.__module__}.{cls.__qualname__}"


def build_package(
    result: TrainingResult,
    *,
    name: str,
    version: str,
    repository: ModelRepository,
    force: bool = False,
    progress: Progress | None = None,
    created_at: datetime | None = None,
) -> BuiltPackage:
    """Converts, verifies, summarises and writes ``result`` as package ``name``/``version``.

    Raises :class:`~agent.errors.ParityError` (nothing written) if the ONNX model disagrees with
    the estimator, :class:`~agent.errors.ConfigurationError` for an inconsistent ``result`` or an
    existing package without ``force``.
    """
    progress = progress or Progress(None)
    target = repository.package_dir(name, version)  # validates name and version early
    if target.exists() and not force:
        raise ConfigurationError(f"{target}: package already exists; pass --force to replace it")
    features = result.features()
    n = len(features)
    X_ref = _as_matrix(result.X_reference, n, "X_reference")
    y_ref = np.asarray(result.y_reference)
    if len(y_ref) != len(X_ref):
        raise ConfigurationError(
            f"TrainingResult.y_reference has {len(y_ref)} rows, X_reference {len(X_ref)}"
        )
    estimator = result.estimator
    task = task_of(estimator)

    with progress.step("convert"):
        converted = convert(estimator, n)

    with progress.step("verify"):
        session = _session(converted.onnx_bytes)
        if result.X_holdout is not None and result.y_holdout is not None:
            checked_on: Literal["holdout", "reference"] = "holdout"
            X_check = _as_matrix(result.X_holdout, n, "X_holdout")
            y_check = np.asarray(result.y_holdout)
            if len(y_check) != len(X_check):
                raise ConfigurationError(
                    f"TrainingResult.y_holdout has {len(y_check)} rows, X_holdout {len(X_check)}"
                )
        else:
            checked_on = "reference"
            pick = np.random.default_rng(0).permutation(len(X_ref))[:_MAX_REFERENCE_PARITY_ROWS]
            X_check, y_check = X_ref[np.sort(pick)], y_ref[np.sort(pick)]
        holdout_rows = len(X_check) if checked_on == "holdout" else 0
        X_check = X_check.copy()
        keep = _prepared(features, X_check)
        X_check, y_check = X_check[keep], y_check[keep]
        if len(X_check) == 0:
            raise ConfigurationError(f"no {checked_on} rows left to verify after the missing-value policy")
        parity = check_parity(estimator, converted, X_check, checked_on, session)
        predicted = _onnx_predictions(task, converted, session, X_check)
        scores = _scores(task, y_check, predicted, converted.outputs.class_labels or ())

    with progress.step("stats"):
        X_served = X_ref.copy()
        keep = _prepared(features, X_served)
        if not keep.any():
            raise ConfigurationError("every reference row is rejected by the missing-value policy")
        output_predictions = _onnx_predictions(task, converted, session, X_served[keep])
        reference = reference_statistics(features, X_ref, task, converted.outputs, output_predictions)
        try:
            manifest = Manifest(
                name=name,
                version=version,
                task=task,
                estimator=_estimator_path(estimator),
                features=features,
                outputs=converted.outputs,
                hyperparameters=hyperparameters(estimator),
                training=TrainingSummary(
                    rows=len(X_ref),
                    holdout_rows=holdout_rows,
                    evaluated_on=checked_on,
                    **scores,
                ),
                reference=reference,
                versions=build_versions(converted.opsets),
                created_at=created_at or datetime.now(UTC),
                onnx_sha256=hashlib.sha256(converted.onnx_bytes).hexdigest(),
            )
        except ValidationError as exc:
            raise PackageError(
                f"the manifest does not validate: {describe_validation_error(exc, 5, whole='(top level)')}"
            ) from exc

    with progress.step("write"):
        path = write_package(repository, manifest, converted.onnx_bytes, force=force)
    return BuiltPackage(path, manifest, parity, dict(progress.timings))
