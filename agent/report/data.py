"""What a drift report holds, and gathering it: alerts and time series from InfluxDB, recent inputs and
outputs from Kafka, the reference from the model package's manifest.

Everything is plain values (:class:`ModelReport`), so the page (:mod:`agent.report.html`) is drawn
from data a test can build by hand. Gathering degrades instead of failing: without an InfluxDB token
the page has no time series and says so; with Kafka unreachable it has no recent distributions and
says so.

Example:
    >>> from schemas.manifest import NumericStatistics
    >>> stats = NumericStatistics.from_values(np.arange(101.0))
    >>> d = numeric_distribution("x", stats, [10.0, 20.0, 30.0, 40.0])
    >>> d.reference[50], d.recent[0], d.recent[-1], d.recent_count
    ((50.0, 0.5), (10.0, 0.0), (40.0, 1.0), 4)
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import orjson

from agent.alerting.query import AlertRow, query_alerts
from agent.errors import ConfigurationError, DriftlineError
from agent.kafka import aiokafka_options
from agent.settings import InfluxSettings, Settings
from schemas.manifest import QUANTILE_PROBABILITIES, CategoricalStatistics, Manifest, NumericStatistics

__all__ = [
    "Distribution",
    "ModelReport",
    "ReportAlert",
    "Series",
    "categorical_distribution",
    "gather",
    "numeric_distribution",
    "parse_period",
    "recent_columns",
]

_CDF_POINTS = 101


@dataclass(frozen=True)
class Series:
    """A time series: ``(unix seconds, value)`` points, oldest first."""

    label: str
    points: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Distribution:
    """A column's reference distribution against its recent one.

    Numeric: both as cumulative distributions, ``(value, probability)`` points. Categorical: each
    category's ``(name, reference share, recent share)``.
    """

    column: str
    kind: Literal["numeric", "categorical"]
    reference: tuple[tuple[float, float], ...] = ()
    recent: tuple[tuple[float, float], ...] = ()
    categories: tuple[tuple[str, float, float], ...] = ()
    recent_count: int = 0


@dataclass(frozen=True)
class ReportAlert:
    """One alert on the report's timeline and in its table."""

    time: float
    kind: str
    severity: str
    subject: str
    detector: str
    message: str
    alert_id: str

    @classmethod
    def of(cls, row: AlertRow) -> ReportAlert:
        return cls(
            row.time.timestamp(), row.kind, row.severity, row.subject, row.detector, row.message, row.alert_id
        )


@dataclass
class ModelReport:
    """Everything one model's section of the page shows."""

    model: str
    version: str
    since: float
    until: float
    alerts: list[ReportAlert] = field(default_factory=list)
    distributions: list[Distribution] = field(default_factory=list)
    """The features of the manifest, then the output (column ``prediction``)."""
    shift: dict[str, Series] = field(default_factory=dict)
    """Column -> its windowed shift in reference sds over time (the monitored statistic)."""
    detectors: dict[str, list[Series]] = field(default_factory=dict)
    """Column -> each detector's statistic over time."""
    error: Series | None = None
    """The joined outcomes' error (``error_rate`` or ``mae``) over time."""
    notes: list[str] = field(default_factory=list)
    """What could not be gathered, and why."""


def numeric_distribution(column: str, stats: NumericStatistics, recent: Sequence[float]) -> Distribution:
    """The reference quantiles against the recent values' empirical quantiles (missing values left out)."""
    reference = tuple(zip(stats.quantiles, QUANTILE_PROBABILITIES, strict=False)) if stats.quantiles else ()
    values = np.asarray([v for v in recent if v is not None and math.isfinite(v)], dtype=np.float64)
    cdf: tuple[tuple[float, float], ...] = ()
    if values.size:
        probabilities = np.linspace(0.0, 1.0, _CDF_POINTS)
        cdf = tuple(
            (float(q), float(p))
            for q, p in zip(np.quantile(values, probabilities), probabilities, strict=True)
        )
    return Distribution(column, "numeric", reference=reference, recent=cdf, recent_count=int(values.size))


def categorical_distribution(
    column: str, stats: CategoricalStatistics, recent: Sequence[object]
) -> Distribution:
    """Each category's reference share against its recent share (categories unseen in training too)."""
    seen = [str(v) for v in recent if v is not None]
    counts = Counter(seen)
    names = list(stats.frequencies) + sorted(set(counts) - set(stats.frequencies))
    total = max(len(seen), 1)
    rows = tuple((n, float(stats.frequencies.get(n, 0.0)), counts[n] / total) for n in names)
    return Distribution(column, "categorical", categories=rows, recent_count=len(seen))


