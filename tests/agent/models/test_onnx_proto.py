"""The worker's own ONNX reader against the ``onnx`` package, on real packages and on broken bytes."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from agent.models.onnx_proto import ProtoError, probe_model, read_model
from tests.agent.conftest import ExamplePackages


def _dims(value: onnx.ValueInfoProto) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]


@pytest.mark.parametrize("which", ["classifier", "regressor"])
def test_it_reads_what_onnx_reads(example_packages: ExamplePackages, which: str) -> None:
    data = (getattr(example_packages, which).path / "model.onnx").read_bytes()
    ours, theirs = read_model(data), onnx.load_model_from_string(data)
    assert ours.ir_version == theirs.ir_version
    assert ours.opsets == {o.domain: o.version for o in theirs.opset_import}
    assert ours.n_nodes == len(theirs.graph.node) > 0
    assert ours.initializers == {i.name for i in theirs.graph.initializer}
    for mine, reference in [(ours.inputs, theirs.graph.input), (ours.outputs, theirs.graph.output)]:
        assert [(v.name, v.elem_type, v.dims) for v in mine] == [
            (v.name, v.type.tensor_type.elem_type, _dims(v)) for v in reference
        ]


def test_the_probe_is_the_model_onnx_would_write() -> None:
    ours = onnx.load_model_from_string(probe_model({"": 13, "ai.onnx.ml": 3}, ir_version=8))
    onnx.checker.check_model(ours)
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    assert ours.graph == graph
    assert ours.ir_version == 8
    assert {o.domain: o.version for o in ours.opset_import} == {"": 13, "ai.onnx.ml": 3}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x0a\x05abc", "runs past the end"),  # a 5-byte field with 3 bytes left
        (b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "longer than 10 bytes"),
        (b"\x08", "truncated varint"),
        (b"\x0f", "wire type 7"),
        (b"\x3a\x02\x0a\xff", "truncated varint"),  # a graph whose node length is cut off
    ],
)
def test_broken_bytes_are_a_proto_error(data: bytes, message: str) -> None:
    with pytest.raises(ProtoError, match=message):
        read_model(data)


def test_a_truncated_real_model_is_refused(example_packages: ExamplePackages) -> None:
    data = (example_packages.classifier.path / "model.onnx").read_bytes()
    with pytest.raises(ProtoError):
        read_model(data[: len(data) // 2])
