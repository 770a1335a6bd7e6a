"""Packaging a model that arrives as an ONNX file: ``driftline package --onnx model.onnx``.

A network exported from PyTorch or TensorFlow, or a model converted where it was trained, becomes a
package like one built from a training module: the same manifest, digest and versions. The feature
schema comes from the reference CSV's columns (:mod:`agent.packaging.csv_reference`), checked
against the graph's input; the task and outputs are read from the graph; the features' reference
statistics are taken from the reference rows, and the output's reference, the reconstruction error's
and the scores from the holdout rows. Without a holdout CSV a seeded 20 % of the reference rows is
split off as the holdout (:data:`HOLDOUT_SPLIT_WARNING` says so on the progress output), unless
``split_holdout`` is off (``--no-holdout-split``): then every reference comes from the reference rows.

What the graph must look like, checked by :func:`plan_graph` (each refusal names the mismatch):

- **One input**, a float32 (or float64) tensor ``[batch, n_features]`` whose width is the number of
  feature columns and whose batch dimension is free. Several inputs (one per column, as skl2onnx
  makes from a DataFrame), string inputs, other dtypes, another width or a fixed batch size are
  refused. If the model's ``metadata_props`` has a ``feature_names`` entry (comma-separated, a
  common convention, as ONNX itself has no place for column names), it must list the feature
  columns in order.
- **Outputs**: a classifier has a label tensor (int64 or string, ``[batch]``) and a float32 (or
  float64) probabilities tensor ``[batch, n_classes]``; a regressor has one float32 (or float64)
  output, ``[batch]`` or ``[batch, 1]``. Anything else (one ``[batch, 3]`` output: logits,
  probabilities or three targets?) is refused.
- **Class labels** come from the graph's own ``classlabels_*`` attributes (a ZipMap, a tree
  ensemble or linear classifier node) when it declares exactly one list; otherwise they are read off
  the model's answers on the reference rows: the label of the rows where each column is the most
  probable.

What :func:`rewrite` changes, and the package records (``hyperparameters["rewritten"]``):

- The input is **renamed** ``input``, driftline's serving contract, wherever the graph uses it; the
  original name is recorded. Renaming rather than adding an ``Identity`` node keeps the graph valid
  whatever opsets it imports.
- A **ZipMap** (the ``seq(map(label, float))`` output skl2onnx and onnxmltools add to classifiers by
  default) is **removed**, and the probabilities tensor it consumed becomes the output: the map
  carries the same numbers, is several times slower to build, and is not a tensor.

- A **float64** graph (skl2onnx's ``DoubleTensorType``, a network exported in double precision)
  gets a ``Cast`` from driftline's float32 input to the float64 it reads, and one from each float64
  output to float32. It then computes what the file computes on the rows rounded to float32, which
  the parity check compares; the rows whose answer the rounding itself moves are counted
  (``rounding_rows``), and more than 1 % of them stop the build: a feature needs more precision
  than float32 holds (seconds since 1970 are 128 s apart in float32).

Nothing else changes. Before the package is written, the rewritten graph is checked against the
graph as given on the holdout rows (parity: labels identical, probabilities and values equal), so
the package serves exactly what the file computed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import JsonValue, ValidationError

from agent.errors import (
    ConfigurationError,
    CorruptModelError,
    GraphMismatchError,
    PackageError,
    ParityError,
    describe_validation_error,
)
from agent.models.package import (
    check_runtime_support,
    refuse_pickle,
)
from agent.models.repository import ModelRepository
from agent.packaging.builder import BuiltPackage
from agent.packaging.calibration import calibrate, constant_confidence_warning
from agent.packaging.csv_reference import CsvRows, parse_labels, read_rows
from agent.packaging.error_model import FittedErrorModel, fit_error_model
from agent.packaging.importance import permutation_importance
from agent.packaging.parity import (
    MAX_REFERENCE_PARITY_ROWS,
    MAX_ROUNDING_SHARE,
    PROBABILITY_TOLERANCE,
    compare_predictions,
    rows_within,
)
from agent.packaging.progress import Progress
from agent.packaging.reconstruction import HOLDOUT_SHARE, MIN_ROWS, fit_reconstruction, split_rows
from agent.packaging.reference import holdout_scores, prepared_mask, reference_statistics
from agent.packaging.write import build_versions, write_package
from schemas.manifest import Calibration, Feature, Manifest, MissingPolicy, Outputs, Task, TrainingSummary

if TYPE_CHECKING:
    import onnx
    import onnxruntime

__all__ = [
    "HOLDOUT_SPLIT_WARNING",
    "INPUT_NAME",
    "NO_HOLDOUT_WARNING",
    "GraphPlan",
    "ImportedPackage",
    "build_from_onnx",
    "infer_class_labels",
    "load_onnx",
    "plan_graph",
    "rewrite",
]

INPUT_NAME = "input"
"""The name driftline feeds its float32 matrix to (see :mod:`schemas.manifest`)."""

HOLDOUT_SPLIT_WARNING = (
    "no --holdout: {held} of the {rows} reference rows ({share:.0%}, seeded) are split off as the "
    "holdout, for the scores and the output's and reconstruction error's references; if the model was "
    "trained on these rows they are optimistic: pass --holdout with rows it never saw "
    "(--no-holdout-split keeps every row in the reference)"
)
"""What :func:`build_from_onnx` warns when it splits a holdout off the reference rows."""

NO_HOLDOUT_WARNING = (
    "no holdout (--no-holdout-split, or too few reference rows to split): the scores and the output's "
    "reference come from the reference rows, more extreme than new data if the model was trained on "
    "them"
)
"""What :func:`build_from_onnx` warns when it has no holdout at all."""

MISSING_WARNING = (
    "{rows} of the {total} reference rows have a missing value (empty cells; {features}), and "
    "--missing reject (the default) dead-letters a request with one: {answer}"
)
"""What :func:`build_from_onnx` warns when the reference rows have missing values it will reject."""

MISSING_ANSWERED = (
    "the graph answers such rows with finite outputs (an imputer in it, or trees that route NaN), "
    "so if that is what it was built for, package with --missing allow"
)
MISSING_UNANSWERED = (
    "the graph answers such rows with NaN, so fill them before they reach it (or in the graph) "
    "rather than --missing allow"
)

MIN_SPLIT_ROWS = 5 * MIN_ROWS
"""Fewer reference rows than this are not split: the holdout would be too small to summarise."""

_CLASS_LABEL_ATTRIBUTES = ("classlabels_int64s", "classlabels_ints", "classlabels_strings")


# --- reading and describing a graph ----------------------------------------------------------


def load_onnx(path: Path) -> onnx.ModelProto:
    """The ONNX model at ``path`` (weights in external data files next to it are read in);
    pickles are refused by suffix and header before anything parses the file."""
    import onnx

    refuse_pickle(path)
    if not path.is_file():
        raise ConfigurationError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf's DecodeError, a missing external data file, ...
        raise CorruptModelError(f"{path}: not a valid ONNX model: {type(exc).__name__}: {exc}") from exc
    if model.ir_version == 0 or not model.graph.node:
        raise CorruptModelError(f"{path}: not a valid ONNX model: no IR version or an empty graph")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx.checker.ValidationError, or a too-large model
        raise CorruptModelError(f"{path}: the ONNX checker refuses the model: {exc}") from exc
    return model


def _dtype_name(elem_type: int) -> str:
    from onnx import TensorProto

    names: dict[int, str] = {
        TensorProto.FLOAT: "float32",
        TensorProto.DOUBLE: "float64",
        TensorProto.FLOAT16: "float16",
        TensorProto.INT64: "int64",
        TensorProto.INT32: "int32",
        TensorProto.STRING: "string",
        TensorProto.BOOL: "bool",
    }
    return names.get(elem_type) or TensorProto.DataType.Name(elem_type).lower()


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str | None] | None:
    """The declared shape: ints for fixed dimensions, the symbol (or ``None``) for free ones, and
    ``None`` for no shape at all."""
    tensor = value_info.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim]


def _describe(value_info: onnx.ValueInfoProto) -> str:
    kind = value_info.type.WhichOneof("value")
    if kind == "tensor_type":
        dims = _dims(value_info)
        shape = "" if dims is None else " [" + ", ".join("?" if d is None else str(d) for d in dims) + "]"
        return f"{value_info.name!r} {_dtype_name(value_info.type.tensor_type.elem_type)}{shape}"
    if kind == "sequence_type" and value_info.type.sequence_type.elem_type.HasField("map_type"):
        return f"{value_info.name!r} seq(map)"
    return f"{value_info.name!r} {kind or 'untyped'}"


def _is_tensor(value_info: onnx.ValueInfoProto) -> bool:
    return bool(value_info.type.WhichOneof("value") == "tensor_type")


def _feature_names_metadata(model: onnx.ModelProto) -> list[str] | None:
    for entry in model.metadata_props:
        if entry.key == "feature_names":
            return [n.strip() for n in entry.value.split(",")]
    return None


def _declared_classes(nodes: Sequence[onnx.NodeProto]) -> tuple[int, ...] | tuple[str, ...] | None:
    """The one class-label list the nodes declare, or ``None`` (none, or several that differ)."""
    found: set[tuple[int, ...] | tuple[str, ...]] = set()
    for node in nodes:
        for attribute in node.attribute:
            if attribute.name not in _CLASS_LABEL_ATTRIBUTES:
                continue
            if attribute.name == "classlabels_strings":
                strings = tuple(s.decode("utf-8") for s in attribute.strings)
                if strings:
                    found.add(strings)
            elif attribute.ints:
                found.add(tuple(int(i) for i in attribute.ints))
    return found.pop() if len(found) == 1 else None


# --- the plan: what the graph is, and what must change -----------------------------------------


@dataclass(frozen=True)
class GraphPlan:
    """What :func:`plan_graph` found in a graph.

    Parameters:
        input_name: The graph's input as given.
        kind: ``classifier`` (``label`` and ``probabilities``) or ``regressor`` (``value``).
        label: Name of the label output.
        probabilities: Name of the probabilities tensor (for a ZipMap, the tensor it consumed).
        value: Name of the regressor's output.
        zipmap_output: The ZipMap output that :func:`rewrite` replaces with ``probabilities``.
        declared_classes: The class labels the graph declares, if it declares exactly one list.
        input_double: Whether the graph's input is float64 (:func:`rewrite` casts driftline's
            float32 matrix to it).
        double_outputs: Served outputs the graph computes in float64 (:func:`rewrite` casts them to
            float32).
    """

    input_name: str
    kind: Literal["classifier", "regressor"]
    label: str | None = None
    probabilities: str | None = None
    value: str | None = None
    zipmap_output: str | None = None
    declared_classes: tuple[int, ...] | tuple[str, ...] | None = None
    changes: tuple[str, ...] = field(default=())
    input_double: bool = False
    double_outputs: tuple[str, ...] = ()

    @property
    def packaged_outputs(self) -> tuple[str, ...]:
        """The output names of the rewritten graph, label or value first."""
        return tuple(n for n in (self.label, self.probabilities, self.value) if n is not None)


def _check_input(model: onnx.ModelProto, feature_names: Sequence[str], source: str) -> str:
    from onnx import TensorProto

    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    n = len(feature_names)
    if not inputs:
        raise GraphMismatchError(f"{source}: the graph has no input")
    if len(inputs) > 1:
        names = [i.name for i in inputs]
        hint = (
            " They are named after the CSV's columns (one input per column, as skl2onnx makes from a "
            "DataFrame): export the model with one input holding all the columns instead, e.g. "
            f"skl2onnx's initial_types=[('input', FloatTensorType([None, {n}]))]."
            if set(names) <= set(feature_names)
            else ""
        )
        raise GraphMismatchError(
            f"{source}: the graph has {len(inputs)} inputs ({', '.join(_describe(i) for i in inputs)}); "
            f"driftline feeds one float32 tensor [batch, {n}] of the {n} feature columns.{hint}"
        )
    (graph_input,) = inputs
    if not _is_tensor(graph_input):
        raise GraphMismatchError(
            f"{source}: the graph's input {_describe(graph_input)} is not a tensor; driftline feeds one "
            f"float32 tensor [batch, {n}]"
        )
    elem_type = graph_input.type.tensor_type.elem_type
    if elem_type == TensorProto.STRING:
        raise GraphMismatchError(
            f"{source}: the graph's input {graph_input.name!r} takes strings; driftline feeds numbers "
            f"only (one float32 tensor [batch, {n}]): encode text and categories as numbers before "
            "the model and export it with a float32 input"
        )
    if elem_type not in (TensorProto.FLOAT, TensorProto.DOUBLE):
        raise GraphMismatchError(
            f"{source}: the graph's input {graph_input.name!r} has dtype {_dtype_name(elem_type)}, "
            f"but driftline feeds float32: export the model with a float32 input [batch, {n}]"
        )
    dims = _dims(graph_input)
    if dims is not None:
        if len(dims) != 2:
            raise GraphMismatchError(
                f"{source}: the graph's input {_describe(graph_input)} has {len(dims)} dimensions; "
                f"driftline feeds a matrix [batch, {n}]"
            )
        batch, width = dims
        if isinstance(width, int) and width != n:
            hint = " (is one of them the label? name it with --label-column)" if width == n - 1 else ""
            raise GraphMismatchError(
                f"{source}: the graph's input {graph_input.name!r} takes {width} features per row, but "
                f"the reference CSV has {n} feature columns ({', '.join(feature_names)}){hint}"
            )
        if isinstance(batch, int):
            raise GraphMismatchError(
                f"{source}: the graph's input {graph_input.name!r} has a fixed batch size of {batch}; "
                "driftline scores micro-batches of any size: export it with a free batch dimension "
                "(torch.onnx.export(..., dynamic_axes={'input': {0: 'batch'}}))"
            )
    declared = _feature_names_metadata(model)
    if declared is not None and declared != list(feature_names):
        missing = [c for c in declared if c not in feature_names]
        unexpected = [c for c in feature_names if c not in declared]
        detail = (
            f"missing from the CSV {missing}, not in the model {unexpected}"
            if missing or unexpected
            else f"in another order: the model's is {declared}"
        )
        raise GraphMismatchError(
            f"{source}: the model's feature_names metadata does not match the reference CSV's feature "
            f"columns: {detail}"
        )
    return str(graph_input.name)


def plan_graph(model: onnx.ModelProto, feature_names: Sequence[str], source: str = "model") -> GraphPlan:
    """Checks ``model`` against driftline's contract and ``feature_names`` (the CSV's feature
    columns); :class:`~agent.errors.GraphMismatchError` naming the mismatch otherwise."""
    from onnx import TensorProto

    input_name = _check_input(model, feature_names, source)
    changes: list[str] = []
    if input_name != INPUT_NAME:
        changes.append(f"input {input_name!r} renamed {INPUT_NAME!r}")
    input_double = any(
        i.name == input_name and i.type.tensor_type.elem_type == TensorProto.DOUBLE for i in model.graph.input
    )
    if input_double:
        changes.append(
            f"a Cast to float64 of driftline's float32 {INPUT_NAME!r} feeds the graph's float64 input"
        )
    zipmap_double = False
    producers = {output: node for node in model.graph.node for output in node.output}
    tensors: list[onnx.ValueInfoProto] = []
    zipmap_output: str | None = None
    probabilities_from_zipmap: str | None = None
    declared = _declared_classes(model.graph.node)
    described = ", ".join(_describe(o) for o in model.graph.output)
    for output in model.graph.output:
        if _is_tensor(output):
            tensors.append(output)
            continue
        node = producers.get(output.name)
        if node is not None and node.op_type == "ZipMap" and node.domain == "ai.onnx.ml":
            zipmap_output = output.name
            probabilities_from_zipmap = node.input[0]
            values = output.type.sequence_type.elem_type.map_type.value_type.tensor_type.elem_type
            zipmap_double = values == TensorProto.DOUBLE
            zipmap_classes = _declared_classes([node])
            declared = zipmap_classes or declared
            changes.append(
                f"ZipMap output {output.name!r} removed: the probabilities tensor "
                f"{probabilities_from_zipmap!r} it consumed is the output instead"
            )
            continue
        raise GraphMismatchError(
            f"{source}: output {_describe(output)} is not a tensor (and not a ZipMap's output, which "
            "driftline would remove); driftline serves tensors only"
        )
    floats = [t for t in tensors if t.type.tensor_type.elem_type in (TensorProto.FLOAT, TensorProto.DOUBLE)]
    labels = [t for t in tensors if t.type.tensor_type.elem_type in (TensorProto.INT64, TensorProto.STRING)]
    others = [t for t in tensors if t not in floats and t not in labels]
    doubled = [t.name for t in floats if t.type.tensor_type.elem_type == TensorProto.DOUBLE]
    if zipmap_double and probabilities_from_zipmap is not None:
        doubled.append(probabilities_from_zipmap)
    changes.extend(f"output {name!r} cast from float64 to float32" for name in doubled)
    double_outputs = tuple(doubled)
    if others:
        raise GraphMismatchError(
            f"{source}: output {_describe(others[0])} has a dtype driftline does not serve: a regressor "
            "has one float32 output; a classifier an int64 or string label and float32 probabilities"
        )
    if probabilities_from_zipmap is not None:
        if floats or len(labels) != 1:
            raise GraphMismatchError(
                f"{source}: the graph's outputs are {described}; with a ZipMap, driftline expects one "
                "more output, the label"
            )
        return GraphPlan(
            input_name,
            "classifier",
            label=labels[0].name,
            probabilities=probabilities_from_zipmap,
            zipmap_output=zipmap_output,
            declared_classes=declared,
            changes=tuple(changes),
            input_double=input_double,
            double_outputs=double_outputs,
        )
    if len(floats) == 1 and len(labels) == 1:
        return GraphPlan(
            input_name,
            "classifier",
            label=labels[0].name,
            probabilities=floats[0].name,
            declared_classes=declared,
            changes=tuple(changes),
            input_double=input_double,
            double_outputs=double_outputs,
        )
    if len(floats) == 1 and not labels:
        dims = _dims(floats[0])
        width = dims[1] if dims is not None and len(dims) == 2 else None
        if isinstance(width, int) and width > 1:
            raise GraphMismatchError(
                f"{source}: the graph has one output, {_describe(floats[0])}: {width} numbers per row "
                "could be logits, probabilities or several targets. A classifier needs a label output "
                "(ArgMax) beside its probabilities (Softmax); a regressor one value per row"
            )
        return GraphPlan(
            input_name,
            "regressor",
            value=floats[0].name,
            changes=tuple(changes),
            input_double=input_double,
            double_outputs=double_outputs,
        )
    raise GraphMismatchError(
        f"{source}: the graph's outputs are {described}; driftline serves a classifier (an int64 or "
        "string label [batch] and float32 probabilities [batch, n_classes]) or a regressor (one "
        "float32 output [batch] or [batch, 1])"
    )


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    from onnx import AttributeProto

    for value_info in (*graph.input, *graph.output, *graph.value_info):
        if value_info.name == old:
            value_info.name = new
    for initializer in graph.initializer:
        if initializer.name == old:
            initializer.name = new
    for node in graph.node:
        for names in (node.input, node.output):
            for i, name in enumerate(names):
                if name == old:
                    names[i] = new
        # A subgraph (If, Loop, Scan) may read the value from the enclosing scope.
        for attribute in node.attribute:
            if attribute.type == AttributeProto.GRAPH:
                _rename(attribute.g, old, new)
            elif attribute.type == AttributeProto.GRAPHS:
                for subgraph in attribute.graphs:
                    _rename(subgraph, old, new)


def _names(graph: onnx.GraphProto) -> set[str]:
    names = {v.name for v in (*graph.input, *graph.output, *graph.value_info, *graph.initializer)}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
    return names


def rewrite(model: onnx.ModelProto, plan: GraphPlan, n_features: int) -> onnx.ModelProto:
    """A copy of ``model`` under driftline's contract: its input named ``input`` with the shape
    ``[None, n_features]``, and a ZipMap output replaced by the probabilities it consumed."""
    import onnx
    from onnx import TensorProto, helper

    packaged = onnx.ModelProto()
    packaged.CopyFrom(model)
    graph = packaged.graph
    if plan.input_name != INPUT_NAME:
        names = _names(graph)
        if INPUT_NAME in names:
            # Another value is already called "input": it gets a fresh name first.
            _rename(graph, INPUT_NAME, _fresh(names, INPUT_NAME))
        _rename(graph, plan.input_name, INPUT_NAME)
    if plan.input_double:
        # The graph reads a float64 value cast from driftline's float32 input.
        inner = _fresh(_names(graph), f"{INPUT_NAME}_float64")
        _rename(graph, INPUT_NAME, inner)
        for graph_input in graph.input:
            if graph_input.name == inner:
                graph_input.name = INPUT_NAME
        graph.node.insert(0, helper.make_node("Cast", [INPUT_NAME], [inner], to=TensorProto.DOUBLE))
    for graph_input in graph.input:
        if graph_input.name == INPUT_NAME:
            contract = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [None, n_features])
            graph_input.CopyFrom(contract)
    if plan.zipmap_output is not None:
        assert plan.probabilities is not None
        zipmap = next(node for node in graph.node if plan.zipmap_output in node.output)
        graph.node.remove(zipmap)
        n_classes = len(plan.declared_classes) if plan.declared_classes else None
        replacement = helper.make_tensor_value_info(plan.probabilities, TensorProto.FLOAT, [None, n_classes])
        for output in graph.output:
            if output.name == plan.zipmap_output:
                output.CopyFrom(replacement)
        stale = [v for v in graph.value_info if v.name in (plan.zipmap_output, plan.probabilities)]
        for value_info in stale:
            graph.value_info.remove(value_info)
    if (plan.input_double or plan.double_outputs) and not any(
        o.domain in ("", "ai.onnx") for o in packaged.opset_import
    ):
        # The Casts are of the default domain, which a graph of ai.onnx.ml nodes alone may not import.
        packaged.opset_import.append(helper.make_opsetid("", 13))
    for name in plan.double_outputs:
        # Computed in float64, served as float32: the graph's value renamed, cast under its name.
        inner = _fresh(_names(graph), f"{name}_float64")
        _rename(graph, name, inner)
        for output in graph.output:
            if output.name == inner:
                output.name = name
                output.type.tensor_type.elem_type = TensorProto.FLOAT
        graph.node.append(helper.make_node("Cast", [inner], [name], to=TensorProto.FLOAT))
    return packaged


def _fresh(names: set[str], stem: str) -> str:
    """``stem``, or ``stem_0``, ``stem_1``, ... : the first that no value of the graph is called."""
    if stem not in names:
        return stem
    return next(c for i in range(len(names) + 1) if (c := f"{stem}_{i}") not in names)


# --- running it --------------------------------------------------------------------------------


def _session(data: bytes, source: str) -> onnxruntime.InferenceSession:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    try:
        return onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT's pybind exception types share no useful base class
        raise CorruptModelError(f"{source}: onnxruntime cannot load the model: {str(exc).strip()}") from exc


def _run(
    session: onnxruntime.InferenceSession,
    input_name: str,
    outputs: Sequence[str],
    X: npt.NDArray[np.float64],
    source: str,
    dtype: type[np.floating[Any]] = np.float32,
) -> dict[str, Any]:
    try:
        results = session.run(list(outputs), {input_name: np.ascontiguousarray(X, dtype=dtype)})
    except Exception as exc:  # ORT's pybind exception types share no useful base class
        raise GraphMismatchError(
            f"{source}: onnxruntime fails on {len(X)} rows of {X.shape[1]} float32 features: "
            f"{str(exc).strip()}"
        ) from exc
    return dict(zip(outputs, results, strict=True))


def _python_label(value: Any) -> int | str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        value = value.item()
    return value if isinstance(value, str) else int(value)


def infer_class_labels(
    labels: npt.NDArray[Any], probabilities: npt.NDArray[np.floating[Any]], source: str = "model"
) -> tuple[int, ...] | tuple[str, ...]:
    """The class label of each probability column, read off the model's own answers: the label it
    gives the rows where that column is clearly (beyond the parity tolerance) the most probable.

    Example:
        >>> infer_class_labels(np.array([7, 3, 7]), np.array([[0.2, 0.8], [0.9, 0.1], [0.4, 0.6]]))
        (3, 7)
    """
    n_classes = probabilities.shape[1]
    ordered = np.sort(probabilities, axis=1)
    clear = ordered[:, -1] - ordered[:, -2] > PROBABILITY_TOLERANCE
    top = np.argmax(probabilities, axis=1)
    found: list[int | str] = []
    for column in range(n_classes):
        seen = {_python_label(v) for v in labels[clear & (top == column)]}
        if not seen:
            raise GraphMismatchError(
                f"{source}: the graph declares no class labels, and probability column {column} is never "
                f"the most probable on the {len(labels)} rows, so its class cannot be read off the label "
                "output; add rows of that class to the reference CSV"
            )
        if len(seen) > 1:
            raise GraphMismatchError(
                f"{source}: rows whose most probable column is {column} get the labels "
                f"{sorted(map(str, seen))}: the label output does not follow the probabilities' columns"
            )
        found.append(seen.pop())
    if len(set(found)) != n_classes or len({type(c) for c in found}) != 1:
        raise GraphMismatchError(
            f"{source}: the probability columns map to the labels {found}, which are not distinct classes"
        )
    return tuple(found)  # type: ignore[return-value]


def _predictions(
    plan: GraphPlan, raw: Mapping[str, Any], rows: int, source: str
) -> dict[str, npt.NDArray[Any]]:
    """The rewritten graph's outputs as the builder's prediction dict, shapes checked."""
    if plan.kind == "regressor":
        assert plan.value is not None
        values = np.asarray(raw[plan.value])
        if values.size != rows or values.shape[0] != rows:
            raise GraphMismatchError(
                f"{source}: output {plan.value!r} has shape {list(values.shape)} for {rows} rows; a "
                "regressor gives one value per row"
            )
        return {"values": values.reshape(rows)}
    assert plan.label is not None and plan.probabilities is not None
    labels = np.asarray(raw[plan.label])
    probabilities = np.asarray(raw[plan.probabilities])
    if labels.shape != (rows,):
        raise GraphMismatchError(
            f"{source}: label output {plan.label!r} has shape {list(labels.shape)} for {rows} rows; "
            "driftline expects one label per row, [batch]"
        )
    if probabilities.ndim != 2 or probabilities.shape[0] != rows or probabilities.shape[1] < 2:
        raise GraphMismatchError(
            f"{source}: probabilities output {plan.probabilities!r} has shape {list(probabilities.shape)} "
            f"for {rows} rows; driftline expects [batch, n_classes] with at least 2 classes"
        )
    return {"labels": labels, "probabilities": probabilities}


def _original_predictions(
    plan: GraphPlan,
    session: onnxruntime.InferenceSession,
    X: npt.NDArray[np.float64],
    class_labels: Sequence[int | str],
    source: str,
) -> dict[str, npt.NDArray[Any]]:
    """The graph as given, on ``X``: a ZipMap's list of dicts turned back into a matrix."""
    probabilities = plan.zipmap_output or plan.probabilities
    names = [n for n in (plan.label, probabilities, plan.value) if n is not None]
    raw = _run(session, plan.input_name, names, X, source, np.float64 if plan.input_double else np.float32)
    if plan.zipmap_output is not None:
        maps = raw.pop(plan.zipmap_output)
        raw[plan.probabilities or ""] = np.asarray(
            [[row[c] for c in class_labels] for row in maps], dtype=np.float32
        ).reshape(len(X), len(class_labels))
    return _predictions(plan, raw, len(X), source)


