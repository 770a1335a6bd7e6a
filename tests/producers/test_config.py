from __future__ import annotations

import pytest

from agent.kafka import aiokafka_options as agent_options
from agent.settings import KafkaSettings, Settings, TopicSettings
from producers.config import KafkaConfig, ProducerSettings, TopicConfig, aiokafka_options

_ENV = (
    "KAFKA_BOOTSTRAP_SERVERS",
    "DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS",
    "DRIFTLINE_KAFKA__SECURITY_PROTOCOL",
    "DRIFTLINE_TOPICS__REQUESTS",
    "DRIFTLINE_TOPICS__OUTCOMES",
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_defaults_equal_the_agents(clean_env: pytest.MonkeyPatch) -> None:
    ours, agents = ProducerSettings(), Settings()
    assert ours.kafka.model_dump() == agents.kafka.model_dump()
    assert ours.topics.requests == agents.topics.requests
    assert ours.topics.outcomes == agents.topics.outcomes


def test_kafka_fields_mirror_the_agents_and_topics_are_a_subset() -> None:
    assert KafkaConfig.model_fields.keys() == KafkaSettings.model_fields.keys()
    for name, field in KafkaConfig.model_fields.items():
        assert field.annotation == KafkaSettings.model_fields[name].annotation, name
    assert TopicConfig.model_fields.keys() <= TopicSettings.model_fields.keys()


def test_same_variables_as_the_agent(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DRIFTLINE_TOPICS__REQUESTS", "req-x")
    clean_env.setenv("DRIFTLINE_TOPICS__OUTCOMES", "out-x")
    clean_env.setenv("DRIFTLINE_TOPICS__PARTITIONS", "8")  # the agent's; ignored here
    clean_env.setenv("KAFKA_BOOTSTRAP_SERVERS", "fallback:9092")
    ours, agents = ProducerSettings(), Settings()
    assert (ours.topics.requests, ours.topics.outcomes) == ("req-x", "out-x")
    assert ours.kafka.bootstrap_servers == agents.kafka.bootstrap_servers == "fallback:9092"

    clean_env.setenv("DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS", "preferred:9092")
    assert ProducerSettings().kafka.bootstrap_servers == Settings().kafka.bootstrap_servers
    assert ProducerSettings().kafka.bootstrap_servers == "preferred:9092"


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-256",
            "sasl_username": "u",
            "sasl_password": "p",
        },
        {"security_protocol": "SASL_SSL", "sasl_username": "u", "sasl_password": "p"},
        {"security_protocol": "SSL"},
    ],
)
def test_sasl_and_tls_pass_through_like_the_agents(fields: dict[str, str]) -> None:
    ours = aiokafka_options(KafkaConfig.model_validate(fields))
    agents = agent_options(KafkaSettings.model_validate(fields))
    assert ours.keys() == agents.keys()
    assert {k: v for k, v in ours.items() if k != "ssl_context"} == {
        k: v for k, v in agents.items() if k != "ssl_context"
    }
