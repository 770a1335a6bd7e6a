"""The naive baseline of ``python -m bench``: a plain Faust agent that serves one event at a time.

What a reasonable first version of driftline would be, written the way Faust's docs show it:

* a stock ``@app.agent`` over the requests topic, ``async for key, value in stream.items()``;
* per event: ``PredictionRequest.model_validate_json`` (pydantic), the 20 features into a one-row
  float32 array, one ONNX Runtime call for that row (:class:`agent.models.package.LoadedModel`), river's
  ADWIN and Page-Hinkley updated with the raw value of every feature and with the model's output
  (positive-class probability), and the prediction (the same JSON fields driftline publishes)
  sent with ``await topic.send(...)``;
* Faust commits offsets itself (at least once: an event is acked after the agent body ran).

It is not handicapped: the Faust settings are the ones driftline's own app uses (web server on
127.0.0.1, session timeout 10 s with 1 s heartbeats, producer linger 5 ms, logging at INFO with the
worker's spinner off, so Faust does not put the root logger at DEBUG), plus a 32 MiB fetch size,
without which Faust's consumer starves at about 2k events/s on this broker (``bench/faust_options.py``
measured that: its hard-coded 1.5 s fetch wait and the idle assignor partition).

Run by ``bench/run.py`` as its own process: ``python -m bench._naive '<json config>'``.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from pydantic import ValidationError
from river import drift as river_drift

from agent.models.package import LoadedModel
from schemas.events import PredictionRequest

__all__ = ["NaiveHandler", "main"]


class NaiveHandler:
    """Everything the naive agent does for one event, without Kafka: validate, infer, monitor, encode.

    Parameters:
        package: The model package directory (``classification-20/1``).
    """

    def __init__(self, package: Path | str) -> None:
        self.model = LoadedModel(package).load()
        manifest = self.model.manifest
        self.name, self.version = manifest.name, manifest.version
        self.features = manifest.feature_names
        labels = manifest.outputs.class_labels or ()
        self.class_keys = [str(label) for label in labels]
        columns = len(self.features) + 1  # every feature, and the model's output
        self.detectors = [(river_drift.ADWIN(), river_drift.PageHinkley()) for _ in range(columns)]
        self.detections = 0
        self.invalid = 0

    def handle(self, value: bytes) -> bytes | None:
        """The prediction message for one request (None for a request it cannot serve)."""
        received = datetime.now(UTC)
        try:
            request = PredictionRequest.model_validate_json(value)
            row = np.array([[float(request.features[f]) for f in self.features]], dtype=np.float32)  # type: ignore[arg-type]
        except (ValidationError, KeyError, TypeError, ValueError):
            self.invalid += 1
            return None
        predictions = self.model.predict(row)
        assert predictions.probabilities is not None and predictions.labels is not None
        probabilities = predictions.probabilities[0].astype(np.float64).tolist()
        observed = [*row[0].tolist(), probabilities[-1]]
        for x, (adwin, page_hinkley) in zip(observed, self.detectors, strict=True):
            adwin.update(x)
            page_hinkley.update(x)
            self.detections += adwin.drift_detected + page_hinkley.drift_detected
        now = datetime.now(UTC)
        return orjson.dumps(
            {
                "schema_version": "1",
                "request_id": request.request_id,
                "model": self.name,
                "model_version": self.version,
                "label": predictions.labels[0].item(),
                "probabilities": dict(zip(self.class_keys, probabilities, strict=True)),
                "event_time": request.event_time,
                "predicted_at": now,
                "latency_ms": round((now - received).total_seconds() * 1000.0, 3),
            }
        )


def run_worker(cfg: dict[str, Any]) -> None:
    """Runs the naive Faust worker until it is terminated (SIGTERM)."""
    import faust

    handler = NaiveHandler(cfg["package"])
    app = faust.App(
        cfg["app_id"],
        broker=f"kafka://{cfg['bootstrap']}",
        datadir=cfg["data_dir"],
        autodiscover=False,
        store="memory://",
        web_bind="127.0.0.1",
        web_host="127.0.0.1",
        web_port=cfg["web_port"],
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        producer_linger=0.005,
        consumer_max_fetch_size=32 * 1024 * 1024,
        topic_partitions=cfg["partitions"],
        topic_replication_factor=1,
    )
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    requests = app.topic(cfg["requests"], **raw)
    predictions = app.topic(cfg["predictions"], **raw)

    @app.agent(requests)
    async def serve(stream: Any) -> None:
        async for key, value in stream.items():
            out = handler.handle(value)
            if out is not None:
                await predictions.send(key=key, value=out)

    worker = faust.Worker(app, loglevel="info")
    worker.spinner = None  # as `driftline run`: the spinner would put the root logger at DEBUG
    worker.execute_from_commandline()


def main(argv: list[str]) -> None:
    run_worker(json.loads(argv[1]))


if __name__ == "__main__":
    main(sys.argv)
