"""``driftline package --onnx``: the example network, graphs built by hand, and every refusal's message."""

from __future__ import annotations

import importlib.util
import pickle
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from agent.errors import (
    ConfigurationError,
    CorruptModelError,
    GraphMismatchError,
    ParityError,
    PickleRefusedError,
)
from agent.models.package import load_package
from agent.models.repository import ModelRepository
from agent.packaging.onnx_import import (
    HOLDOUT_SPLIT_WARNING,
    NO_HOLDOUT_WARNING,
    build_from_onnx,
    infer_class_labels,
)
from agent.packaging.progress import Progress

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
CREDIT = EXAMPLES / "credit"
FEATURES = ("a", "b", "c")


def load_example_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_mlp", CREDIT / "make_mlp.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_csv(
    path: Path,
    X: npt.NDArray[np.float64],
    labels: Sequence[Any] | None = None,
    columns: Sequence[str] = FEATURES,
) -> Path:
    header = [*columns, *(["y"] if labels is not None else [])]
    lines = [",".join(header)]
    for i, row in enumerate(X):
        cells = [repr(float(v)) for v in row] + ([str(labels[i])] if labels is not None else [])
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n")
    return path


def classifier_graph(
    n_classes: int = 2,
    *,
    input_name: str = "features",
    input_type: int = TensorProto.FLOAT,
    input_shape: Sequence[int | str | None] = (None, 3),
    keepdims: int = 0,
    metadata: dict[str, str] | None = None,
    extra_inputs: Sequence[str] = (),
) -> onnx.ModelProto:
    """Softmax(x W + b) and its ArgMax: a network's classifier head, declaring no class labels."""
    weights = np.random.default_rng(n_classes).normal(size=(3, n_classes)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", [input_name, "W"], ["logits_raw"]),
        helper.make_node("Add", ["logits_raw", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=keepdims),
    ]
    inputs = [helper.make_tensor_value_info(input_name, input_type, list(input_shape))]
    inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 1]) for n in extra_inputs]
    label_shape = [None, 1] if keepdims else [None]
    graph = helper.make_graph(
        nodes,
        "head",
        inputs,
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, label_shape),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, n_classes]),
        ],
        [
            numpy_helper.from_array(weights, "W"),
            numpy_helper.from_array(np.zeros(n_classes, dtype=np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    model.producer_name = "handmade"
    for key, value in (metadata or {}).items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    return model


def regressor_graph(width: int = 1) -> onnx.ModelProto:
    weights = np.arange(3 * width, dtype=np.float32).reshape(3, width) / 3
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", width])],
        [numpy_helper.from_array(weights, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def save(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def rows(n: int = 400, seed: int = 0) -> npt.NDArray[np.float64]:
    return np.round(np.random.default_rng(seed).normal(size=(n, 3)) * 2, 3)


def build(tmp_path: Path, model: onnx.ModelProto, *, labels: Any = None, **kwargs: Any) -> Any:
    X = rows()
    reference = write_csv(tmp_path / "reference.csv", X, labels)
    return build_from_onnx(
        save(model, tmp_path / "model.onnx"),
        reference,
        label_column="y" if labels is not None else None,
        name="imported",
        version="1",
        repository=ModelRepository(tmp_path / "models"),
        **kwargs,
    )


# --- the example network -------------------------------------------------------------------------


def test_the_example_network_becomes_a_full_package(tmp_path: Path) -> None:
    built = build_from_onnx(
        CREDIT / "mlp.onnx",
        CREDIT / "reference.csv",
        holdout=CREDIT / "holdout.csv",
        label_column="default",
        name="credit-mlp",
        version="1",
        repository=ModelRepository(tmp_path),
    )
    m = built.manifest
    assert m.feature_names == ("age", "income", "debt_ratio", "credit_lines", "late_payments", "utilization")
    assert all(f.type == "numeric" and f.missing.action == "reject" for f in m.features)
    assert m.task == "binary_classification" and m.estimator == "onnx:skl2onnx"
    assert (m.outputs.label, m.outputs.probabilities, m.outputs.class_labels) == (
        "output_label",
        "probabilities",
        (0, 1),
    )
    assert (m.training.rows, m.training.holdout_rows, m.training.evaluated_on) == (2000, 600, "holdout")
    assert m.training.accuracy is not None and m.training.accuracy > 0.75
    assert m.training.roc_auc is not None and m.training.roc_auc > 0.8
    assert m.reference.rows == 2000 and m.reference.output.quantity == "positive_probability"
    assert m.hyperparameters["source_input"] == "X" and m.hyperparameters["producer_name"] == "skl2onnx"
    assert built.changes == (
        "input 'X' renamed 'input'",
        "ZipMap output 'output_probability' removed: the probabilities tensor 'probabilities' it consumed "
        "is the output instead",
    )
    assert m.hyperparameters["rewritten"] == list(built.changes)
    assert built.parity.passed and built.parity.rows == 600 and built.parity.max_abs_diff == 0.0
    assert set(built.timings) == {"read", "verify", "explain", "stats", "write"}

    # Served as the worker serves it, it answers what the file answers.
    X = np.loadtxt(CREDIT / "holdout.csv", delimiter=",", skiprows=1)[:, :6].astype(np.float32)
    original = onnxruntime.InferenceSession(str(CREDIT / "mlp.onnx"), providers=["CPUExecutionProvider"])
    labels, maps = original.run(None, {"X": X})
    with load_package(built.path) as model:
        served = model.predict(X)
        assert model.findings == ()
    assert served.labels is not None and served.probabilities is not None
    assert served.labels.tolist() == labels.tolist()
    assert np.array_equal(served.probabilities, np.array([[m[0], m[1]] for m in maps], dtype=np.float32))


def test_the_example_files_are_what_the_script_writes(tmp_path: Path) -> None:
    model = load_example_script().main(tmp_path)
    for name in ("reference.csv", "holdout.csv"):
        assert (tmp_path / name).read_bytes() == (CREDIT / name).read_bytes(), name
    assert (CREDIT / "mlp.onnx").stat().st_size < 200_000
    # The committed network computes what the script's network computes (float32 in both).
    X = np.loadtxt(CREDIT / "holdout.csv", delimiter=",", skiprows=1)[:, :6].astype(np.float32)
    session = onnxruntime.InferenceSession(str(CREDIT / "mlp.onnx"), providers=["CPUExecutionProvider"])
    _, maps = session.run(None, {"X": X})
    expected = model.predict_proba(X.astype(np.float64))
    assert np.abs(np.array([[m[0], m[1]] for m in maps]) - expected).max() < 1e-5


# --- graphs as networks export them ----------------------------------------------------------------


def test_a_network_without_class_labels_gets_them_from_its_answers(tmp_path: Path) -> None:
    built = build(tmp_path, classifier_graph(3))
    m = built.manifest
    assert m.task == "multiclass_classification" and m.outputs.class_labels == (0, 1, 2)
    assert m.estimator == "onnx:handmade" and m.feature_names == FEATURES
    # No labels anywhere: no scores, and the manifest says so.
    assert (m.training.evaluated_on, m.training.accuracy, m.training.roc_auc) == ("none", None, None)
    # No --holdout: 20 % of the 400 reference rows are split off as the holdout, parity checked there.
    assert built.parity.checked_on == "holdout" and built.parity.rows == 80
    with load_package(built.path) as model:
        assert model.manifest.outputs.probabilities == "probabilities"


def test_labels_in_the_reference_give_scores_on_the_reference(tmp_path: Path) -> None:
    model = classifier_graph(2)
    X = rows()
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    predicted = session.run(["label"], {"features": X.astype(np.float32)})[0]
    truth = predicted.copy()
    truth[:100] = 1 - truth[:100]  # a quarter of them wrong
    built = build(tmp_path, model, labels=truth.tolist(), split_holdout=False)
    t = built.manifest.training
    assert (t.evaluated_on, t.holdout_rows, t.accuracy) == ("reference", 0, 0.75)
    assert built.manifest.feature_names == FEATURES  # the label column is not a feature


def test_without_a_holdout_a_seeded_fifth_of_the_reference_is_split_off_and_said_so(tmp_path: Path) -> None:
    model = classifier_graph(2)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    labels = session.run(["label"], {"features": rows().astype(np.float32)})[0].tolist()
    progress = Progress(None)
    built = build(tmp_path, model, labels=labels, progress=progress)
    assert progress.warnings == [HOLDOUT_SPLIT_WARNING.format(held=80, rows=400, share=0.2)]
    assert progress.warnings[0].startswith(
        "no --holdout: 80 of the 400 reference rows (20%, seeded) are split"
    )
    m = built.manifest
    # The 80 rows are the holdout: the scores, the output's reference and the reconstruction's error
    # (with the 320 reference rows cross-fitted) come from them; the features' from the other 320.
    assert (m.training.rows, m.training.holdout_rows, m.training.evaluated_on) == (320, 80, "holdout")
    assert m.reference.rows == 320 and m.reference.features["a"].count == 320
    assert m.reference.output.rows_from == "holdout" and m.reference.output.statistics.count == 80
    r = m.reference.reconstruction
    assert r is not None and (r.fitted_rows, r.error.count, r.error_from) == (
        320,
        400,
        "holdout_and_cross_fit",
    )
    # The same split every time.
    (tmp_path / "again").mkdir()
    again = build(tmp_path / "again", model, labels=labels)
    assert again.manifest.reference == m.reference


def test_with_the_split_turned_off_the_build_says_there_is_no_holdout(tmp_path: Path) -> None:
    progress = Progress(None)
    built = build(tmp_path, classifier_graph(2), split_holdout=False, progress=progress)
    assert progress.warnings == [NO_HOLDOUT_WARNING]
    m = built.manifest
    assert (m.training.rows, m.training.holdout_rows) == (400, 0)
    assert m.reference.output.rows_from == "reference" and m.reference.output.statistics.count == 400
    r = m.reference.reconstruction
    assert r is not None and (r.fitted_rows, r.error.count, r.error_from) == (400, 400, "cross_fit")


def test_a_regressor_graph(tmp_path: Path) -> None:
    X = rows()
    truth = X @ (np.arange(3) / 3) + 0.5
    built = build(tmp_path, regressor_graph(), labels=[f"{v:.6f}" for v in truth])
    m = built.manifest
    assert m.task == "regression" and m.outputs.value == "y" and m.outputs.class_labels is None
    assert m.training.mae == pytest.approx(0.5, abs=1e-5) and m.reference.output.quantity == "value"
    assert built.changes == ("input 'x' renamed 'input'",)
    with load_package(built.path) as model:
        values = model.predict(X[:5].astype(np.float32)).values
    assert values is not None and np.allclose(values, X[:5] @ (np.arange(3) / 3), atol=1e-5)


def test_declared_string_classes_and_a_zipmap(tmp_path: Path) -> None:
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    iris = load_iris()
    names = np.array(["setosa", "versicolor", "virginica"])[iris.target]
    classifier = LogisticRegression(max_iter=500).fit(iris.data, names)
    model = to_onnx(classifier, iris.data[:1].astype(np.float32), target_opset={"": 17, "ai.onnx.ml": 3})
    columns = ("sepal_l", "sepal_w", "petal_l", "petal_w")
    reference = write_csv(tmp_path / "r.csv", iris.data[::2], list(names[::2]), columns)
    holdout = write_csv(tmp_path / "h.csv", iris.data[1::2], list(names[1::2]), columns)
    built = build_from_onnx(
        save(model, tmp_path / "iris.onnx"),
        reference,
        holdout=holdout,
        label_column="y",
        name="iris",
        version="1",
        repository=ModelRepository(tmp_path / "models"),
    )
    m = built.manifest
    assert m.outputs.class_labels == ("setosa", "versicolor", "virginica")
    assert m.training.evaluated_on == "holdout" and m.training.accuracy is not None
    assert m.training.accuracy == pytest.approx(
        float(np.mean(classifier.predict(iris.data[1::2]) == names[1::2])), abs=0.02
    )
    with load_package(built.path) as served:
        labels = served.predict(iris.data[:3].astype(np.float32)).labels
    assert labels is not None and labels.tolist() == ["setosa"] * 3


def test_an_internal_value_already_called_input_is_renamed_out_of_the_way(tmp_path: Path) -> None:
    model = regressor_graph()
    graph = model.graph
    graph.node[0].output[0] = "input"  # "x" @ w is now called "input"...
    graph.node.append(helper.make_node("Identity", ["input"], ["y"]))  # ...and copied to the output
    built = build(tmp_path, model)
    packaged = onnx.load(str(built.path / "model.onnx"))
    assert [i.name for i in packaged.graph.input] == ["input"]
    assert [n.output[0] for n in packaged.graph.node] == ["input_0", "y"]


def test_class_labels_read_off_the_answers() -> None:
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.5, 0.0]])
    labels = np.array(["cat", "dog", "eel", "dog"], dtype=object)
    assert infer_class_labels(labels, probabilities) == ("cat", "dog", "eel")  # the tie does not count
    with pytest.raises(GraphMismatchError, match="column 2 is never the most probable on the 2 rows"):
        infer_class_labels(labels[:2], probabilities[:2])
    with pytest.raises(GraphMismatchError, match=r"column is 0 get the labels \['cat', 'eel'\]"):
        infer_class_labels(np.array(["cat", "dog", "eel", "eel"]), probabilities[[0, 1, 2, 0]])


# --- refusals, each naming the mismatch -------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            classifier_graph(input_shape=(None, 4)),
            "the graph's input 'features' takes 4 features per row, but the reference CSV has 3 feature "
            "columns (a, b, c)",
        ),
        (
            classifier_graph(input_type=TensorProto.INT64),
            "the graph's input 'features' has dtype int64, but driftline feeds float32",
        ),
        (
            classifier_graph(input_type=TensorProto.STRING),
            "the graph's input 'features' takes strings; driftline feeds numbers only",
        ),
        (
            classifier_graph(extra_inputs=("u", "v")),
            "the graph has 3 inputs ('features' float32 [?, 3], 'u' float32 [?, 1], 'v' float32 [?, 1]); "
            "driftline feeds one float32 tensor [batch, 3]",
        ),
        (
            classifier_graph(metadata={"feature_names": "a,c,b"}),
            "the model's feature_names metadata does not match the reference CSV's feature columns: in "
            "another order: the model's is ['a', 'c', 'b']",
        ),
        (
            classifier_graph(metadata={"feature_names": "a,b,d"}),
            "feature columns: missing from the CSV ['d'], not in the model ['c']",
        ),
        (
            classifier_graph(input_shape=(1, 3)),
            "the graph's input 'features' has a fixed batch size of 1; driftline scores micro-batches",
        ),
        (
            classifier_graph(input_shape=(None, 3, 1)),
            "the graph's input 'features' float32 [?, 3, 1] has 3 dimensions",
        ),
        (
            regressor_graph(width=3),
            "the graph has one output, 'y' float32 [N, 3]: 3 numbers per row could be logits, "
            "probabilities or several targets",
        ),
        (
            classifier_graph(keepdims=1),
            # 320: the 400 reference rows less the 20 % split off as the holdout (no --holdout).
            "label output 'label' has shape [320, 1] for 320 rows; driftline expects one label per row",
        ),
    ],
    ids=[
        "width",
        "dtype",
        "string-input",
        "several-inputs",
        "names-order",
        "names",
        "fixed-batch",
        "rank",
        "ambiguous-output",
        "label-shape",
    ],
)
def test_a_graph_that_does_not_fit_is_refused_naming_the_mismatch(
    tmp_path: Path, model: onnx.ModelProto, message: str
) -> None:
    with pytest.raises(GraphMismatchError) as caught:
        build(tmp_path, model)
    assert str(caught.value).startswith(str(tmp_path / "model.onnx") + ": ")
    assert message in str(caught.value)
    assert not (tmp_path / "models").exists()


