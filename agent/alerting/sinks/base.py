"""The sink contract: lifecycle hooks that default to doing nothing, as Faust's ``Sensor`` and
quix-streams' ``BaseSink`` have them, so a sink overrides only what it needs.

A sink owns its retries and its buffering: ``send`` returns once the alert is delivered, queued or
spooled, and raises :class:`~agent.errors.SinkError` (never the client's own exception) only when the
alert is lost to this sink. :class:`~agent.alerting.sinks.fanout.SinkFanout` calls every sink and contains
their failures.

Example:
    >>> import asyncio
    >>> class Printer(Sink):
    ...     name = "printer"
    ...     async def send_metrics(self, points):
    ...         for p in points:
    ...             print(p.measurement, dict(p.fields), dict(p.tags))
    >>> sink = Printer()
    >>> asyncio.run(sink.send_metrics([MetricPoint("driftline_events", {"rate": 812.5}, {"model": "m"})]))
    driftline_events {'rate': 812.5} {'model': 'm'}
    >>> asyncio.run(sink.flush())  # the hooks it does not override are no-ops
"""

from __future__ import annotations

import fcntl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, ClassVar, Literal

from agent.errors import ConfigurationError
from agent.metrics import MetricPoint, Metrics
from schemas import Alert
from schemas.incident import IncidentReport

__all__ = ["Notify", "Recovery", "Sink", "SinkStats", "lock_directory"]

Notify = Literal["incidents", "alerts", "both"]
"""What a receiver (webhook, Slack, PagerDuty) is sent: incident notifications (opened, updated,
resolved: one per change of an incident across kinds), each alert (and each recovery) as before, or
both."""


@dataclass(frozen=True, slots=True)
class Recovery:
    """An incident that closed: the drift it was about is back near the reference.

    Parameters:
        model: The model.
        kind: An :class:`~schemas.AlertKind` value (``data``, ``prediction``, ``concept``, ``technical``).
        subject: The feature or metric (``mean radius``, ``prediction``, ``error``, ``dead_letters``).
        opening_alert_id: Id of the alert that opened the incident.
        opened_at: When it opened (unix seconds).
        closed_at: When it closed (unix seconds).
        alerts: Alerts published for it: the opening one plus reminders.
    """

    model: str
    kind: str
    subject: str
    opening_alert_id: str
    opened_at: float
    closed_at: float
    alerts: int = 1


@dataclass
class SinkStats:
    """What one sink did, for tests and logs (Prometheus counters get the same numbers)."""

    delivered: int = 0
    """Alerts delivered (webhook: one per receiver)."""
    failed: int = 0
    """Alerts given up on: rejected, out of attempts, queue or spool full, or still pending at close."""
    spooled: int = 0
    """Alerts kept on disk because the service could not be reached (delivered later)."""
    retries: int = 0
    """Attempts repeated after a failure."""
    points_written: int = 0
    points_spooled: int = 0
    points_dropped: int = 0


class Sink:
    """Base class of alert and metrics sinks: every hook is a no-op until a subclass overrides it.

    Parameters:
        metrics: Prometheus counters to update (``driftline_alerts_delivered`` and friends), if given.
    """

    name: ClassVar[str] = "sink"
    """Label of the sink in metrics and logs."""

    def __init__(self, *, metrics: Metrics | None = None) -> None:
        self.metrics = metrics
        self.stats = SinkStats()

    async def start(self) -> None:
        """Opens clients and starts background tasks. Must not fail because the far side is down:
        a sink that cannot deliver yet queues or spools."""

    async def send(self, alert: Alert) -> None:
        """Delivers, queues or spools one alert. Raises :class:`~agent.errors.SinkError` if it is lost."""

    async def send_metrics(self, points: Sequence[MetricPoint]) -> None:
        """Writes a batch of metrics points; sinks that do not store metrics ignore them."""

    async def send_incident(self, report: IncidentReport) -> None:
        """Delivers, queues or spools one incident notification (opened, updated, resolved); sinks
        that only carry alerts ignore it. Raises :class:`~agent.errors.SinkError` if it is lost."""

    async def recover(self, recovery: Recovery) -> None:
        """Reports that an incident closed (PagerDuty resolves it); sinks that only carry alerts ignore it.
        Like ``send``: delivers, queues or spools, and raises :class:`~agent.errors.SinkError` if lost."""

    async def flush(self) -> None:
        """Tries to deliver what is queued or spooled now (bounded in time)."""

    async def close(self) -> None:
        """Delivers what it can within its drain timeout, then releases its clients."""

    # Counting, shared by the sinks: the stats and the Prometheus counters always move together.

    def _count_delivered(self, n: int = 1) -> None:
        self.stats.delivered += n
        if self.metrics is not None:
            self.metrics.alerts_delivered.labels(sink=self.name).inc(n)

    def _count_failed(self, reason: str, n: int = 1) -> None:
        self.stats.failed += n
        if self.metrics is not None:
            self.metrics.alerts_failed.labels(sink=self.name, reason=reason).inc(n)

    def _count_spooled(self, n: int = 1) -> None:
        self.stats.spooled += n
        if self.metrics is not None:
            self.metrics.alerts_spooled.labels(sink=self.name).inc(n)

    def _count_retry(self) -> None:
        self.stats.retries += 1
        if self.metrics is not None:
            self.metrics.sink_retries.labels(sink=self.name).inc()

    def _count_points(self, outcome: str, n: int) -> None:
        if outcome == "written":
            self.stats.points_written += n
        elif outcome == "spooled":
            self.stats.points_spooled += n
        else:
            self.stats.points_dropped += n
        if self.metrics is not None:
            self.metrics.metric_points.labels(sink=self.name, outcome=outcome).inc(n)


def lock_directory(directory: Path, what: str, setting: str) -> IO[bytes]:
    """Creates ``directory`` and takes its ``flock`` (closing the returned file releases it), so that
    two workers never share one; raises :class:`ConfigurationError` naming ``setting`` if taken."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        lock = (directory / ".lock").open("ab")
    except OSError as exc:
        raise ConfigurationError(
            f"the {what} {directory} cannot be created or written ({exc.strerror or type(exc).__name__}): "
            f"set DRIFTLINE_DATA_DIR or {setting}"
        ) from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        raise ConfigurationError(
            f"the {what} {directory} is in use by another worker: give each worker its own "
            f"data dir (DRIFTLINE_DATA_DIR) or {what} dir ({setting})"
        ) from None
    return lock
