"""Step 1: convert a scikit-learn estimator to ONNX, and record its hyperparameters.

skl2onnx with one float32 input named ``input``, no ZipMap on classifiers (it is several times
slower than a plain probabilities tensor), opsets capped at what the installed onnxruntime supports
(:func:`target_opsets`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import JsonValue

from agent.errors import ConfigurationError, PackageError
from agent.models.package import (
    DEFAULT_DOMAIN,
    onnxruntime_max_opset,
)
from agent.packaging.boosting import native_categorical
from schemas.manifest import (
    Outputs,
    Task,
)

__all__ = [
    "ConvertedModel",
    "convert",
    "hyperparameters",
    "target_opsets",
    "task_of",
]


MAX_ERROR_CHARS = 600
"""Longest converter message a :class:`PackageError` quotes: skl2onnx puts every attribute of the
node it could not build in its message (650 KB for a 150-tree HistGradientBoostingClassifier)."""


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


def class_labels(estimator: Any) -> tuple[int, ...] | tuple[str, ...]:
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


def quoted_error(exc: BaseException, limit: int = MAX_ERROR_CHARS) -> str:
    """``Type: message`` of a converter's exception, cut to ``limit`` characters.

    >>> quoted_error(ValueError("x" * 1000), limit=10)
    'ValueError: xxxxxxxxxx ... (990 more characters)'
    """
    text = str(exc)
    if len(text) > limit:
        text = f"{text[:limit]} ... ({len(text) - limit:,} more characters)"
    return f"{type(exc).__name__}: {text}"


@contextlib.contextmanager
def _bools_as_ints() -> Iterator[None]:
    """Integer-list attributes with Python bools in them, as ints, while skl2onnx builds nodes.

    skl2onnx 1.20 gives the leaves of a HistGradientBoosting* tree
    ``nodes_missing_value_tracks_true=False`` (a bool) among its branches' integers, and
    protobuf >= 5 refuses a bool in ``AttributeProto.ints``: without this, no
    HistGradientBoostingClassifier or Regressor converts ("Expected an int, got a boolean"). Only
    lists that mix bools and integers change; the graph means the same (ONNX has no bool attribute
    lists), and the builder's parity check compares its answers with the estimator's.
    """
    from skl2onnx.common import _container

    original = _container.make_node

    def make_node(*args: Any, **attrs: Any) -> Any:
        for key, value in attrs.items():
            if isinstance(value, list) and any(type(v) is bool for v in value):
                attrs[key] = [int(v) if type(v) is bool else v for v in value]
        return original(*args, **attrs)

    _container.make_node = make_node
    try:
        yield
    finally:
        _container.make_node = original


def convert(estimator: Any, n_features: int, opsets: Mapping[str, int] | None = None) -> ConvertedModel:
    """Converts a fitted estimator to ONNX under driftline's input/output contract."""
    from onnx import TensorProto
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    task = task_of(estimator)
    if categorical := native_categorical(estimator):
        raise PackageError(
            f"{categorical[0]} splits features by category (categorical_features), which skl2onnx "
            "converts as numeric thresholds: its ONNX graph would answer otherwise. Leave "
            "categorical_features unset (driftline feeds a category as its index, a number the trees "
            "split like any other) or one-hot encode those features in a Pipeline"
        )
    options: dict[int, dict[str, Any]] = {id(c): {"zipmap": False} for c in _classifiers(estimator)}
    try:
        with _bools_as_ints():
            model = convert_sklearn(
                estimator,
                initial_types=[("input", FloatTensorType([None, n_features]))],
                options=options or None,
                target_opset=dict(opsets or target_opsets()),
            )
    except Exception as exc:  # skl2onnx raises bare RuntimeError/TypeError/... for unsupported models
        raise PackageError(
            f"skl2onnx cannot convert {type(estimator).__name__} to ONNX: {quoted_error(exc)}. Export "
            "it to ONNX with another converter and package the file with --onnx"
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
        described = Outputs(label=labels[0], probabilities=floats[0], class_labels=class_labels(estimator))
    found: dict[str, int] = {}
    for entry in model.opset_import:
        domain = entry.domain or DEFAULT_DOMAIN
        found[domain] = max(found.get(domain, 0), int(entry.version))
    return ConvertedModel(bytes(model.SerializeToString()), described, found)


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
