"""driftline run against the real broker: predictions, dead letters, REST, scale-out, model updates."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from agent.models.package import LoadedModel
from agent.models.repository import ModelRepository
from schemas.alert import AlertKind
from schemas.events import DeadLetter, Prediction
from tests.support.alerts import alerts_in
from tests.support.kafka import create_topics, produce, read_topic
from tests.support.worker import Topics, Worker

pytestmark = pytest.mark.integration

DATA = load_breast_cancer()
NAMES = [str(n) for n in DATA.feature_names]


def cancer_request(i: int, row: np.ndarray, **extra: object) -> tuple[bytes, bytes]:
    body = {
        "request_id": f"req-{i}",
        "model": "breast-cancer",
        "features": dict(zip(NAMES, map(float, row), strict=True)),
        **extra,
    }
    return f"req-{i}".encode(), json.dumps(body).encode()


@pytest.fixture
def topics(kafka_bootstrap: str, unique: str) -> Topics:
    t = Topics.unique(unique)
    asyncio.run(create_topics(kafka_bootstrap, t.all(), partitions=4))
    return t


@pytest.fixture
def workers(
    kafka_bootstrap: str, topics: Topics, repository_copy: ModelRepository, tmp_path: Path, unique: str
) -> Iterator[list[Worker]]:
    started: list[Worker] = []

    def make(**env: str) -> Worker:
        w = Worker(kafka_bootstrap, topics, f"dl-{unique}", repository_copy.root, tmp_path, extra_env=env)
        started.append(w.start())
        return w

    yield make  # type: ignore[misc]
    for w in started:
        w.stop()


async def test_requests_in_predictions_and_dead_letters_out(
    kafka_bootstrap: str,
    topics: Topics,
    workers,
    repository_copy: ModelRepository,  # type: ignore[no-untyped-def]
) -> None:
    worker: Worker = workers()
    health = worker.wait_ready()
    assert "breast-cancer/1" in health["models"] and health["kafka"] == "connected"

    n = 400
    X = DATA.data[np.arange(n) % len(DATA.data)]
    good = [cancer_request(i, row) for i, row in enumerate(X)]
    row0 = dict(zip(NAMES, map(float, X[0]), strict=True))
    bad: dict[str, bytes] = {
        "decode_error": b"\x00\xff not json",
        "invalid": json.dumps({"model": "breast-cancer", "features": row0}).encode(),
        "unknown_model": json.dumps({"request_id": "u", "model": "nope", "features": row0}).encode(),
        "missing_feature": json.dumps(
            {
                "request_id": "m",
                "model": "breast-cancer",
                "features": {k: v for k, v in row0.items() if k != "mean area"},
            }
        ).encode(),
        "non_finite": json.dumps(
            {"request_id": "n", "model": "breast-cancer", "features": {**row0, "mean area": math.nan}}
        ).encode(),
        "wrong_type": json.dumps(
            {"request_id": "w", "model": "breast-cancer", "features": {**row0, "mean area": "large"}}
        ).encode(),
        "too_large": json.dumps(
            {"request_id": "t", "model": "breast-cancer", "features": row0, "pad": "x" * 70_000}
        ).encode(),
    }
    messages = good[:200] + [(b"bad", v) for v in bad.values()] + good[200:]
    await produce(kafka_bootstrap, topics.requests, messages)

    out = await read_topic(kafka_bootstrap, topics.predictions, n)
    dead = await read_topic(kafka_bootstrap, topics.dead_letters, len(bad))

    with LoadedModel(repository_copy.root / "breast-cancer" / "1") as model:
        expected = model.predict(X.astype(np.float32)).labels
    assert expected is not None
    predictions = {p.request_id: p for p in (Prediction.model_validate_json(r.value) for r in out)}
    assert len(out) == n and len(predictions) == n
    for i in range(n):
        p = predictions[f"req-{i}"]
        assert p.label == int(expected[i]) and p.model_version == "1"
    # A prediction lands on the partition number of its request (co-partitioned by request id).
    requests = await read_topic(kafka_bootstrap, topics.requests, len(messages))
    partition_of = {r.key: r.partition for r in requests}
    assert all(partition_of[r.key] == r.partition for r in out)

    letters = [DeadLetter.model_validate_json(r.value) for r in dead]
    assert Counter(d.reason.value for d in letters) == Counter(bad.keys())
    assert all(d.source_topic == topics.requests and d.detail for d in letters)

    # REST answers with the same model; bad input is a 422 naming the reason.
    status, body = worker.post("/predict", good[0][1])
    assert status == 200 and body["label"] == int(expected[0])
    status, body = worker.post("/predict", bad["missing_feature"])
    assert status == 422 and body["errors"][0]["reason"] == "missing_feature"
    status, text = worker.get("/metrics")
    metrics = text.decode()
    assert status == 200
    assert f'driftline_predictions_total{{model="breast-cancer",version="1"}} {float(n + 1)}' in metrics
    assert 'driftline_dead_letters_total{model="",reason="decode_error"} 1.0' in metrics
    assert 'driftline_dead_letters_total{model="breast-cancer",reason="missing_feature"} 2.0' in metrics
    assert "driftline_inference_seconds_bucket" in metrics


async def test_two_workers_share_four_partitions(kafka_bootstrap: str, topics: Topics, workers) -> None:  # type: ignore[no-untyped-def]
    first, second = workers(), workers()
    first.wait_ready()
    second.wait_ready()
    # Both have joined: wait until the four partitions are split between them.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        a, b = first.health() or {}, second.health() or {}
        mine = [p for p in a.get("assigned_partitions") or [] if p.startswith(topics.requests)]
        theirs = [p for p in b.get("assigned_partitions") or [] if p.startswith(topics.requests)]
        if mine and theirs and len(mine) + len(theirs) == 4:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"partitions not shared: {first.health()} {second.health()}")

    n = 2000
    X = DATA.data[np.arange(n) % len(DATA.data)]
    await produce(kafka_bootstrap, topics.requests, [cancer_request(i, row) for i, row in enumerate(X)])
    out = await read_topic(kafka_bootstrap, topics.predictions, n)
    ids = {Prediction.model_validate_json(r.value).request_id for r in out}
    assert ids == {f"req-{i}" for i in range(n)}
    assert len({r.partition for r in out}) == 4

    def served(w: Worker) -> float:
        text = w.get("/metrics")[1].decode()
        line = next(line for line in text.splitlines() if line.startswith("driftline_predictions_total{"))
        return float(line.rsplit(" ", 1)[1])

    assert served(first) > 0 and served(second) > 0
    assert served(first) + served(second) == n


async def test_new_version_is_swapped_in_and_a_bad_one_never_served(
    kafka_bootstrap: str,
    topics: Topics,
    workers,
    repository_copy: ModelRepository,  # type: ignore[no-untyped-def]
) -> None:
    worker: Worker = workers(DRIFTLINE_SERVING__REPOSITORY_POLL_INTERVAL_S="0.5")
    worker.wait_ready()
    root = repository_copy.root / "breast-cancer"
    # A tampered version 3 (model.onnx changed after packaging) must be refused.
    shutil.copytree(root / "1", root / ".tmp-3")
    (root / ".tmp-3" / "model.onnx").write_bytes(b"\x08\x07" + (root / "1" / "model.onnx").read_bytes()[2:])
    (root / ".tmp-3").rename(root / "3")
    time.sleep(2)
    manifest = json.loads((root / "1" / "manifest.json").read_text())
    manifest["version"] = "2"
    shutil.copytree(root / "1", root / ".tmp-2")
    (root / ".tmp-2" / "manifest.json").write_text(json.dumps(manifest))
    (root / ".tmp-2").rename(root / "2")

    deadline = time.monotonic() + 30
    while "breast-cancer/2" not in ((worker.health() or {}).get("models") or []):
        assert time.monotonic() < deadline, worker.log()
        time.sleep(0.3)
    await produce(kafka_bootstrap, topics.requests, [cancer_request(i, DATA.data[i]) for i in range(10)])
    out = await read_topic(kafka_bootstrap, topics.predictions, 10)
    assert {Prediction.model_validate_json(r.value).model_version for r in out} == {"2"}
    assert "refusing to serve breast-cancer/3" in worker.log(100_000)
    status, body = worker.post("/predict", cancer_request(0, DATA.data[0], model_version="3")[1])
    assert status == 422 and "failed verification" in body["errors"][0]["detail"]


async def test_outcome_join_survives_a_restart_and_raises_concept_drift(
    kafka_bootstrap: str,
    topics: Topics,
    workers,  # type: ignore[no-untyped-def]
) -> None:
    first: Worker = workers()
    first.wait_ready()
    n = 1500
    X = DATA.data[np.arange(n) % len(DATA.data)]
    await produce(kafka_bootstrap, topics.requests, [cancer_request(i, row) for i, row in enumerate(X)])
    out = await read_topic(kafka_bootstrap, topics.predictions, n)
    labels = {
        Prediction.model_validate_json(r.value).request_id: Prediction.model_validate_json(r.value).label
        for r in out
    }
    # The predictions are joined only through the changelog: the worker that made them is gone.
    assert first.stop() == 0
    second: Worker = workers()
    second.wait_ready()
    # The labelling rule flips: every outcome says the opposite of what the model predicted.
    outcomes = [
        (
            f"req-{i}".encode(),
            json.dumps(
                {"request_id": f"req-{i}", "model": "breast-cancer", "label": 1 - int(labels[f"req-{i}"])}
            ).encode(),
        )
        for i in range(n)
    ]
    await produce(kafka_bootstrap, topics.outcomes, outcomes)
    alerts = alerts_in(r.value for r in await read_topic(kafka_bootstrap, topics.alerts, 1))
    concept = [a for a in alerts if a.kind is AlertKind.CONCEPT]
    assert concept and concept[0].subject == "error" and concept[0].model == "breast-cancer", alerts
    assert concept[0].source and concept[0].source[0].topic == topics.outcomes