# --- the whole build ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportedPackage(BuiltPackage):
    """A package built from an ONNX file; ``changes`` says how its graph differs from the file."""

    changes: tuple[str, ...] = ()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _provenance(model: onnx.ModelProto, path: Path, plan: GraphPlan) -> dict[str, JsonValue]:
    info: dict[str, JsonValue] = {
        "source_file": path.name,
        "source_sha256": _file_sha256(path),
        "source_input": plan.input_name,
        "producer_name": model.producer_name or None,
        "producer_version": model.producer_version or None,
        "ir_version": int(model.ir_version),
        "graph_name": model.graph.name or None,
        "rewritten": list(plan.changes),
    }
    if model.domain:
        info["domain"] = model.domain
    if model.model_version:
        info["model_version"] = int(model.model_version)
    if model.doc_string:
        info["doc_string"] = model.doc_string[:500]
    if model.metadata_props:
        # Some exporters keep whole configurations here; the manifest keeps a readable prefix.
        info["metadata"] = {e.key: e.value[:500] for e in model.metadata_props}
    return dict(sorted(info.items()))


def _labelled(
    rows: CsvRows, task: Task, class_labels: Sequence[int | str], keep: npt.NDArray[np.bool_]
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[Any]]:
    """Which rows count for the scores (served, with a label), and their labels."""
    assert rows.labels is not None
    classes: tuple[int, ...] | tuple[str, ...] = tuple(class_labels)  # type: ignore[assignment]
    y = parse_labels(rows.labels, task, classes, rows.path)
    if task == "regression":
        has_label = ~np.isnan(y.astype(np.float64))
    else:
        has_label = np.array([v is not None for v in y], dtype=bool)
    return keep & has_label, y


