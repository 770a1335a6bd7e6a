"""Alerts and metrics to InfluxDB 2.x, with an on-disk spool so that no alert is lost while it is down.

Alerts are points of the measurement ``driftline_alert``:

* tags ``model``, ``version``, ``kind``, ``severity``, ``detector``, ``subject``;
* fields ``message``, ``alert_id``, the evidence numbers that are set (``reference_mean``,
  ``reference_std``, ``recent_mean``, ``recent_std``, ``shift_in_std``, ``statistic`` as floats,
  ``window_events`` as an integer), numeric ``evidence.extra`` values as ``extra_<name>`` floats and
  text ones as ``extra_<name>_text``, ``opened_at_event`` and ``first_event_time`` when known, and
  ``drivers`` (a JSON list of the likely drivers: feature, statistic, shift, importance, score) for
  prediction, performance and concept alerts that have them;
* the time is ``detected_at``, in nanoseconds. Writing the same alert twice (at-least-once delivery,
  a spool replayed after a crash) overwrites the point with itself.

Incident notifications (opened, updated, resolved) are points of ``driftline_incident``
(:func:`incident_line`), spooled like alerts. Metrics (:class:`~agent.alerting.sinks.base.MetricPoint`)
are written in batches by ``send_metrics``.

While InfluxDB cannot be reached (connection refused, timeout, 5xx, or 401/403/404 that an operator
may fix) points go to a :class:`Spool` under the worker's data dir, and a background task writes the
spool back, oldest first and alerts before metrics, with exponential backoff and jitter. New points go
to the spool too until it is empty again, so a recovering InfluxDB is not raced by the live stream.
When the spool is full the oldest *metrics* segments are dropped (counted); alerts are never dropped to
make room: an alert that still does not fit is counted (``driftline_alerts_failed{reason="spool_full"}``)
and logged with its id. Answers that retrying cannot fix (400 malformed point or field type conflict,
413, 422) are counted as rejected and logged, alerts with their ids.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

import aiohttp
from influxdb_client import Point, WritePrecision
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.rest import ApiException
from pydantic import SecretStr

from agent.alerting.sinks.base import Sink, lock_directory
from agent.metrics import MetricPoint, Metrics
from agent.retry import Backoff
from schemas import Alert
from schemas.incident import IncidentReport

__all__ = [
    "ALERT_MEASUREMENT",
    "INCIDENT_MEASUREMENT",
    "InfluxSink",
    "Spool",
    "SpoolSegment",
    "alert_line",
    "incident_line",
    "metric_lines",
]

log = logging.getLogger(__name__)

ALERT_MEASUREMENT = "driftline_alert"
INCIDENT_MEASUREMENT = "driftline_incident"

Kind = Literal["alert", "metrics"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EVIDENCE_FLOATS = (
    "reference_mean",
    "reference_std",
    "recent_mean",
    "recent_std",
    "shift_in_std",
    "statistic",
)
# Retrying cannot fix these: malformed line protocol or a field type conflict, too large, outside retention.
_PERMANENT = frozenset({400, 413, 422})


def _ns(when: datetime) -> int:
    # Exact integer arithmetic: a float timestamp loses the microseconds of a 2026 date.
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _one_line(text: str) -> str:
    # A raw newline would end the point: the spool and line protocol are one point per line.
    return text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")


def alert_line(alert: Alert) -> str:
    """The alert as one line of line protocol (see the module docstring for the schema)."""
    point = Point(ALERT_MEASUREMENT)
    for tag, value in (
        ("model", alert.model),
        ("version", alert.model_version),
        ("kind", str(alert.kind)),
        ("severity", str(alert.severity)),
        ("detector", alert.detector),
        ("subject", alert.subject),
    ):
        point.tag(tag, _one_line(value))
    point.field("message", _one_line(alert.message))
    point.field("alert_id", alert.alert_id)
    evidence = alert.evidence
    for name in _EVIDENCE_FLOATS:
        value = getattr(evidence, name)
        if value is not None:
            point.field(name, float(value))
    if evidence.window_events is not None:
        point.field("window_events", int(evidence.window_events))
    if evidence.drivers:
        # The ranking as data (a JSON list, one object per feature) and as the message words it.
        point.field("drivers", json.dumps([d.model_dump() for d in evidence.drivers], separators=(",", ":")))
    for name, extra in evidence.extra.items():
        # Separate names per type: a field that changed type would make InfluxDB reject the point.
        if isinstance(extra, str):
            point.field(f"extra_{name}_text", _one_line(extra))
        else:
            point.field(f"extra_{name}", float(extra))
    if alert.opened_at_event is not None:
        point.field("opened_at_event", int(alert.opened_at_event))
    if alert.first_event_time is not None:
        point.field("first_event_time", alert.first_event_time.isoformat())
    point.time(_ns(alert.detected_at), WritePrecision.NS)
    return str(point.to_line_protocol())


def incident_line(report: IncidentReport) -> str:
    """An incident notification as one line of line protocol: measurement ``driftline_incident``, tags
    ``model``, ``status`` (``opened``, ``updated``, ``resolved``) and ``severity``; fields
    ``incident_id``, ``notification_id``, ``change``, ``root_cause``, ``alerts`` and ``open_alerts``
    (integers), ``versions``, ``opened_at``, ``timeline`` and ``context`` (JSON lists); the time is
    ``updated_at``. The same notification written twice overwrites itself."""
    point = Point(INCIDENT_MEASUREMENT)
    point.tag("model", _one_line(report.model))
    point.tag("status", report.status)
    point.tag("severity", str(report.severity))
    point.field("incident_id", report.incident_id)
    point.field("notification_id", _one_line(report.notification_id))
    point.field("change", _one_line(report.change))
    point.field("root_cause", _one_line(report.root_cause))
    point.field("alerts", int(report.alerts))
    point.field("open_alerts", int(report.open_alerts))
    point.field("versions", ",".join(report.model_versions))
    point.field("opened_at", report.opened_at.isoformat())
    timeline = [e.model_dump(mode="json", exclude_defaults=True) for e in report.timeline]
    point.field("timeline", json.dumps(timeline, separators=(",", ":")))
    point.field("context", json.dumps(list(report.context), separators=(",", ":")))
    point.time(_ns(report.updated_at), WritePrecision.NS)
    return str(point.to_line_protocol())


def metric_lines(points: Iterable[MetricPoint], *, default_time_ns: int | None = None) -> list[str]:
    """Line protocol for ``points``; those without a time get ``default_time_ns`` (default: now).

    Integers are written as floats (see :class:`~agent.metrics.MetricPoint`); points without a field
    are skipped (line protocol needs one).
    """
    now = time.time_ns() if default_time_ns is None else default_time_ns
    lines = []
    for p in points:
        point = Point(p.measurement)
        for tag, text in p.tags.items():
            point.tag(tag, _one_line(str(text)))
        fields = 0
        for name, value in p.fields.items():
            if isinstance(value, bool):
                point.field(name, value)
            elif isinstance(value, int | float):
                point.field(name, float(value))
            else:
                point.field(name, _one_line(str(value)))
            fields += 1
        if not fields:
            continue
        point.time(now if p.time is None else _ns(p.time), WritePrecision.NS)
        lines.append(str(point.to_line_protocol()))
    return lines


@dataclass(frozen=True)
class SpoolSegment:
    """One spool file: line protocol, one point per line."""

    path: Path
    seq: int
    kind: Kind


class Spool:
    """A bounded on-disk FIFO of line-protocol points in two classes: alerts and metrics.

    Points are appended to the newest segment file of their class (``<seq>-alert.lp`` or
    ``<seq>-metrics.lp``, a new one past ``segment_bytes``); alert appends are fsynced. A segment handed
    out by :meth:`oldest` is sealed: later appends start a new one. A crash in the middle of an append
    leaves a partial last line, which :meth:`read` ignores. The directory is locked (``flock``) so that
    two workers never share one.

    Parameters:
        directory: Where the segments live; created if missing.
        max_bytes: Size cap over all segments.
        segment_bytes: Size at which a new segment is started (and the most written in one request).
    """

    _NAME = re.compile(r"^(\d{12})-(alert|metrics)\.lp$")

    def __init__(self, directory: Path, max_bytes: int, *, segment_bytes: int = 1024 * 1024) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = min(segment_bytes, max_bytes)
        self._sizes: dict[SpoolSegment, int] = {}
        self._current: dict[Kind, SpoolSegment | None] = {"alert": None, "metrics": None}
        self._next_seq = 0
        self._lock_file: IO[bytes] | None = None

    def open(self) -> None:
        """Locks the directory and takes over the segments a previous run left."""
        lock = lock_directory(self.directory, "spool", "DRIFTLINE_INFLUX__SPOOL_DIR")
        self._lock_file = lock
        for path in self.directory.iterdir():
            match = self._NAME.match(path.name)
            if match:
                kind: Kind = "alert" if match.group(2) == "alert" else "metrics"
                segment = SpoolSegment(path, int(match.group(1)), kind)
                self._sizes[segment] = path.stat().st_size
                self._next_seq = max(self._next_seq, segment.seq + 1)
            elif path.name.endswith(".tmp"):
                path.unlink()

    def close(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # releases the flock
            self._lock_file = None

    @property
    def bytes(self) -> int:
        return sum(self._sizes.values())

    def __len__(self) -> int:
        """Segments waiting."""
        return len(self._sizes)

    def segments(self, kind: Kind | None = None) -> list[SpoolSegment]:
        """Waiting segments, oldest first."""
        return sorted((s for s in self._sizes if kind is None or s.kind == kind), key=lambda s: s.seq)

    def append(self, kind: Kind, lines: Sequence[str]) -> tuple[bool, int]:
        """Appends ``lines``; returns (stored, metrics points dropped to make room).

        Not stored when even without any metrics segment the spool would exceed ``max_bytes``.
        """
        if self._lock_file is None:
            raise RuntimeError("Spool.append() before open()")
        data = "".join(line + "\n" for line in lines).encode()
        dropped = 0
        while self.bytes + len(data) > self.max_bytes:
            victims = self.segments("metrics")
            if not victims:
                return False, dropped
            dropped += len(self.read(victims[0]))
            self.remove(victims[0])
        segment = self._current[kind]
        if segment is None or self._sizes.get(segment, 0) + len(data) > self.segment_bytes:
            segment = SpoolSegment(self.directory / f"{self._next_seq:012d}-{kind}.lp", self._next_seq, kind)
            self._next_seq += 1
            self._current[kind] = segment
            self._sizes[segment] = 0
            created = True
        else:
            created = False
        with segment.path.open("ab") as f:
            f.write(data)
            if kind == "alert":
                # An alert is durable here before the alerts topic's offset is committed.
                f.flush()
                os.fsync(f.fileno())
        if created and kind == "alert":
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)  # the new file's directory entry, too
            finally:
                os.close(dir_fd)
        self._sizes[segment] += len(data)
        return True, dropped

    def oldest(self) -> SpoolSegment | None:
        """The next segment to write: alerts before metrics, oldest first. Seals it."""
        for kind in ("alert", "metrics"):
            waiting = self.segments(kind)
            if waiting:
                segment = waiting[0]
                if self._current[segment.kind] == segment:
                    self._current[segment.kind] = None
                return segment
        return None

    def read(self, segment: SpoolSegment) -> list[str]:
        """The segment's complete lines (a partial last line, from a crash mid-append, is ignored)."""
        try:
            data = segment.path.read_bytes()
        except FileNotFoundError:
            return []
        text = data.decode(errors="replace")
        lines = text.split("\n")
        return [line for line in lines[:-1] if line]

    def remove(self, segment: SpoolSegment) -> None:
        segment.path.unlink(missing_ok=True)
        self._sizes.pop(segment, None)
        if self._current[segment.kind] == segment:
            self._current[segment.kind] = None


