"""Sends each alert and metrics batch to every sink; one sink's failure never touches the others.

Like Faust's ``SensorDelegate``: each call goes to each sink, and what a sink raises is logged and
counted per sink instead of propagating. Sinks are called concurrently, so a slow one (InfluxDB timing
out before it spools) does not delay the others either.

Example:
    >>> import asyncio
    >>> from datetime import datetime, UTC
    >>> from schemas import Alert, AlertKind, Severity
    >>> from agent.errors import ConfigurationError, SinkError
    >>> class Broken(Sink):
    ...     name = "broken"
    ...     async def send(self, alert):
    ...         raise SinkError("down")
    >>> class Kept(Sink):
    ...     name = "kept"
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.alerts = []
    ...     async def send(self, alert):
    ...         self.alerts.append(alert.alert_id)
    >>> kept = Kept()
    >>> fanout = SinkFanout([Broken(), kept])
    >>> alert = Alert.create(
    ...     model="m", model_version="1", kind=AlertKind.DATA, detector="adwin", subject="x",
    ...     severity=Severity.WARNING, message="x drifted", detected_at=datetime(2026, 1, 1, tzinfo=UTC),
    ... )
    >>> asyncio.run(fanout.send(alert))
    >>> kept.alerts == [alert.alert_id], fanout.failures
    (True, {'broken': 1, 'kept': 0})
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from agent.alerting.sinks.base import Recovery, Sink
from agent.errors import ConfigurationError, SinkError
from agent.metrics import MetricPoint, Metrics
from schemas import Alert
from schemas.incident import IncidentReport

__all__ = ["SinkFanout"]

log = logging.getLogger(__name__)


class SinkFanout:
    """Calls every sink's hooks, concurrently, containing each sink's failures.

    Parameters:
        sinks: The sinks, each with a distinct ``name``.
        metrics: Counts an alert lost to an unexpected exception (not a
            :class:`~agent.errors.SinkError`, which the sink counts itself) as failed, reason
            ``unexpected``, if given.
    """

    def __init__(self, sinks: Sequence[Sink], *, metrics: Metrics | None = None) -> None:
        names = [s.name for s in sinks]
        if len(set(names)) != len(names):
            raise ValueError(f"sink names must be distinct: {names}")
        self.sinks = list(sinks)
        self.metrics = metrics
        self.failures: dict[str, int] = dict.fromkeys(names, 0)
        """Calls that raised, per sink (any hook)."""

    async def start(self) -> None:
        """Starts every sink. A misconfigured one (:class:`~agent.errors.ConfigurationError`) stops the
        start: better a worker that refuses to run than one that silently drops alerts. Any other start
        failure is logged and the sink still called later (it may recover)."""
        for _, exc in await self._each("start", lambda s: s.start()):
            if isinstance(exc, ConfigurationError):
                raise exc

    async def send(self, alert: Alert) -> None:
        """Sends ``alert`` to every sink."""
        failed = await self._each("send", lambda s: s.send(alert), detail=f"alert {alert.alert_id}")
        if self.metrics is not None:
            for sink, exc in failed:
                if not isinstance(exc, SinkError):
                    self.metrics.alerts_failed.labels(sink=sink.name, reason="unexpected").inc()

    async def send_incident(self, report: IncidentReport) -> None:
        """Sends an incident notification to every sink."""
        what = f"incident {report.notification_id}"
        failed = await self._each("send_incident", lambda s: s.send_incident(report), detail=what)
        if self.metrics is not None:
            for sink, exc in failed:
                if not isinstance(exc, SinkError):
                    self.metrics.alerts_failed.labels(sink=sink.name, reason="unexpected").inc()

    async def recover(self, recovery: Recovery) -> None:
        """Tells every sink that an incident closed."""
        what = f"recovery of {recovery.model}/{recovery.kind}/{recovery.subject}"
        await self._each("recover", lambda s: s.recover(recovery), detail=what)

    async def send_metrics(self, points: Sequence[MetricPoint]) -> None:
        """Sends a batch of metrics points to every sink."""
        if points:
            await self._each("send_metrics", lambda s: s.send_metrics(points))

    async def flush(self) -> None:
        await self._each("flush", lambda s: s.flush())

    async def close(self) -> None:
        await self._each("close", lambda s: s.close())

    async def _each(
        self, hook: str, call: Callable[[Sink], Awaitable[None]], detail: str = ""
    ) -> list[tuple[Sink, Exception]]:
        results = await asyncio.gather(*(call(s) for s in self.sinks), return_exceptions=True)
        failed: list[tuple[Sink, Exception]] = []
        for sink, result in zip(self.sinks, results, strict=True):
            if not isinstance(result, BaseException):
                continue
            if not isinstance(result, Exception):
                raise result  # cancellation, KeyboardInterrupt: not the sink's failure to contain
            failed.append((sink, result))
            self.failures[sink.name] += 1
            what = f"{sink.name}.{hook}" + (f" ({detail})" if detail else "")
            if isinstance(result, SinkError):
                log.error("sink %s failed: %s", what, result)
            else:
                # A sink should wrap its client's errors; say so loudly when one slips through.
                log.error("sink %s raised an unexpected %s", what, type(result).__name__, exc_info=result)
        return failed
