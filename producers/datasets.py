"""The bundled example models' own data, rebuilt here without importing the agent.

``breast-cancer`` and ``diabetes`` are scikit-learn's bundled datasets; ``classification-20`` is
regenerated with the very ``make_classification`` parameters and seed that
``agent/packaging/examples.py`` trains on (copied into :data:`CLASSIFICATION_20`, and a test keeps the
two equal). A stream samples rows of the whole dataset (training and holdout rows alike) with
replacement, so the undrifted stream follows the distribution the model was trained on.

Example:
    >>> data = load_dataset("classification-20")
    >>> data.X.shape, data.feature_names[:2], data.task
    ((4000, 20), ('x00', 'x01'), 'binary_classification')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from producers.errors import SourceError
from producers.stream import Label, next_class, to_labels

__all__ = ["CLASSIFICATION_20", "MODELS", "SEED", "Dataset", "load_dataset"]

SEED = 0
"""The examples' seed (``agent.packaging.examples.SEED``)."""

CLASSIFICATION_20: dict[str, Any] = {
    "n_samples": 4000,
    "n_features": 20,
    "n_informative": 10,
    "n_redundant": 4,
    "random_state": SEED,
}
"""``make_classification`` keyword arguments of the ``classification-20`` example model."""

MODELS = ("breast-cancer", "classification-20", "diabetes")
"""Example models whose data the scenarios can draw from."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """An example model's data as a row source for :class:`producers.stream.EventStream`.

    Parameters:
        model: The example model's name, also the ``model`` of every request.
        task: ``binary_classification`` or ``regression``.
        feature_names: Column names of ``X``, in the model's input order.
        X: Feature matrix, one row per example.
        y: Labels (classifiers, integers) or target values (regressors).
    """

    model: str
    task: Literal["binary_classification", "regression"]
    feature_names: tuple[str, ...]
    X: npt.NDArray[np.float64]
    y: npt.NDArray[Any]
    _std: dict[str, float] = field(init=False, repr=False)
    _classes: tuple[Label, ...] = field(init=False, repr=False)
    _target_mean: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # Population standard deviation, as the manifest's reference statistics record it.
        std = self.X.std(axis=0)
        object.__setattr__(self, "_std", dict(zip(self.feature_names, std.tolist(), strict=True)))
        classes = to_labels(np.unique(self.y)) if self.task != "regression" else ()
        object.__setattr__(self, "_classes", tuple(classes))
        object.__setattr__(self, "_target_mean", float(self.y.mean()))

    @property
    def reference_std(self) -> Mapping[str, float]:
        return self._std

    @property
    def outcome_field(self) -> Literal["label", "value"]:
        return "value" if self.task == "regression" else "label"

    @property
    def lenient(self) -> frozenset[str]:
        """None: the example models reject a request that lacks a feature."""
        return frozenset()

    @property
    def has_labels(self) -> bool:
        return True

    def take(self, start: int, n: int, rng: np.random.Generator) -> tuple[list[list[Any]], list[Label]]:
        """``n`` rows drawn with replacement (``start`` is unused: the rows are i.i.d.)."""
        index = rng.integers(0, self.X.shape[0], n)
        return self.X[index].tolist(), to_labels(self.y[index])

    def alter_label(self, label: Label) -> Label:
        if self.task == "regression":
            # Mirrored around the target's mean: the same spread, the opposite relation to the
            # features, so a regressor's error rises while its inputs stay as they were.
            return 2.0 * self._target_mean - float(label)
        return next_class(self._classes, label)


def load_dataset(model: str) -> Dataset:
    """The data of example model ``model`` (one of :data:`MODELS`)."""
    # scikit-learn is imported here, not at module level: replaying a CSV does not need it.
    if model == "breast-cancer":
        from sklearn.datasets import load_breast_cancer

        bunch = load_breast_cancer()
        names = tuple(str(n) for n in bunch.feature_names)
        return Dataset(model, "binary_classification", names, bunch.data, bunch.target)
    if model == "diabetes":
        from sklearn.datasets import load_diabetes

        bunch = load_diabetes()
        names = tuple(str(n) for n in bunch.feature_names)
        return Dataset(model, "regression", names, bunch.data, bunch.target.astype(np.float64))
    if model == "classification-20":
        from sklearn.datasets import make_classification

        X, y = make_classification(**CLASSIFICATION_20)
        names = tuple(f"x{i:02d}" for i in range(CLASSIFICATION_20["n_features"]))
        return Dataset(model, "binary_classification", names, X, y)
    raise SourceError(f"unknown example model {model!r}; choose one of {', '.join(MODELS)}")