class _Outcome:
    """Result of one write: ``ok``, or a reason and whether retrying may help."""

    __slots__ = ("ok", "reason", "retryable")

    def __init__(self, ok: bool, reason: str = "", retryable: bool = False) -> None:
        self.ok, self.reason, self.retryable = ok, reason, retryable


_OK = _Outcome(True)


class InfluxSink(Sink):
    """Writes alerts and metrics batches to InfluxDB; spools them on disk while it is unreachable.

    ``send`` returns once the alert is written or spooled (fsynced), so the Faust agent commits the
    alerts topic's offset only for alerts that cannot be lost any more.

    Parameters:
        url: InfluxDB base URL.
        token: API token with write access to ``bucket``; never logged.
        org: Organisation.
        bucket: Bucket for alerts and metrics.
        spool_dir: The spool's directory (one per worker).
        spool_max_bytes: The spool's size cap.
        timeout_s: Per-request timeout.
        retry_initial_s: First wait before the spool is retried; doubles up to ``retry_max_s``, with jitter.
        retry_max_s: Longest wait between two attempts.
        metrics: Prometheus counters, if given.
        rng: Jitter source; injected by tests.
    """

    name = "influx"

    def __init__(
        self,
        *,
        url: str,
        token: SecretStr,
        org: str,
        bucket: str,
        spool_dir: Path,
        spool_max_bytes: int = 64 * 1024 * 1024,
        timeout_s: float = 5.0,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 30.0,
        metrics: Metrics | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(metrics=metrics)
        self.url = url
        self.org = org
        self.bucket = bucket
        self.timeout_s = timeout_s
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.spool = Spool(spool_dir, spool_max_bytes)
        self._token = token
        self._backoff = Backoff(retry_initial_s, retry_max_s, rng=rng)
        self._client: InfluxDBClientAsync | None = None
        self._write_api: Any = None
        self._healthy = True
        self._idle = False
        self._wakeup = asyncio.Event()
        self._spool_lock = asyncio.Lock()
        self._drained = asyncio.Event()
        self._retrier: asyncio.Task[None] | None = None

    @property
    def healthy(self) -> bool:
        """False from a failed write until the spool has been written back."""
        return self._healthy

    async def start(self) -> None:
        self.spool.open()
        self._client = InfluxDBClientAsync(
            url=self.url,
            token=self._token.get_secret_value(),
            org=self.org,
            timeout=int(self.timeout_s * 1000),
        )
        self._write_api = self._client.write_api()
        if len(self.spool):
            self._healthy = False
            log.info(
                "influx: %d spooled segments (%d bytes) from an earlier run; writing them to %s",
                len(self.spool),
                self.spool.bytes,
                self.url,
            )
        self._update_spool_gauge()
        self._retrier = asyncio.create_task(self._retry_loop(), name="influx-spool-retry")
        if len(self.spool):
            self._wakeup.set()

    async def send(self, alert: Alert) -> None:
        await self._deliver("alert", [alert_line(alert)], alert.alert_id)

    async def send_incident(self, report: IncidentReport) -> None:
        # Kept like an alert: never dropped to make room in the spool.
        await self._deliver("alert", [incident_line(report)], report.notification_id)

    async def send_metrics(self, points: Sequence[MetricPoint]) -> None:
        lines = metric_lines(points)
        if lines:
            await self._deliver("metrics", lines)

    async def flush(self) -> None:
        """Waits (at most ``timeout_s``) for the spool to be written back, if InfluxDB answers."""
        if not len(self.spool) or self._retrier is None:
            return
        self._drained.clear()
        self._wakeup.set()
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._drained.wait()
        except TimeoutError:
            log.warning("influx: %d spooled segments still waiting for %s", len(self.spool), self.url)

    async def close(self) -> None:
        await self.flush()
        if self._retrier is not None:
            self._retrier.cancel()
            await asyncio.gather(self._retrier, return_exceptions=True)
            self._retrier = None
        if self._client is not None:
            await self._client.close()
            self._client = None
        self.spool.close()

    async def _deliver(self, kind: Kind, lines: list[str], alert_id: str = "") -> None:
        if self._client is None:
            # Not started (or its start failed): the spool may not be ours to write.
            self._count_rejected(kind, len(lines), "the sink is not started", alert_id)
            return
        if self._healthy:
            outcome = await self._write("\n".join(lines))
            if outcome.ok:
                self._count_written(kind, len(lines))
                return
            if not outcome.retryable:
                self._count_rejected(kind, len(lines), outcome.reason, alert_id)
                return
            self._healthy = False
            log.warning(
                "influx: %s unreachable (%s); spooling to %s until it is back",
                self.url,
                outcome.reason,
                self.spool.directory,
            )
        await self._spool(kind, lines, alert_id)

    async def _spool(self, kind: Kind, lines: list[str], alert_id: str) -> None:
        try:
            # An alert's append is fsynced: in a thread, off the event loop the serving loop shares.
            # The lock keeps the retrier from reading or removing segments meanwhile.
            async with self._spool_lock:
                stored, dropped = await asyncio.to_thread(self.spool.append, kind, lines)
        except OSError as exc:
            stored, dropped = False, 0
            log.error("influx: writing the spool in %s failed: %r", self.spool.directory, exc)
        if dropped:
            self._count_points("dropped", dropped)
            log.warning("influx: spool full; dropped the %d oldest metrics points", dropped)
        if stored:
            if kind == "alert":
                self._count_spooled(len(lines))
            else:
                self._count_points("spooled", len(lines))
            if self._idle:
                # Only an idle retrier is woken: one in its backoff keeps waiting, so a steady stream
                # of points does not turn the backoff into a retry per point.
                self._wakeup.set()
        elif kind == "alert":
            self._count_failed("spool_full", len(lines))
            log.error(
                "influx: alert %s NOT stored: the spool (%d bytes, max %d) is full of alerts and %s "
                "is unreachable",
                alert_id,
                self.spool.bytes,
                self.spool.max_bytes,
                self.url,
            )
        else:
            self._count_points("dropped", len(lines))
        self._update_spool_gauge()

    async def _write(self, body: str) -> _Outcome:
        if self._write_api is None:
            return _Outcome(False, "sink not started", retryable=True)
        try:
            await self._write_api.write(bucket=self.bucket, org=self.org, record=body)
        except ApiException as exc:
            status = int(exc.status or 0)
            # The body is InfluxDB's JSON error message; it never contains the token.
            detail = f"HTTP {status}: {str(exc.body or exc.reason)[:300]}"
            return _Outcome(False, detail, retryable=status not in _PERMANENT)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return _Outcome(False, type(exc).__name__, retryable=True)
        return _OK

    def _count_written(self, kind: Kind, n: int) -> None:
        if kind == "alert":
            self._count_delivered(n)
        else:
            self._count_points("written", n)

    def _count_rejected(self, kind: Kind, n: int, reason: str, alert_id: str = "") -> None:
        if kind == "alert":
            self._count_failed("rejected", n)
            log.error("influx: %s rejected %d alert(s) %s: %s", self.url, n, alert_id, reason)
        else:
            self._count_points("dropped", n)
            log.error("influx: %s rejected %d metrics points: %s", self.url, n, reason)

    def _update_spool_gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.spool_bytes.labels(sink=self.name).set(self.spool.bytes)

    def backoff(self, attempt: int) -> float:
        """Wait after failed retry number ``attempt`` (1-based): exponential, upper half jittered."""
        return self._backoff.delay(attempt)

    async def _retry_loop(self) -> None:
        attempt = 0
        while True:
            async with self._spool_lock:
                segment = self.spool.oldest()
            if segment is None:
                if not self._healthy:
                    log.info("influx: %s is back; the spool is written", self.url)
                self._healthy = True
                self._drained.set()
                self._wakeup.clear()
                self._idle = True
                try:
                    await self._wakeup.wait()
                finally:
                    self._idle = False
                continue
            try:
                lines = self.spool.read(segment)
                outcome = await self._write("\n".join(lines)) if lines else _OK
            except Exception as exc:  # never let the retrier die: the spool would only grow
                log.exception("influx: retrying %s failed unexpectedly", segment.path.name)
                outcome = _Outcome(False, repr(exc), retryable=True)
            if outcome.ok or not outcome.retryable:
                if outcome.ok:
                    self._count_written(segment.kind, len(lines))
                else:
                    self._count_rejected(segment.kind, len(lines), outcome.reason, f"in {segment.path.name}")
                async with self._spool_lock:
                    self.spool.remove(segment)
                self._update_spool_gauge()
                attempt = 0
                continue
            attempt += 1
            self._count_retry()
            delay = self.backoff(attempt)
            log.debug("influx: spool retry %d failed (%s); next in %.2f s", attempt, outcome.reason, delay)
            # Sleep, but let flush() cut the wait short.
            self._wakeup.clear()
            try:
                async with asyncio.timeout(delay):
                    await self._wakeup.wait()
            except TimeoutError:
                pass