def _output_value(manifest: Manifest, prediction: Mapping[str, Any]) -> float | None:
    quantity = manifest.reference.output.quantity
    if quantity == "value":
        value = prediction.get("value")
        return float(value) if isinstance(value, int | float) else None
    probabilities = prediction.get("probabilities")
    if not isinstance(probabilities, dict) or not probabilities:
        return None
    if quantity == "positive_probability":
        labels = manifest.outputs.class_labels or ()
        key = str(labels[1]) if len(labels) > 1 else None
        value = probabilities.get(key) if key is not None else None
        return float(value) if isinstance(value, int | float) else None
    return float(max(probabilities.values()))


def distributions(
    manifest: Manifest, requests: Sequence[Mapping[str, Any]], predictions: Sequence[Mapping[str, Any]]
) -> list[Distribution]:
    """Every feature's distribution (from the requests' ``features``) and the output's (from the
    predictions), against the manifest's reference."""
    out = []
    for feature in manifest.features:
        stats = manifest.reference.features.get(feature.name)
        values = [r.get(feature.name) for r in requests]
        if isinstance(stats, CategoricalStatistics):
            out.append(categorical_distribution(feature.name, stats, values))
        elif isinstance(stats, NumericStatistics):
            numeric = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
            out.append(numeric_distribution(feature.name, stats, numeric))
    outputs = [v for v in (_output_value(manifest, p) for p in predictions) if v is not None]
    out.append(numeric_distribution("prediction", manifest.reference.output.statistics, outputs))
    return out


# --- gathering ---------------------------------------------------------------------------------------


