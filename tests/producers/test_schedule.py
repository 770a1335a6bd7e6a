from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from producers.errors import ScheduleError
from producers.schedule import Scenario, ScheduledDrift

TOML = """
name = "mine"
count = 300
rate = 50

[[drifts]]
kind = "covariate"
start = 100
end = 200
feature = "x00"
size = -0.5
ramp = 10

[[drifts]]
kind = "garbage"
start = 150
size = 0.25
"""


def test_toml_and_json_files_load_the_same_scenario(tmp_path: Path) -> None:
    (tmp_path / "mine.toml").write_text(TOML)
    from_toml = Scenario.load(tmp_path / "mine.toml")
    (tmp_path / "mine.json").write_text(json.dumps(from_toml.model_dump()))
    assert Scenario.load(tmp_path / "mine.json") == from_toml
    assert from_toml.count == 300 and from_toml.rate == 50
    assert from_toml.drifts[0] == ScheduledDrift(
        kind="covariate", start=100, end=200, feature="x00", size=-0.5, ramp=10
    )


def test_name_defaults_to_the_file_stem(tmp_path: Path) -> None:
    (tmp_path / "nightly-shift.json").write_text('{"drifts": []}')
    assert Scenario.load(tmp_path / "nightly-shift.json").name == "nightly-shift"


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("s.yaml", "drifts: []", "expected a .toml or .json file"),
        ("s.toml", "[[drifts]\nkind=", "is not valid TOML"),
        ("s.json", '{"drifts": [{"kind": "covariate", "start": 5, "size": 1}]}', "needs the feature"),
        ("s.json", '{"drifts": [{"kind": "shift", "start": 5, "size": 1}]}', "drifts.0.kind"),
        ("s.json", '{"drift": []}', "drift: Extra inputs are not permitted"),
    ],
)
def test_invalid_files_say_what_is_wrong(tmp_path: Path, name: str, text: str, message: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(ScheduleError, match=message):
        Scenario.load(tmp_path / name)


def test_missing_file() -> None:
    with pytest.raises(ScheduleError, match="cannot read schedule"):
        Scenario.load(Path("/nonexistent/schedule.toml"))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "concept", "start": 5, "size": 1.5}, r"share of events, in \[0, 1\]"),
        ({"kind": "garbage", "start": 5, "size": 0.1, "feature": "x"}, "takes no feature"),
        ({"kind": "schema", "start": 5, "end": 5, "size": 0.1}, "must be after start"),
        ({"kind": "concept", "start": 5, "size": 1, "ramp": 3, "period": 4}, "not both"),
        ({"kind": "concept", "start": -1, "size": 1}, "greater than or equal to 0"),
    ],
)
def test_drift_validation(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ScheduledDrift.model_validate(fields)


def test_intensities_by_shape() -> None:
    abrupt = ScheduledDrift(kind="schema", start=3, end=6, size=0.5)
    assert abrupt.shape == "abrupt"
    assert abrupt.intensities(0, 8).tolist() == [0, 0, 0, 1, 1, 1, 0, 0]
    gradual = ScheduledDrift(kind="covariate", start=2, feature="f", size=1, ramp=4)
    np.testing.assert_allclose(gradual.intensities(0, 8), [0, 0, 0.25, 0.5, 0.75, 1, 1, 1])
    recurring = ScheduledDrift(kind="covariate", start=1, end=8, feature="f", size=1, period=4)
    assert recurring.intensities(0, 10).tolist() == [0, 1, 1, 0, 0, 1, 1, 0, 0, 0]


def test_check_names_the_unknown_feature_and_the_known_ones() -> None:
    scenario = Scenario(drifts=[ScheduledDrift(kind="covariate", start=1, feature="agee", size=1)])
    with pytest.raises(
        ScheduleError,
        match=r"drift 1 \(covariate from event 1\): unknown feature 'agee'; "
        r"the model's features are 'age', 'plan'",
    ):
        scenario.check(["age", "plan"], shiftable={"age"}, has_labels=True)


def test_check_refuses_shifting_a_categorical_and_altering_missing_labels() -> None:
    shift = Scenario(drifts=[ScheduledDrift(kind="covariate", start=1, feature="plan", size=1)])
    with pytest.raises(ScheduleError, match="'plan' is not numeric"):
        shift.check(["age", "plan"], shiftable={"age"}, has_labels=True)
    concept = Scenario(drifts=[ScheduledDrift(kind="concept", start=1, size=1)])
    with pytest.raises(ScheduleError, match="no labels"):
        concept.check(["age"], shiftable={"age"}, has_labels=False)
    concept.check(["age"], shiftable={"age"}, has_labels=True)


def test_table_lists_every_drift_and_flags_those_past_the_end() -> None:
    scenario = Scenario(
        name="mix",
        drifts=[
            ScheduledDrift(kind="covariate", start=10, end=50, feature="age", size=1.5, ramp=20),
            ScheduledDrift(kind="covariate", start=0, feature="age", size=-1, period=10),
            ScheduledDrift(kind="garbage", start=200, size=0.005),
        ],
    )
    assert scenario.table(100).splitlines() == [
        "mix: 100 events",
        " from   to  kind       shape                  feature  size",
        "   10   50  covariate  gradual (ramp 20)      age      +1.5 sd",
        "    0  end  covariate  recurring (period 10)  age      -1 sd",
        "  200  end  garbage    abrupt                 -        0.5%",
        "  (drift 3 starts after the last event)",
    ]
    assert Scenario(name="still").table().splitlines()[1] == "  no drift scheduled"
