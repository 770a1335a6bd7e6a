"""Conversion to ONNX and the recorded hyperparameters (agent/packaging/convert.py)."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from agent.packaging.convert import hyperparameters
from tests.agent.conftest import ExamplePackages


def test_graph_follows_the_serving_contract(example_packages: ExamplePackages) -> None:
    path = example_packages.classifier.path
    graph = onnx.load(path / "model.onnx")
    (graph_input,) = graph.graph.input
    assert graph_input.name == "input"
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = graph_input.type.tensor_type.shape.dim
    assert not dims[0].HasField("dim_value") and dims[1].dim_value == 30
    assert [o.name for o in graph.graph.output] == ["label", "probabilities"]
    assert "ZipMap" not in {node.op_type for node in graph.graph.node}
    m = example_packages.classifier.manifest
    assert (m.outputs.label, m.outputs.probabilities) == ("label", "probabilities")
    assert m.onnx_sha256 == hashlib.sha256((path / "model.onnx").read_bytes()).hexdigest()


def test_hyperparameters_are_json_safe() -> None:
    assert hyperparameters(LogisticRegression(C=np.float64(0.5)))["C"] == 0.5
    params = hyperparameters(make_pipeline(StandardScaler(), LogisticRegression(C=0.5)))
    assert params["steps"] == [
        ["standardscaler", "StandardScaler()"],
        ["logisticregression", "LogisticRegression(C=0.5)"],
    ]
    forest = hyperparameters(RandomForestClassifier(max_samples=float("nan")))
    assert forest["max_samples"] == "nan"
