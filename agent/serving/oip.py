"""The Open Inference Protocol (v2) REST API beside ``/predict``, so KServe and Triton clients call
driftline's models as they are.

Endpoints (the protocol's paths; errors are ``{"error": "<message>"}``):

* ``GET /v2/health/live``, ``GET /v2/health/ready``: 200 when live / ready (a model loaded and the
  serving loop in its consumer group), 400 when not, with an empty body as the protocol says;
* ``GET /v2``: the server's metadata;
* ``GET /v2/models/{name}[/versions/{v}]``: the model's metadata: one input tensor per feature of its
  manifest (``FP32`` for a numeric feature, ``BYTES`` for a categorical one, shape ``[-1]``: one
  value per row), and its outputs (``label`` and ``probabilities`` for a classifier, ``value`` for a
  regressor);
* ``GET /v2/models/{name}[/versions/{v}]/ready``: 200 when the model (version) is served;
* ``POST /v2/models/{name}[/versions/{v}]/infer``: a batch of rows, column by column.

An inference request becomes one ``PredictionRequest`` per row, handled by the same
:class:`~agent.serving.handler.RequestHandler` as the stream, *with* the observers: the same
validation (a row the stream would dead-letter makes the answer a 400 naming the row and the reason),
the same model, and the same drift monitoring; the alerts its rows raise are returned to be published
on the alerts topic (:meth:`OpenInference.infer`). The outcome join is the stream's: its state is
partitioned like the requests topic, which REST rows are not on, so their join records are not
persisted (concept drift needs outcomes joined on Kafka). A request may be JSON, or JSON followed by
binary input tensors (the ``binary_tensor_data`` extension that Triton's clients use by default);
answers are always JSON.

Numeric inputs may be of any numeric datatype (``BOOL`` excluded); the values then go through the
manifest's checks like any stream value (range, missing policy, finite float32).

Example:
    >>> rows, _ = parse_request(
    ...     {"inputs": [{"name": "a", "datatype": "FP64", "shape": [2, 1], "data": [[1.5], [2.5]]},
    ...                 {"name": "b", "datatype": "BYTES", "shape": [2], "data": ["x", "y"]}]},
    ...     {"a", "b"},
    ... )
    >>> rows
    [{'a': 1.5, 'b': 'x'}, {'a': 2.5, 'b': 'y'}]
"""

from __future__ import annotations

import itertools
import logging
import math
import struct
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from agent.models.registry import ModelRegistry, ServedModel
from agent.serving.handler import Record, RequestHandler
from agent.serving.messages import OutgoingMessage

__all__ = [
    "DATATYPES",
    "OIP_TOPIC",
    "OipAnswer",
    "OpenInference",
    "ProtocolError",
    "model_metadata",
    "parse_request",
    "register_oip_views",
]

log = logging.getLogger(__name__)

OIP_TOPIC = "oip"
"""The ``topic`` of the records built from inference requests (alerts' ``source`` names it)."""

_NUMPY: dict[str, str] = {
    "BOOL": "?",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
DATATYPES = frozenset([*_NUMPY, "BYTES"])
"""The protocol's tensor datatypes that driftline accepts (``BF16`` is not one)."""


class ProtocolError(Exception):
    """A request the protocol answers with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class OipAnswer:
    """An answer: its status and JSON body (``None``: empty), and the messages to publish first."""

    status: int
    body: Any = None
    publish: list[OutgoingMessage] = field(default_factory=list)

    @classmethod
    def error(cls, exc: ProtocolError) -> OipAnswer:
        return cls(exc.status, {"error": exc.message})


def model_metadata(served: ServedModel) -> dict[str, Any]:
    """The protocol's model metadata for ``served``."""
    manifest = served.manifest
    inputs = [
        {"name": f.name, "datatype": "FP32" if f.type == "numeric" else "BYTES", "shape": [-1]}
        for f in manifest.features
    ]
    if served.class_keys is not None:
        labels = manifest.outputs.class_labels or ()
        label_type = "INT64" if all(isinstance(label, int) for label in labels) else "BYTES"
        outputs = [
            {"name": "label", "datatype": label_type, "shape": [-1]},
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, len(served.class_keys)]},
        ]
    else:
        outputs = [{"name": "value", "datatype": "FP64", "shape": [-1]}]
    return {
        "name": served.name,
        "versions": [served.version],
        "platform": "onnxruntime_onnx",
        "inputs": inputs,
        "outputs": outputs,
    }


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    out: list[Any] = []
    for item in data:
        out.extend(_flatten(item) if isinstance(item, list) else [item])
    return out


