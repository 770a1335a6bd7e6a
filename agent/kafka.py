"""Kafka client options built from settings, so every client driftline creates connects the same way.

SASL and TLS settings pass through to aiokafka (and, as broker credentials, to Faust), and the
password is only unwrapped here, at the moment a client is built.

Example:
    >>> from agent.settings import KafkaSettings
    >>> aiokafka_options(KafkaSettings())
    {'bootstrap_servers': '127.0.0.1:9092', 'security_protocol': 'PLAINTEXT'}
"""

from __future__ import annotations

import ssl
from typing import Any

from agent.settings import KafkaSettings

__all__ = ["aiokafka_options", "ssl_context"]


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
