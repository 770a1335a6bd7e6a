"""The Open Inference Protocol (v2) REST endpoints of a real ``driftline run`` worker, called with
Triton's HTTP client (``tritonclient[http]``): health, metadata, inference in JSON and in binary
tensors, the protocol's errors, and drift monitored on what arrives through it."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton
from aiokafka.structs import ConsumerRecord
from sklearn.datasets import load_breast_cancer
from tritonclient.utils import InferenceServerException

from agent.models.package import LoadedModel
from agent.models.repository import ModelRepository
from agent.serving.oip import OIP_TOPIC
from schemas.alert import Alert, AlertKind
from tests.support.alerts import alerts_in
from tests.support.kafka import create_topics, read_until
from tests.support.services import ROOT
from tests.support.worker import Topics, Worker

pytestmark = pytest.mark.integration

DATA = load_breast_cancer()
NAMES = [str(n) for n in DATA.feature_names]


@pytest.fixture
def worker(
    kafka_bootstrap: str, repository_copy: ModelRepository, tmp_path: Path, unique: str
) -> Iterator[tuple[Worker, Topics]]:
    topics = Topics.unique(unique)
    asyncio.run(create_topics(kafka_bootstrap, topics.all()))
    w = Worker(kafka_bootstrap, topics, f"oip-{unique}", repository_copy.root, tmp_path).start()
    try:
        w.wait_ready()
        yield w, topics
    finally:
        code = w.stop()
        assert code == 0, w.log()


def inputs(rows: np.ndarray, *, binary: bool) -> list[triton.InferInput]:
    out = []
    for j, name in enumerate(NAMES):
        tensor = triton.InferInput(name, [len(rows)], "FP32")
        tensor.set_data_from_numpy(rows[:, j].astype(np.float32), binary_data=binary)
        out.append(tensor)
    return out


def test_health_metadata_and_inference_with_tritons_client(
    worker: tuple[Worker, Topics], repository_copy: ModelRepository
) -> None:
    w, _ = worker
    client = triton.InferenceServerClient(url=f"127.0.0.1:{w.port}")
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.get_server_metadata()["name"] == "driftline"
        assert client.is_model_ready("breast-cancer") and client.is_model_ready("breast-cancer", "1")
        assert not client.is_model_ready("nope") and not client.is_model_ready("breast-cancer", "7")

        metadata = client.get_model_metadata("breast-cancer", "1")
        assert metadata["name"] == "breast-cancer" and metadata["versions"] == ["1"]
        assert [(i["name"], i["datatype"], i["shape"]) for i in metadata["inputs"]] == [
            (name, "FP32", [-1]) for name in NAMES
        ]
        assert [(o["name"], o["datatype"], o["shape"]) for o in metadata["outputs"]] == [
            ("label", "INT64", [-1]),
            ("probabilities", "FP64", [-1, 2]),
        ]

        rows = DATA.data[:40]
        with LoadedModel(repository_copy.root / "breast-cancer" / "1") as model:
            expected = model.predict(rows.astype(np.float32))
        assert expected.labels is not None and expected.probabilities is not None
        # Triton's client sends binary tensors by default and reads the JSON answer all the same.
        for binary, version in ((True, ""), (False, "1")):
            result = client.infer("breast-cancer", inputs(rows, binary=binary), model_version=version)
            labels = result.as_numpy("label")
            probabilities = result.as_numpy("probabilities")
            assert labels is not None and probabilities is not None
            assert labels.tolist() == expected.labels.tolist()
            assert probabilities.shape == (40, 2)
            assert np.allclose(probabilities, expected.probabilities, atol=1e-6)
            assert result.get_response()["model_version"] == "1"
        only = client.infer(
            "breast-cancer",
            inputs(rows[:2], binary=False),
            outputs=[triton.InferRequestedOutput("probabilities", binary_data=False)],
            request_id="r-1",
        )
        assert [o["name"] for o in only.get_response()["outputs"]] == ["probabilities"]
        assert only.get_response()["id"] == "r-1"

        # The protocol's errors, as the client reports them.
        with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
            client.infer("nope", inputs(rows[:2], binary=False))
        with pytest.raises(InferenceServerException, match="no version '7'"):
            client.get_model_metadata("breast-cancer", "7")
        short = inputs(rows[:2], binary=False)[1:]  # no "mean radius": the stream would dead-letter it
        with pytest.raises(InferenceServerException, match=r"row 0: missing_feature: .*mean radius"):
            client.infer("breast-cancer", short)
    finally:
        client.close()
    # REST rows are counted like the stream's (the events counter by source topic).
    assert w.metric("driftline_events_in_total", topic=OIP_TOPIC) >= 84


def test_the_readme_client_snippet_runs(
    worker: tuple[Worker, Topics], capsys: pytest.CaptureFixture[str]
) -> None:
    w, _ = worker
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Open Inference Protocol") :]
    code = section[section.index("```python\n") + 10 :]
    code = code[: code.index("```")].replace("127.0.0.1:6066", f"127.0.0.1:{w.port}")
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    # Four labels, then four rows of two probabilities.
    assert re.fullmatch(r"\[[01] [01] [01] [01]\] \[(\[[0-9. e-]+\]\s*){4}\]\n", printed), printed


async def test_drift_in_rows_sent_through_the_protocol_raises_an_alert(
    kafka_bootstrap: str, worker: tuple[Worker, Topics]
) -> None:
    w, topics = worker
    rng = np.random.default_rng(7)
    client = triton.InferenceServerClient(url=f"127.0.0.1:{w.port}")
    try:
        # 1,000 rows as trained, then "mean radius" shifted by three of its standard deviations.
        reference = DATA.data[rng.integers(0, len(DATA.data), 1000)]
        drifted = DATA.data[rng.integers(0, len(DATA.data), 3000)].copy()
        drifted[:, 0] += 3 * DATA.data[:, 0].std()
        for part in np.array_split(np.concatenate([reference, drifted]), 20):
            # Blocking is fine here: the worker is another process (gevent's client stays on this thread).
            client.infer("breast-cancer", inputs(part, binary=True))
    finally:
        client.close()

    def radius(records: list[ConsumerRecord[bytes, bytes]]) -> list[Alert]:
        alerts = alerts_in(r.value for r in records)
        return [a for a in alerts if a.kind is AlertKind.DATA and a.subject == "mean radius"]

    # The model's monitor raises it from the blocks the worker ships: after any technical alert.
    records = await read_until(kafka_bootstrap, topics.alerts, lambda r: bool(radius(r)), what="drift alert")
    alerts = alerts_in(r.value for r in records)
    data = radius(records)
    assert data, alerts
    assert data[0].model == "breast-cancer" and data[0].source[0].topic == OIP_TOPIC
    # Raised on a drifted row: the rows' offsets count up from 0 over the worker's life.
    assert data[0].source[0].end >= 1000
