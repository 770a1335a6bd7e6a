"""The events on driftline's Kafka topics.

Every message is JSON, keyed by its request id, so that a request, its prediction and its outcome land
on the same partition number of their topics (given equal partition counts). Each model carries a
``schema_version``; ``python -m schemas`` writes all of them as JSON Schema for producers in other
languages.

Feature values are numbers, strings (categorical features) or ``null`` (missing). ``NaN`` and
``Infinity`` literals are accepted on the wire, as Python's ``json`` module writes them, so that the
agent can apply the model's missing-value policy instead of losing the event to a parse error.

Example:
    >>> r = PredictionRequest.model_validate_json(
    ...     b'{"request_id": "r-1", "model": "breast-cancer", "event_time": "2026-01-01T00:00:00Z",'
    ...     b' "features": {"mean radius": 14.2, "colour": "red", "mean area": null}}'
    ... )
    >>> r.features["mean radius"], r.model_version
    (14.2, None)
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

__all__ = [
    "DeadLetter",
    "DeadLetterReason",
    "FeatureValue",
    "Outcome",
    "Prediction",
    "PredictionRequest",
]

# Strict, so that a JSON string "1.5" or a boolean stays what it is (a type change the monitor counts)
# instead of being coerced into a number.
FeatureValue = StrictFloat | StrictInt | StrictStr | None

RequestId = Annotated[str, Field(min_length=1, max_length=256)]
ModelName = Annotated[str, Field(min_length=1, max_length=256)]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class PredictionRequest(_Event):
    """A request for one prediction, on the requests topic."""

    schema_version: Literal["1"] = "1"
    request_id: RequestId
    """Unique per request; the message key; joins the prediction and the outcome."""
    model: ModelName
    """Name of the model to ask."""
    model_version: str | None = None
    """A version to ask for; the newest served version if omitted."""
    event_time: datetime = Field(default_factory=_utcnow)
    """When the event happened at its source."""
    features: dict[str, FeatureValue]
    """Feature values by name."""


class Prediction(_Event):
    """The model's answer to one request, on the predictions topic."""

    schema_version: Literal["1"] = "1"
    request_id: RequestId
    model: ModelName
    model_version: str
    """The version that made this prediction."""
    label: str | int | None = None
    """Predicted class (classifiers)."""
    probabilities: dict[str, float] | None = None
    """Class label -> probability (classifiers)."""
    value: float | None = None
    """Predicted value (regressors)."""
    event_time: datetime
    """The request's event time."""
    predicted_at: datetime
    """When the prediction was made."""
    latency_ms: float
    """From the request's arrival at the agent to the prediction (batching and inference)."""


class Outcome(_Event):
    """What actually happened for a request, on the outcomes topic; joined to its prediction."""

    schema_version: Literal["1"] = "1"
    request_id: RequestId
    model: ModelName
    label: str | int | None = None
    """Observed class (classifiers)."""
    value: float | None = None
    """Observed value (regressors)."""
    event_time: datetime = Field(default_factory=_utcnow)


class DeadLetterReason(StrEnum):
    """Why an event could not be served."""

    TOO_LARGE = "too_large"
    DECODE_ERROR = "decode_error"
    INVALID = "invalid"
    UNKNOWN_MODEL = "unknown_model"
    MISSING_FEATURE = "missing_feature"
    WRONG_TYPE = "wrong_type"
    NON_FINITE = "non_finite"
    UNKNOWN_CATEGORY = "unknown_category"


class DeadLetter(_Event):
    """An event driftline could not serve, with the reason, on the dead-letter topic."""

    schema_version: Literal["1"] = "1"
    source_topic: str
    partition: int
    offset: int
    key: str | None
    """The message key, decoded as UTF-8 with replacement characters."""
    payload: str
    """The payload's first bytes, decoded as UTF-8 with replacement characters."""
    payload_size: int
    """The payload's full size in bytes."""
    reason: DeadLetterReason
    detail: str
    """One line a person understands, naming the bad field or value."""
    time: datetime = Field(default_factory=_utcnow)
