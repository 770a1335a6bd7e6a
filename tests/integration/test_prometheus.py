"""Drift statistics on a real worker's ``/metrics``: after a drift on one feature, Prometheus sees the
shift, the detectors' statistics and the open incident, with labels bounded by the manifest."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from agent.models.repository import ModelRepository
from tests.support.kafka import create_topics, produce
from tests.support.worker import Topics, Worker

pytestmark = pytest.mark.integration

DATA = load_breast_cancer()
NAMES = [str(n) for n in DATA.feature_names]


async def test_drift_gauges_on_metrics(
    kafka_bootstrap: str, repository_copy: ModelRepository, tmp_path: Path, unique: str
) -> None:
    topics = Topics.unique(unique)
    await create_topics(kafka_bootstrap, topics.all())
    env = {"DRIFTLINE_INFLUX__METRICS_INTERVAL_S": "1"}
    worker = Worker(kafka_bootstrap, topics, f"prom-{unique}", repository_copy.root, tmp_path, extra_env=env)
    worker.start()
    try:
        await asyncio.to_thread(worker.wait_ready)
        rng = np.random.default_rng(3)
        rows = DATA.data[rng.integers(0, len(DATA.data), 4000)].copy()
        rows[1000:, 0] += 3 * DATA.data[:, 0].std()  # "mean radius" shifts after 1,000 requests
        messages = [
            (
                f"r-{i}".encode(),
                json.dumps(
                    {
                        "request_id": f"r-{i}",
                        "model": "breast-cancer",
                        "features": dict(zip(NAMES, map(float, row), strict=True)),
                    }
                ).encode(),
            )
            for i, row in enumerate(rows)
        ]
        await produce(kafka_bootstrap, topics.requests, messages)
        deadline = time.monotonic() + 60
        while True:
            samples = await asyncio.to_thread(worker.metrics)
            shift = samples.get(
                (
                    "driftline_drift_shift_sd",
                    frozenset({"model": "breast-cancer", "column": "mean radius"}.items()),
                )
            )
            incidents = sum(
                v
                for (name, labels), v in samples.items()
                if name == "driftline_incidents_open" and ("kind", "data") in labels
            )
            if shift is not None and shift > 1.0 and incidents >= 1:
                break
            assert time.monotonic() < deadline, f"no drift on /metrics: shift {shift}, incidents {incidents}"
            await asyncio.sleep(0.5)
    finally:
        assert worker.stop() == 0, worker.log()
    columns = {dict(labels)["column"] for (name, labels) in samples if name == "driftline_drift_shift_sd"}
    # Bounded by the manifest: its features, the output, the predicted class and the reconstruction.
    assert columns == {*NAMES, "prediction", "predicted_class", "reconstruction_error"}
    detectors = {
        (dict(labels)["column"], dict(labels)["detector"])
        for (name, labels) in samples
        if name == "driftline_drift_detector_statistic"
    }
    # Each column's location (two detectors), a numeric one's spread and tails, the share of the
    # more frequent class (1, benign: its mirror, class 0, has no stream of its own; two detectors).
    assert {d for _, d in detectors} == {
        "adwin",
        "page_hinkley",
        "adwin_spread",
        "adwin_tails",
        "adwin_share_1",
        "page_hinkley_share_1",
    }
    assert {c for c, _ in detectors} == columns
    quiet = samples[
        ("driftline_drift_shift_sd", frozenset({"model": "breast-cancer", "column": "mean texture"}.items()))
    ]
    assert abs(quiet) < 0.5
    kinds = {dict(labels)["kind"] for (name, labels) in samples if name == "driftline_incidents_open"}
    assert kinds == {"data", "prediction", "concept", "technical", "performance"}
