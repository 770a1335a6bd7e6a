"""Security checks without a running worker: nothing unpickles, secrets stay out of reprs and logs, and the
Kafka SASL/TLS settings reach every client driftline builds (its own aiokafka clients, Faust's, the
producers'). The end-to-end checks (a worker's log and /metrics, refused packages, signed webhooks) are
in tests/integration/test_reliability.py."""

from __future__ import annotations

import ast
import logging
import re
import ssl
import tokenize
from pathlib import Path
from typing import Any

import certifi
import faust
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import SecretStr

from agent.app import create_app, faust_credentials
from agent.kafka import aiokafka_options
from agent.settings import (
    InfluxSettings,
    KafkaSettings,
    PagerDutySettings,
    Settings,
    SlackSettings,
    WebhookSettings,
)
from producers.config import KafkaConfig, ProducerSettings
from producers.config import aiokafka_options as producer_options
from tests.support.fake_sasl import FakeSaslBroker
from tests.support.services import ROOT

PASSWORD = "sasl-Pa55word-never-logged"
TOKEN = "influx-T0ken-never-logged"
SECRET = "webhook-S3cret-never-logged"
SLACK_TOKEN = "slack-T0ken-never-logged"
ROUTING_KEY = "pagerduty-R0uting-never-logged!!"
SECRETS = (PASSWORD, TOKEN, SECRET, SLACK_TOKEN, ROUTING_KEY)

# --- nothing unpickles --------------------------------------------------------------------------

SOURCES = sorted(p for package in ("agent", "producers", "schemas") for p in (ROOT / package).rglob("*.py"))
# Modules whose loading functions run code from the data they read.
UNPICKLERS = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "joblib", "torch", "shelve", "marshal"}
# The refusal code may name pickles: these functions, constants and the error class.
REFUSAL = {"refuse_pickle", "_looks_like_pickle", "_pickle_message", "PICKLE_SUFFIXES", "PickleRefusedError"}


def test_the_scan_covers_the_packages() -> None:
    names = {str(p.relative_to(ROOT)) for p in SOURCES}
    assert {
        "agent/models/package.py",
        "agent/serving/handler.py",
        "producers/publish.py",
        "schemas/manifest.py",
    } <= names


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_code_path_unpickles(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported = {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported = {(node.module or "").split(".")[0]}
        else:
            imported = set()
        assert not imported & UNPICKLERS, f"{path}:{node.lineno} imports {imported & UNPICKLERS}"
        if isinstance(node, ast.Call):
            called = ast.unparse(node.func)
            where = f"{path}:{node.lineno}: {ast.unparse(node)}"
            # numpy refuses object arrays unless told otherwise; pandas' read_pickle unpickles.
            if called.split(".")[-1] == "load" and called.split(".")[0] in ("np", "numpy"):
                flags = [k for k in node.keywords if k.arg == "allow_pickle"]
                assert all(isinstance(k.value, ast.Constant) and k.value.value is False for k in flags), where
            assert called.split(".")[-1] != "read_pickle", where
            # No import by name either (importlib.import_module("pickle"), __import__("dill")).
            texts = {a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)}
            assert not {t.split(".")[0] for t in texts} & UNPICKLERS or "import" not in called, where
    # In the code (names and strings; comments and docstrings may say what is refused), every
    # pickle-ish word is the refusal code: in agent/models/package.py its functions and constants, anywhere
    # else only their names.
    spans = []
    if path == ROOT / "agent" / "models" / "package.py":
        for node in ast.walk(tree):
            named = isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name in REFUSAL
            assigned = isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id in REFUSAL for t in node.targets
            )
            if named or assigned:
                spans.append((node.lineno, node.end_lineno or node.lineno))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            for statement in node.body:
                # A docstring, or an attribute docstring (a string statement after an assignment).
                if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
                    docstrings.update(range(statement.lineno, (statement.end_lineno or statement.lineno) + 1))
    word = re.compile(r"pickl|joblib|\bdill\b|torch\.load|allow_pickle", re.IGNORECASE)
    refusal = re.compile("|".join(sorted(REFUSAL, key=len, reverse=True)))
    with path.open("rb") as f:
        for token in tokenize.tokenize(f.readline):
            if token.type not in (tokenize.NAME, tokenize.STRING) or token.start[0] in docstrings:
                continue
            if word.search(refusal.sub("", token.string)) and not any(
                a <= token.start[0] <= b for a, b in spans
            ):
                pytest.fail(
                    f"{path.relative_to(ROOT)}:{token.start[0]} mentions unpickling: {token.line.strip()}"
                )


