"""What a training module hands the builder, and loading that module.

A training module defines ``train() -> TrainingResult``; see ``examples/train_example.py``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy.typing as npt
from pydantic import ValidationError

from agent.errors import ConfigurationError, describe_validation_error
from agent.models.package import (
    PICKLE_SUFFIXES,
    refuse_pickle,
)
from schemas.manifest import (
    Feature,
    MissingPolicy,
)

__all__ = [
    "TrainingResult",
    "load_training_function",
]


@dataclass(frozen=True)
class TrainingResult:
    """What a training function hands to ``driftline package``.

    ``X`` matrices have one column per feature, in ``feature_names`` order, exactly as the model
    will be fed at serving time: numbers for numeric features, the float index into
    ``categories[name]`` for categorical ones, NaN for a missing value.

    Parameters:
        estimator: The fitted scikit-learn estimator (or pipeline), or XGBoost's or LightGBM's
            scikit-learn wrapper (``XGBClassifier``, ``LGBMRegressor``, ...), trained on
            ``X_reference``.
        X_reference: Training (reference) inputs, ``(n, n_features)``; the reference statistics
            that drift is measured against are taken from these rows.
        y_reference: Training targets.
        feature_names: Column names, in column order.
        X_holdout: Rows not used in training; parity, scores, calibration and importance are
            measured on them, and the output's reference (and part of the reconstruction error's)
            taken from them. Without them, all use (up to 5000 of) the reference rows, and
            ``driftline package`` warns.
        y_holdout: Holdout targets.
        categories: Categorical feature name -> its categories, in index order. Features not named
            here are numeric.
        missing: Feature name -> missing-value policy; the default is to reject.
        ranges: Numeric feature name -> allowed ``(min, max)``.
        unknown_categories: Categorical feature name -> what serving does with a category not in
            its list: ``reject`` the request (the default), or serve it as ``missing`` (then the
            feature's missing policy, ``impute`` or ``allow``, applies), for a model that handles
            one (a ``OneHotEncoder(handle_unknown="ignore")``, trees that route NaN).

    Example:
        >>> import numpy as np
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
    unknown_categories: Mapping[str, Literal["reject", "missing"]] = field(default_factory=dict)

    def features(self) -> tuple[Feature, ...]:
        """The manifest's feature list; :class:`~agent.errors.ConfigurationError` if inconsistent."""
        names = list(self.feature_names)
        given: tuple[tuple[Mapping[str, Any], str], ...] = (
            (self.categories, "categories"),
            (self.missing, "missing"),
            (self.ranges, "ranges"),
            (self.unknown_categories, "unknown_categories"),
        )
        for mapping, what in given:
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
                        unknown_category=self.unknown_categories.get(name, "reject"),
                    )
                )
            except ValidationError as exc:
                detail = describe_validation_error(exc, 5, whole="(top level)")
                raise ConfigurationError(f"TrainingResult, feature {name!r}: {detail}") from exc
        return tuple(features)


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
