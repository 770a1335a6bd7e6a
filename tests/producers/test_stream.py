from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from producers.errors import ProducerError, ScheduleError
from producers.scenarios import SCENARIOS, dataset, generate
from producers.schedule import Scenario, ScheduledDrift
from producers.stream import EventStream, MessageKind
from schemas.events import Outcome, PredictionRequest
from tests.producers.conftest import body, requests_of


def digest(stream: EventStream) -> str:
    h = hashlib.sha256()
    for m in stream:
        h.update(len(m.key).to_bytes(4, "big") + m.key + len(m.value).to_bytes(4, "big") + m.value)
        h.update(m.kind.value.encode())
    return h.hexdigest()


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_same_seed_same_bytes_other_seed_other_bytes(name: str) -> None:
    first = digest(generate(name, seed=3, count=1500))
    assert digest(generate(name, seed=3, count=1500)) == first
    assert digest(generate(name, seed=4, count=1500)) != first


def test_iterating_again_repeats_the_stream_and_restarts_the_counts() -> None:
    stream = generate("schema", model="classification-20", seed=1, count=2000)
    first = list(stream)
    counts = (stream.stats.requests, stream.stats.outcomes, stream.stats.broken, stream.stats.garbage)
    assert list(stream) == first
    assert (stream.stats.requests, stream.stats.outcomes, stream.stats.broken, stream.stats.garbage) == counts
    assert stream.stats.events == 2000 == len(requests_of(first))


def test_a_shorter_stream_is_a_prefix_of_a_longer_one() -> None:
    short = list(generate("demo", seed=5, count=1500))
    long = list(generate("demo", seed=5, count=3000))
    assert long[: len(short)] == short


def test_requests_and_outcomes_keep_the_wire_contract() -> None:
    stream = generate(
        "calm",
        model="diabetes",
        seed=2,
        count=300,
        outcome_delay_s=2.5,
        run_id="run7",
        model_name="sugar",
        model_version="4",
        start_time=datetime(2030, 5, 1, tzinfo=UTC),
        event_interval_s=0.5,
    )
    names = dataset("diabetes").feature_names
    last_request: PredictionRequest | None = None
    for m in stream:
        if m.kind is MessageKind.REQUEST:
            last_request = PredictionRequest.model_validate_json(m.value)
            assert tuple(last_request.features) == names
            assert all(type(v) is float for v in last_request.features.values())
            assert (last_request.model, last_request.model_version) == ("sugar", "4")
            index = int(last_request.request_id.removeprefix("run7-"))
            assert last_request.event_time == datetime(2030, 5, 1, tzinfo=UTC) + timedelta(seconds=index / 2)
        else:
            assert m.kind is MessageKind.OUTCOME and last_request is not None
            outcome = Outcome.model_validate_json(m.value)
            assert outcome.request_id == last_request.request_id and outcome.label is None
            assert isinstance(outcome.value, float)
            assert (outcome.event_time - last_request.event_time).total_seconds() == 2.5
        assert m.key == (last_request.request_id if last_request else "").encode()
    assert stream.stats.requests == stream.stats.outcomes == 300


def test_outcome_share() -> None:
    stream = generate("calm", seed=0, count=4000, outcome_share=0.25)
    list(stream)
    assert stream.stats.requests == 4000
    assert 0.22 < stream.stats.outcomes / 4000 < 0.28
    none = generate("calm", seed=0, count=100, outcome_share=0.0)
    assert all(m.kind is MessageKind.REQUEST for m in none)


def test_default_run_id_names_scenario_and_seed() -> None:
    first = next(iter(generate("covariate", seed=12, count=1)))
    assert first.key == b"covariate-s12-0" and body(first)["request_id"] == "covariate-s12-0"


def test_adding_a_drift_leaves_the_rows_of_the_others_unchanged() -> None:
    # The schema drift breaks messages; the covariate drift must shift the same rows as without it.
    shift = ScheduledDrift(kind="covariate", start=0, feature="x05", size=1.0)
    alone = requests_of(generate(Scenario(drifts=[shift]), model="classification-20", count=500))
    both = requests_of(
        generate(
            Scenario(drifts=[shift, ScheduledDrift(kind="schema", start=0, size=0.5)]),
            model="classification-20",
            count=500,
        )
    )
    kept = [(a, b) for a, b in zip(alone, both, strict=True) if b.kind is MessageKind.REQUEST]
    assert 150 < len(kept) < 350
    assert all(a.value == b.value for a, b in kept)


def test_invalid_arguments() -> None:
    with pytest.raises(ProducerError, match="outcome share"):
        generate("calm", outcome_share=1.5)
    with pytest.raises(ProducerError, match="count"):
        generate("calm", count=-1)
    with pytest.raises(ProducerError, match="timezone-aware"):
        generate("calm", start_time=datetime(2026, 1, 1))
    with pytest.raises(ScheduleError, match="unknown scenario 'stormy'"):
        generate("stormy")
    with pytest.raises(ScheduleError, match="unknown feature 'x05'"):
        generate(Scenario(drifts=[ScheduledDrift(kind="covariate", start=0, feature="x05", size=1)]))
    assert list(generate("calm", count=0)) == []
