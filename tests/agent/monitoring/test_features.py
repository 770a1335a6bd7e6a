"""Tests for agent.monitoring.features: the spread and share streams beside the location (seeded,
deterministic: each asserts the exact event at which its statistic fires)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from agent.monitoring import (
    CategoricalTransform,
    Detection,
    FeatureDriftMonitor,
    PercentileTransform,
    ReferenceTransform,
)
from agent.monitoring.features import share_groups

PROBS = np.linspace(0.0, 1.0, 101)
CHANGE = 20_000
N = 60_000


def _monitor(rng: np.random.Generator, n_features: int = 3) -> FeatureDriftMonitor:
    quantiles = np.quantile(rng.standard_normal((100_000, n_features)), PROBS, axis=0).T
    return FeatureDriftMonitor.from_quantiles([f"f{j}" for j in range(n_features)], quantiles)


def _feed(monitor: FeatureDriftMonitor, data: np.ndarray, batch: int = 500) -> list[Detection]:
    return [d for lo in range(0, data.shape[0], batch) for d in monitor.update_batch(data[lo : lo + batch])]


def _found(found: list[Detection]) -> list[tuple[str, str, str, int]]:
    return [(d.name, d.measure, d.detector, d.event_index) for d in found]


# What happens to feature f1 from event CHANGE on; each keeps its median at 0 (and its mean, but for
# the one-sided tails), so the location stream has nothing to see.
CHANGES: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "spread x1.5": lambda rng, n: 1.5 * rng.standard_normal(n),
    "spread x2": lambda rng, n: 2.0 * rng.standard_normal(n),
    "spread x0.5": lambda rng, n: 0.5 * rng.standard_normal(n),
    # Two modes at -1.2 and +1.2 (sd 0.4 each): the same median and mean, nothing left in the middle.
    "bimodal": lambda rng, n: np.where(rng.random(n) < 0.5, -1.2, 1.2) + 0.4 * rng.standard_normal(n),
    # 12 % of the values from a distribution 3 times as wide.
    "heavier tails": lambda rng, n: rng.standard_normal(n) * np.where(rng.random(n) < 0.12, 3.0, 1.0),
    # 10 % of the values beyond the reference range, half above and half below.
    "beyond the range": lambda rng, n: np.where(
        rng.random(n) < 0.1, np.where(rng.random(n) < 0.5, -6.0, 6.0), rng.standard_normal(n)
    ),
}

EXPECTED = {
    "spread x1.5": ("tails", 20255),
    "spread x2": ("tails", 20095),
    "spread x0.5": ("spread", 20127),
    "bimodal": ("spread", 20095),
    # Without the tails stream, the spread stream saw this one at 22,111.
    "heavier tails": ("tails", 20575),
    "beyond the range": ("tails", 20287),
}


@pytest.mark.parametrize("name", list(CHANGES))
def test_a_change_of_shape_around_the_same_median_is_caught_by_the_spread_or_tails_stream(name: str) -> None:
    rng = np.random.default_rng(31)
    monitor = _monitor(rng)
    live = rng.standard_normal((N, 3))
    live[CHANGE:, 1] = CHANGES[name](rng, N - CHANGE)
    found = _feed(monitor, live)
    measure, event = EXPECTED[name]
    # Spread and tails streams have ADWIN alone (features._detectors).
    assert _found(found) == [("f1", measure, "adwin", event)]
    (d,) = found
    # The evidence: the stream's reference moments, and the raw spread since the change.
    if measure == "spread":
        assert (d.reference_mean, d.reference_std) == (0.5, pytest.approx(1 / math.sqrt(12)))
    else:  # beyond the reference's 2.5th and 97.5th percentiles: 5 %
        assert (d.reference_mean, d.reference_std) == (pytest.approx(0.05), pytest.approx(0.218, abs=1e-3))
    grew = name != "spread x0.5"
    assert (d.shift_sd > 0) == grew and (d.raw_std > 1.0) == grew


def test_the_spread_stream_leaves_a_location_shift_to_the_location_stream() -> None:
    # A 0.5 sd step moves the values away from the reference median too, but the location stream
    # fires first, and the column restarts: one detection, of the location, at the same event as
    # before the spread stream existed (test_drift's 20-feature test asserts that event, 60,175).
    rng = np.random.default_rng(10)
    quantiles = np.quantile(rng.standard_normal((100_000, 20)), PROBS, axis=0).T
    monitor = FeatureDriftMonitor.from_quantiles([f"f{j}" for j in range(20)], quantiles)
    live = rng.standard_normal((100_000, 20))
    live[60_000:, 7] += 0.5
    assert [(d.name, d.measure) for d in _feed(monitor, live)] == [("f7", "location")]


def test_discrete_features_get_a_spread_stream_standardised_on_their_own_reference() -> None:
    # Poisson(3): tied quantiles put each value at its mid-rank, so 2|u - 1/2| is not Uniform(0, 1);
    # its reference moments come from the quantiles and a long stationary stream raises nothing.
    rng = np.random.default_rng(32)
    transform = PercentileTransform(np.quantile(rng.poisson(3.0, 100_000).astype(float), PROBS))
    mean, std = transform.spread_moments()
    assert (round(mean, 4), round(std, 4)) == (0.4902, 0.2895)
    monitor = FeatureDriftMonitor(["visits"], ReferenceTransform([transform]))
    assert [s.measure for s in monitor.streams] == ["location", "spread", "tails"]
    assert monitor.streams[1].mean == mean
    live = rng.poisson(3.0, (200_000, 1)).astype(float)
    assert _feed(monitor, live, 1000) == []
    # 10 % of zeros: the lower tail is one tied value at its mid-rank (0.05), so only the upper 2.5 %
    # is a tail, under the share floor: no tails stream (its 0/1 counts would not be calibrated).
    zeros = np.r_[np.zeros(10_000), rng.exponential(1.0, 90_000)]
    inflated = PercentileTransform(np.quantile(zeros, PROBS))
    assert inflated.tail_share(0.025) == 0.025
    assert [s.measure for s in FeatureDriftMonitor(["z"], ReferenceTransform([inflated])).streams] == [
        "location",
        "spread",
    ]
    # A binary feature has no spread stream: with two values it would repeat the location.
    binary = PercentileTransform(np.quantile((rng.random(10_000) < 0.3).astype(float), PROBS))
    assert [s.measure for s in FeatureDriftMonitor(["b"], ReferenceTransform([binary])).streams] == [
        "location"
    ]


# --------------------------------------------------------------------------------------------
# Category shares
# --------------------------------------------------------------------------------------------

COLOURS = {"red": 0.40, "green": 0.35, "blue": 0.25}


def _colour_monitor(rng: np.random.Generator) -> FeatureDriftMonitor:
    reference = ReferenceTransform(
        [
            PercentileTransform(np.quantile(rng.standard_normal(100_000), PROBS)),
            CategoricalTransform(COLOURS),
        ]
    )
    return FeatureDriftMonitor(["x", "colour"], reference)


def _colours(rng: np.random.Generator, n: int, shares: list[float]) -> np.ndarray:
    return rng.choice(np.array(list(COLOURS), dtype=object), n, p=shares)


def test_a_category_mix_change_that_keeps_the_mean_position_is_caught_by_a_share() -> None:
    # 40/35/25 -> 30/55/15: the frequency-ordered mean position moves by 0.03 sd only.
    rng = np.random.default_rng(33)
    monitor = _colour_monitor(rng)
    assert [(s.measure, s.category) for s in monitor.streams] == [
        ("location", None), ("location", None), ("spread", None), ("tails", None),
        ("share", "red"), ("share", "green"), ("share", "blue"),
    ]  # fmt: skip
    colours = np.r_[_colours(rng, CHANGE, [0.4, 0.35, 0.25]), _colours(rng, N - CHANGE, [0.3, 0.55, 0.15])]
    live = np.column_stack([rng.standard_normal(N).astype(object), colours])
    found = _feed(monitor, live)
    assert _found(found) == [("colour", "share", "page_hinkley_up", 20159)]
    (d,) = found
    assert d.category == "green" and d.reference_mean == 0.35
    assert d.window_mean == pytest.approx(0.55, abs=0.1)


def test_share_streams_raise_nothing_on_a_long_stationary_mix() -> None:
    rng = np.random.default_rng(34)
    monitor = _colour_monitor(rng)
    n = 400_000
    live = np.column_stack([rng.standard_normal(n), rng.choice([0.0, 1.0, 2.0], n, p=[0.4, 0.35, 0.25])])
    # Numeric codes take the vectorised path: the same categories, keyed by code.
    coded = FeatureDriftMonitor(
        ["x", "colour"],
        ReferenceTransform(
            [monitor.reference.columns[0], CategoricalTransform({0.0: 0.4, 1.0: 0.35, 2.0: 0.25})]
        ),
    )
    assert _feed(coded, live, 2000) == []
    shares = [s for s in coded.stream_stats() if s.stream.measure == "share"]
    assert [s.mean for s in shares] == [pytest.approx(p, abs=0.01) for p in (0.4, 0.35, 0.25)]


def test_share_groups_pool_rare_categories() -> None:
    t = CategoricalTransform({"a": 0.5, "b": 0.2, "c": 0.15, "d": 0.1, "e": 0.05})
    assert share_groups(t) == [("a", ["a"]), ("b", ["b"]), ("c", ["c"]), ("d", ["d"]), ("e", ["e"])]
    assert share_groups(t, floor=0.2) == [("a", ["a"]), ("b", ["b"]), ("other", ["c", "d", "e"])]
    assert share_groups(t, floor=0.12) == [("a", ["a"]), ("b", ["b"]), ("c", ["c"]), ("other", ["d", "e"])]
    # Two categories: one stream (the other is its mirror); one dominant category: none of its own.
    assert share_groups(CategoricalTransform({"y": 0.7, "n": 0.3})) == [("y", ["y"])]
    assert share_groups(CategoricalTransform({"y": 0.97, "n": 0.03})) == []


# --------------------------------------------------------------------------------------------
# Predicted class
# --------------------------------------------------------------------------------------------


def test_a_shift_in_which_class_is_predicted_at_the_same_confidence_is_prediction_drift() -> None:
    rng = np.random.default_rng(35)
    confidence = np.quantile(rng.beta(5, 2, 100_000), PROBS)
    monitor = FeatureDriftMonitor(
        ["x"],
        ReferenceTransform([PercentileTransform(np.quantile(rng.standard_normal(100_000), PROBS))]),
        output_reference=PercentileTransform(confidence),
        output_name="prediction",
        class_reference=CategoricalTransform(
            {0.0: 0.5, 1.0: 0.3, 2.0: 0.2}, labels={0.0: "a", 1.0: "b", 2.0: "c"}
        ),
    )
    assert monitor.names == ("x", "prediction", "predicted_class")
    assert monitor.output_columns == frozenset({1, 2})
    x = rng.standard_normal(N)
    outputs = rng.beta(5, 2, N)  # the same confidence throughout
    classes = np.r_[rng.choice(3, CHANGE, p=[0.5, 0.3, 0.2]), rng.choice(3, N - CHANGE, p=[0.3, 0.5, 0.2])]
    found = [
        d
        for lo in range(0, N, 500)
        for d in monitor.update_batch(x[lo : lo + 500, None], outputs[lo : lo + 500], classes[lo : lo + 500])
    ]
    assert _found(found) == [("predicted_class", "share", "page_hinkley_down", 20127)]
    assert found[0].category == "a" and found[0].column == 2
    with pytest.raises(ValueError):
        monitor.update_batch(x[:10, None], outputs[:10])


def test_no_alarm_on_thirteen_features_with_a_categorical_one_over_two_hundred_thousand_events() -> None:
    rng = np.random.default_rng(36)
    numeric = [PercentileTransform(np.quantile(rng.standard_normal(100_000), PROBS)) for _ in range(12)]
    monitor = FeatureDriftMonitor(
        [f"f{j}" for j in range(13)],
        ReferenceTransform([*numeric, CategoricalTransform({0.0: 0.4, 1.0: 0.35, 2.0: 0.25})]),
        output_reference=PercentileTransform(np.quantile(rng.beta(5, 2, 100_000), PROBS)),
        class_reference=CategoricalTransform({0.0: 0.6, 1.0: 0.4}),
    )
    # 15 locations (with the output and the class), 12 + 1 spreads and tails (the output's too),
    # 3 colour shares, 1 class share (the other class's is its mirror).
    assert len(monitor.streams) == 15 + 2 * 13 + 3 + 1
    n = 200_000
    live = np.column_stack([rng.standard_normal((n, 12)), rng.choice(3, n, p=[0.4, 0.35, 0.25])])
    outputs, classes = rng.beta(5, 2, n), rng.choice(2, n, p=[0.6, 0.4])
    found = [
        d
        for lo in range(0, n, 1000)
        for d in monitor.update_batch(live[lo : lo + 1000], outputs[lo : lo + 1000], classes[lo : lo + 1000])
    ]
    assert found == []
    assert np.nanmax(monitor.largest_shifts()) < 0.15  # what recoveries are judged on
