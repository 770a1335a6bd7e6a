"""Alerts POSTed as signed JSON to every configured receiver, retried, never blocking the stream.

Each alert is POSTed to each URL as its JSON (the same bytes as on the alerts topic) with these headers:

* ``Content-Type: application/json``
* ``X-Driftline-Alert-Id: <alert id>``: deterministic per incident; drop duplicates by it.
* ``X-Driftline-Timestamp: <unix time in whole seconds>``: when this attempt was signed.
* ``X-Driftline-Signature: sha256=<hex>``: ``HMAC-SHA256(secret, timestamp + "." + body)``, where
  ``secret`` is the shared secret's UTF-8 bytes, ``timestamp`` the header's value as ASCII, and
  ``body`` the raw request body, byte for byte as received (verify before parsing the JSON).

A receiver recomputes the HMAC, compares it in constant time, and rejects a timestamp more than a few
minutes from its clock, so that a captured request cannot be replayed later (:func:`verify_signature`
does all three). Each attempt is signed afresh, so a retry is never rejected as stale.

Delivery: :meth:`WebhookSink.send` only schedules one delivery per URL and returns (a few
microseconds); at most ``max_pending`` deliveries wait at once, more are dropped, counted
(``driftline_alerts_failed{reason="queue_full"}``) and logged. A delivery is attempted up to
``max_attempts`` times: connection errors, timeouts, 408, 429 and 5xx answers are retried after an
exponential backoff with jitter (``Retry-After`` is honoured up to ``backoff_max_s``); other answers
are final (2xx delivered, 3xx/4xx rejected). With an ``outbox_dir`` (the worker's
``<data dir>/spool/webhook``) every delivery is also a file in an :class:`Outbox` from ``send`` until
it is delivered, rejected or out of attempts, so those still pending when the worker stops or
crashes are sent again at its next start (the alerts agent commits an alert's offset once ``send``
returned, so without the file a crash would lose them); receivers may then see an alert id twice.
At shutdown pending deliveries get ``drain_timeout_s`` to finish first.

Receiver URLs may carry credentials (tokens in paths or queries), so logs name a receiver by its
scheme, host and port only.

Example:
    >>> body = b'{"alert_id": "0123"}'
    >>> headers = signature_headers("s3cret", body, timestamp=1767225600)
    >>> headers["X-Driftline-Signature"][:15]
    'sha256=f2583134'
    >>> verify_signature("s3cret", body, headers, now=1767225630)
    True
    >>> verify_signature("wrong", body, headers, now=1767225630)
    False
    >>> verify_signature("s3cret", body, headers, now=1767225600 + 3600)  # replayed an hour later
    False
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import logging
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import aiohttp
from pydantic import SecretStr

from agent.alerting.sinks.base import Sink, lock_directory
from agent.errors import ConfigurationError
from agent.metrics import Metrics
from agent.retry import Backoff
from schemas import Alert
from schemas.alert import encode_alert

__all__ = [
    "ALERT_ID_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Outbox",
    "WebhookSink",
    "redact_url",
    "sign",
    "signature_headers",
    "verify_signature",
]

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Driftline-Signature"
TIMESTAMP_HEADER = "X-Driftline-Timestamp"
ALERT_ID_HEADER = "X-Driftline-Alert-Id"
_USER_AGENT = "driftline-webhook/1"


def _secret_bytes(secret: SecretStr | str | bytes) -> bytes:
    if isinstance(secret, SecretStr):
        secret = secret.get_secret_value()
    return secret.encode() if isinstance(secret, str) else bytes(secret)


def sign(secret: SecretStr | str | bytes, timestamp: str, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``timestamp + "." + body`` under ``secret``."""
    mac = hmac.new(_secret_bytes(secret), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return mac.hexdigest()


def signature_headers(secret: SecretStr | str | bytes, body: bytes, *, timestamp: int) -> dict[str, str]:
    """The timestamp and signature headers for ``body`` signed at ``timestamp`` (unix seconds)."""
    ts = str(int(timestamp))
    return {TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: "sha256=" + sign(secret, ts, body)}


def verify_signature(
    secret: SecretStr | str | bytes,
    body: bytes,
    headers: Mapping[str, str],
    *,
    tolerance_s: float = 300.0,
    now: float | None = None,
) -> bool:
    """Whether ``body`` with ``headers`` was signed with ``secret`` within ``tolerance_s`` of ``now``.

    Parameters:
        secret: The shared secret.
        body: The raw request body, exactly as received.
        headers: The request headers (looked up case-insensitively).
        tolerance_s: Largest accepted difference between the signing time and ``now``, either way.
        now: Unix time to check against; default the current time.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    timestamp = lowered.get(TIMESTAMP_HEADER.lower(), "")
    signature = lowered.get(SIGNATURE_HEADER.lower(), "")
    if not timestamp.isdigit() or not timestamp.isascii() or not signature.startswith("sha256="):
        return False
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body)
    return hmac.compare_digest(expected, signature.removeprefix("sha256="))


def redact_url(url: str) -> str:
    """``scheme://host:port`` of ``url``: what logs may say about a receiver."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


class Outbox:
    """Webhook deliveries not finished yet, one file each (``<ns>-<n>.json``), written and fsynced
    before :meth:`WebhookSink.send` returns, removed when the delivery ends.

    A file names its receiver by the SHA-256 of the URL, never the URL itself (it may hold a token):
    at :meth:`open`, a delivery whose URL is no longer configured is dropped and logged. The
    directory is locked, so two workers never share one.

    Example:
        >>> import tempfile
        >>> box = Outbox(Path(tempfile.mkdtemp()))
        >>> box.open(["http://127.0.0.1:9/hook"])
        []
        >>> key = box.add("http://127.0.0.1:9/hook", b'{"alert_id": "a1"}', "a1")
        >>> box.close()
        >>> [(url, body, alert_id) for _, url, body, alert_id in box.open(["http://127.0.0.1:9/hook"])]
        [('http://127.0.0.1:9/hook', b'{"alert_id": "a1"}', 'a1')]
        >>> box.remove(key)
        >>> box.close()
        >>> box.open(["http://127.0.0.1:9/hook"])
        []
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock: IO[bytes] | None = None
        self._seq = itertools.count()

    def open(self, urls: Sequence[str]) -> list[tuple[str, str, bytes, str]]:
        """Locks the directory; returns the deliveries a previous run left, as
        ``(key, url, body, alert_id)``, oldest first."""
        self._lock = lock_directory(self.directory, "webhook outbox", "DRIFTLINE_WEBHOOKS__OUTBOX_DIR")
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
                body, alert_id = record["body"].encode(), str(record["alert_id"])
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                log.error("webhook outbox: %s is unreadable (%s); dropped", path.name, type(exc).__name__)
                path.unlink(missing_ok=True)
                continue
            if url is None:
                log.warning(
                    "webhook outbox: alert %s was for a receiver no longer configured; dropped", alert_id
                )
                path.unlink(missing_ok=True)
                continue
            left.append((path.stem, url, body, alert_id))
        return left

    def add(self, url: str, body: bytes, alert_id: str) -> str:
        """Stores one delivery (atomically: a partial file is never read back); returns its key."""
        key = f"{time.time_ns():020d}-{next(self._seq):06d}"
        record = {"url_sha256": _url_hash(url), "alert_id": alert_id, "body": body.decode()}
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


class WebhookSink(Sink):
    """POSTs each alert, signed, to every URL, with retries; ``send`` never waits for the network.

    Parameters:
        urls: Receivers (``http``/``https``); each alert goes to each.
        secret: Shared HMAC-SHA256 secret; never logged.
        timeout_s: Per-attempt timeout (connect, send, answer).
        max_attempts: Attempts per delivery before it counts as failed.
        backoff_initial_s: Wait before the second attempt; doubles for each further one, up to
            ``backoff_max_s``, and each wait is drawn uniformly from its upper half (jitter).
        backoff_max_s: Longest wait between attempts.
        max_pending: Deliveries (alert x URL) waiting or in retry at once; more are dropped and counted.
        concurrency: Requests in flight at once over all receivers.
        drain_timeout_s: How long ``close`` lets pending deliveries finish.
        outbox_dir: Where pending deliveries are kept (:class:`Outbox`) so that a restart sends
            them again; ``None``: in memory only.
        metrics: Prometheus counters, if given.
        clock: Unix time for signing; injected by tests.
        rng: Jitter source; injected by tests.
    """

    name = "webhook"

    def __init__(
        self,
        urls: Sequence[str],
        secret: SecretStr | str | bytes,
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
                raise ConfigurationError(f"webhook URL #{i + 1} is not an http(s) URL with a host")
        self._secret = _secret_bytes(secret)
        if not self._secret:
            raise ConfigurationError("the webhook secret is empty (DRIFTLINE_WEBHOOKS__SECRET)")
        if max_attempts < 1:
            raise ConfigurationError("webhook max_attempts must be at least 1")
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
        self.outbox = Outbox(outbox_dir) if outbox_dir is not None else None

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
            log.info("webhook: %d deliveries left pending by the previous run; sending them again", len(left))
        for key, url, body, alert_id in left:
            self._schedule(url, body, alert_id, key)

    async def send(self, alert: Alert) -> None:
        body = encode_alert(alert)
        for url in self.urls:
            if len(self._tasks) >= self.max_pending:
                self._count_failed("queue_full")
                log.error(
                    "webhook %s: alert %s dropped: %d deliveries already pending",
                    redact_url(url),
                    alert.alert_id,
                    len(self._tasks),
                )
                continue
            key = None
            if self.outbox is not None:
                try:
                    key = self.outbox.add(url, body, alert.alert_id)
                except OSError as exc:
                    log.error(
                        "webhook outbox %s: alert %s not stored (%s); delivering it from memory only",
                        self.outbox.directory,
                        alert.alert_id,
                        exc.strerror or type(exc).__name__,
                    )
            self._schedule(url, body, alert.alert_id, key)

    def _schedule(self, url: str, body: bytes, alert_id: str, key: str | None) -> None:
        task = asyncio.create_task(self._deliver(url, body, alert_id, key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
            log.warning("webhook: %d deliveries still pending after %g s", len(pending), timeout)

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Wait after failed attempt number ``attempt`` (1-based)."""
        delay = self._backoff.delay(attempt)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_max_s))
        return delay

    async def _deliver(self, url: str, body: bytes, alert_id: str, key: str | None = None) -> None:
        try:
            await self._attempts(url, body, alert_id)
        except asyncio.CancelledError:
            if key is None:
                self._count_failed("shutdown")
                log.error(
                    "webhook %s: alert %s still pending at shutdown; not delivered", redact_url(url), alert_id
                )
            else:
                log.warning(
                    "webhook %s: alert %s still pending at shutdown; kept in the outbox for the next start",
                    redact_url(url),
                    alert_id,
                )
            raise
        if key is not None and self.outbox is not None:
            self.outbox.remove(key)  # delivered, rejected or out of attempts: the delivery is over

    async def _attempts(self, url: str, body: bytes, alert_id: str) -> None:
        where = redact_url(url)
        await self._ready.wait()
        for attempt in range(1, self.max_attempts + 1):
            async with self._semaphore:
                outcome, retry_after = await self._attempt(url, body, alert_id)
            if outcome == "delivered":
                self._count_delivered()
                if attempt > 1:
                    log.info("webhook %s: alert %s delivered at attempt %d", where, alert_id, attempt)
                return
            if outcome.startswith("rejected"):
                self._count_failed("rejected")
                log.error("webhook %s: alert %s %s; not retried", where, alert_id, outcome)
                return
            if attempt == self.max_attempts:
                self._count_failed("attempts")
                log.error(
                    "webhook %s: alert %s not delivered after %d attempts (last: %s)",
                    where,
                    alert_id,
                    attempt,
                    outcome,
                )
                return
            delay = self.backoff(attempt, retry_after)
            (log.warning if attempt == 1 else log.debug)(
                "webhook %s: alert %s attempt %d failed (%s); retrying in %.2f s",
                where,
                alert_id,
                attempt,
                outcome,
                delay,
            )
            self._count_retry()
            await asyncio.sleep(delay)

    async def _attempt(self, url: str, body: bytes, alert_id: str) -> tuple[str, float | None]:
        """One POST: ``("delivered" | "rejected ..." | "<retryable reason>", Retry-After seconds)``."""
        session = self._session
        if session is None:
            return "sink closed", None
        headers = {
            "Content-Type": "application/json",
            ALERT_ID_HEADER: alert_id,
            **signature_headers(self._secret, body, timestamp=int(self._clock())),
        }
        try:
            async with session.post(url, data=body, headers=headers, allow_redirects=False) as response:
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
