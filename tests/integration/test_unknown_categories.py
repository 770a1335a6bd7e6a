"""A category the model was not built with, through a real ``driftline run`` worker on the real broker.

The churn example's pipeline one-hot encodes ``plan`` with ``handle_unknown="ignore"``: it can answer
a plan it never saw. Packaged with ``unknown_categories={"plan": "missing"}``, such a request is served
(its plan imputed as the manifest's missing policy says) instead of dead-lettered, and the share of
them is watched: past the rate margin one technical alert names the feature and the categories met
most often, and the worker logs the first such value once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from agent.models.repository import ModelRepository
from agent.packaging.builder import build_package
from agent.packaging.training import load_training_function
from schemas.alert import AlertKind
from schemas.events import Prediction
from tests.support.alerts import alerts_in
from tests.support.kafka import create_topics, produce, read_to_end, read_topic
from tests.support.worker import Topics, Worker

pytestmark = pytest.mark.integration

EXAMPLE_TRAINING = Path(__file__).resolve().parents[2] / "examples" / "train_example.py"
PLANS = ["basic", "plus", "pro"]
N = 4_000


async def test_an_unknown_category_is_served_as_missing_and_its_rate_alerted_once(
    kafka_bootstrap: str, tmp_path: Path, unique: str
) -> None:
    model = f"churn-{unique}"
    repository = ModelRepository(tmp_path / "models")
    trained = load_training_function(str(EXAMPLE_TRAINING))()
    build_package(
        dataclasses.replace(trained, unknown_categories={"plan": "missing"}),
        name=model,
        version="1",
        repository=repository,
    )
    topics = Topics.unique(unique)
    await create_topics(kafka_bootstrap, topics.all())
    worker = Worker(
        kafka_bootstrap,
        topics,
        f"unknown-{unique}",
        repository.root,
        tmp_path,
        extra_env={"DRIFTLINE_MONITORING__LATENCY_THRESHOLD": "1e12"},
    ).start()
    rng = np.random.default_rng(5)
    age, spend, plan = rng.uniform(18, 80, N), rng.gamma(2.0, 20.0, N), rng.integers(0, 3, N)
    # Every 10th request from 500 on names a plan launched after the model was built, and its twin
    # (the next request) has the same age and spend and the plan the manifest imputes, "basic".
    # Every fifth of those is a 'legacy' plan instead.
    names = [PLANS[int(p)] for p in plan]
    for i in range(500, N - 1, 10):
        names[i], names[i + 1] = "legacy" if i % 50 == 10 else "enterprise", "basic"
        age[i + 1], spend[i + 1] = age[i], spend[i]
    messages = []
    for i in range(N):
        features = {"age": float(age[i]), "monthly_spend": float(spend[i]), "plan": names[i]}
        body = {"request_id": f"r-{i}", "model": model, "features": features}
        messages.append((f"r-{i}".encode(), json.dumps(body).encode()))
    try:
        await asyncio.to_thread(worker.wait_ready)
        await produce(kafka_bootstrap, topics.requests, messages)
        predictions = [Prediction.model_validate_json(r.value) for r in await read_topic(
            kafka_bootstrap, topics.predictions, N, timeout=120
        )]  # fmt: skip
        dead = await read_to_end(kafka_bootstrap, topics.dead_letters)
        alerts = alerts_in(r.value for r in await read_to_end(kafka_bootstrap, topics.alerts))
    finally:
        code = worker.stop()
    log = worker.log(10**7)
    assert code == 0, log[-3000:]

    # Every request served, none dead-lettered; an unknown plan answered as "basic", as its twin.
    assert len(predictions) == N and dead == [], [r.value[:300] for r in dead]
    by_id = {p.request_id: p for p in predictions}
    unknown = [i for i in range(N) if names[i] in ("enterprise", "legacy")]
    assert len(unknown) == 350
    for i in unknown:
        served, twin = by_id[f"r-{i}"], by_id[f"r-{i + 1}"]
        assert served.probabilities == twin.probabilities, (served, twin)

    # One technical alert, naming the feature, when the model's first window of 2,000 requests closes
    # (at the end of the batch that carried it past 2,000: the share is over every request of it):
    # about 7.5 % of them against a 5 % margin. The next window (10 %) keeps it open.
    technical = [a for a in alerts if a.kind is AlertKind.TECHNICAL]
    assert [(a.detector, a.subject) for a in technical] == [("unknown_category_rate", "plan")], technical
    [alert] = technical
    window = alert.evidence.window_events
    assert window is not None and 2_000 <= window < 3_000, alert.evidence
    assert alert.evidence.recent_mean == pytest.approx(
        sum(n in ("enterprise", "legacy") for n in names[:window]) / window
    )
    assert alert.evidence.recent_mean == pytest.approx(0.075, abs=0.01)
    assert "a category the model was not built with (served as missing: imputed 'basic')" in alert.message
    # It names them, most often first, counted over the same window (four 'enterprise' to a 'legacy';
    # one partition: the window is the first requests sent).
    extra = alert.evidence.extra
    assert (extra["top_value"], extra["values_named"]) == ("enterprise", 2), extra
    top = int(extra["top_value_requests"])
    assert top == sum(n == "enterprise" for n in names[:window]), extra
    assert f"; most often 'enterprise' ({top}), 'legacy' (" in alert.message, alert.message
    # The worker says which value it was, once.
    told = [line for line in log.splitlines() if "is not one of the model's 3 categories" in line]
    assert len(told) == 1 and "'enterprise'" in told[0] and f"{model}/1, feature 'plan'" in told[0], told
