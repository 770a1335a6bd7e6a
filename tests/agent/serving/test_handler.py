from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import numpy as np
import orjson
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes

from agent.models.package import LoadedModel
from agent.models.registry import ModelRegistry
from agent.models.repository import ModelRepository
from agent.monitoring.batch import ModelBatch, Observed
from agent.serving.handler import Record, RequestHandler
from agent.serving.web import predict_payloads
from schemas.events import DeadLetter, Prediction, PredictionRequest

PRED, DEAD = "preds", "dead"


@pytest.fixture(scope="module")
def handler(model_repository: ModelRepository) -> RequestHandler:
    registry = ModelRegistry(model_repository.root)
    registry.refresh()
    return RequestHandler(registry, predictions_topic=PRED, dead_letters_topic=DEAD, max_event_bytes=4096)


def request(i: int, model: str, features: dict[str, object], **extra: object) -> dict[str, object]:
    return {"request_id": f"r-{i}", "model": model, "features": features, **extra}


def cancer_rows(n: int) -> tuple[np.ndarray, list[dict[str, object]]]:
    data = load_breast_cancer()
    X = data.data[:n]
    return X, [dict(zip(map(str, data.feature_names), map(float, row), strict=True)) for row in X]


def records(bodies: list[object]) -> list[Record]:
    out = []
    for i, body in enumerate(bodies):
        value = body if isinstance(body, bytes) else json.dumps(body).encode()
        out.append(Record("requests", i % 3, 100 + i, f"k{i}".encode(), value))
    return out


def test_predictions_match_the_model_and_keep_partition(
    handler: RequestHandler, model_repository: ModelRepository
) -> None:
    X, rows = cancer_rows(50)
    out = handler.handle(records([request(i, "breast-cancer", row) for i, row in enumerate(rows)]))
    assert [m.topic for m in out] == [PRED] * 50
    with LoadedModel(model_repository.root / "breast-cancer" / "1") as model:
        expected = model.predict(X.astype(np.float32))
    for i, message in enumerate(out):
        p = Prediction.model_validate_json(message.value)
        assert message.key == f"r-{i}".encode() and p.request_id == f"r-{i}"
        assert message.partition == i % 3
        assert (p.model, p.model_version) == ("breast-cancer", "1")
        assert p.label == int(expected.labels[i])
        assert p.probabilities is not None and set(p.probabilities) == {"0", "1"}
        assert p.probabilities["1"] == pytest.approx(float(expected.probabilities[i, 1]), abs=1e-6)


def test_regressor_predicts_values(handler: RequestHandler, model_repository: ModelRepository) -> None:
    data = load_diabetes()
    bodies = [
        request(i, "diabetes", dict(zip(map(str, data.feature_names), map(float, row), strict=True)))
        for i, row in enumerate(data.data[:20])
    ]
    out = handler.handle(records(bodies))
    with LoadedModel(model_repository.root / "diabetes" / "1") as model:
        expected = model.predict(data.data[:20].astype(np.float32)).values
    assert expected is not None
    values = [Prediction.model_validate_json(m.value).value for m in out]
    assert values == pytest.approx(expected.tolist(), rel=1e-6)


def test_every_bad_event_is_dead_lettered_with_its_reason_and_the_rest_is_served(
    handler: RequestHandler,
) -> None:
    _, rows = cancer_rows(3)
    good = rows[0]
    missing = {k: v for k, v in good.items() if k != "mean radius"}
    bad = {
        "decode_error": b"{not json",
        "too_large": json.dumps(request(1, "breast-cancer", good, pad="x" * 5000)).encode(),
        "invalid": {"model": "breast-cancer", "features": good},  # no request_id
        "unknown_model": request(2, "no-such-model", good),
        "missing_feature": request(3, "breast-cancer", missing),
        "non_finite": json.dumps(request(4, "breast-cancer", {**good, "mean area": math.inf})).encode(),
        "wrong_type": request(5, "breast-cancer", {**good, "mean area": "big"}),
    }
    bodies: list[object] = [request(100, "breast-cancer", good)]
    for body in bad.values():
        bodies.extend([body, request(100 + len(bodies), "breast-cancer", good)])
    recs = records(bodies)
    out = handler.handle(recs)
    predictions = [m for m in out if m.topic == PRED]
    dead = [DeadLetter.model_validate_json(m.value) for m in out if m.topic == DEAD]
    assert len(predictions) == len(bad) + 1
    assert [d.reason.value for d in sorted(dead, key=lambda d: d.offset)] == list(bad)
    for d in dead:
        source = recs[d.offset - 100]
        assert (d.source_topic, d.partition, d.key) == ("requests", source.partition, f"k{d.offset - 100}")
        assert d.payload_size == len(source.value or b"")
        assert d.detail
    by_reason = {d.reason.value: d.detail for d in dead}
    assert "mean radius" in by_reason["missing_feature"]
    assert "no-such-model" in by_reason["unknown_model"]
    assert "request_id" in by_reason["invalid"]
    assert "4096" in by_reason["too_large"]


