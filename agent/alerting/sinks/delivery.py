"""What the HTTP sinks share: deliveries that are retried, spooled to an outbox, and never block the stream.

A :class:`DeliverySink` turns each alert (or recovery) into *deliveries*: a document (bytes) for one
URL, with an id. ``send`` only stores and schedules them and returns (a few microseconds); at most
``max_pending`` deliveries wait at once, more are dropped, counted
(``driftline_alerts_failed{reason="queue_full"}``) and logged. A delivery is attempted up to
``max_attempts`` times: connection errors, timeouts, 408, 429 and 5xx answers are retried after an
exponential backoff with jitter (``Retry-After`` is honoured up to ``backoff_max_s``); other answers are
final (2xx delivered, 3xx/4xx rejected). Each attempt is built afresh by :meth:`DeliverySink.request`
(the webhook signs it at that time; PagerDuty adds its routing key, which is never written to disk).

With an ``outbox_dir`` every delivery is also a file in an :class:`Outbox` from ``send`` until it is
delivered, rejected or out of attempts, so those still pending when the worker stops or crashes are
sent again at its next start (the alerts agent commits an alert's offset once ``send`` returned, so
without the file a crash would lose them); a receiver may then see a delivery twice. At shutdown
pending deliveries get ``drain_timeout_s`` to finish first.

Deliveries that share an ``order`` key are attempted one after another, in the order they were
scheduled (a PagerDuty ``resolve`` never overtakes the ``trigger`` it resolves); others run concurrently,
at most ``concurrency`` requests at once.

URLs may carry credentials (Slack's incoming-webhook URLs are one), so logs name a receiver by its
scheme, host and port only, and the outbox by the SHA-256 of its URL.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, ClassVar, NamedTuple, TypedDict
from urllib.parse import urlsplit

import aiohttp

from agent.alerting.sinks.base import Sink, lock_directory
from agent.errors import ConfigurationError
from agent.metrics import Metrics
from agent.retry import Backoff

__all__ = ["DeliveryOptions", "DeliverySink", "Outbox", "Pending", "Request", "redact_url"]

log = logging.getLogger(__name__)

_USER_AGENT = "driftline/1"


def redact_url(url: str) -> str:
    """``scheme://host:port`` of ``url``: what logs may say about a receiver.

    Example:
        >>> redact_url("https://user:pw@hooks.example.com:8443/T0KEN?x=1")
        'https://hooks.example.com:8443'
    """
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


@dataclass(frozen=True)
class Request:
    """One attempt's POST: the body and the headers beyond ``User-Agent``."""

    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class Pending(NamedTuple):
    """A delivery a previous run left in the outbox."""

    key: str
    url: str
    document: bytes
    delivery_id: str
    order: str | None


class Outbox:
    """Deliveries not finished yet, one file each (``<ns>-<n>.json``), written and fsynced before
    :meth:`DeliverySink.send` returns, removed when the delivery ends.

    A file names its receiver by the SHA-256 of the URL, never the URL itself (it may hold a token):
    at :meth:`open`, a delivery whose URL is no longer configured is dropped and logged. The
    directory is locked, so two workers never share one.

    Parameters:
        directory: Where the files go.
        what: Its name in logs and errors (``webhook outbox``).
        setting: The setting that moves it, named in errors.

    Example:
        >>> import tempfile
        >>> box = Outbox(Path(tempfile.mkdtemp()))
        >>> box.open(["http://127.0.0.1:9/hook"])
        []
        >>> key = box.add("http://127.0.0.1:9/hook", b'{"alert_id": "a1"}', "a1")
        >>> box.close()
        >>> [(p.url, p.document, p.delivery_id) for p in box.open(["http://127.0.0.1:9/hook"])]
        [('http://127.0.0.1:9/hook', b'{"alert_id": "a1"}', 'a1')]
        >>> box.remove(key)
        >>> box.close()
        >>> box.open(["http://127.0.0.1:9/hook"])
        []
    """

    def __init__(
        self, directory: Path, what: str = "webhook outbox", setting: str = "DRIFTLINE_WEBHOOKS__OUTBOX_DIR"
    ) -> None:
        self.directory = directory
        self.what = what
        self.setting = setting
        self._lock: IO[bytes] | None = None
        self._seq = itertools.count()

    def open(self, urls: Sequence[str]) -> list[Pending]:
        """Locks the directory; returns the deliveries a previous run left, oldest first."""
        self._lock = lock_directory(self.directory, self.what, self.setting)
        by_hash = {_url_hash(url): url for url in urls}
        left = []
        for path in sorted(self.directory.iterdir()):
            if path.name.endswith(".tmp"):
                path.unlink()
            if path.suffix != ".json":
                continue
            try:
                record = json.loads(path.read_bytes())
                url = by_hash.get(record["url_sha256"])
                # "alert_id": the field's name since the webhook outbox's first release.
                document, delivery_id = record["body"].encode(), str(record["alert_id"])
                order = record.get("order")
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                log.error("%s: %s is unreadable (%s); dropped", self.what, path.name, type(exc).__name__)
                path.unlink(missing_ok=True)
                continue
            if url is None:
                log.warning("%s: %s was for a receiver no longer configured; dropped", self.what, delivery_id)
                path.unlink(missing_ok=True)
                continue
            left.append(Pending(path.stem, url, document, delivery_id, str(order) if order else None))
        return left

    def add(self, url: str, document: bytes, delivery_id: str, order: str | None = None) -> str:
        """Stores one delivery (atomically: a partial file is never read back); returns its key."""
        key = f"{time.time_ns():020d}-{next(self._seq):06d}"
        record = {"url_sha256": _url_hash(url), "alert_id": delivery_id, "body": document.decode()}
        if order is not None:
            record["order"] = order
        tmp = self.directory / f"{key}.tmp"
        with tmp.open("wb") as f:
            f.write(json.dumps(record).encode())
            f.flush()
            os.fsync(f.fileno())
        tmp.rename(self.directory / f"{key}.json")
        return key

    def remove(self, key: str) -> None:
        (self.directory / f"{key}.json").unlink(missing_ok=True)

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None