def test_inputs_named_after_the_columns_get_a_hint(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Concat", list(FEATURES), ["y"], axis=1)],
        "per-column",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 1]) for n in FEATURES],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    with pytest.raises(GraphMismatchError, match="They are named after the CSV's columns"):
        build(tmp_path, model)


def test_a_missing_label_column_in_the_reference_is_hinted(tmp_path: Path) -> None:
    X = rows()
    reference = write_csv(tmp_path / "r.csv", np.column_stack([X, X[:, 0] > 0]), columns=(*FEATURES, "y"))
    with pytest.raises(GraphMismatchError, match="is one of them the label\\? name it with --label-column"):
        build_from_onnx(
            save(classifier_graph(), tmp_path / "m.onnx"),
            reference,
            name="m",
            version="1",
            repository=ModelRepository(tmp_path / "models"),
        )


def test_a_file_that_is_not_onnx(tmp_path: Path) -> None:
    reference = write_csv(tmp_path / "r.csv", rows())
    (tmp_path / "m.onnx").write_bytes(b"\x08\x07not a model")
    with pytest.raises(CorruptModelError, match=r"m\.onnx: not a valid ONNX model"):
        build_from_onnx(
            tmp_path / "m.onnx", reference, name="m", version="1", repository=ModelRepository(tmp_path)
        )
    with pytest.raises(ConfigurationError, match=r"nothing\.onnx: no such ONNX file"):
        build_from_onnx(
            tmp_path / "nothing.onnx", reference, name="m", version="1", repository=ModelRepository(tmp_path)
        )


