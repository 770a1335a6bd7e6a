"""driftline's one settings class, built once at start-up and passed down.

Every field reads from the environment with the ``DRIFTLINE_`` prefix; nested groups use ``__`` as
the delimiter (``DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS``). Every default works on loopback, against the
services that ``scripts/services up`` starts.

The conventional variables that the tests and the services script export
(``KAFKA_BOOTSTRAP_SERVERS``, ``INFLUXDB_URL``, ``INFLUXDB_TOKEN``, ``INFLUXDB_ORG``,
``INFLUXDB_BUCKET``) are honoured as fallbacks when the ``DRIFTLINE_`` ones are not set.

Example:
    >>> s = Settings(_env_file=None)
    >>> s.kafka.bootstrap_servers
    '127.0.0.1:9092'
    >>> s.web.host
    '127.0.0.1'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "DeliverySettings",
    "IncidentSettings",
    "InfluxSettings",
    "KafkaSettings",
    "MonitoringSettings",
    "PagerDutySettings",
    "ServingSettings",
    "Settings",
    "SlackSettings",
    "TopicSettings",
    "WebSettings",
    "WebhookSettings",
]

# Conventional variables (shared with the tests and scripts/services) -> (group, field).
_FALLBACK_ENV = {
    "KAFKA_BOOTSTRAP_SERVERS": ("kafka", "bootstrap_servers"),
    "INFLUXDB_URL": ("influx", "url"),
    "INFLUXDB_TOKEN": ("influx", "token"),
    "INFLUXDB_ORG": ("influx", "org"),
    "INFLUXDB_BUCKET": ("influx", "bucket"),
}


class KafkaSettings(BaseModel):
    """How to reach the Kafka cluster."""

    bootstrap_servers: str = "127.0.0.1:9092"
    """Comma-separated ``host:port`` list."""

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """Passed through to every Kafka client driftline creates."""

    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    """SASL mechanism when ``security_protocol`` is a SASL one."""

    sasl_username: str | None = None
    """SASL user name."""

    sasl_password: SecretStr | None = None
    """SASL password; never logged."""

    ssl_cafile: Path | None = None
    """CA bundle for TLS connections to the brokers."""

    request_timeout_ms: int | None = Field(default=None, ge=1000)
    """How long driftline's Kafka clients wait for a broker's answer (a produce, a fetch, a commit)
    before the request fails; unset: aiokafka's 40 s. A produce that fails makes the serving loop
    rewind and process its batch again."""


class TopicSettings(BaseModel):
    """Names of the topics driftline reads and writes."""

    requests: str = "driftline-requests"
    """Prediction requests, keyed by request id."""

    predictions: str = "driftline-predictions"
    """Predictions, keyed by request id."""

    outcomes: str = "driftline-outcomes"
    """Observed outcomes, keyed by request id."""

    alerts: str = "driftline-alerts"
    """Drift alerts."""

    dead_letters: str = "driftline-dead-letters"
    """Events that could not be served, with the reason."""

    partitions: int = Field(default=4, ge=1)
    """Partitions of each topic ``driftline run`` creates when it is missing (the unit of scale-out)."""

    replication_factor: int = Field(default=1, ge=1)
    """Replication factor of the topics ``driftline run`` creates."""


class ServingSettings(BaseModel):
    """Which models to serve and how requests are batched."""

    model_repository: Path = Path("models")
    """Folder of ``NAME/VERSION/`` model packages."""

    pinned_versions: dict[str, str] = Field(default_factory=dict)
    """Model name -> version to serve; other models serve their newest version."""

    intra_op_num_threads: int = Field(default=1, ge=1)
    """ONNX Runtime threads per inference call; 1 because driftline scales out by worker processes."""

    repository_poll_interval_s: float = 5.0
    """How often the repository is scanned for new versions."""

    batch_size: int = Field(default=500, ge=1)
    """Largest number of requests handled in one inference batch. From ``bench/sweep.py``
    (BENCHMARKS.md): throughput reaches its plateau at 500 (100: -30 %, 250: -8 %, 1,000 and 2,000
    within the run-to-run noise of 500), and a bigger batch only lengthens the worst case, a full
    batch handled before any of its predictions goes out (~14 ms at 500)."""

    batch_max_wait_ms: float = Field(default=5.0, ge=0)
    """Longest time a batch keeps filling after its first requests arrived (0: a batch is what one
    fetch brought). From ``bench/sweep.py`` at half the highest rate: 5 ms costs ~6 ms of p50 and
    saves 20 % of the worker's CPU against 0 (0.62 vs 0.77 cores at 12,500/s), with the p99 the
    same within the noise; 10 ms and more raise the p99."""

    max_event_bytes: int = Field(default=64 * 1024, ge=64)
    """Larger request payloads are dead-lettered without being parsed."""

    max_requested_versions: int = Field(default=8, ge=0)
    """Model versions besides the served ones that a worker loads because requests name them
    (``model_version``), each an ONNX Runtime session kept for the worker's life; requests for more
    are dead-lettered (``unknown_model``, saying why) and counted in
    ``driftline_names_refused_total{what="version"}``."""


class InfluxSettings(BaseModel):
    """Where alerts and metrics are stored."""

    url: str = "http://127.0.0.1:8086"
    """InfluxDB 2.x base URL (the ``/api/v2`` endpoints are used)."""

    token: SecretStr | None = None
    """API token; never logged."""

    org: str = "driftline"
    """Organisation name."""

    bucket: str = "driftline"
    """Bucket for alerts and metrics."""

    timeout_s: float = Field(default=5.0, gt=0)
    """Per-request timeout of a write; a write that times out is spooled and retried."""

    metrics_interval_s: float = Field(default=10.0, gt=0)
    """How often the worker's metrics (rates, latency, feature means, detector statistics) are written."""

    spool_dir: Path | None = None
    """Where points wait while InfluxDB cannot be reached; default ``<data_dir>/spool/influx``."""

    spool_max_bytes: int = Field(default=64 * 1024 * 1024, ge=64 * 1024)
    """Size cap of the spool: the oldest metrics go first when it is full; alerts are never dropped
    to make room (an alert refused by a spool full of alerts is counted and logged)."""

    retry_initial_s: float = Field(default=0.5, gt=0)
    """First wait before the spool is written again after a failure; doubles up to ``retry_max_s``."""

    retry_max_s: float = Field(default=30.0, gt=0)
    """Longest wait between two attempts to write the spool."""


