"""Model packages for tests, built once per session with the real builder (small forests for speed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier

from agent.models.repository import ModelRepository
from agent.packaging.builder import build_package
from agent.packaging.examples import breast_cancer, classification_20, diabetes
from agent.packaging.training import TrainingResult
from schemas.manifest import MissingPolicy


def build_test_repository(root: Path) -> ModelRepository:
    """breast-cancer/1 (binary, 30 features), diabetes/1 (regression) and classification-20/1."""
    repository = ModelRepository(root)
    build_package(breast_cancer(n_estimators=10), name="breast-cancer", version="1", repository=repository)
    build_package(diabetes(), name="diabetes", version="1", repository=repository)
    build_package(classification_20_replayed(), name="classification-20", version="1", repository=repository)
    return repository


def classification_20_replayed() -> TrainingResult:
    """classification-20 (10 trees, 2,000 samples) as the tests that replay its training rows need it.

    Those tests send the training rows as their stationary stream. A package takes its output's
    reference from the holdout (rows the model never saw, on which it is less sure), so against it
    the training rows' outputs are more extreme than the reference: a real drift that the output's
    spread stream reports. Here the holdout is the training rows themselves, so that every reference
    (inputs, output, classes, reconstruction error) describes the stream these tests send.
    """
    result = classification_20(n_estimators=10, n_samples=2000)
    return TrainingResult(
        result.estimator,
        result.X_reference,
        result.y_reference,
        result.feature_names,
        result.X_reference,
        result.y_reference,
    )


def recorded_as_built_with(package: Path, **versions: str) -> None:
    """Rewrites the library versions the manifest of ``package`` (``NAME/VERSION/``) says it was
    built with, as an older build would have recorded them: what its dependency findings are made of."""
    path = package / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["versions"].update(versions)
    path.write_text(json.dumps(manifest))


def leftovers(root: Path) -> list[Path]:
    """Hidden files and directories under ``root``: what a failed or finished write must not leave."""
    return [p for p in root.rglob(".*")]


def nan_routing_forest() -> TrainingResult:
    """An iris forest trained with missing values allowed in 'pl'.

    scikit-learn's forests learn where to send NaN; the ONNX tree ensemble does not, so rows with a
    missing value get different probabilities: a conversion that must not be shipped.
    """
    X, y = load_iris(return_X_y=True)
    X = X.copy()
    X[::4, 2] = np.nan
    estimator = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y)
    return TrainingResult(
        estimator, X, y, ["sl", "sw", "pl", "pw"], X, y, missing={"pl": MissingPolicy(action="allow")}
    )
