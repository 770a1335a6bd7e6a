"""The message the serving loop publishes: what the request handler answers for each batch."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["OutgoingMessage"]


class OutgoingMessage(NamedTuple):
    """A message to publish. ``partition`` None means: by key hash, as Kafka's default partitioner."""

    topic: str
    key: bytes | None
    value: bytes | None
    """``None`` is a tombstone (compacted changelogs)."""
    partition: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    """Kafka record headers (the incident store marks its records with their writer)."""
