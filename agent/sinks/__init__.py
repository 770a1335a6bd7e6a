"""Where alerts and metrics go: a :class:`Sink` per destination, and a fan-out that isolates them.

``base`` holds the contract (:class:`Sink`, :class:`MetricPoint`); ``fanout`` sends to every sink and
keeps one sink's failure from touching the others; ``influx``, ``webhook`` and ``kafka`` are the sinks.
The modules of the sinks import their clients, so import them directly (``agent.sinks.influx``).
"""

from __future__ import annotations

from agent.sinks.base import MetricPoint, Sink, SinkStats
from agent.sinks.fanout import SinkFanout

__all__ = ["MetricPoint", "Sink", "SinkFanout", "SinkStats"]
