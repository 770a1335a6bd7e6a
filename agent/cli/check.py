"""Check that Kafka and InfluxDB answer: a message and a point make a visible round trip.

Uses the same settings as ``driftline run`` (``DRIFTLINE_*`` or ``KAFKA_BOOTSTRAP_SERVERS`` /
``INFLUXDB_*``), so a passing check means the agent can reach both.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

from agent.errors import ConfigurationError, ServiceUnavailableError
from agent.settings import InfluxSettings, KafkaSettings, Settings

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--topic", default="driftline-check", help="topic for the round trip (default: %(default)s)"
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each service")


async def kafka_round_trip(settings: KafkaSettings, topic: str, timeout: float) -> float:
    """Produces one message and reads it back; returns the round trip in seconds."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.errors import KafkaError
    from aiokafka.structs import TopicPartition

    from agent.kafka import aiokafka_options

    options = aiokafka_options(settings)
    payload = uuid.uuid4().hex.encode()
    producer = AIOKafkaProducer(**options, acks="all", request_timeout_ms=int(timeout * 1000))
    consumer = AIOKafkaConsumer(**options, enable_auto_commit=False)
    try:
        async with asyncio.timeout(timeout):
            await producer.start()
            started = time.perf_counter()
            meta = await producer.send_and_wait(topic, value=payload)
            await consumer.start()
            tp = TopicPartition(topic, meta.partition)
            consumer.assign([tp])
            consumer.seek(tp, meta.offset)
            while True:
                record = await consumer.getone()
                if record.value == payload:
                    return time.perf_counter() - started
    except (TimeoutError, KafkaError, OSError) as exc:
        raise ServiceUnavailableError(
            f"Kafka at {settings.bootstrap_servers} did not complete a round trip on topic "
            f"{topic!r} within {timeout:g} s: {exc!r}"
        ) from exc
    finally:
        await producer.stop()
        await consumer.stop()


def influx_round_trip(settings: InfluxSettings, timeout: float) -> float:
    """Writes one point and queries it back with Flux; returns the round trip in seconds."""
    from influxdb_client import InfluxDBClient, Point
    from influxdb_client.client.write_api import SYNCHRONOUS

    if settings.token is None:
        raise ConfigurationError(
            "no InfluxDB token: set DRIFTLINE_INFLUX__TOKEN or INFLUXDB_TOKEN "
            "(scripts/services env prints the local one)"
        )
    marker = uuid.uuid4().hex
    try:
        with InfluxDBClient(
            url=settings.url,
            token=settings.token.get_secret_value(),
            org=settings.org,
            timeout=int(timeout * 1000),
        ) as client:
            started = time.perf_counter()
            point = Point("driftline_check").tag("marker", marker).field("ok", 1)
            client.write_api(write_options=SYNCHRONOUS).write(bucket=settings.bucket, record=point)
            tables = client.query_api().query(
                f'from(bucket: "{settings.bucket}") |> range(start: -5m) '
                f'|> filter(fn: (r) => r._measurement == "driftline_check" '
                f'and r.marker == "{marker}")'
            )
            if not any(table.records for table in tables):
                raise ServiceUnavailableError(
                    f"InfluxDB at {settings.url} accepted a point but did not return it"
                )
            return time.perf_counter() - started
    except ServiceUnavailableError:
        raise
    except Exception as exc:  # the client raises urllib3, ApiException and OS errors alike
        raise ServiceUnavailableError(
            f"InfluxDB at {settings.url} (org {settings.org!r}, bucket {settings.bucket!r}) "
            f"failed the round trip: {exc}"
        ) from exc


def run(args: argparse.Namespace) -> int:
    settings = Settings()
    print(f"Kafka     {settings.kafka.bootstrap_servers} ...", end=" ", flush=True)
    took = asyncio.run(kafka_round_trip(settings.kafka, args.topic, args.timeout))
    print(f"ok: produced and consumed one message on {args.topic!r} in {took * 1000:.1f} ms")
    print(f"InfluxDB  {settings.influx.url} ...", end=" ", flush=True)
    took = influx_round_trip(settings.influx, args.timeout)
    print(
        f"ok: wrote one point to bucket {settings.influx.bucket!r} and read it back "
        f"with Flux in {took * 1000:.1f} ms"
    )
    return 0
