from __future__ import annotations

import math

import numpy as np
import pytest

from agent.models.encoding import FeatureEncoder
from schemas.events import DeadLetterReason
from schemas.manifest import Feature, MissingPolicy


@pytest.fixture
def encoder() -> FeatureEncoder:
    return FeatureEncoder(
        [
            Feature(name="a", type="numeric", range=(0.0, 1.0)),
            Feature(name="b", type="numeric", missing=MissingPolicy(action="impute", value=-1.0)),
            Feature(name="c", type="numeric", missing=MissingPolicy(action="allow")),
            Feature(
                name="k",
                type="categorical",
                categories=("x", "y", "z"),
                missing=MissingPolicy(action="impute", value="z"),
            ),
        ]
    )


def test_good_rows_in_feature_order(encoder: FeatureEncoder) -> None:
    out = encoder.encode([{"k": "y", "c": 3, "b": 2.5, "a": 0.5}, {"a": 1, "b": 0.0, "c": -1.0, "k": "x"}])
    assert out.matrix.dtype == np.float32
    assert out.matrix.tolist() == [[0.5, 2.5, 3.0, 1.0], [1.0, 0.0, -1.0, 0.0]]
    assert out.accepted == [0, 1] and out.rejected == []
    assert out.missing.tolist() == [0, 0, 0, 0] and out.out_of_range.tolist() == [0, 0, 0, 0]


def test_missing_values_follow_each_features_policy(encoder: FeatureEncoder) -> None:
    out = encoder.encode([{"a": 0.1}, {"a": 0.2, "b": None, "c": math.nan, "k": None}])
    assert out.accepted == [0, 1]
    first, second = out.matrix.tolist()
    assert first[:2] == [pytest.approx(0.1), -1.0] and math.isnan(first[2]) and first[3] == 2.0
    assert second[1] == -1.0 and math.isnan(second[2]) and second[3] == 2.0
    assert out.missing.tolist() == [0, 2, 2, 2]


@pytest.mark.parametrize(
    ("features", "reason", "words"),
    [
        ({}, DeadLetterReason.MISSING_FEATURE, "feature 'a' is missing"),
        ({"a": None}, DeadLetterReason.MISSING_FEATURE, "feature 'a' is missing"),
        ({"a": math.nan}, DeadLetterReason.NON_FINITE, "feature 'a' is NaN"),
        ({"a": math.inf}, DeadLetterReason.NON_FINITE, "feature 'a' is inf"),
        ({"a": 0.5, "b": -math.inf}, DeadLetterReason.NON_FINITE, "feature 'b' is -inf"),
        ({"a": 10**400}, DeadLetterReason.NON_FINITE, "feature 'a'"),
        ({"a": "0.5"}, DeadLetterReason.WRONG_TYPE, "feature 'a' is str '0.5'; expected a number"),
        ({"a": 0.5, "k": 1.0}, DeadLetterReason.WRONG_TYPE, "feature 'k' is float 1.0; expected a category"),
        ({"a": 0.5, "k": "w"}, DeadLetterReason.UNKNOWN_CATEGORY, "category 'w' is not one of"),
    ],
)
def test_each_bad_value_is_rejected_with_its_reason(
    encoder: FeatureEncoder, features: dict[str, object], reason: DeadLetterReason, words: str
) -> None:
    out = encoder.encode([{"a": 0.5}, features, {"a": 0.25}])  # type: ignore[list-item]
    assert out.accepted == [0, 2]
    assert out.matrix.shape == (2, 4)
    [(index, rejection)] = out.rejected
    assert index == 1
    assert rejection.reason is reason
    assert words in rejection.detail


def test_allow_policy_passes_infinity_to_the_model(encoder: FeatureEncoder) -> None:
    out = encoder.encode([{"a": 0.5, "c": -math.inf}])
    assert out.rejected == [] and out.matrix[0, 2] == -math.inf


