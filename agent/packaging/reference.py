"""Step 3: reference statistics of the inputs and of the model's output, and the holdout scores."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from agent.errors import ConfigurationError
from schemas.manifest import (
    CategoricalStatistics,
    Feature,
    FeatureStatistics,
    NumericStatistics,
    Outputs,
    OutputStatistics,
    Reconstruction,
    ReferenceStatistics,
    Task,
)

__all__ = [
    "reference_statistics",
]


def as_matrix(X: npt.ArrayLike, n_features: int, what: str) -> npt.NDArray[np.float64]:
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


def prepared_mask(features: Sequence[Feature], X: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
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
    *,
    output_rows_from: Literal["holdout", "reference"] = "reference",
    reconstruction: Reconstruction | None = None,
) -> ReferenceStatistics:
    """Per-feature statistics of ``X`` (raw, missing values included) and of the model's output
    ``predicted`` (``labels``/``probabilities`` or ``values``) on the rows it was run on, which
    ``output_rows_from`` names; with the features' ``reconstruction`` when there is one."""
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
            quantity="value",
            statistics=NumericStatistics.from_values(predicted["values"]),
            rows_from=output_rows_from,
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
                rows_from=output_rows_from,
            )
        else:
            output = OutputStatistics(
                quantity="max_probability",
                statistics=NumericStatistics.from_values(probabilities.max(axis=1)),
                label_frequencies=frequencies,
                rows_from=output_rows_from,
            )
    return ReferenceStatistics(rows=len(X), features=stats, output=output, reconstruction=reconstruction)


def holdout_scores(
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
