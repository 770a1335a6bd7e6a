"""Bad input never breaks the request handler (hypothesis): every record becomes exactly one prediction
or one dead letter, with the reason the wire contract gives (tests/support/bad_input.py), and nothing
the model's manifest forbids reaches the model."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_breast_cancer

from agent.models.registry import ModelRegistry, ServedModel
from agent.models.repository import ModelRepository
from agent.monitoring.batch import DeadLetterInfo, ModelBatch, Observed, RecordLike
from agent.monitoring.incidents import IncidentManager, InMemoryIncidentStore
from agent.monitoring.observer import DriftObserver
from agent.serving.handler import Record, RequestHandler
from agent.serving.wire import RequestDecoder
from schemas.events import DeadLetter, Outcome, Prediction
from tests.support.bad_input import KINDS, PREDICTION, CaseMaker, ModelSpec

PRED, DEAD, ALERTS = "predictions", "dead", "alerts"
MAX_EVENT_BYTES = 4096


class ModelInputs:
    """An observer that keeps every matrix handed to a model that is not finite as a float32."""

    def __init__(self) -> None:
        self.batches = 0
        self.not_finite: list[tuple[str, list[list[float]]]] = []

    def observe(self, batch: ModelBatch) -> Observed:
        self.batches += 1
        matrix = np.asarray(batch.encoded.matrix)
        if matrix.dtype != np.float32 or not np.isfinite(matrix).all():
            self.not_finite.append((batch.served.name, matrix.tolist()))
        return Observed()

    def observe_dead_letters(self, dead: Sequence[DeadLetterInfo]) -> Observed:
        return Observed()

    def observe_outcomes(self, outcomes: Sequence[tuple[RecordLike, Outcome]]) -> Observed:
        return Observed()

    def observe_join(self, records: Sequence[RecordLike]) -> Observed:
        return Observed()

    def observe_idle(self) -> Observed:
        return Observed()


@pytest.fixture(scope="module")
def served(model_repository: ModelRepository) -> tuple[RequestHandler, dict[str, ModelSpec], ModelInputs]:
    registry = ModelRegistry(model_repository.root)
    registry.refresh()
    inputs = ModelInputs()
    # The real drift monitor too: junk must not break it either.
    monitor = DriftObserver(IncidentManager(InMemoryIncidentStore(), cooldown_s=3600))
    handler = RequestHandler(
        registry,
        predictions_topic=PRED,
        dead_letters_topic=DEAD,
        max_event_bytes=MAX_EVENT_BYTES,
        observers=[inputs, monitor],
        alerts_topic=ALERTS,
    )
    return handler, ModelSpec.served_in(model_repository.root), inputs


def check(handler: RequestHandler, cases: Sequence[Any]) -> tuple[int, int]:
    """Runs the cases through the handler and checks every record's outcome; returns the counts."""
    records = [Record("requests", i % 3, i, f"case-{i}".encode(), c.value) for i, c in enumerate(cases)]
    out = handler.handle(records)
    assert {m.topic for m in out} <= {PRED, DEAD, ALERTS}
    predictions = [Prediction.model_validate_json(m.value) for m in out if m.topic == PRED]
    dead = [DeadLetter.model_validate_json(m.value) for m in out if m.topic == DEAD]
    assert len(predictions) + len(dead) == len(cases)

    expected_dead = {i: c.expected for i, c in enumerate(cases) if c.expected != PREDICTION}
    got_dead = {d.offset: d.reason.value for d in dead}
    assert len(got_dead) == len(dead), "two dead letters for one record"
    details = {d.offset: (d.detail, cases[d.offset].kind, cases[d.offset].value) for d in dead}
    assert got_dead == expected_dead, details
    for d in dead:
        assert d.key == f"case-{d.offset}" and d.source_topic == "requests" and d.detail
        assert d.payload_size == len(cases[d.offset].value or b"")

    assert Counter(p.request_id for p in predictions) == Counter(
        c.request_id for c in cases if c.expected == PREDICTION
    )
    for p in predictions:
        numbers = [p.value] if p.probabilities is None else list(p.probabilities.values())
        assert all(x is not None and np.isfinite(x) for x in numbers), p
    return len(predictions), len(dead)


@settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_every_record_is_one_prediction_or_one_dead_letter_with_its_reason(
    served: tuple[RequestHandler, dict[str, ModelSpec], ModelInputs], data: st.DataObject
) -> None:
    handler, models, inputs = served
    maker = CaseMaker(models, MAX_EVENT_BYTES)
    kinds = data.draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=25))
    check(handler, [maker.draw(data, kind) for kind in kinds])
    assert not inputs.not_finite, inputs.not_finite[:1]


