"""Alerting: what happens to an alert after the serving loop has published it.

Owns: the alerts agent and the metrics timer wired on the Faust app (``wiring``), the Kafka-backed
incident store (``incident_store``), and the sinks (``sinks/``: InfluxDB, webhooks, Kafka, and the
fan-out that isolates them).

May import: :mod:`agent.monitoring` (the incident gate), :mod:`agent.serving.messages`,
:mod:`agent.errors`, :mod:`agent.kafka`, :mod:`agent.metrics`, :mod:`agent.retry`, :mod:`agent.settings`,
:mod:`schemas`. Never the app or the commands.
"""

from __future__ import annotations

__all__: list[str] = []
