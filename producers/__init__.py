"""Event producers: publish prediction requests and outcomes to Kafka. Imports `schemas`, never `agent`.

What a team runs next to its application, and what the demo and the benchmark reuse:

- :func:`~producers.scenarios.generate`: a seeded stream over an example model's data under a named
  or scripted drift schedule (:class:`~producers.schedule.Scenario`), as ``(key, value, kind)``
  :class:`~producers.stream.Message` items, without Kafka;
- :func:`~producers.replay.replay`: the same from a CSV file for a model package;
- :func:`~producers.publish.publish`: sends a stream to the requests and outcomes topics, paced and
  batched, with delayed outcomes.
"""

from __future__ import annotations

from producers.config import ProducerSettings
from producers.errors import (
    ColumnMismatchError,
    ProducerError,
    PublishError,
    ScheduleError,
    SourceError,
)
from producers.publish import Progress, PublishSummary, TokenBucket, publish
from producers.replay import replay
from producers.scenarios import SCENARIOS, builtin_scenario, generate
from producers.schedule import Scenario, ScheduledDrift
from producers.stream import EventStream, Message, MessageKind, StreamStats

__all__ = [
    "SCENARIOS",
    "ColumnMismatchError",
    "EventStream",
    "Message",
    "MessageKind",
    "ProducerError",
    "ProducerSettings",
    "Progress",
    "PublishError",
    "PublishSummary",
    "Scenario",
    "ScheduleError",
    "ScheduledDrift",
    "SourceError",
    "StreamStats",
    "TokenBucket",
    "builtin_scenario",
    "generate",
    "publish",
    "replay",
]