class DeliverySettings(BaseModel):
    """How an HTTP sink (webhooks, Slack, PagerDuty) retries and spools its deliveries."""

    timeout_s: float = 5.0
    """Per-attempt timeout."""

    max_attempts: int = Field(default=5, ge=1)
    """Attempts before a delivery counts as failed."""

    backoff_initial_s: float = Field(default=0.5, gt=0)
    """Wait before the second attempt; doubles for each further one, with jitter, up to ``backoff_max_s``."""

    backoff_max_s: float = Field(default=30.0, gt=0)
    """Longest wait between two attempts."""

    max_pending: int = Field(default=1000, ge=1)
    """Deliveries waiting or being retried at once; more are dropped, counted and logged."""

    concurrency: int = Field(default=4, ge=1)
    """Requests in flight at once, over all receivers."""

    drain_timeout_s: float = Field(default=5.0, ge=0)
    """At shutdown, how long pending deliveries may still take before they are left in the outbox."""

    outbox_dir: Path | None = None
    """Where deliveries wait on disk until they end, so that a restart (or a crash) sends them again;
    default ``<data_dir>/spool/<sink>`` (``webhook``, ``slack``, ``pagerduty``)."""


class WebhookSettings(DeliverySettings):
    """Where alerts are POSTed, signed as Standard Webhooks."""

    urls: list[str] = Field(default_factory=list)
    """Receivers; each alert is POSTed to every one of them."""

    secret: SecretStr | None = None
    """Standard Webhooks signing secret, ``whsec_`` and the base64 of a 24-64 byte key; never logged.
    A secret without the prefix is used as its UTF-8 bytes (as before Standard Webhooks)."""

    legacy_headers: bool = True
    """Also send the ``X-Driftline-Timestamp``/``-Signature``/``-Alert-Id`` headers of the previous
    scheme, so that receivers written against them keep working; on for this release only."""


class SlackSettings(DeliverySettings):
    """A Slack channel's incoming webhook: one message per alert (and per recovery)."""

    webhook_url: SecretStr | None = None
    """The incoming-webhook URL (``https://hooks.slack.com/services/...``); set: the Slack sink is on.
    The URL is the credential: never logged (logs name its host only)."""

    recoveries: bool = True
    """Also post a message when an incident recovers."""


