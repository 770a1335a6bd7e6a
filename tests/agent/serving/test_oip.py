"""The Open Inference Protocol logic without a web server: request parsing, metadata, inference through
the stream's handler and its observers, and the protocol's errors."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import orjson
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes

from agent.models.package import LoadedModel
from agent.models.registry import ModelRegistry
from agent.models.repository import ModelRepository
from agent.monitoring.batch import DeadLetterInfo, ModelBatch, Observed, RecordLike
from agent.serving.handler import RequestHandler
from agent.serving.oip import OIP_TOPIC, OpenInference, ProtocolError, parse_request
from schemas.alert import Alert, AlertKind, Severity
from schemas.events import Outcome

CANCER = load_breast_cancer()
NAMES = [str(n) for n in CANCER.feature_names]


class Watching:
    """An observer that remembers what it saw and raises one alert per batch (a stand-in for the
    drift monitor, whose own tests are elsewhere)."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, int, list[tuple[str, int, int]]]] = []
        self.dead: list[str] = []

    def observe(self, batch: ModelBatch) -> Observed:
        where = [(r.topic, r.partition, r.offset) for r in batch.records]
        self.batches.append((batch.served.name, len(batch.records), where))
        alert = Alert.create(
            model=batch.served.name,
            model_version=batch.served.version,
            kind=AlertKind.DATA,
            detector="adwin",
            subject="mean radius",
            severity=Severity.WARNING,
            message="seen",
            opened_at_event=len(self.batches),
            detected_at=datetime.now(UTC),
        )
        return Observed(alerts=[alert])

    def observe_dead_letters(self, dead: Sequence[DeadLetterInfo]) -> Observed:
        self.dead.extend(d.reason.value for d in dead)
        return Observed()

    def observe_outcomes(self, outcomes: Sequence[tuple[RecordLike, Outcome]]) -> Observed:
        return Observed()


@pytest.fixture
def watching() -> Watching:
    return Watching()


@pytest.fixture
def oip(model_repository: ModelRepository, watching: Watching) -> OpenInference:
    registry = ModelRegistry(model_repository.root)
    registry.refresh()
    handler = RequestHandler(
        registry,
        predictions_topic="p",
        dead_letters_topic="d",
        max_event_bytes=8192,
        observers=[watching],
        alerts_topic="alerts",
    )
    return OpenInference(handler, registry, lambda: (True, {}), server_version="9.9")


def cancer_request(rows: np.ndarray, **extra: object) -> dict[str, object]:
    return {
        "inputs": [
            {"name": name, "datatype": "FP64", "shape": [len(rows)], "data": rows[:, j].tolist()}
            for j, name in enumerate(NAMES)
        ],
        **extra,
    }


def test_metadata_describes_inputs_outputs_datatypes_and_shapes(oip: OpenInference) -> None:
    cancer = oip.model_metadata("breast-cancer")
    assert cancer.status == 200
    body = cancer.body
    assert (body["name"], body["versions"], body["platform"]) == ("breast-cancer", ["1"], "onnxruntime_onnx")
    assert [i["name"] for i in body["inputs"]] == NAMES
    assert all(i["datatype"] == "FP32" and i["shape"] == [-1] for i in body["inputs"])
    assert body["outputs"] == [
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP64", "shape": [-1, 2]},
    ]
    diabetes = oip.model_metadata("diabetes", "1").body
    assert diabetes["outputs"] == [{"name": "value", "datatype": "FP64", "shape": [-1]}]
    assert oip.model_metadata("nope").status == 404
    missing = oip.model_metadata("breast-cancer", "7")
    assert missing.status == 404 and "no version '7'" in missing.body["error"]
    assert oip.server_metadata().body == {"name": "driftline", "version": "9.9", "extensions": []}


def test_health_and_model_readiness(oip: OpenInference) -> None:
    assert oip.live().status == 200 and oip.ready().status == 200
    assert (
        oip.model_ready("breast-cancer").status == 200 and oip.model_ready("breast-cancer", "1").status == 200
    )
    assert oip.model_ready("nope").status == 400 and oip.model_ready("breast-cancer", "7").status == 400
    not_ready = OpenInference(oip.handler, oip.registry, lambda: (False, {}))
    assert not_ready.ready().status == 400 and not_ready.ready().body is None


def test_infer_answers_what_the_model_predicts_and_is_monitored(
    oip: OpenInference, watching: Watching, model_repository: ModelRepository
) -> None:
    rows = CANCER.data[:25]
    answer = oip.infer("breast-cancer", None, orjson.dumps(cancer_request(rows, id="req-7")))
    assert answer.status == 200, answer.body
    with LoadedModel(model_repository.root / "breast-cancer" / "1") as model:
        expected = model.predict(rows.astype(np.float32))
    assert expected.labels is not None and expected.probabilities is not None
    body = answer.body
    assert (body["model_name"], body["model_version"], body["id"]) == ("breast-cancer", "1", "req-7")
    label, probabilities = body["outputs"]
    assert label == {"name": "label", "datatype": "INT64", "shape": [25], "data": expected.labels.tolist()}
    assert probabilities["shape"] == [25, 2] and probabilities["datatype"] == "FP64"
    assert np.allclose(np.reshape(probabilities["data"], (25, 2)), expected.probabilities, atol=1e-6)
    # The same monitoring as the stream: the observer saw the 25 rows, and its alert is to be published.
    [(model, n, where)] = watching.batches
    assert (model, n) == ("breast-cancer", 25)
    assert {t for t, _, _ in where} == {OIP_TOPIC} and [o for _, _, o in where] == list(range(25))
    [message] = answer.publish
    assert message.topic == "alerts" and Alert.model_validate_json(message.value or b"").message == "seen"


