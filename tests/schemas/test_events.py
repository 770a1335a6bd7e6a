from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas import SCHEMAS, DeadLetter, DeadLetterReason, Prediction, PredictionRequest, export_json_schemas

REQUEST = {
    "request_id": "r-1",
    "model": "m",
    "event_time": "2026-01-01T00:00:00Z",
    "features": {"a": 1.5, "b": 2, "c": "red", "d": None},
}


def test_request_round_trips_through_json() -> None:
    r = PredictionRequest.model_validate(REQUEST)
    again = PredictionRequest.model_validate_json(r.model_dump_json())
    assert again == r
    assert again.schema_version == "1"


def test_nan_and_infinity_literals_reach_the_policy_instead_of_failing_the_parse() -> None:
    r = PredictionRequest.model_validate_json(
        b'{"request_id":"r","model":"m","features":{"a":NaN,"b":Infinity,"c":-Infinity}}'
    )
    assert math.isnan(r.features["a"])  # type: ignore[arg-type]
    assert r.features["b"] == math.inf and r.features["c"] == -math.inf


@pytest.mark.parametrize("value", [True, [1], {"x": 1}])
def test_feature_values_are_not_coerced(value: object) -> None:
    with pytest.raises(ValidationError, match=r"features\.a"):
        PredictionRequest.model_validate({**REQUEST, "features": {"a": value}})


@pytest.mark.parametrize("missing", ["request_id", "model", "features"])
def test_required_fields(missing: str) -> None:
    body = {k: v for k, v in REQUEST.items() if k != missing}
    with pytest.raises(ValidationError, match=missing):
        PredictionRequest.model_validate(body)


def test_empty_request_id_is_invalid() -> None:
    with pytest.raises(ValidationError, match="request_id"):
        PredictionRequest.model_validate({**REQUEST, "request_id": ""})


def test_prediction_and_dead_letter_validate() -> None:
    p = Prediction.model_validate(
        {
            "request_id": "r",
            "model": "m",
            "model_version": "1",
            "label": 1,
            "probabilities": {"0": 0.2, "1": 0.8},
            "event_time": "2026-01-01T00:00:00Z",
            "predicted_at": "2026-01-01T00:00:01Z",
            "latency_ms": 3.5,
        }
    )
    assert p.label == 1
    d = DeadLetter(
        source_topic="t",
        partition=0,
        offset=5,
        key=None,
        payload="{",
        payload_size=1,
        reason=DeadLetterReason.DECODE_ERROR,
        detail="x",
    )
    assert json.loads(d.model_dump_json())["reason"] == "decode_error"


def test_committed_json_schemas_match_the_models(tmp_path: Path) -> None:
    committed = Path(__file__).resolve().parents[2] / "schemas" / "json"
    for path in export_json_schemas(tmp_path):
        assert (committed / path.name).read_text() == path.read_text(), (
            f"schemas/json/{path.name} is stale: run `python -m schemas`"
        )
    assert len(list(tmp_path.iterdir())) == len(SCHEMAS)