def _flux_time(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _flux_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${")
    return f'"{escaped}"'


def _series_query(
    bucket: str,
    model: str,
    since: float,
    until: float,
    measurement: str,
    fields: Iterable[str],
    by: Sequence[str],
) -> str:
    every = max(10, int((until - since) / 240))  # about 240 points per line, whatever the range
    field_filter = " or ".join(f"r._field == {_flux_string(f)}" for f in fields)
    group = ", ".join(f'"{c}"' for c in (*by, "_field"))
    return "\n".join(
        [
            f"from(bucket: {_flux_string(bucket)})",
            f"  |> range(start: {_flux_time(since)}, stop: {_flux_time(until)})",
            f"  |> filter(fn: (r) => r._measurement == {_flux_string(measurement)})",
            f"  |> filter(fn: (r) => r.model == {_flux_string(model)})",
            f"  |> filter(fn: (r) => {field_filter})",
            f"  |> group(columns: [{group}])",
            f"  |> aggregateWindow(every: {every}s, fn: mean, createEmpty: false)",
        ]
    )


def _influx(settings: InfluxSettings, report: ModelReport) -> None:
    """Fills the alerts and the time series from InfluxDB (blocking: run it in a thread)."""
    from influxdb_client import InfluxDBClient

    since = datetime.fromtimestamp(report.since, UTC)
    rows = query_alerts(settings, since=since, model=report.model, limit=10_000)
    report.alerts = sorted(
        (ReportAlert.of(r) for r in rows if r.time.timestamp() <= report.until), key=lambda a: a.time
    )
    assert settings.token is not None
    with InfluxDBClient(
        url=settings.url, token=settings.token.get_secret_value(), org=settings.org, timeout=30_000
    ) as client:
        api = client.query_api()

        def series(
            measurement: str, fields: Iterable[str], by: Sequence[str]
        ) -> list[tuple[dict[str, Any], Series]]:
            query = _series_query(
                settings.bucket, report.model, report.since, report.until, measurement, fields, by
            )
            out = []
            for table in api.query(query):
                records = table.records
                if not records:
                    continue
                tags = {c: records[0].values.get(c) for c in (*by, "_field")}
                points = tuple(
                    (r.get_time().timestamp(), float(r.get_value()))
                    for r in records
                    if r.get_value() is not None and math.isfinite(float(r.get_value()))
                )
                out.append((tags, Series(str(tags.get("detector") or tags["_field"]), points)))
            return out

        for tags, s in series("driftline_feature", ["shift_sd"], ["feature"]):
            report.shift[str(tags["feature"])] = s
        for tags, s in series("driftline_detector", ["statistic"], ["feature", "detector"]):
            report.detectors.setdefault(str(tags["feature"]), []).append(s)
        for column in report.detectors:
            report.detectors[column].sort(key=lambda s: s.label)
        errors = series("driftline_error", ["error_rate", "mae"], [])
        if errors:
            report.error = errors[0][1]


async def recent_columns(
    settings: Settings, model: str, since: float, sample: int, timeout_s: float = 30.0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The last ``sample`` requests' features for ``model`` since ``since`` (from the requests topic)
    and its last ``sample`` predictions (from the predictions topic), newest kept."""
    requests = await _read_recent(settings, settings.topics.requests, since, sample, timeout_s)
    predictions = await _read_recent(settings, settings.topics.predictions, since, sample, timeout_s)
    features = [
        r["features"] for r in requests if r.get("model") == model and isinstance(r.get("features"), dict)
    ]
    outputs = [p for p in predictions if p.get("model") == model]
    return features[-sample:], outputs[-sample:]


async def _read_recent(
    settings: Settings, topic: str, since: float, sample: int, timeout_s: float
) -> list[dict[str, Any]]:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.structs import TopicPartition

    options = aiokafka_options(settings.kafka)
    admin = AIOKafkaAdminClient(**options)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    tps = [
        TopicPartition(topic, p["partition"])
        for d in described
        if d.get("error_code", 0) == 0
        for p in d["partitions"]
    ]
    if not tps:
        return []
    consumer = AIOKafkaConsumer(**options, enable_auto_commit=False)
    await consumer.start()
    out: list[tuple[int, dict[str, Any]]] = []
    try:
        consumer.assign(tps)
        end = await consumer.end_offsets(tps)
        at = await consumer.offsets_for_times({tp: int(since * 1000) for tp in tps})
        # Read at most a few samples' worth per partition: other models share the topic.
        budget = max(4 * sample // len(tps), 1)
        for tp in tps:
            found = at.get(tp)
            start = end[tp] if found is None else found.offset
            consumer.seek(tp, max(start, end[tp] - budget))
        async with asyncio.timeout(timeout_s):
            while any([await consumer.position(tp) < end[tp] for tp in tps]):
                for records in (await consumer.getmany(*tps, timeout_ms=200)).values():
                    for record in records:
                        if record.value is None:
                            continue
                        try:
                            value = orjson.loads(record.value)
                        except orjson.JSONDecodeError:
                            continue
                        if isinstance(value, dict):
                            out.append((record.timestamp, value))
    finally:
        await consumer.stop()
    out.sort(key=lambda item: item[0])
    return [value for _, value in out]


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_period(text: str, *, now: float | None = None) -> float:
    """The unix start time ``text`` means: a duration back from ``now`` (``90s``, ``30m``, ``6h``, ``2d``,
    ``1w``) or an ISO time (UTC without a zone).

    Example:
        >>> parse_period("2h", now=10_000.0), parse_period("1970-01-01T01:00:00")
        (2800.0, 3600.0)
    """
    now = time.time() if now is None else now
    match = _DURATION.match(text.strip().lower())
    if match:
        return now - float(match.group(1)) * _SECONDS[match.group(2)]
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ConfigurationError(
            f"--since {text!r} is neither a duration (30m, 6h, 2d) nor an ISO time"
        ) from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


async def gather(
    settings: Settings,
    manifest: Manifest,
    *,
    since: float,
    until: float,
    sample: int = 5000,
) -> ModelReport:
    """A model's report: InfluxDB's alerts and series, Kafka's recent rows, the manifest's reference."""
    report = ModelReport(manifest.name, manifest.version, since, until)
    influx = settings.influx
    if influx.token is None or not influx.token.get_secret_value():
        report.notes.append(
            "no InfluxDB token (DRIFTLINE_INFLUX__TOKEN / INFLUXDB_TOKEN): no alerts or time series"
        )
    else:
        try:
            await asyncio.to_thread(_influx, influx, report)
        except DriftlineError as exc:
            report.notes.append(f"InfluxDB: {exc}")
        except Exception as exc:  # a report shows what it could gather
            report.notes.append(f"InfluxDB could not be read: {type(exc).__name__}")
    requests: list[dict[str, Any]] = []
    predictions: list[dict[str, Any]] = []
    try:
        requests, predictions = await recent_columns(settings, manifest.name, since, sample)
    except Exception as exc:
        report.notes.append(f"Kafka could not be read ({type(exc).__name__}): no recent distributions")
    report.distributions = distributions(manifest, requests, predictions)
    return report
