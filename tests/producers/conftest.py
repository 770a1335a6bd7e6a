"""Helpers for the producer tests: a small model package manifest, and message decoding."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from producers.stream import Message, MessageKind
from schemas.manifest import Manifest, NumericStatistics


def numeric(values: list[float]) -> dict[str, Any]:
    return NumericStatistics.from_values(np.asarray(values)).model_dump()


def manifest_for_example(model: str) -> Manifest:
    """A manifest with an example model's features and reference statistics, as a package of it has."""
    from producers.datasets import load_dataset

    data = load_dataset(model)
    base = make_manifest(data.task).model_dump(mode="json")
    base["name"] = model
    base["features"] = [{"name": n, "type": "numeric"} for n in data.feature_names]
    base["reference"]["features"] = {n: numeric(list(data.X[:, j])) for j, n in enumerate(data.feature_names)}
    return Manifest.model_validate(base)


def make_manifest(task: str = "binary_classification") -> Manifest:
    """A churn model: ``age`` and ``income`` (numeric, reference std 10 and 1000) and ``plan``."""
    classifier = task != "regression"
    return Manifest.model_validate(
        {
            "name": "churn",
            "version": "3",
            "task": task,
            "estimator": "sklearn.linear_model.LogisticRegression",
            "features": [
                {"name": "age", "type": "numeric"},
                {"name": "plan", "type": "categorical", "categories": ["basic", "pro"]},
                {"name": "income", "type": "numeric"},
            ],
            "outputs": (
                {"label": "label", "probabilities": "probabilities", "class_labels": [0, 1]}
                if classifier
                else {"value": "variable"}
            ),
            "hyperparameters": {},
            "training": (
                {"rows": 2, "holdout_rows": 0, "evaluated_on": "reference", "accuracy": 1.0}
                if classifier
                else {"rows": 2, "holdout_rows": 0, "evaluated_on": "reference", "mae": 1.0, "r2": 0.5}
            ),
            "reference": {
                "rows": 2,
                "features": {
                    "age": numeric([30.0, 50.0]),
                    "plan": {
                        "kind": "categorical",
                        "count": 2,
                        "missing_rate": 0.0,
                        "frequencies": {"basic": 0.5, "pro": 0.5},
                    },
                    "income": numeric([1000.0, 3000.0]),
                },
                "output": {
                    "quantity": "positive_probability" if classifier else "value",
                    "statistics": numeric([0.2, 0.8]),
                    "label_frequencies": {"0": 0.5, "1": 0.5} if classifier else None,
                },
            },
            "versions": {
                "python": "3.11",
                "numpy": "2",
                "scikit_learn": "1",
                "skl2onnx": "1",
                "onnx": "1",
                "onnxruntime": "1",
                "opsets": {"ai.onnx": 21},
            },
            "created_at": "2026-01-01T00:00:00Z",
            "onnx_sha256": "0" * 64,
        }
    )


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """A package directory ``churn/3`` holding only the manifest (all that replay reads)."""
    folder = tmp_path / "models" / "churn" / "3"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(make_manifest().model_dump_json())
    return folder


def requests_of(messages: Iterable[Message]) -> list[Message]:
    """Messages on the requests topic, in event order (index = event index)."""
    return [m for m in messages if m.kind is not MessageKind.OUTCOME]


def body(message: Message) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(message.value)
    return value