def _binary(datatype: str, raw: bytes, count: int, where: str) -> list[Any]:
    if datatype == "BYTES":
        values: list[Any] = []
        at = 0
        while at < len(raw):
            if at + 4 > len(raw):
                raise ProtocolError(400, f"{where}: truncated BYTES element")
            (size,) = struct.unpack_from("<I", raw, at)
            element = raw[at + 4 : at + 4 + size]
            if len(element) != size:
                raise ProtocolError(400, f"{where}: truncated BYTES element")
            try:
                values.append(element.decode())
            except UnicodeDecodeError:
                raise ProtocolError(400, f"{where}: a BYTES element is not UTF-8") from None
            at += 4 + size
        return values
    dtype = np.dtype(_NUMPY[datatype])
    if len(raw) != count * dtype.itemsize:
        raise ProtocolError(400, f"{where}: {len(raw)} bytes of binary data for {count} {datatype} values")
    return np.frombuffer(raw, dtype=dtype).tolist()  # type: ignore[no-any-return]


def _check_value(value: Any, datatype: str, where: str) -> Any:
    if datatype == "BYTES":
        if not isinstance(value, str):
            raise ProtocolError(400, f"{where}: BYTES data must be strings")
        return value
    if datatype == "BOOL":
        if not isinstance(value, bool):
            raise ProtocolError(400, f"{where}: BOOL data must be true or false")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(400, f"{where}: {datatype} data must be numbers")
    if datatype.startswith(("INT", "UINT")) and isinstance(value, float) and not value.is_integer():
        raise ProtocolError(400, f"{where}: {datatype} data must be integers")
    return value


def parse_request(
    request: Any, features: Iterable[str], binary: bytes = b""
) -> tuple[list[dict[str, Any]], list[str] | None]:
    """The rows of an inference request (feature name -> value) and the outputs it asks for (None:
    all). ``binary`` is what followed the JSON header (the binary tensor data extension). Raises
    :class:`ProtocolError` for what the protocol forbids; the values themselves are left to the
    handler's validation, as on the stream."""
    if not isinstance(request, dict):
        raise ProtocolError(400, "the inference request is not a JSON object")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ProtocolError(400, "the inference request has no inputs")
    known = set(features)
    columns: dict[str, list[Any]] = {}
    rows: int | None = None
    offset = 0
    for i, tensor in enumerate(inputs):
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise ProtocolError(400, f"input #{i} has no name")
        name = tensor["name"]
        where = f"input {name!r}"
        if name not in known:
            raise ProtocolError(400, f"unexpected {where}; the model's inputs are {sorted(known)}")
        if name in columns:
            raise ProtocolError(400, f"{where} is given twice")
        datatype = tensor.get("datatype")
        if datatype not in DATATYPES:
            raise ProtocolError(400, f"{where}: datatype {datatype!r} is not one of {sorted(DATATYPES)}")
        shape = tensor.get("shape")
        if (
            not isinstance(shape, list)
            or not 1 <= len(shape) <= 2
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
            or (len(shape) == 2 and shape[1] != 1)
        ):
            raise ProtocolError(400, f"{where}: shape {shape!r} is not [rows] or [rows, 1]")
        count = math.prod(shape)
        parameters = tensor.get("parameters") or {}
        size = parameters.get("binary_data_size") if isinstance(parameters, Mapping) else None
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise ProtocolError(400, f"{where}: binary_data_size {size!r} is beyond the binary data")
            values = _binary(datatype, binary[offset : offset + size], count, where)
            offset += size
        elif "data" in tensor:
            values = [_check_value(v, datatype, where) for v in _flatten(tensor["data"])]
        else:
            raise ProtocolError(400, f"{where} has no data")
        if len(values) != count:
            raise ProtocolError(400, f"{where}: {len(values)} values for shape {shape}")
        if rows is not None and shape[0] != rows:
            raise ProtocolError(400, f"{where} has {shape[0]} rows; the other inputs have {rows}")
        rows = shape[0]
        columns[name] = values
    if offset != len(binary):
        raise ProtocolError(400, f"{len(binary) - offset} bytes of binary data belong to no input")
    if not rows:
        raise ProtocolError(400, "the inference request has no rows")
    asked = request.get("outputs")
    wanted: list[str] | None = None
    if asked is not None:
        if not isinstance(asked, list) or not all(isinstance(o, dict) and "name" in o for o in asked):
            raise ProtocolError(400, 'outputs must be a list of {"name": ...} objects')
        wanted = [str(o["name"]) for o in asked]
    return [{name: col[r] for name, col in columns.items()} for r in range(rows)], wanted


