"""What the new statistics' alerts say, through a real handler and the example churn package (a
categorical 'plan', a numeric 'monthly_spend' without a declared range): the measure that fired, the
reference and recent values, in the message and as data in the evidence."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from agent.models.repository import ModelRepository
from agent.monitoring.model_monitor import MonitorSettingsView
from agent.packaging.builder import build_package
from agent.packaging.training import load_training_function
from agent.serving.handler import Record
from schemas.alert import Alert, AlertKind
from tests.support.alerts import alerts_in
from tests.support.handlers import observed_handler

EXAMPLE_TRAINING = Path(__file__).resolve().parents[3] / "examples" / "train_example.py"
PLANS = ["basic", "plus", "pro"]
N = 20_000
CHANGE = 10_000


@pytest.fixture(scope="module")
def churn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repository = ModelRepository(tmp_path_factory.mktemp("churn"))
    build_package(
        load_training_function(str(EXAMPLE_TRAINING))(), name="churn", version="1", repository=repository
    )
    return repository.root


def _run(
    root: Path, age: np.ndarray, spend: np.ndarray, plan: np.ndarray, names: list[str] | None = None
) -> list[Alert]:
    """The alerts of a handler that serves the rows in batches of 500 (``names``: the plans, if not
    ``PLANS[plan]``)."""
    # The machine's latency is not under test.
    handler, _ = observed_handler(root, settings=MonitorSettingsView(latency_threshold=1e12))
    alerts: list[Alert] = []
    for start in range(0, len(age), 500):
        records = []
        for i in range(start, min(start + 500, len(age))):
            plan_name = names[i] if names is not None else PLANS[int(plan[i])]
            features = {"age": float(age[i]), "monthly_spend": float(spend[i]), "plan": plan_name}
            body = {"request_id": f"r{i}", "model": "churn", "features": features}
            records.append(Record("requests", i % 2, i, None, json.dumps(body).encode()))
        alerts += alerts_in(m.value for m in handler.handle(records) if m.topic == "alerts")
    return alerts


def _stream(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The training module's own distributions."""
    rng = np.random.default_rng(seed)
    return rng.uniform(18, 80, N), rng.gamma(2.0, 20.0, N), rng.integers(0, 3, N)


def test_a_category_mix_change_says_which_share_moved_and_from_what_to_what(churn: Path) -> None:
    rng = np.random.default_rng(41)
    age, spend, plan = _stream(42)
    plan[CHANGE:] = rng.choice(3, N - CHANGE, p=[0.15, 0.7, 0.15])  # 'plus' from a third to 70 %
    alerts = _run(churn, age, spend, plan)
    data = [a for a in alerts if a.kind is AlertKind.DATA]
    assert [a.subject for a in data] == ["plan"]
    (alert,) = data
    extra = alert.evidence.extra
    assert (extra["measure"], extra["category"]) == ("share", "plus")
    assert extra["event_index"] == 10_111
    assert extra["reference_value"] == pytest.approx(1 / 3, abs=0.03)
    assert extra["recent_value"] == pytest.approx(0.7, abs=0.1)
    assert alert.message.startswith(
        f"share of 'plus' in feature 'plan' of churn/1 rose from 33% to {extra['recent_value']:.0%}"
    )


def test_a_narrower_spread_says_by_how_much(churn: Path) -> None:
    # Age (uniform from 18 to 80) squeezed to half its spread around its median, 49.
    age, spend, plan = _stream(43)
    age[CHANGE:] = 49.0 + 0.5 * (age[CHANGE:] - 49.0)
    alerts = _run(churn, age, spend, plan)
    [alert] = [a for a in alerts if a.kind is AlertKind.DATA]
    extra = alert.evidence.extra
    assert (alert.subject, extra["measure"], extra["event_index"]) == ("age", "spread", 10_079)
    assert extra["spread_ratio"] == pytest.approx(
        0.5, abs=0.15
    )  # over the short window since the change point
    assert extra["reference_value"] == pytest.approx(62 / 12**0.5, rel=0.05)  # the reference's sd
    assert f"spread of feature 'age' of churn/1 shrank {extra['spread_ratio']:.2g}x" in alert.message