def _url_hash(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


class DeliveryOptions(TypedDict, total=False):
    """The keyword options of :class:`DeliverySink`, for subclasses to pass through."""

    timeout_s: float
    max_attempts: int
    backoff_initial_s: float
    backoff_max_s: float
    max_pending: int
    concurrency: int
    drain_timeout_s: float
    outbox_dir: Path | None
    metrics: Metrics | None
    clock: Callable[[], float]
    rng: random.Random | None


class DeliverySink(Sink):
    """Base of the sinks that POST documents over HTTP with retries; ``send`` never waits for the network.

    A subclass sets ``name``, ``outbox_setting``, implements :meth:`request` (one attempt's body and
    headers) and turns alerts into deliveries with :meth:`deliver` (from ``send``, and from ``recover``
    where it reports recoveries).

    Parameters:
        urls: Receivers (``http``/``https``); validated here, never echoed in an error.
        timeout_s: Per-attempt timeout (connect, send, answer).
        max_attempts: Attempts per delivery before it counts as failed.
        backoff_initial_s: Wait before the second attempt; doubles for each further one, up to
            ``backoff_max_s``, and each wait is drawn uniformly from its upper half (jitter).
        backoff_max_s: Longest wait between attempts.
        max_pending: Deliveries waiting or in retry at once; more are dropped and counted.
        concurrency: Requests in flight at once over all receivers.
        drain_timeout_s: How long ``close`` lets pending deliveries finish.
        outbox_dir: Where pending deliveries are kept (:class:`Outbox`) so that a restart sends
            them again; ``None``: in memory only.
        metrics: Prometheus counters, if given.
        clock: Unix time (the webhook signs with it); injected by tests.
        rng: Jitter source; injected by tests.
    """

    outbox_setting: ClassVar[str] = ""
    """The setting that moves the outbox, named in errors (``DRIFTLINE_WEBHOOKS__OUTBOX_DIR``)."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        timeout_s: float = 5.0,
        max_attempts: int = 5,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        max_pending: int = 1000,
        concurrency: int = 4,
        drain_timeout_s: float = 5.0,
        outbox_dir: Path | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(metrics=metrics)
        for i, url in enumerate(urls):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                # Not the URL itself: it may hold a token.
                raise ConfigurationError(f"{self.name} URL #{i + 1} is not an http(s) URL with a host")
        if max_attempts < 1:
            raise ConfigurationError(f"{self.name} max_attempts must be at least 1")
        self.urls = list(urls)
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.max_pending = max_pending
        self.drain_timeout_s = drain_timeout_s
        self._clock = clock
        self._backoff = Backoff(backoff_initial_s, backoff_max_s, rng=rng)
        self._semaphore = asyncio.Semaphore(concurrency)
        self._session: aiohttp.ClientSession | None = None
        self._ready = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_in_order: dict[str, asyncio.Task[None]] = {}
        # Deliveries are stored and scheduled one at a time, in the order deliver() was called.
        self._deliver_lock = asyncio.Lock()
        self._log = logging.getLogger(type(self).__module__)
        self.outbox = (
            Outbox(outbox_dir, f"{self.name} outbox", self.outbox_setting) if outbox_dir is not None else None
        )

    def request(self, url: str, document: bytes, delivery_id: str) -> Request:
        """One attempt's POST for a delivery (called afresh for every attempt)."""
        raise NotImplementedError

    @property
    def pending(self) -> int:
        """Deliveries not finished yet (waiting, in flight or between attempts)."""
        return len(self._tasks)

    async def start(self) -> None:
        # The outbox first: a directory locked by another worker fails the start before anything opens.
        left = self.outbox.open(self.urls) if self.outbox is not None else []
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            headers={"User-Agent": _USER_AGENT},
        )
        self._ready.set()
        if left:
            self._log.info(
                "%s: %d deliveries left pending by the previous run; sending them again", self.name, len(left)
            )
        for p in left:
            self._schedule(p.url, p.document, p.delivery_id, p.key, p.order)

    async def deliver(self, url: str, document: bytes, delivery_id: str, order: str | None = None) -> None:
        """Stores (in the outbox, if any) and schedules one delivery; drops and counts it if
        ``max_pending`` deliveries are already waiting. Returns once the delivery is stored: its
        file is written and fsynced in a thread, not on the event loop the serving loop shares."""
        async with self._deliver_lock:
            await self._store_and_schedule(url, document, delivery_id, order)

    async def _store_and_schedule(
        self, url: str, document: bytes, delivery_id: str, order: str | None
    ) -> None:
        if len(self._tasks) >= self.max_pending:
            self._count_failed("queue_full")
            self._log.error(
                "%s %s: %s dropped: %d deliveries already pending",
                self.name,
                redact_url(url),
                delivery_id,
                len(self._tasks),
            )
            return
        key = None
        if self.outbox is not None:
            try:
                key = await asyncio.to_thread(self.outbox.add, url, document, delivery_id, order)
            except OSError as exc:
                self._log.error(
                    "%s outbox %s: %s not stored (%s); delivering it from memory only",
                    self.name,
                    self.outbox.directory,
                    delivery_id,
                    exc.strerror or type(exc).__name__,
                )
        self._schedule(url, document, delivery_id, key, order)

    def _schedule(
        self, url: str, document: bytes, delivery_id: str, key: str | None, order: str | None
    ) -> None:
        after = self._last_in_order.get(order) if order is not None else None
        task = asyncio.create_task(self._deliver(url, document, delivery_id, key, after))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if order is not None:
            self._last_in_order[order] = task
            task.add_done_callback(lambda t: self._forget_order(order, t))

    def _forget_order(self, order: str, task: asyncio.Task[None]) -> None:
        if self._last_in_order.get(order) is task:
            del self._last_in_order[order]

    async def flush(self) -> None:
        await self._drain(self.drain_timeout_s)

    async def close(self) -> None:
        await self._drain(self.drain_timeout_s)
        left = list(self._tasks)
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self.outbox is not None:
            self.outbox.close()
        self._ready.clear()

    async def _drain(self, timeout: float) -> None:
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        if pending:
            self._log.warning("%s: %d deliveries still pending after %g s", self.name, len(pending), timeout)

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Wait after failed attempt number ``attempt`` (1-based)."""
        delay = self._backoff.delay(attempt)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_max_s))
        return delay

    async def _deliver(
        self,
        url: str,
        document: bytes,
        delivery_id: str,
        key: str | None,
        after: asyncio.Task[None] | None,
    ) -> None:
        try:
            if after is not None and not after.done():
                await asyncio.wait([after])  # its outcome is its own: only its end matters here
            await self._attempts(url, document, delivery_id)
        except asyncio.CancelledError:
            if key is None:
                self._count_failed("shutdown")
                self._log.error(
                    "%s %s: %s still pending at shutdown; not delivered",
                    self.name,
                    redact_url(url),
                    delivery_id,
                )
            else:
                self._log.warning(
                    "%s %s: %s still pending at shutdown; kept in the outbox for the next start",
                    self.name,
                    redact_url(url),
                    delivery_id,
                )
            raise
        if key is not None and self.outbox is not None:
            self.outbox.remove(key)  # delivered, rejected or out of attempts: the delivery is over

    async def _attempts(self, url: str, document: bytes, delivery_id: str) -> None:
        where = f"{self.name} {redact_url(url)}"
        await self._ready.wait()
        for attempt in range(1, self.max_attempts + 1):
            async with self._semaphore:
                outcome, retry_after = await self._attempt(url, document, delivery_id)
            if outcome == "delivered":
                self._count_delivered()
                if attempt > 1:
                    self._log.info("%s: %s delivered at attempt %d", where, delivery_id, attempt)
                return
            if outcome.startswith("rejected"):
                self._count_failed("rejected")
                self._log.error("%s: %s %s; not retried", where, delivery_id, outcome)
                return
            if attempt == self.max_attempts:
                self._count_failed("attempts")
                self._log.error(
                    "%s: %s not delivered after %d attempts (last: %s)", where, delivery_id, attempt, outcome
                )
                return
            delay = self.backoff(attempt, retry_after)
            (self._log.warning if attempt == 1 else self._log.debug)(
                "%s: %s attempt %d failed (%s); retrying in %.2f s",
                where,
                delivery_id,
                attempt,
                outcome,
                delay,
            )
            self._count_retry()
            await asyncio.sleep(delay)

    async def _attempt(self, url: str, document: bytes, delivery_id: str) -> tuple[str, float | None]:
        """One POST: ``("delivered" | "rejected ..." | "<retryable reason>", Retry-After seconds)``."""
        session = self._session
        if session is None:
            return "sink closed", None
        request = self.request(url, document, delivery_id)
        try:
            async with session.post(
                url, data=request.body, headers=request.headers, allow_redirects=False
            ) as response:
                status = response.status
                retry_after = response.headers.get("Retry-After", "")
                await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The exception's text can echo the URL (with its credentials): log its type only.
            return type(exc).__name__, None
        if 200 <= status < 300:
            return "delivered", None
        if status in (408, 429) or status >= 500:
            return f"HTTP {status}", float(retry_after) if retry_after.isdigit() else None
        return f"rejected with HTTP {status}", None