def test_infer_a_regressor_by_version_asking_for_one_output(
    oip: OpenInference, model_repository: ModelRepository
) -> None:
    data = load_diabetes()
    rows = data.data[:4]
    request = {
        "inputs": [
            {"name": str(name), "datatype": "FP32", "shape": [4, 1], "data": [[float(v)] for v in rows[:, j]]}
            for j, name in enumerate(data.feature_names)
        ],
        "outputs": [{"name": "value", "parameters": {"binary_data": False}}],
    }
    answer = oip.infer("diabetes", "1", orjson.dumps(request))
    assert answer.status == 200, answer.body
    with LoadedModel(model_repository.root / "diabetes" / "1") as model:
        expected = model.predict(rows.astype(np.float32)).values
    [value] = answer.body["outputs"]
    assert value["name"] == "value" and value["shape"] == [4]
    assert np.allclose(value["data"], expected, rtol=1e-5)
    assert "id" not in answer.body


def test_binary_input_tensors(oip: OpenInference) -> None:
    rows = CANCER.data[:3].astype(np.float32)
    inputs = []
    raw = b""
    for j, name in enumerate(NAMES):
        data = rows[:, j].tobytes()
        inputs.append(
            {"name": name, "datatype": "FP32", "shape": [3], "parameters": {"binary_data_size": len(data)}}
        )
        raw += data
    head = orjson.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}})
    answer = oip.infer("breast-cancer", None, head + raw, header_length=len(head))
    assert answer.status == 200, answer.body
    json_answer = oip.infer("breast-cancer", None, orjson.dumps(cancer_request(rows.astype(np.float64))))
    assert answer.body["outputs"] == json_answer.body["outputs"]  # answered in JSON all the same


def test_a_row_the_stream_would_refuse_is_a_400_naming_it(oip: OpenInference, watching: Watching) -> None:
    request = cancer_request(CANCER.data[:3])
    request["inputs"] = [i for i in request["inputs"] if i["name"] != "mean area"]  # type: ignore[union-attr]
    answer = oip.infer("breast-cancer", None, orjson.dumps(request))
    assert answer.status == 400
    assert answer.body["error"].startswith("3 of 3 rows refused: row 0: missing_feature:")
    assert "mean area" in answer.body["error"]
    assert watching.dead == ["missing_feature"] * 3  # counted by the monitor as the stream's are
    huge = cancer_request(CANCER.data[:2])
    huge["inputs"][0]["data"] = [1e39, 1.0]  # type: ignore[index]  # beyond float32: non-finite for the model
    refused = oip.infer("breast-cancer", None, orjson.dumps(huge))
    assert refused.status == 400 and refused.body["error"].startswith(
        "1 of 2 rows refused: row 0: non_finite"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.update(inputs=[]), "has no inputs"),
        (lambda r: r["inputs"].append({**r["inputs"][0]}), "is given twice"),
        (lambda r: r["inputs"][0].update(name="nope"), "unexpected input 'nope'"),
        (lambda r: r["inputs"][0].update(datatype="BF16"), "datatype 'BF16'"),
        (lambda r: r["inputs"][0].update(shape=[2, 2]), "is not [rows] or [rows, 1]"),
        (lambda r: r["inputs"][0].update(shape=[3]), "2 values for shape [3]"),
        (lambda r: r["inputs"][1].update(shape=[1], data=[1.0]), "has 1 rows; the other inputs have 2"),
        (lambda r: r["inputs"][0].update(data=["a", "b"]), "FP64 data must be numbers"),
        (lambda r: r["inputs"][0].update(datatype="INT32", data=[1.5, 2]), "INT32 data must be integers"),
        (lambda r: r["inputs"][0].pop("data"), "has no data"),
        (lambda r: r.update(outputs=[{"name": "logits"}]), "unknown outputs ['logits']"),
    ],
)
def test_protocol_errors(oip: OpenInference, change: object, message: str) -> None:
    request = cancer_request(CANCER.data[:2])
    change(request)  # type: ignore[operator]
    answer = oip.infer("breast-cancer", None, orjson.dumps(request))
    assert answer.status == 400 and message in answer.body["error"], answer.body
    assert list(answer.body) == ["error"]


def test_not_json_and_unknown_models(oip: OpenInference) -> None:
    assert oip.infer("breast-cancer", None, b"{nope").body == {"error": "the inference request is not JSON"}
    unknown = oip.infer("nope", None, b"{}")
    assert unknown.status == 404 and unknown.body["error"].startswith("unknown model 'nope'")
    assert oip.infer("breast-cancer", None, b"{}", header_length=99).status == 400


def test_parse_request_binary_bytes_and_leftovers() -> None:
    raw = b"".join(struct.pack("<I", len(s)) + s for s in (b"red", b"blue"))
    rows, wanted = parse_request(
        {
            "inputs": [
                {"name": "c", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(raw)}}
            ]
        },
        {"c"},
        raw,
    )
    assert rows == [{"c": "red"}, {"c": "blue"}] and wanted is None
    with pytest.raises(ProtocolError, match="belong to no input"):
        parse_request(
            {"inputs": [{"name": "c", "datatype": "BYTES", "shape": [0], "data": []}]}, {"c"}, b"xx"
        )
    with pytest.raises(ProtocolError, match="no rows"):
        parse_request({"inputs": [{"name": "c", "datatype": "BYTES", "shape": [0], "data": []}]}, {"c"})
    with pytest.raises(ProtocolError, match="bytes of binary data for 2 FP32 values"):
        parse_request(
            {
                "inputs": [
                    {"name": "x", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 4}}
                ]
            },
            {"x"},
            b"\x00" * 4,
        )
