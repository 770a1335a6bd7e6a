"""Where the producers publish: the agent's own environment variables, read without importing the agent.

Producers run next to a user's application, where the agent is not installed, so this module repeats
the few settings they need from ``agent.settings``, with the same variable names and the same defaults
(a test keeps the two equal): ``DRIFTLINE_TOPICS__REQUESTS``, ``DRIFTLINE_TOPICS__OUTCOMES``,
``DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS`` (or the conventional ``KAFKA_BOOTSTRAP_SERVERS``) and the
``DRIFTLINE_KAFKA__*`` SASL/TLS settings, which pass through to aiokafka.

Example:
    >>> TopicConfig().requests, TopicConfig().outcomes
    ('driftline-requests', 'driftline-outcomes')
    >>> aiokafka_options(KafkaConfig(bootstrap_servers="broker:9092"))
    {'bootstrap_servers': 'broker:9092', 'security_protocol': 'PLAINTEXT'}
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["KafkaConfig", "ProducerSettings", "TopicConfig", "aiokafka_options"]


class KafkaConfig(BaseModel):
    """How to reach the Kafka cluster (the agent's ``KafkaSettings``)."""

    bootstrap_servers: str = "127.0.0.1:9092"
    """Comma-separated ``host:port`` list."""

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """Passed through to the producer."""

    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    """SASL mechanism when ``security_protocol`` is a SASL one."""

    sasl_username: str | None = None
    """SASL user name."""

    sasl_password: SecretStr | None = None
    """SASL password; never logged."""

    ssl_cafile: Path | None = None
    """CA bundle for TLS connections to the brokers."""

    request_timeout_ms: int | None = Field(default=None, ge=1000)
    """How long the producer waits for a broker's answer before a request fails; unset: aiokafka's
    40 s."""


class TopicConfig(BaseModel):
    """The topics the producers write (the agent's ``TopicSettings``, the fields producers need)."""

    requests: str = "driftline-requests"
    """Prediction requests, keyed by request id."""

    outcomes: str = "driftline-outcomes"
    """Observed outcomes, keyed by request id."""


class ProducerSettings(BaseSettings):
    """Kafka connection and topic names, from ``DRIFTLINE_*`` environment variables and defaults.

    Parameters:
        kafka: Connection settings (``DRIFTLINE_KAFKA__*``; ``KAFKA_BOOTSTRAP_SERVERS`` as fallback).
        topics: Topic names (``DRIFTLINE_TOPICS__*``).
    """

    # Same prefix and delimiter as the agent's Settings, and extra="ignore" so that the agent's other
    # DRIFTLINE_* variables in a shared environment are not errors here.
    model_config = SettingsConfigDict(env_prefix="DRIFTLINE_", env_nested_delimiter="__", extra="ignore")

    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    topics: TopicConfig = Field(default_factory=TopicConfig)

    @model_validator(mode="before")
    @classmethod
    def _conventional_env(cls, data: Any) -> Any:
        # The agent honours KAFKA_BOOTSTRAP_SERVERS when DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS is unset;
        # a producer must land on the same broker as the agent it feeds.
        value = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if isinstance(data, dict) and value:
            section = data.get("kafka")
            if section is None:
                section = data["kafka"] = {}
            if isinstance(section, dict):
                section.setdefault("bootstrap_servers", value)
        return data


def aiokafka_options(config: KafkaConfig) -> dict[str, Any]:
    """Keyword arguments for ``AIOKafkaProducer``: bootstrap servers plus the SASL/TLS passthrough."""
    options: dict[str, Any] = {
        "bootstrap_servers": config.bootstrap_servers,
        "security_protocol": config.security_protocol,
    }
    if config.request_timeout_ms is not None:
        options["request_timeout_ms"] = config.request_timeout_ms
    if "SSL" in config.security_protocol:
        cafile = str(config.ssl_cafile) if config.ssl_cafile else None
        options["ssl_context"] = ssl.create_default_context(cafile=cafile)
    if config.security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = config.sasl_mechanism or "PLAIN"
        options["sasl_plain_username"] = config.sasl_username
        options["sasl_plain_password"] = (
            config.sasl_password.get_secret_value() if config.sasl_password else None
        )
    return options
