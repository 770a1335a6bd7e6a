"""Bundled example models for ``driftline package --example NAME``.

Each is trained on data that ships with scikit-learn (or is generated), seeded, with a stratified
25% holdout for parity and scores, so the same command builds the same model on every machine.

- ``breast-cancer``: RandomForestClassifier, 100 trees, on the 30-feature breast cancer dataset.
- ``diabetes``: GradientBoostingRegressor on the 10-feature diabetes dataset.
- ``classification-20``: RandomForestClassifier, 100 trees, on ``make_classification`` with 20
  numeric features (the model the benchmark scores).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.packaging.training import TrainingResult

__all__ = ["EXAMPLES", "SEED", "breast_cancer", "classification_20", "diabetes"]

SEED = 0
"""Seeds every split, generator and estimator of the examples."""


def _split(
    X: npt.NDArray[np.float64], y: npt.NDArray[Any], *, stratify: bool
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[Any], npt.NDArray[Any]]:
    from sklearn.model_selection import train_test_split

    parts = train_test_split(X, y, test_size=0.25, random_state=SEED, stratify=y if stratify else None)
    X_train, X_test, y_train, y_test = parts
    return X_train, X_test, y_train, y_test


def breast_cancer(n_estimators: int = 100) -> TrainingResult:
    """A random forest on scikit-learn's bundled breast cancer data (binary, 30 features)."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier

    data = load_breast_cancer()
    X_train, X_test, y_train, y_test = _split(data.data, data.target, stratify=True)
    model = RandomForestClassifier(n_estimators=n_estimators, random_state=SEED)
    model.fit(X_train, y_train)
    return TrainingResult(model, X_train, y_train, [str(n) for n in data.feature_names], X_test, y_test)


def diabetes() -> TrainingResult:
    """Gradient-boosted trees on scikit-learn's bundled diabetes data (regression, 10 features)."""
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import GradientBoostingRegressor

    data = load_diabetes()
    X_train, X_test, y_train, y_test = _split(data.data, data.target, stratify=False)
    model = GradientBoostingRegressor(random_state=SEED).fit(X_train, y_train)
    return TrainingResult(model, X_train, y_train, [str(n) for n in data.feature_names], X_test, y_test)


def classification_20(n_estimators: int = 100, n_samples: int = 4000) -> TrainingResult:
    """A random forest on a seeded ``make_classification`` problem (binary, 20 numeric features)."""
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    X, y = make_classification(
        n_samples=n_samples,
        n_features=20,
        n_informative=10,
        n_redundant=4,
        random_state=SEED,
    )
    X_train, X_test, y_train, y_test = _split(X, y, stratify=True)
    model = RandomForestClassifier(n_estimators=n_estimators, random_state=SEED, n_jobs=-1)
    model.fit(X_train, y_train)
    # The fitted forest would otherwise keep n_jobs=-1 in its recorded hyperparameters, which says
    # something about the build machine, not about the model.
    model.set_params(n_jobs=None)
    return TrainingResult(model, X_train, y_train, [f"x{i:02d}" for i in range(20)], X_test, y_test)


EXAMPLES: dict[str, Callable[[], TrainingResult]] = {
    "breast-cancer": breast_cancer,
    "diabetes": diabetes,
    "classification-20": classification_20,
}
"""Example name (as given to ``--example``) -> function that trains it."""