def _missing_warning(
    ref: CsvRows, rejected: npt.NDArray[np.bool_], session: Any, plan: GraphPlan, source: str
) -> str:
    """:data:`MISSING_WARNING` for the ``rejected`` reference rows, having run the graph on some."""
    counts = np.isnan(ref.X).sum(axis=0).tolist()
    named = [f"{f} {c / len(ref.X):.0%}" for f, c in zip(ref.feature_names, counts, strict=True) if c]
    features = ", ".join(named[:5]) + (f" and {len(named) - 5} more features" if len(named) > 5 else "")
    outputs = _run(session, INPUT_NAME, plan.packaged_outputs, ref.X[rejected][:200], source)
    floats = [np.asarray(v) for v in outputs.values() if np.asarray(v).dtype.kind == "f"]
    answered = all(np.isfinite(v).all() for v in floats)
    return MISSING_WARNING.format(
        rows=int(rejected.sum()),
        total=len(ref.X),
        features=features,
        answer=MISSING_ANSWERED if answered else MISSING_UNANSWERED,
    )


def build_from_onnx(
    onnx_path: Path,
    reference: Path,
    *,
    holdout: Path | None = None,
    label_column: str | None = None,
    name: str,
    version: str,
    repository: ModelRepository,
    force: bool = False,
    progress: Progress | None = None,
    created_at: datetime | None = None,
    split_holdout: bool = True,
    missing: Literal["reject", "allow"] = "reject",
) -> ImportedPackage:
    """Checks, rewrites, verifies, summarises and writes the model at ``onnx_path`` as package
    ``name``/``version``, with its features and reference statistics from the ``reference`` CSV.

    ``label_column`` names the label column of the CSVs: required in ``holdout``, dropped from the
    features of ``reference`` when it is there. Scores are computed on the labelled holdout rows,
    else on the labelled reference rows, else not at all (``evaluated_on == "none"``). Without
    ``holdout``, ``split_holdout`` splits a seeded 20 % of the reference rows off as the holdout
    (when there are at least :data:`MIN_SPLIT_ROWS`), with a warning on ``progress``. ``missing`` is
    every feature's missing-value policy: ``reject`` a request with a missing value (dead letter), or
    ``allow`` it through to the graph as NaN; rejecting, the build warns when reference rows have
    missing values, and says whether the graph answers them.
    """
    progress = progress or Progress(None)
    for path in (onnx_path, reference, holdout):
        if path is not None:
            refuse_pickle(path)
    target = repository.package_dir(name, version)  # validates name and version early
    if target.exists() and not force:
        raise ConfigurationError(f"{target}: package already exists; pass --force to replace it")
    source = str(onnx_path)

    with progress.step("read"):
        ref = read_rows(reference, label_column=label_column)
        held = None
        if holdout is not None:
            held = read_rows(
                holdout,
                label_column=label_column,
                require_label=label_column is not None,
                features=ref.feature_names,
            )
        if held is None and split_holdout and len(ref.X) >= MIN_SPLIT_ROWS:
            ref, held = _split_off_holdout(ref)
        original = load_onnx(onnx_path)
        opsets = check_runtime_support(
            source,
            ((entry.domain, entry.version) for entry in original.opset_import),
            original.ir_version,
            advice=": export the model with opset {limit} or lower (or convert it with "
            "onnx.version_converter)",
        )
    if held is None:
        progress.warn(NO_HOLDOUT_WARNING)
    elif holdout is None:
        rows = len(ref.X) + len(held.X)
        progress.warn(HOLDOUT_SPLIT_WARNING.format(held=len(held.X), rows=rows, share=HOLDOUT_SHARE))
    try:
        policy = MissingPolicy(action=missing)
        features = tuple(Feature(name=n, type="numeric", missing=policy) for n in ref.feature_names)
    except ValidationError as exc:
        raise ConfigurationError(
            f"{reference}: {describe_validation_error(exc, 5, whole='(top level)')}"
        ) from exc
    n = len(features)

    with progress.step("verify"):
        plan = plan_graph(original, ref.feature_names, source)
        packaged = rewrite(original, plan, n)
        onnx_bytes = bytes(packaged.SerializeToString())
        session = _session(onnx_bytes, source)
        X_ref = ref.X.copy()
        keep_ref = prepared_mask(features, X_ref)
        if not keep_ref.any():
            raise ConfigurationError(f"{reference}: every row has a missing value, which the model rejects")
        X_served = X_ref[keep_ref]
        missing_note = None if keep_ref.all() else _missing_warning(ref, ~keep_ref, session, plan, source)
        raw = _run(session, INPUT_NAME, plan.packaged_outputs, X_served, source)
        ref_out = _predictions(plan, raw, len(X_served), source)
        task: Task
        class_labels: tuple[int, ...] | tuple[str, ...] | tuple[()]
        if plan.kind == "regressor":
            task, class_labels = "regression", ()
        else:
            n_classes = ref_out["probabilities"].shape[1]
            class_labels = plan.declared_classes or infer_class_labels(
                ref_out["labels"], ref_out["probabilities"], source
            )
            if len(class_labels) != n_classes:
                raise GraphMismatchError(
                    f"{source}: the graph declares {len(class_labels)} classes {list(class_labels)}, but "
                    f"{plan.probabilities!r} has {n_classes} columns"
                )
            predicted = {_python_label(v) for v in ref_out["labels"]}
            if not predicted <= set(class_labels):
                raise GraphMismatchError(
                    f"{source}: the label output gives {sorted(map(str, predicted - set(class_labels)))}, "
                    f"not among the classes the graph declares {list(class_labels)}"
                )
            task = "binary_classification" if n_classes == 2 else "multiclass_classification"
        try:
            outputs = Outputs(
                label=plan.label,
                probabilities=plan.probabilities,
                value=plan.value,
                class_labels=class_labels or None,
            )
        except ValidationError as exc:
            raise GraphMismatchError(
                f"{source}: {describe_validation_error(exc, 5, whole='outputs')}"
            ) from exc

        # Parity: the rewritten graph must compute what the file computes, on the holdout rows
        # (else a sample of the reference rows).
        checked_on: Literal["holdout", "reference"]
        if held is not None:
            checked_on = "holdout"
            X_check = held.X.copy()
            keep_check = prepared_mask(features, X_check)
        else:
            checked_on = "reference"
            pick = np.sort(np.random.default_rng(0).permutation(len(X_ref))[:MAX_REFERENCE_PARITY_ROWS])
            X_check, keep_check = X_ref.copy(), np.zeros(len(X_ref), dtype=bool)
            keep_check[pick] = True
            keep_check &= keep_ref
        X_rows = X_check[keep_check]
        if len(X_rows) == 0:
            raise ConfigurationError(f"no {checked_on} rows left to verify after the missing-value policy")
        packaged_out = _predictions(
            plan, _run(session, INPUT_NAME, plan.packaged_outputs, X_rows, source), len(X_rows), source
        )
        original_session = _session(bytes(original.SerializeToString()), source)
        # A float64 graph is served float32 rows (cast back to float64): it must compute what the
        # file computes on the rows rounded to float32, and rounding may move only a few answers.
        X_fed = X_rows.astype(np.float32).astype(np.float64) if plan.input_double else X_rows
        as_fed = _original_predictions(plan, original_session, X_fed, class_labels, source)
        parity = compare_predictions(task, as_fed, packaged_out, checked_on, class_labels)
        if parity.passed and plan.input_double:
            as_given = _original_predictions(plan, original_session, X_rows, class_labels, source)
            parity = replace(parity, rounding_rows=int((~rows_within(task, as_given, as_fed)).sum()))
            if parity.rounding_rows > MAX_ROUNDING_SHARE * parity.rows:
                raise ParityError(
                    f"{source}: the graph takes float64 and driftline serves float32: rounded to "
                    f"float32, {parity.rounding_rows} of the {parity.rows} {checked_on} rows get "
                    f"another answer (at most {MAX_ROUNDING_SHARE:.0%} may): a feature needs more "
                    "precision than float32 holds (a timestamp in seconds, an id?); refusing to "
                    "write the package"
                )
        del original_session
        if not parity.passed:
            raise ParityError(
                f"{source}: the rewritten graph ({'; '.join(plan.changes) or 'unchanged'}) does not "
                f"reproduce the file: {parity}; refusing to write the package"
            )
        scores, evaluated_on, calibration = _evaluate(
            task, class_labels, features, held, ref, session, plan, source
        )

    if missing_note is not None:
        progress.warn(missing_note)
    with progress.step("explain"):
        fitted = _error_model(task, features, held, session, plan, source)
        importance = permutation_importance(
            task,
            lambda rows: _predictions(
                plan, _run(session, INPUT_NAME, plan.packaged_outputs, rows, source), len(rows), source
            ),
            X_rows,
            ref.feature_names,
            fitted_on=checked_on,
        )

    with progress.step("stats"):
        output_from: Literal["holdout", "reference"]
        if checked_on == "holdout":
            # The model's output on the holdout rows, as it will meet new rows when served.
            output_out, output_from = packaged_out, checked_on
            reconstruction = fit_reconstruction(ref.feature_names, X_served, X_rows)
        else:
            output_out, output_from = ref_out, checked_on
            reconstruction = fit_reconstruction(ref.feature_names, X_served)
        reference_stats = reference_statistics(
            features,
            ref.X,
            task,
            outputs,
            output_out,
            output_rows_from=output_from,
            reconstruction=reconstruction,
        )
        try:
            manifest = Manifest(
                name=name,
                version=version,
                task=task,
                estimator=f"onnx:{original.producer_name}" if original.producer_name else "onnx",
                features=features,
                outputs=outputs,
                hyperparameters=_provenance(original, onnx_path, plan),
                training=TrainingSummary(
                    rows=len(ref.X),
                    holdout_rows=0 if held is None else len(held.X),
                    evaluated_on=evaluated_on,
                    **scores,
                ),
                reference=reference_stats,
                versions=build_versions(opsets),
                created_at=created_at or datetime.now(UTC),
                onnx_sha256=hashlib.sha256(onnx_bytes).hexdigest(),
                calibration=calibration,
                importance=importance,
                error_model=fitted.entry if fitted is not None else None,
            )
        except ValidationError as exc:
            raise PackageError(
                f"the manifest does not validate: {describe_validation_error(exc, 5, whole='(top level)')}"
            ) from exc

    if (warning := constant_confidence_warning(manifest)) is not None:
        progress.warn(warning)
    with progress.step("write"):
        path = write_package(
            repository,
            manifest,
            onnx_bytes,
            force=force,
            error_model=fitted.onnx_bytes if fitted is not None else None,
        )
    notes = (fitted.note,) if fitted is not None else ()
    return ImportedPackage(path, manifest, parity, dict(progress.timings), notes, changes=plan.changes)