# --- secrets stay out of reprs and logs ---------------------------------------------------------


def secret_settings(**kafka: Any) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        kafka=KafkaSettings(
            **{
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_username": "driftline",
                "sasl_password": SecretStr(PASSWORD),
                **kafka,
            }
        ),
        influx=InfluxSettings(token=SecretStr(TOKEN)),
        webhooks=WebhookSettings(urls=["http://127.0.0.1:9/hook"], secret=SecretStr(SECRET)),
        slack=SlackSettings(webhook_url=SecretStr(f"http://127.0.0.1:9/services/T0/B0/{SLACK_TOKEN}")),
        pagerduty=PagerDutySettings(routing_key=SecretStr(ROUTING_KEY), url="http://127.0.0.1:9/v2/enqueue"),
    )


def test_settings_never_show_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = secret_settings()
    for text in (repr(settings), str(settings), settings.model_dump_json(), repr(settings.model_dump())):
        assert not any(s in text for s in SECRETS), text
    # From the environment too, the way a worker reads them; and the producers' settings.
    monkeypatch.setenv("DRIFTLINE_KAFKA__SASL_PASSWORD", PASSWORD)
    monkeypatch.setenv("DRIFTLINE_INFLUX__TOKEN", TOKEN)
    monkeypatch.setenv("DRIFTLINE_WEBHOOKS__SECRET", SECRET)
    monkeypatch.setenv(
        "DRIFTLINE_SLACK__WEBHOOK_URL", f"https://hooks.slack.com/services/T0/B0/{SLACK_TOKEN}"
    )
    monkeypatch.setenv("DRIFTLINE_PAGERDUTY__ROUTING_KEY", ROUTING_KEY)
    for loaded in (Settings(), ProducerSettings()):
        assert not any(s in repr(loaded) or s in loaded.model_dump_json() for s in SECRETS)
    assert Settings().kafka.sasl_password == SecretStr(PASSWORD)
    assert ProducerSettings().kafka.sasl_password == SecretStr(PASSWORD)


def test_faust_credentials_do_not_show_the_password() -> None:
    credentials = faust_credentials(secret_settings().kafka)
    assert isinstance(credentials, faust.SASLCredentials) and credentials.password == PASSWORD
    assert PASSWORD not in repr(credentials) and PASSWORD not in str(credentials)


