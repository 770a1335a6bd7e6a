"""Where alerts and metrics go: a :class:`Sink` per destination, and a fan-out that isolates them.

``base`` holds the contract (:class:`Sink`, :class:`Recovery`; the metrics points are
:class:`agent.metrics.MetricPoint`); ``fanout`` sends to every sink and keeps one sink's failure from
touching the others; ``delivery`` is the retried, spooled HTTP delivery that ``webhook``, ``slack`` and
``pagerduty`` share; ``influx`` and ``kafka`` are the other sinks. The modules of the sinks import their
clients, so import them directly (``agent.alerting.sinks.influx``).
"""

from __future__ import annotations

from agent.alerting.sinks.base import Recovery, Sink, SinkStats
from agent.alerting.sinks.fanout import SinkFanout

__all__ = ["Recovery", "Sink", "SinkFanout", "SinkStats"]