class PagerDutySettings(DeliverySettings):
    """PagerDuty's Events API v2: ``trigger`` when an incident opens, ``resolve`` when it recovers."""

    routing_key: SecretStr | None = None
    """The integration key of an Events API v2 integration (32 characters); set: the PagerDuty sink is
    on. Never logged, never written to the outbox."""

    url: str = "https://events.pagerduty.com/v2/enqueue"
    """The Events API v2 endpoint (``https://events.eu.pagerduty.com/v2/enqueue`` for the EU service
    region)."""

    source: str | None = None
    """``payload.source`` of the events: where the drift is; default the app id (``DRIFTLINE_APP_ID``)."""

    client_url: str | None = None
    """A link PagerDuty shows with each alert (a Grafana dashboard, say)."""


class IncidentSettings(BaseModel):
    """The incident gate: one alert per incident, shared by every worker through a compacted topic."""

    topic: str | None = None
    """Compacted topic of open incidents; default ``<app_id>-incidents``. Created (compacted) if missing."""

    cooldown_s: float = Field(default=900.0, gt=0)
    """An incident still open this long after its last alert is alerted again (a reminder); an alert
    more severe than the incident has been (a warning become critical) is published at once."""

    restore_timeout_s: float = Field(default=10.0, gt=0)
    """Longest wait at start-up to read the incident topic to its end; after it the worker starts anyway
    (and may alert an ongoing incident once more)."""

    group_window_s: float = Field(default=900.0, ge=0)
    """A drift alert (data, prediction, performance, concept) that opens joins the same model's
    incident across kinds if that incident's latest alert opened at most this long before; 0: every
    alert is an incident of its own."""

    notify: Literal["incidents", "alerts", "both"] = "incidents"
    """What webhooks, Slack and PagerDuty are sent: one notification per change of an incident across
    kinds (it opened, grew or rose in severity, resolved), each alert and recovery (as before this
    release), or both. InfluxDB and the alerts topic always get both."""


