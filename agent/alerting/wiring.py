"""The alert path after the hot loop: a Faust agent on the alerts topic fans each alert out to the sinks.

The serving loop publishes the alerts that pass the incident gate (:mod:`agent.monitoring.incidents`) to the
alerts topic, in the same producer batches as its predictions. :func:`wire_alert_sinks` registers, on
the Faust app:

* a Faust agent on the alerts topic that decodes each record and hands the alert to a
  :class:`~agent.alerting.sinks.fanout.SinkFanout` of the configured sinks (InfluxDB if a token is
  set, webhooks if URLs are set). Alerts are few, so Faust's per-event cost does not matter here, and
  Faust commits an offset only after the agent has processed the record: every alert reaches the
  sinks at least once. A record that is not a valid alert is logged, counted and skipped; nothing in
  a record can stop the agent;
* a service that starts the sinks (and the incident store) before Faust's consumer, so the agent never
  sees a sink that is not started, and stops them after the agent, so nothing is sent to a closed sink.
  It also asks whether the app's consumer group has ever committed on the alerts topic: a new app id
  reads the topic from its beginning (no alert is missed from its first second on), and alerts
  raised more than :data:`FIRST_START_SLACK_S` before that first start are counted and not sent to
  the sinks again (a new app id on a topic that keeps every alert would otherwise re-send them all);
* a timer that writes metrics every ``influx.metrics_interval_s``: the points of the metrics source
  (rates, latency, feature means, detector statistics, accuracy) plus each sink's own counters.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import faust
from aiokafka.admin import AIOKafkaAdminClient
from mode import Service

from agent.alerting.sinks.base import Recovery, Sink
from agent.alerting.sinks.fanout import SinkFanout
from agent.alerting.sinks.prometheus import PrometheusSink
from agent.errors import ConfigurationError
from agent.kafka import aiokafka_options
from agent.metrics import MetricPoint, Metrics, worker_tags
from agent.monitoring.incidents import Incident, IncidentManager
from agent.settings import DeliverySettings, Settings
from schemas.incident import IncidentReport, decode_record

if TYPE_CHECKING:
    from agent.alerting.sinks.delivery import DeliveryOptions

__all__ = ["AlertWiring", "AlertingService", "MetricsSource", "build_sinks", "wire_alert_sinks"]

log = logging.getLogger(__name__)

MetricsSource = Callable[[], Iterable[MetricPoint]]
"""Returns the metrics points to write now; called by the metrics timer, on the event loop."""


def build_sinks(settings: Settings, metrics: Metrics | None = None) -> list[Sink]:
    """The sinks the settings ask for: InfluxDB when a token is set, webhooks when URLs are set, Slack
    when a webhook URL is set, PagerDuty when a routing key is set."""
    sinks: list[Sink] = []
    influx = settings.influx
    if influx.token is not None and influx.token.get_secret_value():
        from agent.alerting.sinks.influx import InfluxSink

        sinks.append(
            InfluxSink(
                url=influx.url,
                token=influx.token,
                org=influx.org,
                bucket=influx.bucket,
                spool_dir=influx.spool_dir or settings.data_dir / "spool" / "influx",
                spool_max_bytes=influx.spool_max_bytes,
                timeout_s=influx.timeout_s,
                retry_initial_s=influx.retry_initial_s,
                retry_max_s=influx.retry_max_s,
                metrics=metrics,
            )
        )
    else:
        log.warning(
            "alerts: no InfluxDB token (DRIFTLINE_INFLUX__TOKEN / INFLUXDB_TOKEN); not writing to InfluxDB"
        )
    hooks = settings.webhooks
    if hooks.urls:
        if hooks.secret is None:
            raise ConfigurationError(
                "webhook URLs are set but no signing secret: set DRIFTLINE_WEBHOOKS__SECRET"
            )
        from agent.alerting.sinks.webhook import WebhookSink

        sinks.append(
            WebhookSink(
                hooks.urls,
                hooks.secret,
                legacy_headers=hooks.legacy_headers,
                notify=settings.incidents.notify,
                **_delivery_options(settings, hooks, "webhook", metrics),
            )
        )
    slack = settings.slack
    if slack.webhook_url is not None and slack.webhook_url.get_secret_value():
        from agent.alerting.sinks.slack import SlackSink

        sinks.append(
            SlackSink(
                slack.webhook_url,
                recoveries=slack.recoveries,
                notify=settings.incidents.notify,
                **_delivery_options(settings, slack, "slack", metrics),
            )
        )
    pagerduty = settings.pagerduty
    if pagerduty.routing_key is not None and pagerduty.routing_key.get_secret_value():
        from agent.alerting.sinks.pagerduty import PagerDutySink

        sinks.append(
            PagerDutySink(
                pagerduty.routing_key,
                url=pagerduty.url,
                source=pagerduty.source or settings.app_id,
                client_url=pagerduty.client_url,
                notify=settings.incidents.notify,
                **_delivery_options(settings, pagerduty, "pagerduty", metrics),
            )
        )
    return sinks


def _delivery_options(
    settings: Settings, group: DeliverySettings, name: str, metrics: Metrics | None
) -> DeliveryOptions:
    return {
        "timeout_s": group.timeout_s,
        "max_attempts": group.max_attempts,
        "backoff_initial_s": group.backoff_initial_s,
        "backoff_max_s": group.backoff_max_s,
        "max_pending": group.max_pending,
        "concurrency": group.concurrency,
        "drain_timeout_s": group.drain_timeout_s,
        "outbox_dir": group.outbox_dir or settings.data_dir / "spool" / name,
        "metrics": metrics,
    }


FIRST_START_SLACK_S = 300.0
"""Alerts raised this long before an app id's first start are still delivered (clocks, start-up)."""


