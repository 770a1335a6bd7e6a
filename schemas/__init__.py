"""The wire and file contracts that every other driftline package shares (pydantic v2 models)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from schemas.alert import Alert, AlertKind, Evidence, OffsetRange, Severity
from schemas.events import DeadLetter, DeadLetterReason, Outcome, Prediction, PredictionRequest
from schemas.incident import IncidentReport, TimelineEntry
from schemas.manifest import (
    BuildVersions,
    CategoricalStatistics,
    Feature,
    Manifest,
    MissingPolicy,
    NumericStatistics,
    Outputs,
    OutputStatistics,
    ReferenceStatistics,
    TrainingSummary,
)

__all__ = [
    "SCHEMAS",
    "Alert",
    "AlertKind",
    "BuildVersions",
    "CategoricalStatistics",
    "DeadLetter",
    "DeadLetterReason",
    "Evidence",
    "Feature",
    "IncidentReport",
    "Manifest",
    "MissingPolicy",
    "NumericStatistics",
    "OffsetRange",
    "Outcome",
    "OutputStatistics",
    "Outputs",
    "Prediction",
    "PredictionRequest",
    "ReferenceStatistics",
    "Severity",
    "TimelineEntry",
    "TrainingSummary",
    "export_json_schemas",
]

SCHEMAS: dict[str, type[BaseModel]] = {
    "prediction-request": PredictionRequest,
    "prediction": Prediction,
    "outcome": Outcome,
    "dead-letter": DeadLetter,
    "manifest": Manifest,
    "alert": Alert,
    "incident": IncidentReport,
}
"""File stem -> model, for every schema exported as JSON Schema."""


def export_json_schemas(directory: Path) -> list[Path]:
    """Writes ``<stem>.schema.json`` for each model in :data:`SCHEMAS`; returns the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for stem, model in SCHEMAS.items():
        path = directory / f"{stem}.schema.json"
        path.write_text(json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n")
        paths.append(path)
    return paths
