"""What the Kafka clients do while a broker is down: retry with a backoff, and say so in a few lines.

aiokafka (0.14) has no reconnect backoff (Java's ``reconnect.backoff.ms``/``.max.ms``, KIP-144;
aio-libs/aiokafka#496 and #1014). With the broker down, a producer with batches to send asks for
metadata again as soon as the previous attempt failed, and every attempt logs two ERROR lines: a
worker logged 86,000 lines in a 15 s outage, 417,000 in 75 s, almost all ``Unable connect to node``
and ``Unable to update metadata``, and spent a core on them.

:func:`install` does three things, for every aiokafka client of the process (Faust's too):

* **A reconnect backoff.** ``AIOKafkaClient._get_conn`` is wrapped: after a failed connection to a
  node, the client's next attempt to that node waits first, from its ``retry_backoff_ms`` doubling
  up to 1 s with 20 % jitter, as Java clients do. Every retry loop (the producer's sender, the
  fetcher, the group coordinator, metadata updates) connects through it.
* **Repeated errors summarised.** A :class:`RepeatSummary` filter on the Kafka clients' loggers lets
  one WARNING-or-worse record of each kind (logger, level, message template) through per minute; the
  next one after the minute says how many were held back.
* **One line each way.** The first failed connection to a broker logs ``Kafka unreachable``, the
  first connection to it after that ``Kafka reachable again``, with how long it was away
  (:class:`BrokerWatch`).

Example:
    >>> clock = iter([0.0, 1.0, 2.0, 61.0]).__next__
    >>> summary = RepeatSummary(window_s=60, clock=clock)
    >>> def record(n: int) -> logging.LogRecord:
    ...     message = "Unable connect to node %s"
    ...     return logging.LogRecord("aiokafka", logging.ERROR, "", 0, message, (n,), None)
    >>> [summary.filter(record(1)), summary.filter(record(1)), summary.filter(record(1))]
    [True, False, False]
    >>> late = record(1)
    >>> summary.filter(late), late.getMessage()
    (True, 'Unable connect to node 1 [and 2 more like it in the last 61 s, not logged]')
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

__all__ = ["BACKOFF_MAX_S", "BrokerWatch", "RepeatSummary", "install", "reconnect_backoff"]

log = logging.getLogger(__name__)

BACKOFF_MAX_S = 1.0
"""Longest wait between two connection attempts to one node (Java clients' default too)."""

_MAX_KINDS = 1000
"""Kinds of records a summary remembers; beyond, the oldest are forgotten (a library that formats its
messages itself would otherwise make every record a kind of its own)."""


class RepeatSummary(logging.Filter):
    """Lets one WARNING-or-worse record of each kind through per ``window_s``; the first one after the
    window says how many were held back. Lower levels pass untouched.

    A kind is the record's logger, level and message template (``record.msg``, before its arguments):
    ``Unable connect to node %s: %s`` is one kind, whatever the node and the error.

    Parameters:
        window_s: How long a kind stays quiet after one of its records went through.
        clock: Monotonic seconds, injected by tests.
    """

    def __init__(self, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window_s = window_s
        self.clock = clock
        self.held_back = 0
        """Records not logged, since start."""
        self._kinds: dict[tuple[str, int, str], list[float]] = {}  # kind -> [window start, held back]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        template = record.msg if isinstance(record.msg, str) else type(record.msg).__name__
        kind = (record.name, record.levelno, template)
        now = self.clock()
        seen = self._kinds.get(kind)
        if seen is not None and now - seen[0] < self.window_s:
            seen[1] += 1
            self.held_back += 1
            return False
        if seen is not None and seen[1]:
            record.msg = (
                f"{record.getMessage()} [and {seen[1]:.0f} more like it in the last {now - seen[0]:.0f} s, "
                "not logged]"
            )
            record.args = ()  # not None: mode's formatter would make that (None,) and format with it
        self._kinds.pop(kind, None)
        self._kinds[kind] = [now, 0]
        if len(self._kinds) > _MAX_KINDS:
            del self._kinds[next(iter(self._kinds))]
        return True


class BrokerWatch:
    """Logs once when a broker cannot be reached, and once when it can again.

    Parameters:
        summary: Its count of held-back records is reported when the broker is back.
        clock: Monotonic seconds, injected by tests.
    """

    def __init__(
        self, summary: RepeatSummary | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.summary = summary
        self.clock = clock
        self._down: dict[str, tuple[float, int]] = {}  # broker -> (since, held back then)

    @property
    def unreachable(self) -> list[str]:
        """The brokers that could not be reached at the last attempt."""
        return sorted(self._down)

    def failed(self, broker: str) -> None:
        if broker in self._down:
            return
        self._down[broker] = (self.clock(), self.summary.held_back if self.summary else 0)
        log.warning(
            "Kafka unreachable: cannot connect to broker %s. The Kafka clients retry every %g s at most "
            "and log each kind of error once a minute until it answers again",
            broker,
            BACKOFF_MAX_S,
        )

    def connected(self, broker: str) -> None:
        down = self._down.pop(broker, None)
        if down is None:
            return
        since, held_back = down
        held = (self.summary.held_back if self.summary else 0) - held_back
        log.warning(
            "Kafka reachable again: connected to broker %s after %.1f s (%d repeated Kafka client log "
            "records not logged meanwhile)",
            broker,
            self.clock() - since,
            held,
        )


def reconnect_backoff(failures: int, base_s: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before the next connection attempt after ``failures`` failed ones in a row:
    ``base_s`` doubling per failure up to :data:`BACKOFF_MAX_S`, within 20 % jitter.

    >>> rng = random.Random(0)
    >>> [round(reconnect_backoff(n, 0.1, rng), 3) for n in (1, 2, 3, 4, 5, 9)]
    [0.114, 0.221, 0.387, 0.723, 1.005, 0.962]
    """
    exact: float = min(base_s * 2 ** (failures - 1), BACKOFF_MAX_S)
    return exact * (rng or random).uniform(0.8, 1.2)


class _NodeBackoff:
    __slots__ = ("failures", "not_before")

    def __init__(self) -> None:
        self.failures = 0
        self.not_before = 0.0


GetConn = Callable[..., Awaitable[Any]]


def _with_backoff(get_conn: GetConn, watch: BrokerWatch) -> GetConn:
    """``AIOKafkaClient._get_conn`` that waits out a node's backoff before connecting to it. It
    answers ``None`` when the connection cannot be made (aiokafka's "not ready"), as before."""

    @functools.wraps(get_conn)
    async def _get_conn(self: Any, node_id: Any, *args: Any, **kwargs: Any) -> Any:
        nodes: dict[Any, _NodeBackoff] = self.__dict__.setdefault("_driftline_backoff", {})
        state = nodes.get(node_id)
        if state is not None:
            wait = state.not_before - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        conn = await get_conn(self, node_id, *args, **kwargs)
        if conn is None:
            if state is None:
                state = nodes[node_id] = _NodeBackoff()
            state.failures += 1
            state.not_before = time.monotonic() + reconnect_backoff(
                state.failures, float(getattr(self, "_retry_backoff", 0.1))
            )
            watch.failed(_broker(self, node_id))
        elif state is not None and nodes.pop(node_id, None) is not None:
            # (Callers that waited out the same backoff all get here; the first one reports it.)
            watch.connected(_broker(self, node_id))
        return conn

    _get_conn.__driftline_backoff__ = True  # type: ignore[attr-defined]
    return _get_conn


def _broker(client: Any, node_id: Any) -> str:
    try:
        broker = client.cluster.broker_metadata(node_id)
    except Exception:  # a node id the metadata does not know ("bootstrap", a stale one)
        broker = None
    return f"{broker.host}:{broker.port}" if broker is not None else f"node {node_id}"


_installed: tuple[RepeatSummary, BrokerWatch] | None = None


def install(loggers: Iterable[logging.Logger] = ()) -> BrokerWatch:
    """Installs the reconnect backoff, the summary filter on aiokafka's and Faust's Kafka loggers (and
    on ``loggers``), and the broker watch; once per process, later calls only add ``loggers``."""
    global _installed
    import aiokafka.admin  # its loggers exist once imported
    from aiokafka.client import AIOKafkaClient

    if _installed is None:
        summary = RepeatSummary()
        watch = BrokerWatch(summary)
        get_conn = getattr(AIOKafkaClient, "_get_conn", None)
        if asyncio.iscoroutinefunction(get_conn) and not hasattr(get_conn, "__driftline_backoff__"):
            AIOKafkaClient._get_conn = _with_backoff(get_conn, watch)
        else:  # an aiokafka whose internals changed: its own behaviour, and this says so
            log.warning("aiokafka %s: no reconnect backoff installed", aiokafka.__version__)
        names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] == "aiokafka"]
        names += ["aiokafka", "faust.transport.drivers.aiokafka", "faust.transport.consumer"]
        for name in sorted(set(names)):
            logging.getLogger(name).addFilter(summary)
        _installed = (summary, watch)
    summary, watch = _installed
    for logger in loggers:
        if summary not in logger.filters:
            logger.addFilter(summary)
    return watch