class OpenInference:
    """The protocol's logic, callable without a web server: each method returns an :class:`OipAnswer`.

    Parameters:
        handler: The stream's request handler (validation, models, observers).
        registry: The served models.
        health: The worker's readiness and its detail (``Driftline.health``).
        server_version: Reported by ``GET /v2``.
    """

    def __init__(
        self,
        handler: RequestHandler,
        registry: ModelRegistry,
        health: Callable[[], tuple[bool, dict[str, Any]]],
        *,
        server_version: str = "0",
    ) -> None:
        self.handler = handler
        self.registry = registry
        self.health = health
        self.server_version = server_version
        self._offsets = itertools.count()

    def server_metadata(self) -> OipAnswer:
        return OipAnswer(200, {"name": "driftline", "version": self.server_version, "extensions": []})

    def live(self) -> OipAnswer:
        return OipAnswer(200)

    def ready(self) -> OipAnswer:
        ready, _ = self.health()
        return OipAnswer(200 if ready else 400)

    def _served(self, name: str, version: str | None) -> ServedModel:
        served = self.registry.resolve(name, version)
        if served is None:
            raise ProtocolError(404, self.registry.why_not(name, version))
        return served

    def model_ready(self, name: str, version: str | None = None) -> OipAnswer:
        return OipAnswer(200 if self.registry.resolve(name, version) is not None else 400)

    def model_metadata(self, name: str, version: str | None = None) -> OipAnswer:
        try:
            return OipAnswer(200, model_metadata(self._served(name, version)))
        except ProtocolError as exc:
            return OipAnswer.error(exc)

    def infer(
        self, name: str, version: str | None, body: bytes, header_length: int | None = None
    ) -> OipAnswer:
        """Serves one inference request (``header_length``: the JSON part's length when binary
        tensors follow it)."""
        try:
            return self._infer(name, version, body, header_length)
        except ProtocolError as exc:
            return OipAnswer.error(exc)

    def _infer(self, name: str, version: str | None, body: bytes, header_length: int | None) -> OipAnswer:
        served = self._served(name, version)
        if header_length is not None and not 0 < header_length <= len(body):
            raise ProtocolError(400, "Inference-Header-Content-Length is beyond the request body")
        head, binary = (body, b"") if header_length is None else (body[:header_length], body[header_length:])
        try:
            request = orjson.loads(head)
        except orjson.JSONDecodeError:
            raise ProtocolError(400, "the inference request is not JSON") from None
        rows, wanted = parse_request(request, (f.name for f in served.manifest.features), binary)
        outputs = [o["name"] for o in model_metadata(served)["outputs"]]
        unknown = [o for o in wanted or () if o not in outputs]
        if unknown:
            raise ProtocolError(400, f"unknown outputs {unknown}; the model's outputs are {outputs}")
        request_id = request.get("id")
        stem = str(request_id) if request_id else uuid.uuid4().hex
        now = datetime.now(UTC)
        records = []
        for i, features in enumerate(rows):
            event = {
                "request_id": f"{stem}/{i}",
                "model": served.name,
                "model_version": served.version,
                "event_time": now,
                "features": features,
            }
            # One partition, and offsets counting up over the worker's life: the alerts these rows
            # raise name where they were seen ("oip", 0, [first, last]).
            records.append(Record(OIP_TOPIC, 0, next(self._offsets), None, orjson.dumps(event)))
        messages = self.handler.handle(records)
        index = {r.offset: i for i, r in enumerate(records)}
        predictions: dict[int, dict[str, Any]] = {}
        errors: list[tuple[int, str]] = []
        publish: list[OutgoingMessage] = []
        for m in messages:
            if m.value is None:
                continue
            if m.topic == self.handler.predictions_topic:
                prediction = orjson.loads(m.value)
                predictions[int(prediction["request_id"].rsplit("/", 1)[1])] = prediction
            elif m.topic == self.handler.dead_letters_topic:
                dead = orjson.loads(m.value)
                errors.append((index[dead["offset"]], f"{dead['reason']}: {dead['detail']}"))
            elif m.topic in (self.handler.alerts_topic, self.handler.stats_topic):
                # Alerts, and a fleet worker's blocks for the model's monitor (which raises the drift
                # alerts of these rows from them).
                publish.append(m)
            # The outcome join's changelog records: not persisted for REST rows (see the module).
        if errors:
            errors.sort()
            shown = "; ".join(f"row {i}: {detail}" for i, detail in errors[:10])
            more = f" (and {len(errors) - 10} more rows)" if len(errors) > 10 else ""
            return OipAnswer(
                400, {"error": f"{len(errors)} of {len(rows)} rows refused: {shown}{more}"}, publish
            )
        ordered = [predictions[i] for i in range(len(rows))]
        tensors = self._outputs(served, ordered)
        response: dict[str, Any] = {
            "model_name": served.name,
            "model_version": served.version,
            "outputs": [t for t in tensors if wanted is None or t["name"] in wanted],
        }
        if request_id:
            response["id"] = request_id
        return OipAnswer(200, response, publish)

    def _outputs(self, served: ServedModel, predictions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        n = len(predictions)
        if served.class_keys is None:
            values = [p["value"] for p in predictions]
            return [{"name": "value", "datatype": "FP64", "shape": [n], "data": values}]
        meta = {o["name"]: o for o in model_metadata(served)["outputs"]}
        keys = served.class_keys
        probabilities = [p["probabilities"][k] for p in predictions for k in keys]
        return [
            {
                "name": "label",
                "datatype": meta["label"]["datatype"],
                "shape": [n],
                "data": [p["label"] for p in predictions],
            },
            {"name": "probabilities", "datatype": "FP64", "shape": [n, len(keys)], "data": probabilities},
        ]


Publisher = Callable[[list[OutgoingMessage]], Awaitable[None]]
"""Publishes messages (the alerts an inference raised) and returns once Kafka acknowledged them."""


def register_oip_views(app: Any, oip: OpenInference, publish: Publisher) -> None:
    """Adds the protocol's views to a Faust app."""
    from faust import web

    def answer(view: web.View, result: OipAnswer) -> web.Response:
        if result.body is None:
            return view.bytes(b"", status=result.status)
        return view.bytes(orjson.dumps(result.body), content_type="application/json", status=result.status)

    async def infer(view: web.View, request: web.Request, name: str, version: str | None) -> web.Response:
        header = request.headers.get("Inference-Header-Content-Length")
        length = int(header) if header is not None and header.isdigit() else None
        if header is not None and length is None:
            return answer(view, OipAnswer(400, {"error": "Inference-Header-Content-Length is not a number"}))
        result = oip.infer(name, version, await request.read(), length)
        if result.publish:
            try:
                await publish(result.publish)
            except Exception as exc:  # the answer stands; the alerts are what is lost, loudly
                log.error("oip: %d alerts raised by an inference not published: %r", len(result.publish), exc)
        return answer(view, result)

    @app.page("/v2")
    class ServerMetadata(web.View):
        async def get(self, request: web.Request) -> web.Response:
            return answer(self, oip.server_metadata())

    @app.page("/v2/health/live")
    class Live(web.View):
        async def get(self, request: web.Request) -> web.Response:
            return answer(self, oip.live())

    @app.page("/v2/health/ready")
    class Ready(web.View):
        async def get(self, request: web.Request) -> web.Response:
            return answer(self, oip.ready())

    @app.page("/v2/models/{name}")
    class Model(web.View):
        async def get(self, request: web.Request, name: str) -> web.Response:
            return answer(self, oip.model_metadata(name))

    @app.page("/v2/models/{name}/versions/{version}")
    class ModelVersion(web.View):
        async def get(self, request: web.Request, name: str, version: str) -> web.Response:
            return answer(self, oip.model_metadata(name, version))

    @app.page("/v2/models/{name}/ready")
    class ModelReady(web.View):
        async def get(self, request: web.Request, name: str) -> web.Response:
            return answer(self, oip.model_ready(name))

    @app.page("/v2/models/{name}/versions/{version}/ready")
    class ModelVersionReady(web.View):
        async def get(self, request: web.Request, name: str, version: str) -> web.Response:
            return answer(self, oip.model_ready(name, version))

    @app.page("/v2/models/{name}/infer")
    class Infer(web.View):
        async def post(self, request: web.Request, name: str) -> web.Response:
            return await infer(self, request, name, None)

    @app.page("/v2/models/{name}/versions/{version}/infer")
    class InferVersion(web.View):
        async def post(self, request: web.Request, name: str, version: str) -> web.Response:
            return await infer(self, request, name, version)
