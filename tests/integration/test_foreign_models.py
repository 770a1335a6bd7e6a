"""Models that are not scikit-learn's, served by a real worker on the real Kafka: a network brought as
an ONNX file (``driftline package --onnx``), LightGBM and XGBoost from a training module.

Each is packaged as a user would, then sent the credit table's rows through Kafka. Every prediction
must equal the original library's on the values sent (scikit-learn's MLP, LightGBM, XGBoost) within the
builder's parity tolerance, and a seeded shift of ``debt_ratio`` from request 1,000 on must raise a data
drift alert on the alerts topic, from the requests after the shift.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from agent.models.repository import ModelRepository
from agent.packaging.builder import build_package
from agent.packaging.onnx_import import build_from_onnx
from agent.packaging.parity import PROBABILITY_TOLERANCE
from agent.packaging.training import TrainingResult, load_training_function
from schemas.alert import Alert, AlertKind
from schemas.events import Prediction
from tests.support.alerts import alerts_in
from tests.support.kafka import create_topics, produce_batched, read_to_end
from tests.support.worker import Topics, Worker

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FEATURES = ("age", "income", "debt_ratio", "credit_lines", "late_payments", "utilization")
SHIFTED = "debt_ratio"
EVENTS, SHIFT_FROM = 3000, 1000
# No InfluxDB, and the inference-latency watch off: it watches this busy machine, not the stream.
QUIET = {"DRIFTLINE_INFLUX__TOKEN": "", "DRIFTLINE_MONITORING__LATENCY_THRESHOLD": "1e12"}


@dataclass(frozen=True)
class Served:
    """A package in the test repository and the model it was made from, in its own library."""

    name: str
    predict_proba: Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]]


def _example_script(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _xgboost_training(lightgbm: TrainingResult) -> TrainingResult:
    from xgboost import XGBClassifier

    model = XGBClassifier(n_estimators=120, max_depth=4, learning_rate=0.1, random_state=0, n_jobs=1)
    model.fit(lightgbm.X_reference, lightgbm.y_reference)
    return TrainingResult(
        model,
        lightgbm.X_reference,
        lightgbm.y_reference,
        lightgbm.feature_names,
        lightgbm.X_holdout,
        lightgbm.y_holdout,
    )


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelRepository, dict[str, Served]]:
    """credit-mlp (an ONNX file made by the example script), credit-lgbm and credit-xgb, packaged the
    way ``driftline package`` does."""
    root = tmp_path_factory.mktemp("foreign")
    repository = ModelRepository(root / "models")
    credit = root / "credit"
    network = _example_script(EXAMPLES / "credit" / "make_mlp.py").main(credit)
    build_from_onnx(
        credit / "mlp.onnx",
        credit / "reference.csv",
        holdout=credit / "holdout.csv",
        label_column="default",
        name="credit-mlp",
        version="1",
        repository=repository,
    )
    lightgbm = load_training_function(str(EXAMPLES / "train_lightgbm.py"))()
    build_package(lightgbm, name="credit-lgbm", version="1", repository=repository)
    xgboost = _xgboost_training(lightgbm)
    build_package(xgboost, name="credit-xgb", version="1", repository=repository)
    return repository, {
        "mlp": Served("credit-mlp", network.predict_proba),
        "lightgbm": Served("credit-lgbm", lightgbm.estimator.predict_proba),
        "xgboost": Served("credit-xgb", xgboost.estimator.predict_proba),
    }


def shifted_stream(seed: int) -> npt.NDArray[np.float64]:
    """Rows of the credit table drawn with replacement; from row SHIFT_FROM on, debt_ratio is 2 sd up."""
    tables = [
        np.loadtxt(EXAMPLES / "credit" / name, delimiter=",", skiprows=1)[:, : len(FEATURES)]
        for name in ("reference.csv", "holdout.csv")
    ]
    rows = np.concatenate(tables)
    out = rows[np.random.default_rng(seed).integers(0, len(rows), EVENTS)].copy()
    column = FEATURES.index(SHIFTED)
    out[SHIFT_FROM:, column] += 2.0 * tables[0][:, column].std()
    return out


def requests(model: str, rows: npt.NDArray[np.float64]) -> list[tuple[bytes, bytes]]:
    out = []
    for i, row in enumerate(rows):
        body = {
            "request_id": f"{model}-{i}",
            "model": model,
            "features": dict(zip(FEATURES, row.tolist(), strict=True)),
        }
        out.append((f"{model}-{i}".encode(), json.dumps(body).encode()))
    return out


async def wait_for_alert(bootstrap: str, topic: str, worker: Worker, timeout: float = 90.0) -> list[Alert]:
    deadline = time.monotonic() + timeout
    while True:
        alerts = alerts_in(r.value for r in await read_to_end(bootstrap, topic))
        if any(a.kind is AlertKind.DATA and a.subject == SHIFTED for a in alerts):
            return alerts
        assert worker.process is not None and worker.process.poll() is None, f"worker died:\n{worker.log()}"
        assert time.monotonic() < deadline, f"no data drift alert on {SHIFTED}: {alerts}\n{worker.log()}"
        await asyncio.sleep(0.5)


@pytest.mark.parametrize("kind", ["mlp", "lightgbm", "xgboost"])
async def test_served_like_the_original_and_a_shift_is_detected(
    kind: str,
    packages: tuple[ModelRepository, dict[str, Served]],
    kafka_bootstrap: str,
    unique: str,
    tmp_path: Path,
) -> None:
    repository, served = packages
    model = served[kind]
    topics = Topics.unique(unique)
    await create_topics(kafka_bootstrap, topics.all(), partitions=1)
    worker = Worker(kafka_bootstrap, topics, f"foreign-{unique}", repository.root, tmp_path, extra_env=QUIET)
    worker.start()
    try:
        health = await asyncio.to_thread(worker.wait_ready)
        assert f"{model.name}/1" in health["models"], health

        rows = shifted_stream(seed=len(kind))
        await produce_batched(kafka_bootstrap, topics.requests, requests(model.name, rows))
        deadline = time.monotonic() + 90
        while len(records := await read_to_end(kafka_bootstrap, topics.predictions)) < EVENTS:
            assert time.monotonic() < deadline, f"{len(records)} of {EVENTS} predictions\n{worker.log()}"
            await asyncio.sleep(0.5)
        predictions = {p.request_id: p for p in (Prediction.model_validate_json(r.value) for r in records)}
        assert len(predictions) == EVENTS

        # Predictions equal the original library's, on the values as they were sent.
        expected = model.predict_proba(rows)
        got = np.array(
            [[predictions[f"{model.name}-{i}"].probabilities[c] for c in ("0", "1")] for i in range(EVENTS)]
        )  # type: ignore[index]
        assert np.abs(got - expected).max() <= PROBABILITY_TOLERANCE
        labels = [predictions[f"{model.name}-{i}"].label for i in range(EVENTS)]
        clear = np.abs(expected[:, 1] - 0.5) > PROBABILITY_TOLERANCE
        assert np.array_equal(np.array(labels)[clear], expected.argmax(axis=1)[clear])

        # The shift is alerted, from requests after it began (one partition: offset = request index),
        # but for the first block of its detector's window, which may hold up to 31 from before it.
        alerts = await wait_for_alert(kafka_bootstrap, topics.alerts, worker)
        drift = next(a for a in alerts if a.kind is AlertKind.DATA and a.subject == SHIFTED)
        assert drift.model == model.name and drift.model_version == "1"
        assert drift.source and all(
            r.topic == topics.requests and r.start > SHIFT_FROM - 32 for r in drift.source
        ), drift.source
        assert not [a for a in alerts if a.kind is AlertKind.DATA and a.subject != SHIFTED], alerts
    finally:
        assert worker.stop() == 0, worker.log()
