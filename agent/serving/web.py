"""REST endpoints on Faust's web server: ``POST /predict``, ``GET /health``, ``GET /metrics``.

``/predict`` goes through the same :class:`~agent.serving.handler.RequestHandler` as the stream, so a request
is validated and predicted exactly as it would be on Kafka; REST predictions are answered, not
published. Bodies are one ``PredictionRequest`` object or a list of them; if any is bad the answer is
422 naming each bad item and its reason, and nothing is predicted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from agent.metrics import CONTENT_TYPE, Metrics
from agent.serving.handler import Record, RequestHandler

__all__ = ["PredictResult", "predict_payloads", "register_views"]

REST_TOPIC = "rest"


@dataclass(frozen=True)
class PredictResult:
    """Status and JSON body of a ``/predict`` answer."""

    status: int
    body: Any


def predict_payloads(handler: RequestHandler, body: bytes) -> PredictResult:
    """Serves a ``/predict`` body (one request object or a list of them)."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        # Python's json writes NaN literals that orjson refuses; let the handler's parser decide.
        parsed = None
    if isinstance(parsed, list):
        items = [orjson.dumps(item) for item in parsed]
        single = False
    else:
        items = [body]
        single = True
    if not items:
        return PredictResult(422, {"errors": [{"index": None, "reason": "invalid", "detail": "empty list"}]})
    # Partition and offset both carry the item's index: predictions keep the request's partition,
    # dead letters record the offset, and neither keeps the input order across models.
    records = [Record(REST_TOPIC, i, i, None, item) for i, item in enumerate(items)]
    messages = handler.handle(records, observe=False)
    predictions: dict[int, Any] = {}
    errors: list[dict[str, Any]] = []
    for m in messages:
        if m.value is None:
            continue
        if m.topic == handler.dead_letters_topic:
            dead = orjson.loads(m.value)
            errors.append({"index": dead["offset"], "reason": dead["reason"], "detail": dead["detail"]})
        elif m.topic == handler.predictions_topic and m.partition is not None:
            predictions[m.partition] = orjson.loads(m.value)
    if errors:
        errors.sort(key=lambda e: e["index"])
        return PredictResult(422, {"errors": errors})
    ordered = [predictions[i] for i in range(len(items))]
    return PredictResult(200, ordered[0] if single else ordered)


def register_views(
    app: Any,
    handler: RequestHandler,
    metrics: Metrics,
    health: Callable[[], tuple[bool, dict[str, Any]]],
) -> None:
    """Adds the three views to a Faust app."""
    from faust import web

    @app.page("/predict")
    class Predict(web.View):
        async def post(self, request: web.Request) -> web.Response:
            body = await request.read()
            # In a thread: ONNX Runtime (which releases the GIL) and the encoding would otherwise hold
            # the event loop, and the serving loop with it, for the whole request.
            result = await asyncio.to_thread(predict_payloads, handler, body)
            return self.bytes(
                orjson.dumps(result.body), content_type="application/json", status=result.status
            )

    @app.page("/health")
    class Health(web.View):
        async def get(self, request: web.Request) -> web.Response:
            ready, detail = health()
            body = {"status": "ready" if ready else "starting", **detail}
            return self.bytes(
                orjson.dumps(body), content_type="application/json", status=200 if ready else 503
            )

    @app.page("/metrics")
    class MetricsView(web.View):
        async def get(self, request: web.Request) -> web.Response:
            # aiohttp refuses a content_type with parameters; Prometheus' has version and charset.
            return self.bytes(metrics.render(), headers={"Content-Type": CONTENT_TYPE})
