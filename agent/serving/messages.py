"""The message the serving loop publishes: what the request handler answers for each batch, and the
records that must go out in the same produce request as the messages they belong to."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import NamedTuple, Protocol

__all__ = ["OutgoingMessage", "QueuedRecords", "taken_if_pending"]


class OutgoingMessage(NamedTuple):
    """A message to publish. ``partition`` None means: by key hash, as Kafka's default partitioner."""

    topic: str
    key: bytes | None
    value: bytes | None
    """``None`` is a tombstone (compacted changelogs)."""
    partition: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    """Kafka record headers (the incident store marks its records with their writer)."""


class QueuedRecords(Protocol):
    """Records queued by one writer that a publisher may take and send with its own messages: the
    incident store's records, sent in the produce request of the alerts that opened the incidents
    (:meth:`~agent.alerting.incident_store.KafkaIncidentStore.taken`)."""

    @property
    def pending(self) -> int:
        """How many records to take now: 0 while they cannot be sent yet (the incident store before it
        has made sure of its topic), and the publisher then leaves them to their writer."""
        ...

    def taken(self) -> AbstractAsyncContextManager[list[OutgoingMessage]]:
        """The queued records, to publish within the ``async with`` block: they count as written when
        it ends without an error, and go back to the queue when it raises."""
        ...


@asynccontextmanager
async def taken_if_pending(queued: QueuedRecords | None) -> AsyncIterator[Sequence[OutgoingMessage]]:
    """What a publisher sends with its messages: ``queued``'s records, taken, when it has any ready
    (:attr:`QueuedRecords.pending`); else nothing, and its writer is not held up."""
    if queued is None or not queued.pending:
        yield ()
        return
    async with queued.taken() as records:
        yield records
