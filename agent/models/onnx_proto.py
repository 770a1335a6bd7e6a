"""The few parts of an ONNX model a worker checks, read from its protobuf bytes without the ``onnx`` package.

A worker verifies a package's graph before serving it (IR version, opsets, its one input and its
outputs), but the ``onnx`` package, with its protobuf runtime, is a build-time dependency (the ``build``
extra). The protobuf wire format is small and stable, and the fields needed here have had the same
numbers since ONNX's first release, so this module reads them directly: :func:`read_model` walks the
bytes once and keeps only what :mod:`agent.models.package` checks. :func:`probe_model` writes the
one-node model that asks the installed onnxruntime for its limits.

Field numbers are those of ``onnx/onnx.proto3``: ``ModelProto`` (ir_version 1, graph 7, opset_import
8), ``OperatorSetIdProto`` (domain 1, version 2), ``GraphProto`` (node 1, initializer 5, input 11,
output 12), ``TensorProto`` (name 8), ``ValueInfoProto`` (name 1, type 2), ``TypeProto`` (tensor_type
1), ``TypeProto.Tensor`` (elem_type 1, shape 2), ``TensorShapeProto`` (dim 1), ``Dimension``
(dim_value 1, dim_param 2).

Example:
    >>> model = read_model(probe_model({"": 13}, ir_version=8))
    >>> model.ir_version, model.opsets, model.n_nodes
    (8, {'': 13}, 1)
    >>> [(v.name, v.elem_type_name, v.dims) for v in model.inputs]
    [('x', 'FLOAT', [1])]
    >>> read_model(b"not a model")
    Traceback (most recent call last):
    ...
    agent.models.onnx_proto.ProtoError: field 13 has wire type 6, which protobuf does not have
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

__all__ = ["DATA_TYPES", "FLOAT", "ModelInfo", "ProtoError", "ValueInfo", "probe_model", "read_model"]

FLOAT = 1
"""``TensorProto.FLOAT``: float32."""

DATA_TYPES = {
    1: "FLOAT",
    2: "UINT8",
    3: "INT8",
    4: "UINT16",
    5: "INT16",
    6: "INT32",
    7: "INT64",
    8: "STRING",
    9: "BOOL",
    10: "FLOAT16",
    11: "DOUBLE",
    12: "UINT32",
    13: "UINT64",
    14: "COMPLEX64",
    15: "COMPLEX128",
    16: "BFLOAT16",
    17: "FLOAT8E4M3FN",
    18: "FLOAT8E4M3FNUZ",
    19: "FLOAT8E5M2",
    20: "FLOAT8E5M2FNUZ",
    21: "UINT4",
    22: "INT4",
    23: "FLOAT4E2M1",
}
"""``TensorProto.DataType`` names, as the ``onnx`` package spells them."""

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


class ProtoError(ValueError):
    """The bytes are not a well-formed protobuf message."""


@dataclass
class ValueInfo:
    """A graph input or output: its name, element type and shape (``None`` for a symbolic dimension)."""

    name: str = ""
    elem_type: int = 0
    """``TensorProto.DataType``; 0 when the value is not a tensor (a sequence or a map)."""
    dims: list[int | None] = field(default_factory=list)

    @property
    def elem_type_name(self) -> str:
        return DATA_TYPES.get(self.elem_type, "UNDEFINED" if self.elem_type == 0 else str(self.elem_type))


@dataclass
class ModelInfo:
    """What :func:`read_model` keeps of a model."""

    ir_version: int = 0
    opsets: dict[str, int] = field(default_factory=dict)
    """Domain (``""`` for the default) -> the highest opset imported."""
    n_nodes: int = 0
    initializers: set[str] = field(default_factory=set)
    inputs: list[ValueInfo] = field(default_factory=list)
    outputs: list[ValueInfo] = field(default_factory=list)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ProtoError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 64:
            raise ProtoError("varint longer than 10 bytes")


def _fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """``(field number, wire type, value)`` of each field; a length-delimited value as bytes."""
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ProtoError("field number 0")
        value: int | bytes
        if wire == _VARINT:
            value, pos = _varint(data, pos)
        elif wire == _I64:
            value, pos = int.from_bytes(data[pos : pos + 8], "little"), pos + 8
        elif wire == _I32:
            value, pos = int.from_bytes(data[pos : pos + 4], "little"), pos + 4
        elif wire == _LEN:
            size, pos = _varint(data, pos)
            value, pos = data[pos : pos + size], pos + size
        else:
            raise ProtoError(f"field {number} has wire type {wire}, which protobuf does not have")
        if pos > end:
            raise ProtoError(f"field {number} runs past the end of its message")
        yield number, wire, value


def _bytes(wire: int, value: int | bytes, what: str) -> bytes:
    if wire != _LEN or not isinstance(value, bytes):
        raise ProtoError(f"{what} is not length-delimited")
    return value


def _int(wire: int, value: int | bytes, what: str) -> int:
    if wire != _VARINT or not isinstance(value, int):
        raise ProtoError(f"{what} is not a varint")
    return value - (1 << 64) if value >= 1 << 63 else value  # int64 two's complement


def _text(wire: int, value: int | bytes, what: str) -> str:
    try:
        return _bytes(wire, value, what).decode()
    except UnicodeDecodeError as exc:
        raise ProtoError(f"{what} is not UTF-8") from exc


def _value_info(data: bytes) -> ValueInfo:
    info = ValueInfo()
    for number, wire, value in _fields(data):
        if number == 1:
            info.name = _text(wire, value, "ValueInfoProto.name")
        elif number == 2:
            for n, w, v in _fields(_bytes(wire, value, "ValueInfoProto.type")):
                if n == 1:  # TypeProto.tensor_type
                    _tensor_type(_bytes(w, v, "TypeProto.tensor_type"), info)
    return info


def _tensor_type(data: bytes, info: ValueInfo) -> None:
    for number, wire, value in _fields(data):
        if number == 1:
            info.elem_type = _int(wire, value, "TypeProto.Tensor.elem_type")
        elif number == 2:
            for n, w, v in _fields(_bytes(wire, value, "TypeProto.Tensor.shape")):
                if n == 1:
                    info.dims.append(_dimension(_bytes(w, v, "TensorShapeProto.dim")))


def _dimension(data: bytes) -> int | None:
    size: int | None = None
    for number, wire, value in _fields(data):
        if number == 1:
            size = _int(wire, value, "Dimension.dim_value")
        elif number == 2:
            size = None
    return size


def _graph(data: bytes, model: ModelInfo) -> None:
    for number, wire, value in _fields(data):
        if number == 1:
            _bytes(wire, value, "GraphProto.node")
            model.n_nodes += 1
        elif number == 5:
            for n, w, v in _fields(_bytes(wire, value, "GraphProto.initializer")):
                if n == 8:
                    model.initializers.add(_text(w, v, "TensorProto.name"))
        elif number == 11:
            model.inputs.append(_value_info(_bytes(wire, value, "GraphProto.input")))
        elif number == 12:
            model.outputs.append(_value_info(_bytes(wire, value, "GraphProto.output")))


def read_model(data: bytes) -> ModelInfo:
    """Reads the IR version, opsets, node count, initializer names, inputs and outputs of a model.

    Raises :class:`ProtoError` if ``data`` is not a well-formed protobuf message.
    """
    model = ModelInfo()
    for number, wire, value in _fields(data):
        if number == 1:
            model.ir_version = _int(wire, value, "ModelProto.ir_version")
        elif number == 7:
            _graph(_bytes(wire, value, "ModelProto.graph"), model)
        elif number == 8:
            domain, version = "", 0
            for n, w, v in _fields(_bytes(wire, value, "ModelProto.opset_import")):
                if n == 1:
                    domain = _text(w, v, "OperatorSetIdProto.domain")
                elif n == 2:
                    version = _int(w, v, "OperatorSetIdProto.version")
            model.opsets[domain] = max(model.opsets.get(domain, 0), version)
    return model


# --- writing the probe ---------------------------------------------------------------------------


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | _LEN) + _encode_varint(len(payload)) + payload


def _int_field(number: int, value: int) -> bytes:
    return _encode_varint(number << 3 | _VARINT) + _encode_varint(value)


def _float_vector(name: str) -> bytes:
    shape = _len_field(1, _int_field(1, 1))  # TensorShapeProto.dim { dim_value: 1 }
    tensor = _int_field(1, FLOAT) + _len_field(2, shape)
    return _len_field(1, name.encode()) + _len_field(2, _len_field(1, tensor))


def probe_model(opsets: Mapping[str, int], ir_version: int) -> bytes:
    """A one-node model (``y = Identity(x)``, float32 ``[1]``) stamped with ``opsets`` and ``ir_version``."""
    node = _len_field(1, b"x") + _len_field(2, b"y") + _len_field(4, b"Identity")
    graph = (
        _len_field(1, node)
        + _len_field(2, b"probe")
        + _len_field(11, _float_vector("x"))
        + _len_field(12, _float_vector("y"))
    )
    model = _int_field(1, ir_version) + _len_field(7, graph)
    for domain, version in opsets.items():
        model += _len_field(8, _len_field(1, domain.encode()) + _int_field(2, version))
    return model