class AlertingService(Service):
    """Starts the incident store and the sinks with the app, and stops them after its agents.

    Parameters:
        fanout: The sinks.
        incidents: The incident gate whose store to start and stop, if this service owns it.
        never_committed: Says whether the alerts agent's consumer group has never committed (a new
            app id); then :attr:`skip_before` is set.
    """

    def __init__(
        self,
        fanout: SinkFanout,
        *,
        incidents: IncidentManager | None = None,
        never_committed: Callable[[], Awaitable[bool]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.fanout = fanout
        self.incidents = incidents
        self._recoveries: set[asyncio.Task[None]] = set()
        self.never_committed = never_committed
        self.skip_before: float | None = None
        """Alerts detected before this time (seconds) are history to a new app id: not delivered."""

    def incident_closed(self, incident: Incident, closed_at: float) -> None:
        """Hands the closed incident to every sink (:meth:`SinkFanout.recover`) on the event loop;
        callable from any thread (the incident manager calls it from wherever ``recover`` ran)."""
        model, kind, subject = incident.key
        recovery = Recovery(
            model, kind, subject, incident.alert_id, incident.opened_at, closed_at, incident.alerts
        )
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None:
            self._spawn(recovery)
        else:
            self.loop.call_soon_threadsafe(self._spawn, recovery)

    def _spawn(self, recovery: Recovery) -> None:
        task = asyncio.create_task(self.fanout.recover(recovery))
        self._recoveries.add(task)
        task.add_done_callback(self._recoveries.discard)

    async def recoveries_handed_over(self) -> None:
        """Waits until the recoveries reported so far are with the sinks (queued, spooled or sent)."""
        while self._recoveries:
            await asyncio.gather(*list(self._recoveries), return_exceptions=True)

    async def on_start(self) -> None:
        if self.never_committed is not None:
            try:
                first = await self.never_committed()
            except Exception as exc:  # the broker's answer only narrows what is sent: deliver all
                log.warning("alerts: could not tell whether this app id is new (%r); delivering all", exc)
                first = False
            if first:
                self.skip_before = time.time() - FIRST_START_SLACK_S
        if self.incidents is not None:
            await self.incidents.store.start()
        await self.fanout.start()

    async def on_stop(self) -> None:
        await self.recoveries_handed_over()
        await self.fanout.close()
        if self.incidents is not None:
            await self.incidents.store.stop()


@dataclass
class AlertWiring:
    """What :func:`wire_alert_sinks` built; ``handle`` is the agent's logic, callable without Faust."""

    fanout: SinkFanout
    service: AlertingService
    metrics: Metrics
    incidents: IncidentManager | None = None
    metrics_source: MetricsSource | None = None
    """Set (or replace) at any time; None writes only the sinks' own counters."""
    tags: dict[str, str] = field(default_factory=dict)
    """Added to the sinks' counter points: which deployment (``app``) and worker (``worker``)."""
    received: int = 0
    invalid: int = 0
    skipped: int = 0
    _agent: Any = field(default=None, repr=False)

    async def handle(self, value: bytes | None) -> None:
        """Decodes one alerts-topic record (an alert or an incident notification) and fans it out; a bad
        record is logged and skipped."""
        self.received += 1
        if value is None:
            return  # a tombstone: nothing to deliver
        try:
            record = decode_record(value)
        except ValueError as exc:
            self.invalid += 1
            self.metrics.alert_records_invalid.inc()
            detail = "; ".join(str(exc).splitlines())[:300]  # one log line, bounded
            log.error(
                "alerts: skipping a record that is not a valid alert (%d bytes): %s", len(value), detail
            )
            return
        skip_before = self.service.skip_before
        when = record.updated_at if isinstance(record, IncidentReport) else record.detected_at
        if skip_before is not None and when.timestamp() < skip_before:
            if not self.skipped:
                log.info(
                    "alerts: a new app id: alerts raised before its first start are not sent to the sinks "
                    "again (counted in driftline_alerts_before_first_start_total)"
                )
            self.skipped += 1
            self.metrics.alerts_before_start.inc()
            return
        if isinstance(record, IncidentReport):
            await self.fanout.send_incident(record)
        else:
            await self.fanout.send(record)

    def collect_metrics(self) -> list[MetricPoint]:
        """The metrics source's points (errors are logged, not raised) plus each sink's counters."""
        points: list[MetricPoint] = []
        if self.metrics_source is not None:
            try:
                points.extend(self.metrics_source())
            except Exception:
                log.exception("alerts: the metrics source failed; writing only the sinks' counters")
        for sink in self.fanout.sinks:
            s = sink.stats
            points.append(
                MetricPoint(
                    "driftline_sink",
                    {
                        "alerts_delivered": s.delivered,
                        "alerts_failed": s.failed,
                        "alerts_spooled": s.spooled,
                        "retries": s.retries,
                        "points_written": s.points_written,
                        "points_dropped": s.points_dropped,
                    },
                    {**self.tags, "sink": sink.name},
                )
            )
        return points

    async def write_metrics(self) -> None:
        """One tick of the metrics timer; never raises (an exception would stop the timer's task)."""
        try:
            await self.fanout.send_metrics(self.collect_metrics())
        except Exception:
            log.exception("alerts: writing metrics failed")


def wire_alert_sinks(
    app: faust.App,
    settings: Settings,
    metrics: Metrics,
    *,
    incidents: IncidentManager | None = None,
    metrics_source: MetricsSource | None = None,
    sinks: list[Sink] | None = None,
) -> AlertWiring:
    """Registers the alerts agent, the sinks' service and the metrics timer on ``app``.

    Parameters:
        app: The worker's Faust app, not started yet.
        settings: The worker's settings (topics, sinks, metrics interval).
        metrics: The worker's Prometheus counters.
        incidents: The incident gate; its store is started before the app's tasks run (so before the
            serving loop) and stopped after the agents. Starting it elsewhere too is harmless.
        metrics_source: What the metrics timer writes besides the sinks' counters.
        sinks: Instead of the ones the settings ask for (tests).
    """
    gauges: list[Sink] = []
    if sinks is None:
        sinks = build_sinks(settings, metrics)
        if settings.web.drift_gauges:
            # Not an alert sink: it turns the metrics points into /metrics gauges.
            gauges.append(PrometheusSink(metrics))
    if not sinks:
        log.warning("alerts: no sink configured; alerts stay on the %s topic only", settings.topics.alerts)
    sinks = [*sinks, *gauges]
    fanout = SinkFanout(sinks, metrics=metrics)

    async def never_committed() -> bool:
        # Faust's agents consume as the app's group (the app id).
        admin = AIOKafkaAdminClient(**aiokafka_options(settings.kafka))
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(settings.app_id)
        finally:
            await admin.close()
        return not any(tp.topic == settings.topics.alerts for tp in offsets)

    service = AlertingService(fanout, incidents=incidents, never_committed=never_committed, loop=app.loop)
    if incidents is not None:
        # The worker that closes an incident reports it, once: PagerDuty resolves, Slack says so.
        incidents.on_close(service.incident_closed)
    wiring = AlertWiring(fanout, service, metrics, incidents, metrics_source)
    wiring.tags = worker_tags(settings.app_id, settings.web.port)
    # Added before the app starts (after its topic set-up, see agent.app), so started before Faust's
    # consumer and the app's tasks (the serving loop), and stopped after them (mode stops children in
    # reverse order).
    app.add_dependency(service)

    topic = app.topic(
        settings.topics.alerts,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )

    async def deliver_alerts(stream: faust.StreamT[bytes]) -> None:
        async for value in stream:
            try:
                await wiring.handle(value)
            except Exception:
                # An agent that raises crashes the worker; the sinks contain their own failures, so
                # this is a bug, and the alert is lost to the sinks rather than the worker to everyone.
                log.exception("alerts: delivering a record failed unexpectedly")

    wiring._agent = app.agent(topic, name=f"{settings.app_id}.alert-sinks")(deliver_alerts)
    app.timer(interval=settings.influx.metrics_interval_s)(wiring.write_metrics)
    return wiring