async def test_building_a_worker_logs_no_secret(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    caplog.set_level(logging.DEBUG)
    settings = secret_settings().model_copy(update={"data_dir": tmp_path})
    driftline = create_app(settings)
    assert not any(s in caplog.text for s in SECRETS), caplog.text
    assert not any(s in repr(driftline.app.conf.broker_credentials) for s in SECRETS)


async def test_the_sasl_password_is_sent_but_never_logged_even_at_debug_level(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # aiokafka logs each request at DEBUG with its fields; the SASL authenticate request's field is the
    # PLAIN token, user name and password in clear. agent.kafka redacts it (it did not, before).
    caplog.set_level(logging.DEBUG)
    async with FakeSaslBroker() as broker:
        settings = KafkaSettings(
            bootstrap_servers=broker.bootstrap,
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="PLAIN",
            sasl_username="driftline",
            sasl_password=SecretStr(PASSWORD),
        )
        producer = AIOKafkaProducer(**aiokafka_options(settings), request_timeout_ms=2000)
        with pytest.raises(KafkaError):
            await producer.start()  # the fake broker ends the connection after the login
        await producer.stop()
    assert broker.logins and broker.logins[0] == ("driftline", PASSWORD)  # the password was sent
    assert PASSWORD not in caplog.text
    assert "SaslAuthenticateRequest_v0(<redacted>)" in caplog.text


# --- SASL/TLS settings reach every client ------------------------------------------------------

CASES = [
    ({}, {"security_protocol": "PLAINTEXT"}),
    (
        {"security_protocol": "SASL_PLAINTEXT", "sasl_username": "u", "sasl_password": PASSWORD},
        {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "PLAIN",
            "sasl_plain_username": "u",
            "sasl_plain_password": PASSWORD,
        },
    ),
    (
        {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-256",
            "sasl_username": "u",
            "sasl_password": PASSWORD,
            "ssl_cafile": certifi.where(),
        },
        {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-256",
            "sasl_plain_username": "u",
            "sasl_plain_password": PASSWORD,
            "ssl_context": "verifying",
        },
    ),
    (
        {"security_protocol": "SSL", "ssl_cafile": certifi.where()},
        {"security_protocol": "SSL", "ssl_context": "verifying"},
    ),
]


def normalised(options: Any) -> dict[str, Any]:
    """The options without the bootstrap servers and unset entries; a TLS context as "verifying" when
    it verifies the brokers' certificates against the configured CA bundle."""
    out = {k: v for k, v in dict(options).items() if v is not None and k != "bootstrap_servers"}
    context = out.get("ssl_context")
    if context is not None:
        assert isinstance(context, ssl.SSLContext)
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
        assert context.get_ca_certs(), "the CA bundle was not loaded"
        out["ssl_context"] = "verifying"
    return out


@pytest.mark.parametrize(("fields", "expected"), CASES)
async def test_sasl_and_tls_settings_reach_every_kafka_client(
    fields: dict[str, Any], expected: dict[str, Any]
) -> None:
    settings = KafkaSettings.model_validate({"bootstrap_servers": "broker-1:9093", **fields})
    options = aiokafka_options(settings)
    assert options["bootstrap_servers"] == "broker-1:9093"
    assert normalised(options) == expected
    # The clients themselves keep them (driftline builds its consumers, producers and admin clients
    # from these options).
    consumer = AIOKafkaConsumer(**options)
    client = consumer._client
    assert client._security_protocol == expected["security_protocol"]
    assert client._sasl_mechanism == expected.get("sasl_mechanism", client._sasl_mechanism)
    assert client._sasl_plain_password == expected.get("sasl_plain_password")
    assert (client._ssl_context is not None) == ("ssl_context" in expected)
    # Faust's clients (the alerts agent) get the same, through the app's broker credentials.
    assert normalised(credentials_to_aiokafka_auth(faust_credentials(settings))) == expected
    # And the producers, which read the same variables without importing the agent.
    assert normalised(producer_options(KafkaConfig.model_validate(fields))) == expected


async def test_the_worker_wires_the_sasl_options_into_its_clients(tmp_path: Path) -> None:
    settings = secret_settings(security_protocol="SASL_SSL", ssl_cafile=certifi.where())
    driftline = create_app(settings.model_copy(update={"data_dir": tmp_path}))
    expected = normalised(aiokafka_options(settings.kafka))
    assert expected["sasl_plain_password"] == PASSWORD and expected["sasl_mechanism"] == "SCRAM-SHA-512"
    assert normalised(driftline.serving._consumer_options) == expected
    assert normalised(driftline.serving._producer_options) == expected
    assert normalised(driftline.incidents.store._options) == expected  # type: ignore[attr-defined]
    assert normalised(credentials_to_aiokafka_auth(driftline.app.conf.broker_credentials)) == expected