def _error_model(
    task: Task,
    features: Sequence[Feature],
    held: CsvRows | None,
    session: onnxruntime.InferenceSession,
    plan: GraphPlan,
    source: str,
) -> FittedErrorModel | None:
    """A regressor's error model, fitted on part of its labelled holdout rows (``None`` for classifiers)."""
    if task != "regression":
        return None
    if held is None or held.labels is None:
        return FittedErrorModel(
            None, None, "no error model: no labelled holdout rows (--holdout and --label-column)"
        )
    X = held.X.copy()
    use, y = _labelled(held, task, (), prepared_mask(features, X))
    predicted = _predictions(
        plan, _run(session, INPUT_NAME, plan.packaged_outputs, X[use], source), int(use.sum()), source
    )
    return fit_error_model(X[use], y[use].astype(np.float64), predicted["values"])


def _split_off_holdout(rows: CsvRows) -> tuple[CsvRows, CsvRows]:
    """A seeded :data:`HOLDOUT_SHARE` of ``rows`` as the holdout, the rest as the reference."""
    kept, held = split_rows(len(rows.X))

    def part(index: npt.NDArray[np.intp]) -> CsvRows:
        labels = None if rows.labels is None else tuple(rows.labels[i] for i in index.tolist())
        return CsvRows(rows.path, rows.feature_names, rows.X[index], labels)

    return part(kept), part(held)