class MonitoringSettings(BaseModel):
    """Drift monitoring of every served model (the detectors' parameters derive from
    ``false_alarms_per_million``, see ``agent/monitoring/budget.py``)."""

    enabled: bool = True
    """Watch data, prediction, concept and technical drift; off serves predictions only."""

    false_alarms_per_million: float = Field(default=1.0, gt=0, le=1e6)
    """The false-alarm budget of each model's data and prediction drift: expected false alarms per
    10**6 events with no drift, for the whole model (all its columns, statistics and detectors
    together). Each detector's threshold is derived from it and from the model's number of monitored
    streams (``agent/monitoring/budget.py``); a smaller budget means later detections."""

    recovery_shift_sd: float = Field(default=0.15, gt=0)
    """A data or prediction incident recovers once its windowed shift is back under this many
    standard deviations of the standardised stream."""

    alert_margin_z: float = Field(default=2.0, ge=0)
    """A data or prediction detection alerts at once if the shift it measured over the events since
    its change point, less this many standard errors of that measurement (``1/sqrt(events)``
    reference sds), is at least ``recovery_shift_sd`` from the reference. Otherwise it is judged
    again once a full window of later events is in, and alerts then if that window is at least
    ``recovery_shift_sd`` away. ADWIN puts its change point where the difference is largest, so a
    short segment overstates the shift: a stationary stream's spread measured -0.57 sd over the
    32 events ADWIN cut (``bench/calibrate_alerts.py``). 0 alerts on the measured shift alone."""

    rate_window_events: int = Field(default=2000, ge=10)
    """Events per window of the technical-drift rates (missing, out-of-range, unseen fields, types)."""

    rate_margin: float = Field(default=0.05, gt=0, lt=1)
    """A rate alerts when a window's share exceeds its reference rate by more than this, and recovers
    once a window is back within half of it (a rate near the threshold does not flap)."""

    max_watched_fields: int = Field(default=32, ge=0)
    """Unknown field names watched each on its own rate, per model; a new one takes the place of a
    name unseen for a full window, or is refused (counted in
    ``driftline_names_refused_total{what="field"}``)."""

    latency_warmup_batches: int = Field(default=50, ge=5)
    """Batches of each size class (1, 2-3, 4-7, ... 512+ rows) that set its inference-latency baseline
    before its batches are watched (see LatencyWatch)."""

    latency_threshold: float = Field(default=20.0, gt=0)
    """Page-Hinkley threshold on the per-second median of log(per-row inference latency / its batch
    size's baseline), allowance log(1.5): after 1,000 s at its level, found in 77 s of latency at
    twice it, 21 s at four times, 11 s at ten (see LatencyWatch)."""

    concept_drift: bool = True
    """Join outcomes to predictions by request id and watch the error (costs one changelog record
    per prediction)."""

    join_ttl_s: float = Field(default=900.0, gt=0)
    """An unmatched prediction is dropped (and counted) this long after it was made."""

    join_grace_s: float = Field(default=60.0, ge=0)
    """An outcome read before its prediction waits this long for it before it counts as unmatched.
    The requests and outcomes topics are read side by side: from a backlog (a worker started after
    its producers, or catching up after an outage) one may be read ahead of the other, and outcomes
    sent right after their requests race them. 0 counts such an outcome unmatched at once."""

    join_restore_timeout_s: float = Field(default=120.0, gt=0)
    """Longest time a worker reads the outcome join's topic back when it is assigned partitions of it
    (the last ``join_ttl_s`` of it; serving waits meanwhile). What was not read back by then is not
    joined (logged)."""

    fleet: bool = True
    """One monitor per model for the whole consumer group: every worker only sums its batches into
    blocks and ships them on the statistics topic; the worker that is assigned the model's partition
    of that topic runs the model's detectors over every worker's blocks and raises its alerts (one
    alert per drift, whatever the number of workers; ``agent/monitoring/fleet.py``). Off, each worker
    runs its own detectors over its share of the stream (one process only)."""

    stats_interval_s: float = Field(default=0.25, ge=0)
    """A fleet worker ships each model's blocks at most this often (and at this interval after a
    lull): fewer, larger statistics records cost the model's monitor less. A worker killed in
    between loses that much of its monitoring (never a request)."""

    stats_replay_s: float = Field(default=3600.0, gt=0)
    """How far back the model's monitor reads the statistics topic to rebuild its detectors when it
    is assigned a partition of it (after a restart, a crash or a rebalance); the topic keeps twice
    that."""

    stats_replay_records: int = Field(default=20_000, ge=0)
    """At most this many of the partition's last records are read back (each holds the blocks one
    worker completed in one batch: from 32 events at a low rate to a full batch, 500 by default)."""

    stats_replay_timeout_s: float = Field(default=120.0, gt=0)
    """Longest time that read-back may take (logged if cut short: the detectors then start from
    the blocks read so far)."""

    join_max_entries: int = Field(default=1_000_000, ge=1)
    """Most predictions a worker keeps waiting for their outcome: ~100-120 bytes each with
    producer-style request ids (``bench/join_cost.py``); a worker with the join full at this default
    peaked at 333-336 MB (BENCHMARKS.md)."""


class WebSettings(BaseModel):
    """The REST endpoint (Faust's web server)."""

    host: str = "127.0.0.1"
    """Bind address; loopback unless told otherwise."""

    port: int = 6066
    """Bind port."""

    drift_gauges: bool = True
    """Expose the drift statistics on ``/metrics`` as gauges (shift and detector statistic per model
    and column, the joined error, open incidents by kind and severity), updated every
    ``influx.metrics_interval_s``, for Prometheus users without InfluxDB."""


class Settings(BaseSettings):
    """All of driftline's settings, from ``DRIFTLINE_*`` environment variables and defaults."""

    model_config = SettingsConfigDict(
        env_prefix="DRIFTLINE_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    app_id: str = "driftline"
    """Faust app id: the consumer group and the prefix of internal topics."""

    data_dir: Path = Path(".driftline")
    """Local state of the worker (Faust's data directory)."""

    image: str | None = None
    """The worker's container image (``name:tag`` or a digest), named with its driftline and library
    versions in what an incident says changed around it; set it where the image is deployed."""

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    influx: InfluxSettings = Field(default_factory=InfluxSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    slack: SlackSettings = Field(default_factory=SlackSettings)
    pagerduty: PagerDutySettings = Field(default_factory=PagerDutySettings)
    incidents: IncidentSettings = Field(default_factory=IncidentSettings)
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)
    web: WebSettings = Field(default_factory=WebSettings)

    @model_validator(mode="before")
    @classmethod
    def _conventional_env(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for var, (group, field) in _FALLBACK_ENV.items():
            value = os.environ.get(var)
            if not value:
                continue
            section = data.get(group)
            if section is None:
                section = data[group] = {}
            if isinstance(section, dict):
                section.setdefault(field, value)
        return data