def test_a_finite_value_beyond_float32_is_non_finite_for_the_model(
    served: tuple[RequestHandler, dict[str, ModelSpec], ModelInputs],
) -> None:
    # 1e300 is a finite float64, but the model's input is float32, where it is infinity: a model whose
    # manifest rejects non-finite values must never see it (it did, before the encoder checked the
    # float32 range).
    handler, models, inputs = served
    data = load_breast_cancer()
    row = dict(zip(map(str, data.feature_names), map(float, data.data[0]), strict=True))
    maker = CaseMaker(models, MAX_EVENT_BYTES)
    values: list[object] = [1e300, -1e300, 3.5e38, 10**39, 3.4028234e38, -3.4e38, 1e38]
    cases = [
        maker.case(
            "non_finite",
            json.dumps(
                {"request_id": f"r{i}", "model": "breast-cancer", "features": {**row, "mean area": v}}
            ).encode(),
            f"r{i}",
        )
        for i, v in enumerate(values)
    ]
    assert [c.expected for c in cases] == ["non_finite"] * 4 + [PREDICTION] * 3
    before = len(inputs.not_finite)
    assert check(handler, cases) == (3, 4)
    assert len(inputs.not_finite) == before
    out = handler.handle([Record("requests", 0, 0, b"k", cases[0].value)])
    [letter] = [DeadLetter.model_validate_json(m.value) for m in out if m.topic == DEAD]
    assert "mean area" in letter.detail and "float32" in letter.detail, letter.detail


class Recorder:
    """An observer that keeps what monitoring is handed, in a form two handlers can be compared on."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def observe(self, batch: ModelBatch) -> Observed:
        e = batch.encoded
        self.seen.append(
            (
                batch.served.name,
                [r.offset for r in batch.records],
                [r.request_id for r in batch.requests],
                e.matrix.dtype.str,
                e.matrix.tobytes(),
                e.accepted,
                [(i, r.reason, r.detail, r.feature) for i, r in e.rejected],
                e.unseen_fields,
                e.missing.tolist(),
                e.out_of_range.tolist(),
            )
        )
        return Observed()

    def observe_dead_letters(self, dead: Sequence[DeadLetterInfo]) -> Observed:
        self.seen.append([(d.record.offset, d.reason, d.detail, d.model, d.feature) for d in dead])
        return Observed()

    def observe_outcomes(self, outcomes: Sequence[tuple[RecordLike, Outcome]]) -> Observed:
        return Observed()


class PydanticOnly(RequestDecoder):
    """No fast path: every payload validated by pydantic and encoded by the FeatureEncoder."""

    def decode(self, value: bytes) -> None:
        return None

    def typed(self, served: ServedModel) -> None:
        return None


# Event times pydantic reads that the fast path leaves to it, and ones it refuses.
_ODD_TIMES = st.sampled_from(
    [
        "2026-01-01",
        "2026-01-01T00:00",
        "2026-01-01T00:00:00.123456789Z",
        "2026-01-01 00:00:00+0200",
        "2026-01-01t00:00:00z",
        "2026-01-01T00:00:00,5Z",
        1_767_225_600,
        1_767_225_600.25,
        "2026-02-30T00:00:00Z",
        "2026-01-01T00:00:00.Z",
    ]
)


def _comparable(out: Sequence[Any], untimed: set[str]) -> tuple[Any, Any]:
    """Predictions and dead letters, in order, without what only the clock decides: the prediction and dead
    letter times, and the event time of a request id sent without one (pydantic's default is the
    time it validated the request)."""
    predictions, dead = [], []
    for m in out:
        body = json.loads(m.value)
        if m.topic == PRED:
            del body["predicted_at"], body["latency_ms"]
            if body["request_id"] in untimed:
                del body["event_time"]
            predictions.append((m.key, m.partition, list(body), body))
        elif m.topic == DEAD:
            del body["time"]
            dead.append((m.key, body))
    return predictions, dead


@settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_the_fast_path_changes_no_outcome_and_no_word(
    model_repository: ModelRepository, data: st.DataObject
) -> None:
    handlers, recorders = [], []
    for decoder in (RequestDecoder(), PydanticOnly()):
        registry = ModelRegistry(model_repository.root)
        registry.refresh()
        recorder = Recorder()
        handler = RequestHandler(
            registry,
            predictions_topic=PRED,
            dead_letters_topic=DEAD,
            max_event_bytes=MAX_EVENT_BYTES,
            observers=[recorder],
            alerts_topic=ALERTS,
        )
        handler.wire = decoder
        handlers.append(handler)
        recorders.append(recorder)
    maker = CaseMaker(ModelSpec.served_in(model_repository.root), MAX_EVENT_BYTES)
    values = []
    for kind in data.draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=25)):
        case = maker.draw(data, kind)
        value = case.value
        if value and data.draw(st.integers(0, 5)) == 0:
            with contextlib.suppress(ValueError):
                document = json.loads(value)
                if isinstance(document, dict):
                    document["event_time"] = data.draw(_ODD_TIMES)
                    value = json.dumps(document).encode()
        values.append(value)
    # Twice: the second batch finds the decoder's guess already made.
    for _ in range(2):
        records = [Record("requests", i % 3, i, f"case-{i}".encode(), v) for i, v in enumerate(values)]
        untimed = {
            str(document.get("request_id"))
            for document in map(_document, values)
            if isinstance(document, dict) and "event_time" not in document
        }
        fast, careful = (_comparable(h.handle(records), untimed) for h in handlers)
        assert fast == careful
        assert recorders[0].seen == recorders[1].seen
        assert handlers[0].stats.dead_letters == handlers[1].stats.dead_letters


def _document(value: bytes | None) -> Any:
    try:
        return json.loads(value or b"")
    except (ValueError, RecursionError):
        return None