def _evaluate(
    task: Task,
    class_labels: Sequence[int | str],
    features: Sequence[Feature],
    held: CsvRows | None,
    ref: CsvRows,
    session: onnxruntime.InferenceSession,
    plan: GraphPlan,
    source: str,
) -> tuple[dict[str, float | None], Literal["holdout", "reference", "none"], Calibration | None]:
    """Scores (and a classifier's calibration) on the labelled holdout rows, else the labelled
    reference rows, else none."""
    for rows, where in ((held, "holdout"), (ref, "reference")):
        if rows is None or rows.labels is None:
            continue
        X = rows.X.copy()
        keep = prepared_mask(features, X)
        use, y = _labelled(rows, task, class_labels, keep)
        if not use.any():
            continue
        predicted = _predictions(
            plan, _run(session, INPUT_NAME, plan.packaged_outputs, X[use], source), int(use.sum()), source
        )
        y_used = y[use]
        if task != "regression":
            y_used = np.asarray(y_used.tolist())  # object -> int64 or str, as the label output is
        evaluated_on: Literal["holdout", "reference"] = "holdout" if where == "holdout" else "reference"
        calibration = (
            None
            if task == "regression"
            else calibrate(y_used, predicted, class_labels, fitted_on=evaluated_on)
        )
        return holdout_scores(task, y_used, predicted, class_labels), evaluated_on, calibration
    return {}, "none", None
