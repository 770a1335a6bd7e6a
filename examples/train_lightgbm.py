"""A LightGBM training module for ``driftline package --module``.

    driftline package --module examples/train_lightgbm.py --name credit-lgbm

It trains gradient-boosted trees on the credit table of ``examples/credit/`` (the data the ONNX
example uses) and hands ``driftline package`` the fitted ``LGBMClassifier`` with its reference and
holdout rows. The builder converts it to ONNX with onnxmltools' LightGBM converter (registered with
skl2onnx, as the LightGBM and ONNX communities do), checks that ONNX Runtime reproduces LightGBM on
the holdout rows, and writes the package. XGBoost's ``XGBClassifier`` and ``XGBRegressor`` go the
same way. Both need driftline's ``build`` extra: ``pip install 'driftline[build]'``.

A scikit-learn ``Pipeline`` ending in a LightGBM or XGBoost model works too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
from lightgbm import LGBMClassifier

from agent.packaging.training import TrainingResult

DATA = Path(__file__).resolve().parent / "credit"
LABEL = "default"


def read_table(path: Path) -> tuple[list[str], npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Feature names, feature matrix and labels of one of the credit CSV files."""
    header = path.read_text().split("\n", 1)[0].strip().split(",")
    table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    label_at = header.index(LABEL)
    features = [c for i, c in enumerate(header) if i != label_at]
    X = np.delete(table, label_at, axis=1)
    return features, X, table[:, label_at].astype(np.int64)


def train() -> TrainingResult:
    features, X_train, y_train = read_table(DATA / "reference.csv")
    _, X_holdout, y_holdout = read_table(DATA / "holdout.csv")
    model = LGBMClassifier(
        n_estimators=150,
        learning_rate=0.05,
        num_leaves=15,
        min_child_samples=20,
        random_state=0,
        deterministic=True,
        force_row_wise=True,
        n_jobs=1,
        verbose=-1,
    ).fit(X_train, y_train)
    return TrainingResult(
        estimator=model,
        X_reference=X_train,
        y_reference=y_train,
        feature_names=features,
        X_holdout=X_holdout,
        y_holdout=y_holdout,
    )
