"""The drift gauges: set from each tick's metrics points, bounded, and removed with their model."""

from __future__ import annotations

import logging

import pytest

from agent.alerting.sinks.prometheus import PrometheusSink
from agent.app import open_incident_points
from agent.metrics import MetricPoint, Metrics
from agent.monitoring.incidents import Incident, IncidentKey


def feature(model: str, column: str, shift: float, mean: float = 0.6) -> MetricPoint:
    return MetricPoint(
        "driftline_feature",
        {"window_mean": mean, "window_std": 0.3, "shift_sd": shift, "missing": 0.0},
        {"model": model, "version": "1", "feature": column},
    )


def detector(model: str, column: str, name: str, statistic: float) -> MetricPoint:
    return MetricPoint(
        "driftline_detector",
        {"statistic": statistic},
        {"model": model, "version": "1", "feature": column, "detector": name},
    )


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


async def test_the_estimate_beside_the_realised_error() -> None:
    metrics = Metrics()
    sink = PrometheusSink(metrics)
    fields = {"estimated_error": 0.12, "predictions": 2048.0, "realised_error": 0.1, "estimate_gap": 0.02}
    await sink.send_metrics(
        [MetricPoint("driftline_performance", fields, {"model": "churn", "version": "1"})]
    )
    assert sample(metrics, "driftline_model_estimate", model="churn", metric="estimated_error") == 0.12
    assert sample(metrics, "driftline_model_estimate", model="churn", metric="estimate_gap") == 0.02
    assert sample(metrics, "driftline_model_estimate", model="churn", metric="predictions") is None
    await sink.send_metrics([])
    assert sample(metrics, "driftline_model_estimate", model="churn", metric="estimated_error") is None


async def test_each_tick_sets_the_gauges_and_drops_what_is_gone() -> None:
    metrics = Metrics()
    sink = PrometheusSink(metrics)
    await sink.send_metrics(
        [
            feature("churn", "tenure", 1.5, mean=0.9),
            feature("churn", "prediction", 0.1),
            feature("fraud", "amount", -0.2),
            detector("churn", "tenure", "adwin", 1.4),
            detector("churn", "tenure", "page_hinkley", 22.0),
            MetricPoint(
                "driftline_error", {"error_rate": 0.08, "joined": 900.0}, {"model": "churn", "version": "1"}
            ),
            MetricPoint("driftline_throughput", {"events_per_s": 10.0}, {}),  # not a drift statistic
            *open_incident_points(
                [Incident(IncidentKey("churn", "data", "tenure"), "a1", 0.0, 0.0, severity="critical")]
            ),
        ]
    )
    assert sample(metrics, "driftline_drift_shift_sd", model="churn", column="tenure") == 1.5
    assert sample(metrics, "driftline_drift_window_mean", model="churn", column="tenure") == 0.9
    assert sample(metrics, "driftline_drift_shift_sd", model="fraud", column="amount") == -0.2
    assert (
        sample(
            metrics,
            "driftline_drift_detector_statistic",
            model="churn",
            column="tenure",
            detector="page_hinkley",
        )
        == 22.0
    )
    assert sample(metrics, "driftline_model_error", model="churn", metric="error_rate") == 0.08
    assert sample(metrics, "driftline_model_error", model="churn", metric="mae") is None
    assert sample(metrics, "driftline_incidents_open", kind="data", severity="critical") == 1.0
    assert sample(metrics, "driftline_incidents_open", kind="concept", severity="info") == 0.0
    # fraud is no longer served and the incident closed: its series go, the incident count drops to 0.
    await sink.send_metrics([feature("churn", "tenure", 0.2), *open_incident_points([])])
    assert sample(metrics, "driftline_drift_shift_sd", model="fraud", column="amount") is None
    assert (
        sample(
            metrics, "driftline_drift_detector_statistic", model="churn", column="tenure", detector="adwin"
        )
        is None
    )
    assert sample(metrics, "driftline_drift_shift_sd", model="churn", column="tenure") == 0.2
    assert sample(metrics, "driftline_incidents_open", kind="data", severity="critical") == 0.0
    text = metrics.render().decode()
    assert 'driftline_drift_shift_sd{column="tenure",model="churn"} 0.2' in text


async def test_series_are_capped_and_non_finite_values_skipped(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    sink = PrometheusSink(metrics, max_series=5)
    with caplog.at_level(logging.WARNING, logger="agent.alerting.sinks.prometheus"):
        await sink.send_metrics([feature("m", f"x{i}", float(i)) for i in range(4)])  # 8 series asked
        await sink.send_metrics([feature("m", f"x{i}", float(i)) for i in range(4)])
    shifts = [sample(metrics, "driftline_drift_shift_sd", model="m", column=f"x{i}") for i in range(4)]
    assert (
        sum(v is not None for v in shifts)
        + sum(
            sample(metrics, "driftline_drift_window_mean", model="m", column=f"x{i}") is not None
            for i in range(4)
        )
        == 5
    )
    assert caplog.text.count("not adding more") == 1
    await sink.send_metrics([feature("m", "x0", float("nan"))])
    assert sample(metrics, "driftline_drift_shift_sd", model="m", column="x0") is None
    assert sample(metrics, "driftline_drift_window_mean", model="m", column="x0") == 0.6
