"""Serving: where a request goes, from the requests topic to a prediction.

Owns: the Kafka serving loop (``loop``: consume, hand a batch to the handler, produce, commit), the
request handler (``handler``: decode, validate, group by model, encode, infer, and turn the observers'
alerts and changelog records into messages), its fast path (``wire``: a request decoded by its model's
typed decoder, a batch's predictions serialised at once), the outgoing-message type and the contract
of records queued to go out with the messages (``messages``), the REST views (``web``: ``/predict``,
``/health``, ``/metrics``) and the Open Inference Protocol v2 (``oip``: ``/v2/...``).

May import: :mod:`agent.monitoring`, :mod:`agent.models`, :mod:`agent.errors`, :mod:`agent.kafka`,
:mod:`agent.metrics`, :mod:`agent.settings`, :mod:`schemas`. Never alerting, the app or the commands.
"""

from __future__ import annotations

__all__: list[str] = []