def test_values_beyond_the_reference_range_are_a_technical_rate_by_default(churn: Path) -> None:
    age, spend, plan = _stream(44)
    rng = np.random.default_rng(45)
    beyond = np.flatnonzero(rng.random(N) < 0.1)
    beyond = beyond[beyond >= CHANGE]
    spend[beyond] = 1_000.0  # the reference's largest is under 300
    alerts = _run(churn, age, spend, plan)
    [technical] = [a for a in alerts if a.kind is AlertKind.TECHNICAL]
    assert (technical.detector, technical.subject) == ("reference_range_rate", "monthly_spend")
    # Rates are judged per window of 2,000 requests: the first window after the change.
    assert technical.opened_at_event == 12_000
    assert technical.evidence.recent_mean == pytest.approx(0.1, abs=0.02)
    assert "requests carry values outside the reference range in 'monthly_spend'" in technical.message
    # The same values fill the feature's tails: a data alert, long before the rate's window closes.
    [data] = [a for a in alerts if a.kind is AlertKind.DATA]
    extra = data.evidence.extra
    assert (data.subject, extra["measure"], extra["event_index"]) == ("monthly_spend", "tails", 10_431)
    assert extra["reference_value"] == pytest.approx(0.05, abs=0.01)
    assert data.message.startswith(
        f"tails of feature 'monthly_spend' of churn/1 grew: {extra['recent_value']:.1%} of recent values "
        "beyond the reference's 2.5th and 97.5th percentiles vs 5.0%"
    )


def test_an_unknown_category_alert_names_the_categories_met_most_often(tmp_path: Path) -> None:
    repository = ModelRepository(tmp_path)
    trained = load_training_function(str(EXAMPLE_TRAINING))()
    build_package(
        dataclasses.replace(trained, unknown_categories={"plan": "missing"}),
        name="churn",
        version="1",
        repository=repository,
    )
    age, spend, plan = _stream(46)
    names = [PLANS[int(p)] for p in plan]
    # A quarter of the plans are unknown: 'enterprise', 'trial' (every third of those) and a flood of
    # distinct junk as often as both, more distinct values than an alert names.
    for i in range(0, N, 8):
        names[i] = "trial" if i % 24 == 0 else "enterprise"
        names[i + 4] = f"junk-{i}"
    alerts = _run(repository.root, age[:4_000], spend[:4_000], plan[:4_000], names)
    [technical] = [a for a in alerts if a.kind is AlertKind.TECHNICAL]
    assert (technical.detector, technical.subject) == ("unknown_category_rate", "plan")
    # The first window of 2,000 requests: 166 'enterprise' and 84 'trial', counted exactly; the
    # junk's 250 distinct values share the rest of the tally, counted roughly, after them.
    assert technical.evidence.recent_mean == 0.25
    assert "(reference 0.0%, alert above 5.0%); most often 'enterprise' (166), 'trial' (84), 'junk-" in (
        technical.message
    )
    extra = technical.evidence.extra
    assert (extra["top_value"], extra["top_value_requests"], extra["values_named"]) == ("enterprise", 166, 8)


def test_a_mix_that_moved_names_the_categories_whose_shares_moved_most() -> None:
    # Ten categories of 10 % each (a 10-class model's predictions): where the mix's location fires,
    # "toward its rarer classes" names none of them; the shares that moved most say which.
    from types import SimpleNamespace

    from agent.monitoring import CategoricalTransform, FeatureDriftMonitor, ReferenceTransform
    from agent.monitoring.wording import share_moves

    monitor = FeatureDriftMonitor(
        ["digit"], ReferenceTransform([CategoricalTransform({float(k): 0.1 for k in range(10)})])
    )
    rng = np.random.default_rng(8)
    calm = rng.integers(0, 10, 20_000).astype(float)
    shares = [0.0625] * 10
    shares[3] = shares[7] = 0.25  # '3' and '7' from 10 % to 25 %, the others from 10 % to 6 %
    moved = rng.choice(10, 20_000, p=shares).astype(float)
    stream = np.r_[calm, moved][:, None]
    found = [d for lo in range(0, 40_000, 500) for d in monitor.update_batch(stream[lo : lo + 500])]
    assert found and found[0].event_index >= 20_000
    text = share_moves(SimpleNamespace(features=monitor), found[0], "class ")  # type: ignore[arg-type]
    first, second = text.split(", ")
    assert sorted([first.split()[1], second.split()[1]]) == ["'3.0'", "'7.0'"], text
    assert first.split()[2] == "10%" and int(first.split()[4].rstrip("%")) >= 18, text
