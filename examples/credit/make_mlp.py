"""Makes the "bring your own ONNX" example: a small neural network exported to ONNX, with its data.

    python examples/credit/make_mlp.py            # rewrites the files next to this script
    driftline package --onnx examples/credit/mlp.onnx --reference examples/credit/reference.csv \\
        --holdout examples/credit/holdout.csv --label-column default --name credit-mlp

The data is a seeded, synthetic credit-default table: six numeric features and a 0/1 ``default``
label, written as ``reference.csv`` (the training rows) and ``holdout.csv`` (rows kept out of
training). The model is a scikit-learn pipeline, a StandardScaler and an MLPClassifier with one
hidden layer of 16 units, exported the way most ONNX files in the wild are: skl2onnx's ``to_onnx``
with its defaults, so the input is called ``X`` and the probabilities come out through a ZipMap.
``driftline package --onnx`` renames the one and removes the other. The only addition is a
``feature_names`` metadata entry, which ``driftline package`` checks against the CSV's columns.

Anything that writes an ONNX file with one float32 input ``[batch, n_features]`` and a label plus
probabilities (or one value) would do as well: ``torch.onnx.export``, tf2onnx, onnxmltools.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

FEATURES = ("age", "income", "debt_ratio", "credit_lines", "late_payments", "utilization")
LABEL = "default"
SEED = 11
REFERENCE_ROWS = 2000
HOLDOUT_ROWS = 600


def make_data(n: int, seed: int = SEED) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """``n`` seeded rows of the credit table: features rounded as a bank would store them, and labels."""
    rng = np.random.default_rng(seed)
    age = rng.integers(21, 76, n).astype(np.float64)
    income = np.round(rng.lognormal(np.log(48.0), 0.45, n), 1)  # thousands a year
    debt_ratio = np.round(rng.beta(2.0, 5.0, n) * 1.5, 3)
    credit_lines = rng.poisson(4.0, n).astype(np.float64)
    late_payments = rng.poisson(0.6, n).astype(np.float64)
    utilization = np.round(rng.beta(2.0, 3.0, n), 3)
    logit = (
        -1.6
        + 7.0 * (debt_ratio - 0.43)
        + 1.3 * late_payments
        + 10.0 * (utilization - 0.4) ** 2
        - 0.04 * (age - 45)
        - 0.03 * (income - 50)
        + 0.15 * np.abs(credit_lines - 4)
    )
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    X = np.column_stack([age, income, debt_ratio, credit_lines, late_payments, utilization])
    return X, y


def train(X: npt.NDArray[np.float64], y: npt.NDArray[np.int64]) -> Any:
    """The fitted network (scaler and MLP), seeded."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    network = MLPClassifier(hidden_layer_sizes=(16,), alpha=1e-3, max_iter=600, random_state=SEED)
    return make_pipeline(StandardScaler(), network).fit(X, y)


def export(model: Any, X: npt.NDArray[np.float64], path: Path) -> None:
    """Writes ``model`` to ``path`` as skl2onnx's ``to_onnx`` makes it, plus ``feature_names``."""
    from onnx import StringStringEntryProto
    from skl2onnx import to_onnx

    onnx_model = to_onnx(model, X[:1].astype(np.float32), target_opset={"": 17, "ai.onnx.ml": 3})
    onnx_model.metadata_props.append(StringStringEntryProto(key="feature_names", value=",".join(FEATURES)))
    path.write_bytes(onnx_model.SerializeToString())


def write_csv(path: Path, X: npt.NDArray[np.float64], y: npt.NDArray[np.int64]) -> None:
    lines = [",".join((*FEATURES, LABEL))]
    lines += [",".join(f"{v:g}" for v in row) + f",{label}" for row, label in zip(X, y, strict=True)]
    path.write_text("\n".join(lines) + "\n")


def main(out: Path) -> Any:
    """Writes ``reference.csv``, ``holdout.csv`` and ``mlp.onnx`` into ``out``; returns the model."""
    X, y = make_data(REFERENCE_ROWS + HOLDOUT_ROWS)
    X_ref, y_ref = X[:REFERENCE_ROWS], y[:REFERENCE_ROWS]
    model = train(X_ref, y_ref)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "reference.csv", X_ref, y_ref)
    write_csv(out / "holdout.csv", X[REFERENCE_ROWS:], y[REFERENCE_ROWS:])
    export(model, X_ref, out / "mlp.onnx")
    return model


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
