"""The fast path's decoder takes nothing pydantic refuses and reads what it takes as pydantic does;
its event times are pydantic's; its predictions are the bytes one ``orjson.dumps`` per prediction
wrote."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from agent.models.package import Predictions
from agent.models.registry import ModelRegistry, ServedModel
from agent.models.repository import ModelRepository
from agent.serving.wire import RequestDecoder, parse_event_times, prediction_values
from schemas.events import PredictionRequest
from schemas.manifest import Feature
from tests.support.bad_input import KINDS, CaseMaker, ModelSpec

_DATETIME = TypeAdapter(datetime)


@pytest.fixture(scope="module")
def registry(model_repository: ModelRepository) -> ModelRegistry:
    registry = ModelRegistry(model_repository.root)
    registry.refresh()
    return registry


def _served(registry: ModelRegistry, name: str) -> ServedModel:
    served = registry.resolve(name)
    assert served is not None
    return served


# --- decoding ------------------------------------------------------------------------------------


def _mutations(value: bytes) -> st.SearchStrategy[bytes]:
    """The payload with a byte changed, dropped or repeated, or a JSON token swapped for another."""
    tokens = [b'"', b",", b":", b"{", b"}", b"[", b"]", b"1", b"-", b".", b"e", b"\\", b"null", b" ", b"\xff"]
    at = st.integers(0, max(len(value) - 1, 0))
    return st.one_of(
        st.just(value),
        st.tuples(at, st.sampled_from(tokens)).map(lambda t: value[: t[0]] + t[1] + value[t[0] + 1 :]),
        at.map(lambda i: value[:i] + value[i + 1 :]),
        st.tuples(at, st.sampled_from(tokens)).map(lambda t: value[: t[0]] + t[1] + value[t[0] :]),
    )


@settings(
    max_examples=400,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_what_the_typed_decoder_takes_pydantic_takes_with_the_same_values(
    registry: ModelRegistry, model_repository: ModelRepository, data: st.DataObject
) -> None:
    models = ModelSpec.served_in(model_repository.root)
    maker = CaseMaker(models, max_event_bytes=1 << 20)
    case = maker.draw(data, data.draw(st.sampled_from(KINDS)))
    value = data.draw(_mutations(case.value or b"{}"))
    decoder = RequestDecoder()
    decoder.learn(_served(registry, data.draw(st.sampled_from(sorted(models)))))
    fast = decoder.decode(value)
    if fast is None:
        return
    at = None
    if fast.event_time is not msgspec.UNSET:
        [at] = parse_event_times([fast.event_time])
        if at is None:
            return  # the handler leaves this one to pydantic
    request = PredictionRequest.model_validate_json(value)  # raises if pydantic refuses it
    assert (fast.request_id, fast.model, fast.model_version, fast.schema_version) == (
        request.request_id,
        request.model,
        request.model_version,
        request.schema_version,
    )
    # The struct's fields are the features in the model's order, under their own names.
    names = list(type(fast.features).__struct_encode_fields__)
    assert sorted(request.features) == sorted(names)
    assert list(msgspec.structs.astuple(fast.features)) == [float(request.features[n]) for n in names]  # type: ignore[arg-type]
    if at is not None:
        assert at == request.event_time and at.utcoffset() == request.event_time.utcoffset()


def test_the_decoder_follows_the_model_asked_for(registry: ModelRegistry) -> None:
    cancer, sugar = _served(registry, "breast-cancer"), _served(registry, "diabetes")
    row = {f.name: 1.0 for f in cancer.manifest.features}
    other = {f.name: 0.5 for f in sugar.manifest.features}
    payload = orjson.dumps({"request_id": "r", "model": "breast-cancer", "features": row})
    decoder = RequestDecoder()
    assert decoder.decode(payload) is None  # no model served yet: nothing to guess
    decoder.learn(cancer)
    fast = decoder.decode(payload)
    assert type(fast) is decoder.typed(cancer).request_type  # type: ignore[union-attr]
    decoder.learn(sugar)
    # Guessed diabetes, read the name, took breast-cancer's decoder: the next guess is breast-cancer.
    assert type(decoder.decode(payload)) is decoder.typed(cancer).request_type  # type: ignore[union-attr]
    assert decoder.decode(orjson.dumps({"request_id": "s", "model": "diabetes", "features": other}))
    assert decoder.decode(orjson.dumps({"request_id": "r", "model": "nope", "features": row})) is None
    assert decoder.decode(b"[1, 2]") is None
    assert decoder.typed(cancer) is decoder.typed(cancer)


@pytest.mark.parametrize("depth", [10, 999, 1000, 5000])
def test_deep_nesting_is_left_to_pydantic(registry: ModelRegistry, depth: int) -> None:
    row = {f.name: 1.0 for f in _served(registry, "breast-cancer").manifest.features}
    junk = b'{"a":' * depth + b"1" + b"}" * depth
    body = orjson.dumps({"request_id": "r", "model": "breast-cancer", "features": row, "extra": 0})
    payload = body.replace(b'"extra":0', b'"extra":' + junk)
    decoder = RequestDecoder()
    assert decoder.decode(payload) is None  # nothing to guess: reads the model's name
    decoder.learn(_served(registry, "diabetes"))
    assert decoder.decode(payload) is None  # the guess refuses it, then the name is read
    decoder.learn(_served(registry, "breast-cancer"))
    assert decoder.decode(payload) is None  # an unknown field: refused at its name


def test_a_model_with_a_categorical_feature_is_left_to_pydantic(registry: ModelRegistry) -> None:
    class Categorical:  # what the decoder reads of a served model, with a categorical feature
        name = "colours"
        manifest = type(
            "M", (), {"features": (Feature(name="c", type="categorical", categories=("red", "blue")),)}
        )

    decoder = RequestDecoder()
    served: Any = Categorical()
    assert decoder.typed(served) is None
    decoder.learn(served)
    payload = orjson.dumps({"request_id": "r", "model": "colours", "features": {"c": "red"}})
    assert decoder.decode(payload) is None
    decoder.learn(_served(registry, "breast-cancer"))
    assert decoder.decode(payload) is None  # read its name: still nothing typed for it


# --- event times ---------------------------------------------------------------------------------


def _iso_like(parts: tuple[int, int, int, str, int, int, int | None, str, str, str]) -> str:
    year, month, day, sep, hour, minute, second, fraction, zone, tail = parts
    seconds = "" if second is None else f":{second:02d}"
    return f"{year:04d}-{month:02d}-{day:02d}{sep}{hour:02d}:{minute:02d}{seconds}{fraction}{zone}{tail}"


def _fields(valid: bool) -> st.SearchStrategy[str]:
    """Date-and-time texts near RFC 3339: every field in range (``valid``), or any of them a bit off."""

    def pick(good: st.SearchStrategy[Any], off: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return good if valid else good | off

    fraction = st.text("0123456789", min_size=1, max_size=9 if valid else 10)
    return st.tuples(
        pick(st.integers(1, 9999), st.just(0)),
        pick(st.integers(1, 12), st.sampled_from([0, 13])),
        pick(st.integers(1, 28), st.sampled_from([0, 29, 30, 31, 32])),
        pick(st.sampled_from(["T", "t", " "]), st.sampled_from(["_", ""])),
        pick(st.integers(0, 23), st.just(24)),
        pick(st.integers(0, 59), st.just(60)),
        pick(st.none() | st.integers(0, 59), st.sampled_from([60, 61])),
        pick(st.just("") | fraction.map(".".__add__), fraction.map(",".__add__) | st.just(".")),
        pick(
            st.sampled_from(["", "Z", "z", "+00:00", "-00:00", "+0200"])
            | st.tuples(st.sampled_from("+-"), st.integers(0, 23), st.integers(0, 59)).map(
                lambda t: f"{t[0]}{t[1]:02d}:{t[2]:02d}"
            ),
            st.sampled_from(["+02", " Z", "+24:00", "+00:60", "+2:00"]),
        ),
        pick(st.just(""), st.sampled_from([" ", "x", "\n", '"'])),
    ).map(_iso_like)


@settings(max_examples=500, derandomize=True, database=None, deadline=None)
@given(
    texts=st.lists(
        _fields(valid=True)
        | _fields(valid=False)
        | st.text(max_size=30)
        | st.sampled_from(["2026-01-01", "1700000000", "now"]),
        min_size=1,
        max_size=8,
    )
)
def test_event_times_are_the_ones_pydantic_reads(texts: list[str]) -> None:
    parsed = parse_event_times(texts)
    assert len(parsed) == len(texts)
    for text, at in zip(texts, parsed, strict=True):
        if at is None:
            continue
        expected = _DATETIME.validate_python(text)
        assert (at == expected and at.utcoffset() == expected.utcoffset() and at.tzinfo is not None) or (
            at.tzinfo is None and expected.tzinfo is None and at == expected
        ), (text, at, expected)
        assert orjson.dumps(at) == orjson.dumps(expected)


def test_a_fraction_past_microseconds_is_left_to_pydantic() -> None:
    # msgspec would round it (...00.123457), pydantic truncates it (...00.123456).
    texts = ["2026-01-01T00:00:00.1234567Z", "2026-01-01T00:00:00.123456Z"]
    assert parse_event_times(texts) == [None, datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)]
    assert parse_event_times([]) == []
    assert parse_event_times(['2026-01-01T00:00:00Z","2026-01-01T00:00:00Z']) == [None]
    assert parse_event_times(["2026-01-01T00:00:00+02:00"]) == [
        datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=2)))
    ]


# --- predictions ---------------------------------------------------------------------------------


def _reference(head: bytes, ids: list[str], times: list[Any], p: Predictions, keys: list[str]) -> list[bytes]:
    """One orjson.dumps per prediction, as the handler wrote them before."""
    out = []
    if p.values is not None:
        for rid, at, value in zip(ids, times, p.values.astype(np.float64).tolist(), strict=True):
            out.append(head + orjson.dumps({"request_id": rid, "event_time": at, "value": value})[1:])
        return out
    assert p.labels is not None and p.probabilities is not None
    probabilities = np.round(p.probabilities.astype(np.float64), 6).tolist()
    for rid, at, label, row in zip(ids, times, p.labels.tolist(), probabilities, strict=True):
        own = {
            "request_id": rid,
            "event_time": at,
            "label": label,
            "probabilities": dict(zip(keys, row, strict=True)),
        }
        out.append(head + orjson.dumps(own)[1:])
    return out


_ids = st.lists(
    st.text(min_size=1, max_size=12).filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s))
)
_times = st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-3, minutes=-30))]))


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(
    ids=st.lists(
        st.sampled_from(["r-1", 'q"uote', "back\\slash", "ü€😀", '","', "%s %b", "tab\t"])
        | _ids.map(lambda xs: xs[0] if xs else "x"),
        min_size=1,
        max_size=6,
    ),
    data=st.data(),
)
def test_predictions_are_the_bytes_one_dumps_per_prediction_wrote(
    ids: list[str], data: st.DataObject
) -> None:
    n = len(ids)
    times = data.draw(st.lists(_times, min_size=n, max_size=n))
    common = {"schema_version": "1", "model": "m%s", "model_version": "1", "latency_ms": 1.5}
    head = orjson.dumps(common)[:-1] + b","
    unit = st.floats(0, 1, width=32) | st.sampled_from([float("nan"), 1e-7, 0.3333333])
    if data.draw(st.booleans()):
        values = np.array(data.draw(st.lists(st.floats(width=32), min_size=n, max_size=n)), dtype=np.float32)
        predictions, keys = Predictions(values=values), []
    else:
        keys = data.draw(st.sampled_from([["0", "1"], ["setosa", "versi%color", 'vir"ginica'], ["a"]]))
        probabilities = np.array(
            data.draw(
                st.lists(st.lists(unit, min_size=len(keys), max_size=len(keys)), min_size=n, max_size=n)
            ),
            dtype=np.float32,
        )
        labels = np.array(
            data.draw(st.lists(st.sampled_from(keys) | st.integers(0, 3), min_size=n, max_size=n)),
            dtype=object,
        )
        predictions = Predictions(labels=labels, probabilities=probabilities)
    got_keys, values = prediction_values(head, ids, times, predictions, keys)
    assert got_keys == [rid.encode() for rid in ids]
    assert values == _reference(head, ids, times, predictions, keys)
    for value in values:
        json.loads(value)


def test_no_prediction_no_message() -> None:
    assert prediction_values(b"{", [], [], Predictions(values=np.zeros(0, np.float32)), []) == ([], [])
    with pytest.raises(ValueError, match="class keys"):
        prediction_values(
            b"{",
            ["r"],
            [datetime.now(UTC)],
            Predictions(labels=np.array([0]), probabilities=np.zeros((1, 2), np.float32)),
            ["0"],
        )


def test_pydantic_time_zones_serialise_as_the_fast_paths_do() -> None:
    request = PredictionRequest.model_validate_json(
        b'{"request_id":"r","model":"m","event_time":"2026-01-01T00:00:00.5+02:00","features":{}}'
    )
    [fast] = parse_event_times(["2026-01-01T00:00:00.5+02:00"])
    assert orjson.dumps(request.event_time) == orjson.dumps(fast) == b'"2026-01-01T00:00:00.500000+02:00"'
    with pytest.raises(ValidationError):
        PredictionRequest.model_validate_json(
            b'{"request_id":"r","model":"m","event_time":null,"features":{}}'
        )
