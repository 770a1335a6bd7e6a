"""The models' one monitor in a fleet: a Faust agent over the statistics topic, partitioned by model.

Every worker ships its monitors' blocks to the statistics topic keyed by model
(:mod:`agent.monitoring.fleet`); the worker that Faust's group assigns a partition of that topic
hosts the monitors of the models keyed there. :class:`FleetMonitor` (plain logic, no Faust) runs
each record through its :class:`~agent.monitoring.observer.DriftObserver` and publishes what passes
the incident gate to the alerts topic, before the record's offset is committed; the incident records
those alerts opened or changed go in the same produce request
(:class:`~agent.serving.messages.QueuedRecords`), so that a host killed once its alert is on the topic
has recorded the incident too. This is the low volume, keyed, stateful stream Faust's agents fit: a
few records per batch of requests, not per event.

**State** (detectors, windows, detection counts) is rebuilt by replaying the topic: when a partition
is assigned, the first record the agent reads from it is preceded by a read-back of that partition
up to that record, from ``monitoring.stats_replay_s`` ago but at most its last
``monitoring.stats_replay_records`` records, with no alert raised (the incidents they raised are in
the incident store, which every worker reads). Why a replay: the detectors' state is a function of
the blocks they were fed, river's ADWIN (Rust) has no serialised form but pickle, and the blocks
already sit in the topic in a declared format, so there is no second copy to keep consistent. Within
the bounds the rebuilt state is exactly that of a monitor that never stopped (a test checks the
detection lands on the same event); beyond them the detectors start from their reference anchoring
plus the bounded history, as a freshly started monitor does. Revoked partitions' monitors are
dropped.

The read-back stops at the group's **committed offset** (taken when the partition is assigned), not
at the first record Faust hands the agent: across a rebalance Faust skips, and acknowledges, records
it fetched for an older generation, so the agent's first record can come after the committed offset.
Records from there on were never handled by the previous host (it commits after publishing their
alerts): they are handled live, alerts and all, as if Faust had delivered them.

May import: :mod:`agent.monitoring`, :mod:`agent.serving.messages`, :mod:`agent.retry` (kernel).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

from agent.monitoring.batch import Observed
from agent.monitoring.fleet import WORKER_STATS, decode_stats
from agent.monitoring.observer import DriftObserver
from agent.retry import Backoff
from agent.serving.messages import OutgoingMessage, QueuedRecords, taken_if_pending
from schemas.alert import encode_alert
from schemas.incident import encode_incident

__all__ = ["FleetMonitor"]

log = logging.getLogger(__name__)


class Replay(Protocol):
    """``replay(partition, until, apply)``: hands ``apply`` the values of the partition's records before
    offset ``until``, from as far back as the monitor reads (``first``: from that offset, with no
    other bound); False if it was cut short."""

    def __call__(
        self, partition: int, until: int, apply: Callable[[list[bytes]], None], first: int | None = None
    ) -> Awaitable[bool]: ...


class FleetMonitor:
    """Statistics records in, alerts and incident reports out, with state rebuilt per partition.

    Parameters:
        observer: The monitors (a :class:`DriftObserver` that runs detectors, not one that ships).
        publish: Publishes messages and waits for their acknowledgement.
        alerts_topic: Where alerts and incident reports go.
        replay: Reads a partition back (see :data:`Replay`).
        backoff: Between attempts to publish.
        incidents: Where the incident gate's records wait to be written; they are published with
            the alerts. None: the store writes them itself (an in-memory store has none to write).
    """

    def __init__(
        self,
        observer: DriftObserver,
        publish: Callable[[list[OutgoingMessage]], Awaitable[None]],
        alerts_topic: str,
        replay: Replay,
        *,
        backoff: Backoff | None = None,
        incidents: QueuedRecords | None = None,
    ) -> None:
        self.observer = observer
        self.publish = publish
        self.alerts_topic = alerts_topic
        self.replay = replay
        self.backoff = backoff or Backoff(0.5, 30.0)
        self.incidents = incidents
        self._ready: set[int] = set()
        self._committed: dict[int, int] = {}
        self._models: dict[int, set[tuple[str, str]]] = {}
        self.records = 0
        """Statistics records handled live (not replayed)."""
        self.replayed = 0
        """Statistics records read back."""
        self.busy_s = 0.0
        """Time spent handling live records (the monitor's CPU, roughly)."""

    def assigned(self, partitions: Iterable[int], committed: Mapping[int, int] | None = None) -> None:
        """Partitions newly given to this worker: each is read back before its first record.
        ``committed``: the group's committed offset of each, as assigned (where its previous host
        stopped); without one, the read-back stops at the first record the agent is handed."""
        for p in partitions:
            self._ready.discard(p)
            self._committed.pop(p, None)
            if committed is not None and p in committed:
                self._committed[p] = committed[p]

    def revoked(self, partitions: Iterable[int]) -> None:
        """Partitions taken away: their models' monitors go (their new host rebuilds them)."""
        for p in partitions:
            self._ready.discard(p)
            self._committed.pop(p, None)
            for model, version in self._models.pop(p, set()):
                self.observer.forget(model, version)

    async def handle(self, partition: int, offset: int, value: bytes | None) -> None:
        """One record of the statistics topic, read live by the agent."""
        if partition not in self._ready:
            for missed in await self._restore(partition, offset):
                await self._live(partition, missed)
        await self._live(partition, value)

    async def _live(self, partition: int, value: bytes | None) -> None:
        started = time.perf_counter()
        observed = self._apply(partition, value, replay=False)
        self.records += 1
        messages = self.messages(observed)
        self.busy_s += time.perf_counter() - started
        if not messages:
            return
        async with taken_if_pending(self.incidents) as records:
            await self._publish([*messages, *records])

    async def _publish(self, messages: list[OutgoingMessage]) -> None:
        """Publishes until the broker takes them: the record is not acknowledged (its offset not
        committed) before, and the detectors will not raise these alerts again (their incidents are
        open), so giving up would lose them."""
        attempt = 0
        while True:
            try:
                await self.publish(messages)
            except Exception as e:
                attempt += 1
                delay = self.backoff.delay(attempt)
                if attempt == 1 or attempt % 10 == 0:
                    log.warning(
                        "fleet monitor: publishing %d alert records failed (%s, attempt %d); "
                        "retrying in %.1f s",
                        len(messages),
                        type(e).__name__,
                        attempt,
                        delay,
                    )
                await asyncio.sleep(delay)
                continue
            if attempt:
                log.info(
                    "fleet monitor: %d alert records published after %d failures", len(messages), attempt
                )
            return

    def messages(self, observed: Observed) -> list[OutgoingMessage]:
        out = [
            OutgoingMessage(self.alerts_topic, a.alert_id.encode(), encode_alert(a)) for a in observed.alerts
        ]
        out.extend(
            OutgoingMessage(self.alerts_topic, f"incident/{r.incident_id}".encode(), encode_incident(r))
            for r in observed.incidents
        )
        return out

    def _apply(self, partition: int, value: bytes | None, *, replay: bool) -> Observed:
        if value is None:
            return Observed()
        try:
            stats = decode_stats(value)
        except ValueError as e:
            log.warning("fleet monitor: a record of statistics partition %d skipped: %s", partition, e)
            return Observed()
        self._models.setdefault(partition, set()).add((stats.model, stats.version))
        return self.observer.observe_stats(stats, replay=replay)

    async def _restore(self, partition: int, until: int) -> list[bytes]:
        """Reads the partition back up to its committed offset (or ``until``, the agent's first record);
        returns the records from the committed offset to ``until``, which no host handled yet."""
        started = time.monotonic()
        before = self.replayed

        def apply(values: list[bytes]) -> None:
            for value in values:
                self._apply(partition, value, replay=True)
            self.replayed += len(values)

        committed = self._committed.pop(partition, None)
        stop = until if committed is None else min(committed, until)
        complete = await self.replay(partition, stop, apply)
        missed: list[bytes] = []
        if stop < until:
            complete = await self.replay(partition, until, missed.extend, stop) and complete
            log.warning(
                "fleet monitor: statistics partition %d: offsets %d-%d (%d records) were committed by "
                "the group but never handed to this monitor (Faust skips records fetched across a "
                "rebalance); handled live",
                partition,
                stop,
                until - 1,
                len(missed),
            )
        self._ready.add(partition)
        log.info(
            "fleet monitor: hosting statistics partition %d; read back %d records in %.2f s%s; "
            "first live offset %d, the group's committed offset %s",
            partition,
            self.replayed - before,
            time.monotonic() - started,
            "" if complete else " (cut short by DRIFTLINE_MONITORING__STATS_REPLAY_TIMEOUT_S)",
            stop,
            "unknown" if committed is None else committed,
        )
        return missed

    def stats(self) -> dict[str, Any]:
        """For ``/health``: the partitions hosted (read back), the models seen on them, the records
        handled live and read back, and the seconds spent on live records."""
        return {
            "hosting": sorted(self._ready),
            "models": sorted(
                f"{m}/{v}" for models in self._models.values() for m, v in models if m != WORKER_STATS
            ),
            "records": self.records,
            "replayed": self.replayed,
            "busy_s": round(self.busy_s, 3),
        }