def test_metrics_count_per_batch(model_repository: ModelRepository) -> None:
    registry = ModelRegistry(model_repository.root)
    registry.refresh()
    h = RequestHandler(registry, predictions_topic=PRED, dead_letters_topic=DEAD, max_event_bytes=4096)
    _, rows = cancer_rows(5)
    h.handle(records([request(i, "breast-cancer", r) for i, r in enumerate(rows)] + [b"junk"]))
    assert h.stats.predictions == 5 and h.stats.dead_letters == {"decode_error": 1}
    assert len(h.stats.take_latencies()) == 1 and h.stats.take_latencies() == []
    text = h.metrics.render().decode()
    assert 'driftline_predictions_total{model="breast-cancer",version="1"} 5.0' in text
    assert 'driftline_dead_letters_total{model="",reason="decode_error"} 1.0' in text
    assert 'driftline_events_in_total{topic="requests"} 6.0' in text


def test_rest_predict_single_list_and_422(handler: RequestHandler) -> None:
    _, rows = cancer_rows(2)
    one = predict_payloads(handler, orjson.dumps(request(1, "breast-cancer", rows[0])))
    assert one.status == 200 and one.body["request_id"] == "r-1"
    # A list keeps its order even across models.
    data = load_diabetes()
    diabetes_row = dict(zip(map(str, data.feature_names), map(float, data.data[0]), strict=True))
    many = predict_payloads(
        handler,
        orjson.dumps(
            [
                request(1, "breast-cancer", rows[0]),
                request(2, "diabetes", diabetes_row),
                request(3, "breast-cancer", rows[1]),
            ]
        ),
    )
    assert many.status == 200 and [p["request_id"] for p in many.body] == ["r-1", "r-2", "r-3"]
    bad = predict_payloads(
        handler, orjson.dumps([request(1, "breast-cancer", rows[0]), request(2, "breast-cancer", {})])
    )
    assert bad.status == 422
    [error] = bad.body["errors"]
    assert error["index"] == 1 and error["reason"] == "missing_feature"
    assert predict_payloads(handler, b"{").status == 422


def test_consumed_records_are_counted_under_their_own_topic(model_repository: ModelRepository) -> None:
    # A batch that mixes requests and outcomes was counted under its first record's topic.
    registry = ModelRegistry(model_repository.root)
    registry.refresh()
    handler = RequestHandler(
        registry, predictions_topic=PRED, dead_letters_topic=DEAD, max_event_bytes=4096, outcomes_topic="outs"
    )
    _, rows = cancer_rows(6)
    mixed = []
    for i, row in enumerate(rows):
        mixed.append(Record("reqs", 0, i, None, json.dumps(request(i, "breast-cancer", row)).encode()))
        outcome = {"request_id": f"r-{i}", "model": "breast-cancer", "label": 1}
        mixed.append(Record("outs", 0, i, None, json.dumps(outcome).encode()))
    handler.handle(mixed[1:] + mixed[:1])  # starts with an outcome: 6 outcomes, 6 requests
    handler.handle(mixed[:3])  # starts with a request: 2 requests, 1 outcome
    counted = {
        topic: handler.metrics.registry.get_sample_value("driftline_events_in_total", {"topic": topic})
        for topic in ("reqs", "outs")
    }
    assert counted == {"reqs": 8.0, "outs": 7.0}


def test_good_requests_take_the_fast_path(model_repository: ModelRepository) -> None:
    class Requests:
        def __init__(self) -> None:
            self.seen: list[object] = []

        def observe(self, batch: ModelBatch) -> Observed:
            self.seen.extend(batch.requests)
            return Observed()

        def observe_dead_letters(self, dead: object) -> Observed:
            return Observed()

        def observe_outcomes(self, outcomes: object) -> Observed:
            return Observed()

    registry = ModelRegistry(model_repository.root)
    registry.refresh()
    seen = Requests()
    h = RequestHandler(
        registry, predictions_topic=PRED, dead_letters_topic=DEAD, max_event_bytes=4096, observers=[seen]
    )
    _, rows = cancer_rows(4)
    bodies = [
        request(i, "breast-cancer", r, event_time="2026-03-01T12:30:00+02:00") for i, r in enumerate(rows)
    ]
    h.handle(records(bodies[:1]))  # the first names the model: pydantic decodes it
    out = h.handle(records(bodies[1:]))
    # In each batch pydantic validates the request that opens the model's group; the rest go fast.
    assert [isinstance(r, PredictionRequest) for r in seen.seen] == [True, True, False, False]
    assert [r.request_id for r in seen.seen] == ["r-0", "r-1", "r-2", "r-3"]  # type: ignore[attr-defined]
    assert {r.event_time for r in seen.seen} == {  # type: ignore[attr-defined]
        datetime(2026, 3, 1, 10, 30, tzinfo=UTC)
    }
    assert [json.loads(m.value)["event_time"] for m in out] == ["2026-03-01T12:30:00+02:00"] * 3


def test_a_payload_nested_past_the_recursion_limit_is_a_dead_letter(
    model_repository: ModelRepository,
) -> None:
    registry = ModelRegistry(model_repository.root)
    registry.refresh()
    handler = RequestHandler(
        registry, predictions_topic=PRED, dead_letters_topic=DEAD, max_event_bytes=1 << 16
    )
    _, rows = cancer_rows(2)
    deep = b'{"a":' * 5000 + b"1" + b"}" * 5000
    body = json.dumps(request(1, "breast-cancer", rows[0], extra=0)).encode()
    nested = body.replace(b'"extra": 0', b'"extra": ' + deep)
    out = handler.handle(records([request(0, "breast-cancer", rows[1]), nested]))
    [prediction] = [m for m in out if m.topic == PRED]
    [dead] = [DeadLetter.model_validate_json(m.value) for m in out if m.topic == DEAD]
    assert prediction.key == b"r-0" and dead.reason.value == "decode_error" and dead.offset == 101