def test_counts_unseen_fields_and_out_of_range_values(encoder: FeatureEncoder) -> None:
    out = encoder.encode([{"a": 2.0, "extra": 1}, {"a": -0.5, "extra": 2, "other": "x"}, {"a": 0.5}])
    assert out.unseen_fields == {"extra": 2, "other": 1}
    assert out.out_of_range.tolist() == [2, 0, 0, 0]


def test_empty_batch_has_the_models_width(encoder: FeatureEncoder) -> None:
    out = encoder.encode([])
    assert out.matrix.shape == (0, 4) and out.accepted == []


def test_an_unknown_category_is_served_as_missing_where_the_manifest_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    plan = ("basic", "plus")
    encoder = FeatureEncoder(
        [
            Feature(name="a", type="numeric"),
            Feature(
                name="imputed",
                type="categorical",
                categories=plan,
                missing=MissingPolicy(action="impute", value="plus"),
                unknown_category="missing",
            ),
            Feature(
                name="allowed",
                type="categorical",
                categories=plan,
                missing=MissingPolicy(action="allow"),
                unknown_category="missing",
            ),
            Feature(
                name="strict", type="categorical", categories=plan, missing=MissingPolicy(action="allow")
            ),
        ],
        "churn/3",
    )
    rows = [
        {"a": 1.0, "imputed": "gold", "allowed": "gold", "strict": "basic"},
        {"a": 2.0, "imputed": "basic", "allowed": None, "strict": "plus"},
        {"a": 3.0, "imputed": "silver", "allowed": "plus", "strict": "gold"},  # strict still rejects
        {"a": 4.0, "imputed": "x" * 100, "allowed": "basic", "strict": "basic"},
    ]
    with caplog.at_level("WARNING", logger="agent.models.encoding"):
        out = encoder.encode(rows)
    assert out.accepted == [0, 1, 3]
    [(index, rejection)] = out.rejected
    assert index == 2 and rejection.reason is DeadLetterReason.UNKNOWN_CATEGORY
    first, second, fourth = out.matrix.tolist()
    assert first[:2] == [1.0, 1.0] and math.isnan(first[2])  # imputed 'plus'; NaN
    assert second[:2] == [2.0, 0.0] and math.isnan(second[2])  # a missing value, as before
    assert fourth[:3] == [4.0, 1.0, 0.0]
    # Counted apart: the rejected row's unknown category counts nowhere, its missing nothing either.
    assert out.unknown_categories.tolist() == [0, 2, 1, 0]
    assert out.missing.tolist() == [0, 0, 1, 0]
    # Which ones, for the alert: the rejected row's 'silver' is not among them; long ones shortened.
    assert out.unknown_values == {1: {"gold": 1, "x" * 37 + "...": 1}, 2: {"gold": 1}}
    # Said once per feature, with the value (shortened), then only counted.
    told = [r.getMessage() for r in caplog.records]
    assert len(told) == 2, told
    assert told[0].startswith("churn/3, feature 'imputed': str 'gold' is not one of the model's 2 categories")
    assert told[1].startswith("churn/3, feature 'allowed': str 'gold'")
    caplog.clear()
    encoder.encode(rows)
    assert caplog.records == []


def test_a_batch_names_a_bounded_number_of_unknown_categories() -> None:
    from agent.models.encoding import UNKNOWN_EXAMPLES

    encoder = FeatureEncoder(
        [
            Feature(
                name="plan",
                type="categorical",
                categories=("basic",),
                missing=MissingPolicy(action="allow"),
                unknown_category="missing",
            )
        ]
    )
    rows = [{"plan": p} for i in range(100) for p in (f"junk-{i}", "enterprise")]
    out = encoder.encode(rows)
    assert out.unknown_categories.tolist() == [200]  # every one counted ...
    named = out.unknown_values[0]
    assert len(named) == UNKNOWN_EXAMPLES  # ... a few named: the one that matters among them, exactly
    assert named["enterprise"] == 100
