"""Ranking the likely drivers of an alert: shifts of each statistic weighted by importance."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from agent.monitoring.attribution import NOISE_FLOOR, ColumnShift, column_shifts, explain, rank_drivers
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