@pytest.mark.parametrize("name", ["model.pkl", "model.pickle", "model.joblib", "model.onnx"])
def test_pickles_are_refused_by_name_and_by_content(tmp_path: Path, name: str) -> None:
    # model.onnx holds a pickle here: refused by its header, never unpickled.
    path = tmp_path / name
    path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    reference = write_csv(tmp_path / "r.csv", rows())
    with pytest.raises(PickleRefusedError) as caught:
        build_from_onnx(
            path, reference, name="m", version="1", repository=ModelRepository(tmp_path / "models")
        )
    message = str(caught.value)
    assert message.startswith(f"{path}: refusing to load a pickle file")
    assert "runs arbitrary code" in message
    assert "Convert the model to ONNX where it was trained" in message
    assert "driftline package --onnx model.onnx --reference reference.csv" in message


def test_the_holdout_must_have_the_reference_columns_and_the_label(tmp_path: Path) -> None:
    X = rows()
    reference = write_csv(tmp_path / "r.csv", X)
    other = write_csv(tmp_path / "h.csv", X, [0] * len(X), columns=("a", "b", "z"))
    unlabelled = write_csv(tmp_path / "u.csv", X)
    model = save(classifier_graph(), tmp_path / "m.onnx")
    repository = ModelRepository(tmp_path / "models")
    with pytest.raises(ConfigurationError, match=r"missing \['c'\], unexpected \['z'\]"):
        build_from_onnx(
            model, reference, holdout=other, label_column="y", name="m", version="1", repository=repository
        )
    with pytest.raises(ConfigurationError, match=r"u\.csv: no label column 'y'"):
        build_from_onnx(
            model,
            reference,
            holdout=unlabelled,
            label_column="y",
            name="m",
            version="1",
            repository=repository,
        )


