"""XGBoost and LightGBM estimators through the scikit-learn route of ``driftline package --module``.

skl2onnx converts scikit-learn estimators only; XGBoost's and LightGBM's scikit-learn wrappers
(``XGBClassifier``, ``XGBRegressor``, ``LGBMClassifier``, ``LGBMRegressor``) are converted by
onnxmltools' operator converters once they are registered with skl2onnx's
``update_registered_converter``, the way both communities document it. A registered wrapper then
converts on its own or as the last step of a ``Pipeline``, with the same options (no ZipMap) and the
same parity check as any scikit-learn estimator.

:func:`prepare` finds the wrappers inside an estimator, registers their converters (once per
process) and returns the opsets to convert to; :func:`framework_versions` names the libraries for
the manifest. xgboost, lightgbm and onnxmltools are in the ``build`` extra, imported only here and
only when a training module hands over one of their models.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any

from agent.errors import ConfigurationError

__all__ = [
    "FRAMEWORKS",
    "SKL2ONNX_MAX_ML_OPSET",
    "compares_in_float64",
    "framework_versions",
    "frameworks_of",
    "native_categorical",
    "prepare",
]

FRAMEWORKS = ("xgboost", "lightgbm")
"""The supported libraries, by top-level module. The ``build`` extra installs ``xgboost-cpu``:
XGBoost's CPU-only wheel (the same ``xgboost`` module, a few MB, without the CUDA runtime and NCCL
that the ``xgboost`` wheel pulls in on Linux)."""

SKL2ONNX_MAX_ML_OPSET = 3
"""Newest ``ai.onnx.ml`` opset skl2onnx stamps on a model. onnxmltools' tree converters emit the
opset they are asked for, and skl2onnx refuses a graph stamped above this one."""

_registered: set[str] = set()


def _components(estimator: Any) -> Iterator[Any]:
    yield estimator
    get_params = getattr(estimator, "get_params", None)
    if callable(get_params):
        try:
            params = get_params(deep=True)
        except Exception:  # a broken third-party get_params: only the estimator itself counts
            return
        yield from params.values()


def native_categorical(estimator: Any) -> list[str]:
    """The scikit-learn ``HistGradientBoosting*`` models in ``estimator`` that split some feature
    by category (``categorical_features``): skl2onnx 1.20 converts those splits as numeric
    thresholds, so their graph answers otherwise (probabilities 0.87 apart on a 2-feature test)."""
    return [
        type(c).__name__
        for c in _components(estimator)
        if type(c).__name__.startswith("HistGradientBoosting")
        and getattr(c, "is_categorical_", None) is not None
        and bool(c.is_categorical_.any())
    ]


def frameworks_of(estimator: Any) -> tuple[str, ...]:
    """The supported boosting libraries whose models ``estimator`` is or contains (a ``Pipeline``'s
    steps, a ``ColumnTransformer``'s transformers), in :data:`FRAMEWORKS` order.

    Example:
        >>> from sklearn.linear_model import LogisticRegression
        >>> frameworks_of(LogisticRegression())
        ()
    """
    found = {type(c).__module__.split(".", 1)[0] for c in _components(estimator)}
    return tuple(name for name in FRAMEWORKS if name in found)


def _register(framework: str) -> None:
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    # The classifier options are the ones skl2onnx's own classifiers take, so the builder's
    # {"zipmap": False} applies to a boosted classifier too.
    classifier_options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    if framework == "lightgbm":
        from lightgbm import LGBMClassifier, LGBMRegressor
        from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm

        update_registered_converter(
            LGBMClassifier,
            "LightGbmLGBMClassifier",
            calculate_linear_classifier_output_shapes,
            convert_lightgbm,
            options=classifier_options,
        )
        update_registered_converter(
            LGBMRegressor,
            "LightGbmLGBMRegressor",
            calculate_linear_regressor_output_shapes,
            convert_lightgbm,
            options={"split": None},
        )
    elif framework == "xgboost":
        from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
        from xgboost import XGBClassifier, XGBRegressor

        update_registered_converter(
            XGBClassifier,
            "XGBoostXGBClassifier",
            calculate_linear_classifier_output_shapes,
            convert_xgboost,
            options=classifier_options,
        )
        update_registered_converter(
            XGBRegressor,
            "XGBoostXGBRegressor",
            calculate_linear_regressor_output_shapes,
            convert_xgboost,
        )
    else:  # pragma: no cover - FRAMEWORKS lists every branch
        raise ValueError(framework)


def prepare(estimator: Any, opsets: Mapping[str, int]) -> dict[str, int]:
    """Registers the converters ``estimator`` needs and returns the opsets to convert it to, given
    the ``opsets`` a scikit-learn estimator is converted to.

    For a plain scikit-learn estimator that is ``opsets`` itself, and nothing is imported. Raises
    :class:`~agent.errors.ConfigurationError` naming the ``build`` extra when onnxmltools is not
    installed.
    """
    frameworks = frameworks_of(estimator)
    if not frameworks:
        return dict(opsets)
    for framework in frameworks:
        if framework in _registered:
            continue
        try:
            _register(framework)
        except ImportError as exc:
            raise ConfigurationError(
                f"converting a {framework} model needs the 'build' extra ({exc}): "
                "pip install 'driftline[build]'"
            ) from exc
        _registered.add(framework)
    capped = dict(opsets)
    capped["ai.onnx.ml"] = min(capped.get("ai.onnx.ml", SKL2ONNX_MAX_ML_OPSET), SKL2ONNX_MAX_ML_OPSET)
    return capped


def compares_in_float64(estimator: Any) -> bool:
    """Whether ``estimator``'s parity is checked on the rows as given rather than rounded to float32.

    LightGBM compares each value with a float64 threshold that sits just above a value seen in
    training (``76.80000000000001`` for ``76.8``); rounded to float32 first, ``76.8`` becomes
    ``76.80000305`` and goes the other way. ONNX Runtime compares the rounded value with the rounded
    threshold, which keeps the order, so the ONNX model answers as LightGBM does on the values as
    given, the way it will be fed at serving time. XGBoost works in float32 throughout, so rounding
    changes nothing for it.

    scikit-learn's own ``HistGradientBoostingClassifier`` and ``Regressor`` bin values against
    float64 bin edges the same way: a 150-tree classifier answered its float32-rounded holdout rows
    up to 0.042 apart from its rows as given, which its ONNX graph matched to 2e-7.
    """
    if "lightgbm" in frameworks_of(estimator):
        return True
    return any(type(c).__name__.startswith("HistGradientBoosting") for c in _components(estimator))


def framework_versions(estimator: Any) -> dict[str, str]:
    """Versions of the boosting libraries in ``estimator`` and of onnxmltools, which converted
    them; empty for a plain scikit-learn estimator."""
    frameworks = frameworks_of(estimator)
    if not frameworks:
        return {}
    versions: dict[str, str] = {}
    for name in (*frameworks, "onnxmltools"):
        versions[name] = str(importlib.import_module(name).__version__)
    return versions
