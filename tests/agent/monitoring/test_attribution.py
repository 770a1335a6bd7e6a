"""Ranking the likely drivers of an alert: shifts of each statistic weighted by importance."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest

from agent.monitoring import FeatureDriftMonitor, PercentileTransform, ReferenceTransform
from agent.monitoring.attribution import (
    NOISE_FLOOR,
    NOISE_Z,
    ColumnShift,
    column_shifts,
    explain,
    rank_drivers,
)
from agent.monitoring.columns import WindowStats
from agent.monitoring.transforms import REFERENCE_STD
from schemas.alert import Alert, AlertKind, Severity, decode_alert, encode_alert


def window(name: str, shift: float, spread: float = 1.0, count: int = 2048) -> WindowStats:
    return WindowStats(name, count, 0.5 + shift * REFERENCE_STD, spread * REFERENCE_STD, shift, 0.0, 0, 0)


def test_a_big_shift_of_an_ignored_feature_ranks_below_a_small_one_of_an_important_one() -> None:
    shifts = column_shifts([window("a", 0.5), window("b", 3.0), window("c", 0.0, spread=0.25)], "abc")
    ranked = rank_drivers(shifts, {"a": 0.6, "b": 0.05, "c": 0.35})
    assert [(d.feature, d.statistic) for d in ranked] == [("c", "spread"), ("a", "mean"), ("b", "mean")]
    assert ranked[0].score == 0.35 * abs(math.log(0.25))


def test_noise_and_other_columns_explain_nothing() -> None:
    windows = [window("a", NOISE_FLOOR / 2), window("prediction", 2.0), window("empty", 2.0, count=0)]
    assert rank_drivers(column_shifts(windows, ["a", "empty"]), {"a": 1.0}) == []


def test_without_importances_every_feature_weighs_the_same() -> None:
    ranked = rank_drivers([ColumnShift("a", "mean", -0.5, 0.5), ColumnShift("b", "mean", 1.0, 1.0)], None)
    assert [(d.feature, d.importance) for d in ranked] == [("b", 0.5), ("a", 0.5)]
    assert ranked[1].text() == "a -0.5 sd (importance 0.50)"


def test_the_ranking_is_data_in_the_alert_and_survives_the_wire() -> None:
    alert = Alert.create(
        model="m", model_version="1", kind=AlertKind.PREDICTION, detector="adwin", subject="prediction",
        severity=Severity.WARNING, message="the output drifted", opened_at_event=7,
        detected_at=datetime(2026, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    ranked = rank_drivers([ColumnShift("worst radius", "mean", 1.4, 1.4)], {"worst radius": 0.31})
    explained = explain(alert, ranked)
    assert explained.alert_id == alert.alert_id
    assert explained.message == "the output drifted; likely drivers: worst radius +1.4 sd (importance 0.31)"
    assert decode_alert(encode_alert(explained)).evidence.drivers == tuple(ranked)
    # An alert without drivers is encoded as before: no 'drivers' key for older readers to refuse.
    assert b"drivers" not in encode_alert(alert)
    assert explain(alert, []) is alert


def test_a_sparse_feature_is_measured_against_its_own_reference() -> None:
    # A pixel that is 0 in 95 % of the rows (digits): its standardised stream spreads a third as much
    # as Uniform(0, 1) by nature. Measured against Uniform's, a calm window read "spread x0.4" and a
    # concept alert on a digits model named three such pixels as its likely drivers.
    rng = np.random.default_rng(11)
    probs = np.linspace(0.0, 1.0, 101)

    def pixel(n: int) -> np.ndarray:
        return np.where(rng.random(n) < 0.05, rng.integers(1, 17, n), 0).astype(float)

    reference = ReferenceTransform(
        [PercentileTransform(np.quantile(pixel(50_000), probs)), PercentileTransform(probs)]
    )
    monitor = FeatureDriftMonitor(["pixel", "x"], reference)
    for _ in range(8):
        monitor.update_batch(np.column_stack([pixel(512), rng.random(512)]))
    importance = {"pixel": 0.01, "x": 0.5}
    calm = monitor.window_stats(8)  # the shortest window drivers are read over (256 events)
    against_uniform = column_shifts(calm, ["pixel", "x"])
    assert [(s.feature, s.statistic) for s in against_uniform if s.size > 0.5] == [("pixel", "spread")]
    assert rank_drivers(against_uniform, importance)[0].feature == "pixel"
    moments = monitor.reference_moments()
    assert rank_drivers(column_shifts(calm, ["pixel", "x"], moments), importance) == []
    # A real change still shows: the pixel lit four times as often, and x squeezed to half its spread.
    for _ in range(8):
        lit = np.where(rng.random(512) < 0.15, rng.integers(1, 17, 512), pixel(512))
        monitor.update_batch(np.column_stack([lit, 0.25 + rng.random(512) / 2]))
    ranked = rank_drivers(column_shifts(monitor.window_stats(8), ["pixel", "x"], moments), importance)
    assert [d.feature for d in ranked] == ["x", "pixel"]
    assert (ranked[0].statistic, ranked[0].shift) == ("spread", pytest.approx(0.5, abs=0.05))


def test_a_short_window_needs_a_larger_shift() -> None:
    # 0.2 sd is 5 sampling sds over 2,048 events, but 1.6 over 64: noise there.
    assert rank_drivers(column_shifts([window("a", 0.2)], ["a"]), {"a": 1.0})[0].feature == "a"
    assert rank_drivers(column_shifts([window("a", 0.2, count=64)], ["a"]), {"a": 1.0}) == []


def test_the_spread_of_a_very_sparse_feature_is_not_read_over_a_short_window() -> None:
    # Non-zero once in 80 rows (kurtosis ~48): 288 events hold 3 or 4 such values, often 0 or 1, and
    # a window's sd then reads x0.4 of the reference's. Its spread is read from 1,440 events on.
    moments = {"p": (0.5, 0.07, 48.0)}
    short = WindowStats("p", 288, 0.5, 0.03, 0.0, 0.0, 0, 0)
    assert [s.statistic for s in column_shifts([short], ["p"], moments)] == ["mean"]
    long = WindowStats("p", 2048, 0.5, 0.03, 0.0, 0.0, 0, 0)
    [spread] = [s for s in column_shifts([long], ["p"], moments) if s.statistic == "spread"]
    assert spread.size > NOISE_Z * spread.noise  # x0.43 over 2,048 events is a change