def test_unknown_classes_in_the_holdout_are_named(tmp_path: Path) -> None:
    X = rows()
    holdout = write_csv(tmp_path / "h.csv", X, [0] * (len(X) - 1) + [5])
    with pytest.raises(
        ConfigurationError, match=r"labels \['5'\] are not among the model's classes \[0, 1\]"
    ):
        build_from_onnx(
            save(classifier_graph(), tmp_path / "m.onnx"),
            write_csv(tmp_path / "r.csv", X),
            holdout=holdout,
            label_column="y",
            name="m",
            version="1",
            repository=ModelRepository(tmp_path / "models"),
        )


def _with_gaps(path: Path, X: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> Path:
    lines = ["a,b,c,y"] + [
        ",".join("" if np.isnan(v) else repr(float(v)) for v in row) + f",{float(t)!r}"
        for row, t in zip(X, y, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_missing_values_are_rejected_with_a_warning_or_allowed_through_to_a_graph_that_imputes(
    tmp_path: Path,
) -> None:
    from skl2onnx import to_onnx
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline

    rng = np.random.default_rng(5)
    X = rng.normal(size=(600, 3))
    y = X @ np.array([1.0, 2.0, -1.0]) + rng.normal(size=600) * 0.1
    X[rng.random(X.shape) < 0.1] = np.nan  # 10 % of each column empty: about 30 % of the rows
    imputing = make_pipeline(SimpleImputer(), LinearRegression()).fit(X[:400], y[:400])
    plain = LinearRegression().fit(np.nan_to_num(X[:400]), y[:400])
    reference, holdout = (
        _with_gaps(tmp_path / "ref.csv", X[:400], y[:400]),
        _with_gaps(tmp_path / "hold.csv", X[400:], y[400:]),
    )
    repository = ModelRepository(tmp_path / "models")
    for name, model in (("imputing", imputing), ("plain", plain)):
        (tmp_path / f"{name}.onnx").write_bytes(to_onnx(model, X[:1].astype(np.float32)).SerializeToString())

    def build(name: str, **options: Any) -> tuple[Any, list[str]]:
        progress = Progress(None)
        built = build_from_onnx(
            tmp_path / f"{name}.onnx", reference, holdout=holdout, label_column="y", name=name,
            version=str(len(list(repository.root.glob(f"{name}/*"))) + 1), repository=repository,
            progress=progress, **options,
        )  # fmt: skip
        return built, progress.warnings

    rejecting, warnings = build("imputing")
    [warning] = warnings
    assert warning.startswith("125 of the 400 reference rows have a missing value (empty cells; a 10%, b 15%")
    assert "the graph answers such rows with finite outputs" in warning and "--missing allow" in warning
    assert all(f.missing.action == "reject" for f in rejecting.manifest.features)
    assert rejecting.parity.rows < 200
    allowing, warnings = build("imputing", missing="allow")
    assert warnings == [] and all(f.missing.action == "allow" for f in allowing.manifest.features)
    assert allowing.parity.rows == 200 and allowing.manifest.training.holdout_rows == 200
    _, [warning] = build("plain")
    assert "the graph answers such rows with NaN, so fill them before they reach it" in warning


# --- float64 graphs -------------------------------------------------------------------------------


def build_with_holdout(tmp_path: Path, model: onnx.ModelProto, X: np.ndarray, y: np.ndarray) -> Any:
    """``model`` packaged with the first 400 rows as the reference and the rest as the holdout."""
    return build_from_onnx(
        save(model, tmp_path / "model.onnx"),
        write_csv(tmp_path / "reference.csv", X[:400], y[:400]),
        holdout=write_csv(tmp_path / "holdout.csv", X[400:], y[400:]),
        label_column="y",
        name="double",
        version="1",
        repository=ModelRepository(tmp_path / "models"),
    )


def test_a_float64_graph_is_served_through_casts(tmp_path: Path) -> None:
    """skl2onnx with DoubleTensorType (and other exporters in double precision) make graphs that take
    and give float64; they were refused. driftline feeds float32: a Cast in front, one behind each
    float64 output, and the graph must compute what the file computes on the rows rounded to float32."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import DoubleTensorType
    from sklearn.linear_model import LogisticRegression

    X = rows(600, seed=3)
    y = (X[:, 0] - 0.5 * X[:, 2] > 0).astype(np.int64)
    model = LogisticRegression().fit(X[:400], y[:400])
    onx = to_onnx(
        model, initial_types=[("x", DoubleTensorType([None, 3]))], options={id(model): {"zipmap": False}}
    )
    assert [o.type.tensor_type.elem_type for o in onx.graph.output] == [TensorProto.INT64, TensorProto.DOUBLE]
    built = build_with_holdout(tmp_path, onx, X, y)
    assert built.parity.passed and built.parity.rounding_rows == 0
    assert "a Cast to float64 of driftline's float32 'input' feeds the graph's float64 input" in built.changes
    assert "output 'probabilities' cast from float64 to float32" in built.changes
    with load_package(built.path) as served:
        answers = served.predict(X[400:].astype(np.float32))
    assert answers.probabilities is not None and answers.probabilities.dtype == np.float32
    assert np.abs(answers.probabilities - model.predict_proba(X[400:])).max() < 1e-5


def test_a_float64_graph_that_needs_more_than_float32_is_refused(tmp_path: Path) -> None:
    """A signal of seconds since 1970 with a 21 s period: float32 holds those seconds 128 s apart."""
    rng = np.random.default_rng(4)
    X = np.column_stack([1.7e9 + rng.integers(0, 86_400, 600), rng.normal(size=600), rng.normal(size=600)])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["phase"]), helper.make_node("Sin", ["phase"], ["y"])],
        "clock",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["N", 1])],
        [numpy_helper.from_array(np.array([[0.3], [0.0], [0.0]]), "w")],
    )
    onx = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    y = np.sin(0.3 * X[:, 0])
    with pytest.raises(
        ParityError, match=r"rounded to float32, \d+ of the 200 holdout rows get another answer"
    ):
        build_with_holdout(tmp_path, onx, X, y)
    assert not (tmp_path / "models").exists()
