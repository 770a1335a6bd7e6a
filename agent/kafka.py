"""Kafka client options built from settings, so every client driftline creates connects the same way.

SASL and TLS settings pass through to aiokafka (and, as broker credentials, to Faust), and the
password is only unwrapped here, at the moment a client is built. aiokafka logs every request it sends
at DEBUG, fields included, and the SASL authenticate request's field is the login token (for PLAIN,
the password in clear): importing this module redacts those records, for every aiokafka client of
the process (Faust's too).

Example:
    >>> from agent.settings import KafkaSettings
    >>> aiokafka_options(KafkaSettings())
    {'bootstrap_servers': '127.0.0.1:9092', 'security_protocol': 'PLAINTEXT'}
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from agent.settings import KafkaSettings

__all__ = [
    "aiokafka_options",
    "committed_offsets",
    "read_records",
    "read_to_end",
    "replay_records",
    "ssl_context",
]


class _RedactSaslTokens(logging.Filter):
    """Replaces SASL authenticate requests and responses in aiokafka's DEBUG records by their name."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(_is_sasl_token(a) for a in args):
            record.args = tuple(f"{type(a).__name__}(<redacted>)" if _is_sasl_token(a) else a for a in args)
        return True


def _is_sasl_token(arg: object) -> bool:
    return type(arg).__name__.startswith("SaslAuthenticate")


logging.getLogger("aiokafka.conn").addFilter(_RedactSaslTokens())


def ssl_context(settings: KafkaSettings) -> ssl.SSLContext | None:
    """A TLS context for SSL/SASL_SSL connections, verifying against ``ssl_cafile`` if given."""
    if "SSL" not in settings.security_protocol:
        return None
    cafile = str(settings.ssl_cafile) if settings.ssl_cafile else None
    return ssl.create_default_context(cafile=cafile)


def aiokafka_options(settings: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments for ``AIOKafkaProducer``/``AIOKafkaConsumer``/``AIOKafkaAdminClient``."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.security_protocol,
    }
    if settings.request_timeout_ms is not None:
        options["request_timeout_ms"] = settings.request_timeout_ms
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = settings.sasl_mechanism or "PLAIN"
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = (
            settings.sasl_password.get_secret_value() if settings.sasl_password else None
        )
    return options


async def read_records(
    options: dict[str, Any], topic: str, partitions: Iterable[int], timeout_s: float
) -> dict[int, list[Any]]:
    """Every record (aiokafka ``ConsumerRecord``) of ``topic``'s ``partitions``, by partition, from the
    beginning to the end as of the call. Raises ``TimeoutError`` when the end is not reached within
    ``timeout_s``."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    out: dict[int, list[Any]] = {tp.partition: [] for tp in tps}
    if not tps:
        return out
    consumer = AIOKafkaConsumer(**options, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        async with asyncio.timeout(timeout_s):
            while any([await consumer.position(tp) < end[tp] for tp in tps]):
                for tp, records in (await consumer.getmany(*tps, timeout_ms=200)).items():
                    out[tp.partition].extend(records)
    finally:
        await consumer.stop()
    return out


async def replay_records(
    options: dict[str, Any],
    topic: str,
    until: Mapping[int, int],
    apply: Callable[[int, list[Any]], object],
    *,
    timeout_s: float,
    since_ms: int | None = None,
    last: int | None = None,
) -> bool:
    """Hands ``apply(partition, records)`` the records of ``topic``'s partitions (the keys of
    ``until``) as they are read, in order, from the first record at or after ``since_ms`` (Kafka's
    time index; the beginning if None) to the offset before ``until[partition]``, and at most the
    ``last`` records before it if given. Nothing is kept meanwhile: state is rebuilt as the records
    come. Returns False if ``timeout_s`` passed first (what was applied stays applied)."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    tps = [TopicPartition(topic, p) for p in sorted(until)]
    if not tps:
        return True
    consumer = AIOKafkaConsumer(**options, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        end = {tp: min(offset, until[tp.partition]) for tp, offset in end.items()}
        if since_ms is not None:
            found = await consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
            for tp, at in found.items():
                # No record since then: nothing to replay.
                consumer.seek(tp, end[tp] if at is None else min(at.offset, end[tp]))
        if last is not None:
            for tp in tps:
                position = await consumer.position(tp)
                if position < end[tp] - last:
                    consumer.seek(tp, end[tp] - last)
        try:
            async with asyncio.timeout(timeout_s):
                while any([await consumer.position(tp) < end[tp] for tp in tps]):
                    for tp, records in (await consumer.getmany(*tps, timeout_ms=200)).items():
                        apply(tp.partition, [r for r in records if r.offset < end[tp]])
        except TimeoutError:
            return False
    finally:
        await consumer.stop()
    return True


async def committed_offsets(
    options: dict[str, Any], group: str, topic: str, partitions: Iterable[int], timeout_s: float
) -> dict[int, int]:
    """The offsets ``group`` committed on ``topic``'s ``partitions`` (those it never committed are
    absent). Raises ``TimeoutError`` after ``timeout_s``, or aiokafka's error."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.structs import TopicPartition

    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    if not tps:
        return {}
    admin = AIOKafkaAdminClient(**options)
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
            offsets = await admin.list_consumer_group_offsets(group, partitions=tps)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


async def read_to_end(
    options: dict[str, Any], topic: str, partitions: Iterable[int], timeout_s: float
) -> dict[int, list[tuple[bytes, bytes | None]]]:
    """Every (key, value) of ``topic``'s ``partitions`` from the beginning to the current end.

    Used to restore state kept in compacted changelog topics. Raises ``TimeoutError`` when the end is
    not reached within ``timeout_s``.
    """
    records = await read_records(options, topic, partitions, timeout_s)
    return {p: [(r.key or b"", r.value) for r in rs] for p, rs in records.items()}
