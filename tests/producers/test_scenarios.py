"""Each named scenario's drift is in the stream where its schedule says, and nowhere else.

A scenario's rows are the ``calm`` rows of the same seed (adding drifts does not change the draws),
so most checks compare event by event against ``calm``.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from pydantic import ValidationError

from producers.scenarios import FOCUS_FEATURES, SCENARIOS, builtin_scenario, dataset, generate
from producers.stream import Message, MessageKind
from schemas.events import Outcome, PredictionRequest
from tests.producers.conftest import body, requests_of

SEED = 11


def outcomes_by_id(messages: list[Message]) -> dict[str, Outcome]:
    outcomes = (Outcome.model_validate_json(m.value) for m in messages if m.kind is MessageKind.OUTCOME)
    return {o.request_id: o for o in outcomes}


def shift_in_sd(name: str, model: str = "breast-cancer") -> tuple[np.ndarray, np.ndarray]:
    """Per event: the scenario's value of the model's focus feature, and how far the scenario moved
    it from the calm value, both in reference standard deviations."""
    feature = FOCUS_FEATURES[model][0]
    calm = requests_of(generate("calm", model=model, seed=SEED))
    drifted = requests_of(generate(name, model=model, seed=SEED))
    std = dataset(model).reference_std[feature]
    values, shifts = [], []
    for c, d in zip(calm, drifted, strict=True):
        before, after = body(c)["features"], body(d)["features"]
        assert {k: v for k, v in before.items() if k != feature} == {
            k: v for k, v in after.items() if k != feature
        }
        values.append(after[feature] / std)
        shifts.append((after[feature] - before[feature]) / std)
    return np.asarray(values), np.asarray(shifts)


def test_covariate_is_an_abrupt_one_sd_shift_at_5000() -> None:
    values, shift = shift_in_sd("covariate")
    np.testing.assert_allclose(shift[:5000], 0.0, atol=1e-9)
    np.testing.assert_allclose(shift[5000:], 1.0, rtol=1e-9)
    # As a monitor sees it: the feature's mean moves by one reference sd (within sampling error).
    assert values[5000:].mean() - values[:5000].mean() == pytest.approx(1.0, abs=0.1)


def test_gradual_ramps_to_two_sd_over_4000_events() -> None:
    _, shift = shift_in_sd("gradual", model="classification-20")
    i = np.arange(10_000)
    expected = np.where(i >= 3000, np.minimum(1.0, (i - 3000 + 1) / 4000) * 2.0, 0.0)
    np.testing.assert_allclose(shift, expected, atol=1e-9)


def test_recurring_is_on_and_off_every_thousand_events_from_2000() -> None:
    _, shift = shift_in_sd("recurring", model="diabetes")
    i = np.arange(10_000)
    on = (i >= 2000) & ((i - 2000) % 2000 < 1000)
    np.testing.assert_allclose(shift, np.where(on, 1.5, 0.0), atol=1e-9)


@pytest.mark.parametrize("model", ["breast-cancer", "diabetes"])
def test_concept_changes_only_the_labels_and_only_from_5000(model: str) -> None:
    calm = list(generate("calm", model=model, seed=SEED, run_id="r"))
    concept = list(generate("concept", model=model, seed=SEED, run_id="r"))
    # The requests are byte for byte the calm ones: the features do not move, only the error will.
    assert requests_of(concept) == requests_of(calm)
    true, seen = outcomes_by_id(calm), outcomes_by_id(concept)
    assert true.keys() == seen.keys()
    mean = float(dataset(model).y.mean())
    for request_id, outcome in seen.items():
        index = int(request_id.rsplit("-", 1)[1])
        truth = true[request_id]
        if index < 5000:
            assert outcome == truth
        elif model == "diabetes":
            assert outcome.value == pytest.approx(2 * mean - truth.value)
        else:
            assert outcome.label == 1 - truth.label


def classify(message: Message, names: tuple[str, ...]) -> str:
    """How a consumer would see a message on the requests topic: valid, broken or garbage."""
    try:
        request = PredictionRequest.model_validate_json(message.value)
    except ValidationError as exc:
        kind = exc.errors()[0]["type"]
        return "garbage" if kind in ("json_invalid", "json_type") else "broken:missing_field"
    if tuple(request.features) == names and all(type(v) is float for v in request.features.values()):
        return "valid"
    if set(request.features) == set(names):
        return "broken:wrong_type"
    if len(request.features) < len(names):
        return "broken:missing"
    return "broken:renamed"


def test_schema_breaks_ten_percent_and_garbles_five_from_1000() -> None:
    names = dataset("breast-cancer").feature_names
    messages = list(generate("schema", seed=SEED))
    events = requests_of(messages)
    seen = [classify(m, names) for m in events]
    # The kind the generator reports is what a consumer finds.
    assert [s.split(":")[0] for s in seen] == [
        {"request": "valid", "broken": "broken", "garbage": "garbage"}[m.kind.value] for m in events
    ]
    assert set(seen[:1000]) == {"valid"}
    window = Counter(s.split(":")[0] for s in seen[1000:])
    assert window["garbage"] / 4000 == pytest.approx(0.05, abs=0.015)
    # Garbage wins where both fire, so breakage shows on 10% of the other 95%.
    assert window["broken"] / 4000 == pytest.approx(0.095, abs=0.02)
    assert {s for s in seen if s.startswith("broken")} == {
        "broken:missing_field",
        "broken:wrong_type",
        "broken:missing",
        "broken:renamed",
    }
    # Only valid requests get an outcome.
    outcome_ids = {o for o in outcomes_by_id(messages)}
    assert outcome_ids == {body(m)["request_id"] for m in events if m.kind is MessageKind.REQUEST}


def test_schema_breakage_targets_the_named_feature() -> None:
    from producers.schedule import Scenario, ScheduledDrift

    scenario = Scenario(drifts=[ScheduledDrift(kind="schema", start=0, feature="x03", size=1.0)])
    broken_feature = 0
    for m in generate(scenario, model="classification-20", count=200):
        data = json.loads(m.value)
        if {"request_id", "model", "features"} <= data.keys():  # not a missing envelope field
            features = data["features"]
            assert "x03" not in features or type(features["x03"]) is str, features
            assert len(features) == 20 or "x03" not in features
            broken_feature += 1
    assert 100 < broken_feature < 200


def test_demo_applies_every_drift_in_its_window() -> None:
    stream = generate("demo", seed=SEED)
    messages = list(stream)
    assert stream.count == 12_000 and builtin_scenario("demo").rate == 100
    stats = stream.stats
    assert stats.drifts_applied == 5 and stats.events == 12_000
    covariate, companion, concept, broken, garbage = stats.affected
    assert covariate == companion == 4000  # every row in the window, the broken and garbled ones too
    outcomes_after = sum(1 for o in outcomes_by_id(messages) if int(o.rsplit("-", 1)[1]) >= 7000)
    assert concept / outcomes_after == pytest.approx(0.5, abs=0.03)
    assert broken == stats.broken and garbage == stats.garbage
    assert (broken + garbage) / 11_500 == pytest.approx(0.015, abs=0.005)


def test_every_scenario_is_described_and_fits_every_model() -> None:
    for model in FOCUS_FEATURES:
        for name in SCENARIOS:
            generate(name, model=model, count=1)
