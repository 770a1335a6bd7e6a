"""The webhook sink against a real local HTTP server that verifies the Standard Webhooks signature with
the ``standardwebhooks`` package."""

from __future__ import annotations

import json
import logging
import random
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from agent.alerting.sinks.webhook import (
    ID_HEADER,
    LEGACY_ALERT_ID_HEADER,
    LEGACY_SIGNATURE_HEADER,
    LEGACY_TIMESTAMP_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookSink,
    new_secret,
    redact_url,
    signature_headers,
    signing_key,
    verify_legacy_signature,
    verify_signature,
)
from agent.errors import ConfigurationError
from agent.metrics import Metrics
from schemas import Alert
from schemas.incident import IncidentReport
from tests.support.alerts import WebhookReceiver, eventually, incident_reports, make_alert, verifies

SECRET = "whsec_dGVzdC1zZWNyZXQtMDEyMy10ZXN0LXNlY3JldA=="  # 24 bytes: "test-secret-0123-test-se..."
REPO = Path(__file__).resolve().parents[4]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def failed(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value(
        "driftline_alerts_failed_total", {"sink": "webhook", "reason": reason}
    )
    return value or 0.0


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    r = await WebhookReceiver(SECRET).start()
    yield r
    await r.stop()


def make_sink(urls: list[str], secret: str = SECRET, **kwargs: object) -> WebhookSink:
    options: dict[str, object] = {
        "backoff_initial_s": 0.02,
        "backoff_max_s": 0.1,
        "timeout_s": 2.0,
        "rng": random.Random(1),
        **kwargs,
    }
    return WebhookSink(urls, SecretStr(secret), **options)  # type: ignore[arg-type]


async def test_alert_arrives_signed(receiver: WebhookReceiver) -> None:
    metrics = Metrics()
    sink = make_sink([receiver.url], metrics=metrics)
    await sink.start()
    alert = make_alert()
    try:
        await sink.send(alert)
        await eventually(lambda: sink.stats.delivered == 1)
    finally:
        await sink.close()
    (got,) = receiver.received
    assert got.valid  # the standardwebhooks package verified it
    assert Alert.model_validate_json(got.body) == alert
    assert got.headers[ID_HEADER] == alert.alert_id
    assert got.headers["Content-Type"] == "application/json"
    assert abs(int(got.headers[TIMESTAMP_HEADER]) - time.time()) < 5
    assert got.headers[SIGNATURE_HEADER].startswith("v1,")
    assert LEGACY_SIGNATURE_HEADER not in got.headers  # legacy headers are off unless asked for
    assert metrics.registry.get_sample_value("driftline_alerts_delivered_total", {"sink": "webhook"}) == 1
    assert sink.stats.failed == 0


async def test_every_url_gets_the_alert(receiver: WebhookReceiver) -> None:
    other = await WebhookReceiver(SECRET).start()
    sink = make_sink([receiver.url, other.url])
    await sink.start()
    try:
        await sink.send(make_alert())
        await eventually(lambda: sink.stats.delivered == 2)
    finally:
        await sink.close()
        await other.stop()
    assert len(receiver.received) == len(other.received) == 1


async def test_legacy_headers_are_sent_beside_the_standard_ones(receiver: WebhookReceiver) -> None:
    sink = make_sink([receiver.url], legacy_headers=True)
    await sink.start()
    alert = make_alert()
    try:
        await sink.send(alert)
        await eventually(lambda: sink.stats.delivered == 1)
    finally:
        await sink.close()
    (got,) = receiver.received
    assert got.valid and verify_signature(SECRET, got.body, got.headers)
    # A receiver written against the old scheme, with the same secret string, still verifies.
    assert verify_legacy_signature(SECRET, got.body, got.headers)
    assert got.headers[LEGACY_ALERT_ID_HEADER] == alert.alert_id
    assert got.headers[LEGACY_TIMESTAMP_HEADER] == got.headers[TIMESTAMP_HEADER]
    assert not verify_legacy_signature(new_secret(), got.body, got.headers)


async def test_a_plain_secret_signs_with_its_bytes(caplog: pytest.LogCaptureFixture) -> None:
    plain = "a-plain-secret-from-before"
    receiver = await WebhookReceiver(plain).start()  # verifies with Webhook(plain.encode())
    with caplog.at_level(logging.WARNING, logger="agent.alerting.sinks.webhook"):
        sink = make_sink([receiver.url], secret=plain, legacy_headers=True)
    await sink.start()
    try:
        await sink.send(make_alert())
        await eventually(lambda: sink.stats.delivered == 1)
    finally:
        await sink.close()
        await receiver.stop()
    (got,) = receiver.received
    assert got.valid and verify_legacy_signature(plain, got.body, got.headers)
    assert "not a whsec_ secret" in caplog.text and plain not in caplog.text


async def test_wrong_secret_fails_verification_and_is_not_retried(receiver: WebhookReceiver) -> None:
    metrics = Metrics()
    other = new_secret()
    sink = make_sink([receiver.url], secret=other, metrics=metrics)
    await sink.start()
    try:
        await sink.send(make_alert())
        await eventually(lambda: sink.stats.failed == 1)
    finally:
        await sink.close()
    (got,) = receiver.received  # a 401 is final: retrying cannot fix a wrong secret
    assert not got.valid
    assert not verify_signature(SECRET, got.body, got.headers)
    assert verify_signature(other, got.body, got.headers) and verifies(other, got.body, got.headers)
    assert failed(metrics, "rejected") == 1
    assert sink.stats.delivered == 0


async def test_receiver_down_then_up_is_delivered() -> None:
    port = free_port()
    metrics = Metrics()
    sink = make_sink([f"http://127.0.0.1:{port}/hook"], max_attempts=50, metrics=metrics)
    await sink.start()
    late = WebhookReceiver(SECRET, port=port)
    try:
        await sink.send(make_alert())
        await eventually(lambda: sink.stats.retries >= 3, what="retries while the receiver is down")
        assert sink.stats.delivered == 0
        await late.start()
        await eventually(lambda: sink.stats.delivered == 1)
    finally:
        await sink.close()
        await late.stop()
    assert [r.valid for r in late.received] == [True]
    assert sink.stats.failed == 0
    assert metrics.registry.get_sample_value("driftline_sink_retries_total", {"sink": "webhook"}) >= 3


async def test_500_then_200_is_delivered() -> None:
    receiver = await WebhookReceiver(SECRET, statuses=[500, 503, 200]).start()
    sink = make_sink([receiver.url])
    await sink.start()
    try:
        await sink.send(make_alert())
        await eventually(lambda: sink.stats.delivered == 1)
    finally:
        await sink.close()
        await receiver.stop()
    assert len(receiver.received) == 3
    assert all(r.valid for r in receiver.received)
    assert len({r.body for r in receiver.received}) == 1  # the same alert each time
    assert sink.stats.retries == 2


async def test_send_never_waits_for_a_slow_receiver() -> None:
    receiver = await WebhookReceiver(SECRET, delay_s=0.5).start()
    sink = make_sink([receiver.url], drain_timeout_s=5.0, concurrency=200)
    await sink.start()
    alerts = [make_alert(i) for i in range(200)]
    try:
        costs = []
        for alert in alerts:
            started = time.perf_counter()
            await sink.send(alert)
            costs.append(time.perf_counter() - started)
        assert sink.pending == 200
        assert sink.stats.delivered == 0
        await eventually(lambda: len(receiver.received) > 0)
        await sink.flush()  # waits (bounded) until the slow receiver has answered them all
    finally:
        await sink.close()
        await receiver.stop()
    # Generous bound: the machine is busy; the median is a few tens of microseconds.
    assert statistics.median(costs) < 0.005, costs
    assert sink.stats.delivered == 200


async def test_counted_as_failed_after_the_last_attempt() -> None:
    metrics = Metrics()
    receiver = await WebhookReceiver(SECRET, statuses=[500]).start()
    sink = make_sink([receiver.url], max_attempts=3, metrics=metrics)
    await sink.start()
    try:
        await sink.send(make_alert())
        await eventually(lambda: sink.pending == 0)
    finally:
        await sink.close()
        await receiver.stop()
    assert len(receiver.received) == 3
    assert (sink.stats.delivered, sink.stats.failed, sink.stats.retries) == (0, 1, 2)
    assert failed(metrics, "attempts") == 1


async def test_full_queue_drops_and_counts() -> None:
    metrics = Metrics()
    receiver = await WebhookReceiver(SECRET, delay_s=0.5).start()
    sink = make_sink([receiver.url], max_pending=2, metrics=metrics)
    await sink.start()
    try:
        for i in range(3):
            await sink.send(make_alert(i))
        assert failed(metrics, "queue_full") == 1
        await sink.flush()
    finally:
        await sink.close()
        await receiver.stop()
    assert sink.stats.delivered == 2
    assert len(receiver.received) == 2


async def test_pending_at_close_counted_as_failed() -> None:
    metrics = Metrics()
    receiver = await WebhookReceiver(SECRET, delay_s=0.5).start()
    sink = make_sink([receiver.url], drain_timeout_s=0.1, metrics=metrics)
    await sink.start()
    try:
        await sink.send(make_alert())
        await sink.close()
    finally:
        await receiver.stop()
    assert failed(metrics, "shutdown") == 1
    assert sink.pending == 0


async def test_logs_never_show_url_credentials(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook/T0KEN-in-path?key=Q-SECRET"
    sink = make_sink([url], max_attempts=2)
    await sink.start()
    with caplog.at_level(logging.DEBUG, logger="agent.alerting.sinks.webhook"):
        await sink.send(make_alert())
        await eventually(lambda: sink.pending == 0)
    await sink.close()
    assert sink.stats.failed == 1
    assert f"http://127.0.0.1:{port}" in caplog.text
    for secret in ("T0KEN", "Q-SECRET", SECRET):
        assert secret not in caplog.text
    assert SECRET not in repr(sink)


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    sink = WebhookSink(["http://127.0.0.1:1/"], SECRET, backoff_initial_s=0.5, backoff_max_s=30.0)
    first = [sink.backoff(1) for _ in range(200)]
    assert min(first) >= 0.25 and max(first) <= 0.5 and len(set(first)) > 100
    assert all(2.0 <= sink.backoff(4) <= 4.0 for _ in range(50))
    assert all(15.0 <= sink.backoff(20) <= 30.0 for _ in range(50))
    assert sink.backoff(1, retry_after=10) >= 10  # Retry-After honoured...
    assert sink.backoff(1, retry_after=3600) <= 30.0  # ...up to the cap


def test_verify_signature_rules() -> None:
    body = json.dumps({"alert_id": "abc"}).encode()
    headers = signature_headers(SECRET, body, msg_id="abc", timestamp=1_767_225_600)
    now = 1_767_225_600 + 10
    assert verify_signature(SECRET, body, headers, now=now)
    assert verify_signature(signing_key(SECRET), body, {k.upper(): v for k, v in headers.items()}, now=now)
    assert not verify_signature(SECRET, body + b" ", headers, now=now)  # body tampered
    assert not verify_signature(SECRET, body, {**headers, ID_HEADER: "abd"}, now=now)  # id changed
    assert not verify_signature(SECRET, body, {**headers, TIMESTAMP_HEADER: "1767225601"}, now=now)
    assert not verify_signature(SECRET, body, headers, now=now + 600)  # replayed later
    assert not verify_signature(SECRET, body, headers, now=now - 600)  # from the future
    assert not verify_signature(SECRET, body, {k: v for k, v in headers.items() if k != ID_HEADER}, now=now)
    sig = headers[SIGNATURE_HEADER]
    assert not verify_signature(SECRET, body, {**headers, SIGNATURE_HEADER: sig[3:]}, now=now)  # no "v1,"
    # Several signatures (a key rotation): one match is enough.
    assert verify_signature(SECRET, body, {**headers, SIGNATURE_HEADER: f"v1,AAAA {sig}"}, now=now)
    non_ascii_digits = "\uff11\uff12"
    assert not verify_signature(SECRET, body, {**headers, TIMESTAMP_HEADER: non_ascii_digits}, now=now)
    assert not verify_signature("whsec_%%%", body, headers, now=now)  # a malformed secret: no match


def test_signatures_match_the_standardwebhooks_package() -> None:
    from standardwebhooks.webhooks import Webhook

    body = b'{"model": "m", "\xc3\xa9": 1}'
    for secret in (SECRET, new_secret(), new_secret(64)):
        now = int(time.time())
        ours = signature_headers(secret, body, msg_id="msg_1", timestamp=now)
        theirs = Webhook(secret).sign("msg_1", datetime.fromtimestamp(now, UTC), body)
        assert ours[SIGNATURE_HEADER] == theirs
        assert verifies(secret, body, ours)


def test_secrets() -> None:
    assert signing_key("whsec_c2VjcmV0LWtleS1ieXRlcw==") == b"secret-key-bytes"
    fresh = new_secret()
    assert fresh.startswith("whsec_") and len(signing_key(fresh)) == 32 and fresh != new_secret()
    for bad in ("whsec_not base64!", "whsec_"):
        with pytest.raises(ConfigurationError, match="DRIFTLINE_WEBHOOKS__SECRET") as info:
            WebhookSink(["http://127.0.0.1:1/"], bad)
        assert "base64!" not in str(info.value)


def test_configuration_errors_do_not_echo_urls_or_secrets() -> None:
    with pytest.raises(ConfigurationError, match="secret is empty"):
        WebhookSink(["http://127.0.0.1:1/"], SecretStr(""))
    with pytest.raises(ConfigurationError, match="#2") as info:
        WebhookSink(["http://127.0.0.1:1/", "ftp://host/T0KEN"], SECRET)
    assert "T0KEN" not in str(info.value)
    assert redact_url("https://user:pw@hooks.example.com:8443/T0KEN?x=1") == "https://hooks.example.com:8443"


# --- the outbox: pending deliveries survive a stop and a crash ------------------------------------


async def test_a_delivery_pending_at_close_is_sent_by_the_next_start(tmp_path: Path) -> None:
    metrics = Metrics()
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    first = make_sink([url], max_attempts=50, drain_timeout_s=0.05, outbox_dir=tmp_path, metrics=metrics)
    await first.start()
    alert = make_alert()
    await first.send(alert)
    await eventually(lambda: first.stats.retries >= 1, what="a failed attempt while the receiver is down")
    await first.close()
    assert len(list(tmp_path.glob("*.json"))) == 1 and failed(metrics, "shutdown") == 0
    receiver = await WebhookReceiver(SECRET, port=port).start()
    second = make_sink([url], outbox_dir=tmp_path)
    try:
        await second.start()
        await eventually(lambda: second.stats.delivered == 1)
        await eventually(lambda: second.pending == 0)
    finally:
        await second.close()
        await receiver.stop()
    [got] = receiver.received
    assert got.valid and got.headers[ID_HEADER] == alert.alert_id
    assert Alert.model_validate_json(got.body) == alert
    assert list(tmp_path.glob("*.json")) == []  # delivered: out of the outbox


async def test_a_delivery_survives_a_killed_worker(tmp_path: Path) -> None:
    refusing = True
    receiver = await WebhookReceiver(SECRET, policy=lambda _: (503 if refusing else 200, 0.0)).start()
    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from pydantic import SecretStr\n"
        "from agent.alerting.sinks.webhook import WebhookSink\n"
        "from tests.support.alerts import make_alert\n"
        "async def main():\n"
        "    sink = WebhookSink([sys.argv[1]], SecretStr(sys.argv[2]), outbox_dir=Path(sys.argv[3]),\n"
        "                       max_attempts=1000, backoff_initial_s=0.05, backoff_max_s=0.1)\n"
        "    await sink.start()\n"
        "    await sink.send(make_alert(7))\n"
        "    await asyncio.sleep(3600)\n"
        "asyncio.run(main())\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, receiver.url, SECRET, str(tmp_path)], cwd=REPO)
    try:
        await eventually(lambda: len(receiver.received) >= 2, timeout=30, what="the worker's retries")
    finally:
        proc.kill()  # SIGKILL: no drain, no close
        proc.wait(10)
    assert len(list(tmp_path.glob("*.json"))) == 1
    refusing = False
    sink = make_sink([receiver.url], outbox_dir=tmp_path)
    try:
        await sink.start()
        await eventually(lambda: sink.stats.delivered == 1)
    finally:
        await sink.close()
        await receiver.stop()
    delivered = receiver.received[-1]
    assert delivered.valid and delivered.headers[ID_HEADER] == make_alert(7).alert_id
    assert list(tmp_path.glob("*.json")) == []


async def test_the_outbox_never_holds_a_url_and_drops_receivers_no_longer_configured(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook/T0KEN-in-path?key=Q-SECRET"
    first = make_sink([url], max_attempts=50, drain_timeout_s=0.0, outbox_dir=tmp_path)
    await first.start()
    await first.send(make_alert())
    await first.close()
    [kept] = tmp_path.glob("*.json")
    assert "T0KEN" not in kept.read_text() and "Q-SECRET" not in kept.read_text()
    other = make_sink([f"http://127.0.0.1:{free_port()}/elsewhere"], outbox_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="agent.alerting.sinks.webhook"):
        await other.start()
    await other.close()
    assert other.stats.delivered == 0 and list(tmp_path.glob("*.json")) == []
    assert "no longer configured" in caplog.text


async def test_two_sinks_cannot_share_an_outbox(tmp_path: Path) -> None:
    first = make_sink(["http://127.0.0.1:1/hook"], outbox_dir=tmp_path)
    await first.start()
    try:
        with pytest.raises(ConfigurationError, match=r"webhook outbox .* is in use by another worker"):
            await make_sink(["http://127.0.0.1:1/hook"], outbox_dir=tmp_path).start()
    finally:
        await first.close()


async def test_an_outbox_that_cannot_be_written_is_a_configuration_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    sink = make_sink(["http://127.0.0.1:1/hook"], outbox_dir=blocker / "outbox")
    with pytest.raises(ConfigurationError, match=r"webhook outbox .* cannot be created or written"):
        await sink.start()


# --- the README's configuration and verification snippet match what the sink sends -----------------


def _readme_block(after: str, language: str) -> str:
    text = (REPO / "README.md").read_text()
    rest = text[text.index(after) :]
    start = rest.index(f"```{language}\n") + len(language) + 4
    return rest[start : rest.index("```", start)]


async def test_the_readme_secret_and_receiver_snippet_verify_a_real_delivery() -> None:
    setup = _readme_block("## Webhooks", "bash")
    command = setup.split('SECRET="$(', 1)[1].rsplit(')"', 1)[0]
    secret = subprocess.run(command, shell=True, capture_output=True, text=True, check=True).stdout.strip()
    assert signing_key(secret) and len(signing_key(secret)) == 32
    snippet = _readme_block("To verify on the receiving side", "python").replace('"whsec_..."', repr(secret))
    namespace: dict[str, object] = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    verify = namespace["verify_driftline_alert"]
    own = await WebhookReceiver(secret).start()
    sink = make_sink([own.url], secret=secret)
    await sink.start()
    alert = make_alert()
    try:
        await sink.send(alert)
        await eventually(lambda: sink.stats.delivered == 1)
    finally:
        await sink.close()
        await own.stop()
    (got,) = own.received
    assert verify(got.body, got.headers) == json.loads(got.body)  # type: ignore[operator]
    assert verify(got.body + b" ", got.headers) is None  # type: ignore[operator]


async def test_the_outbox_is_fsynced_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An fsync per delivery on the event loop held the serving loop, which shares it.
    import os
    import threading

    fsynced_on: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        fsynced_on.append(threading.current_thread().name)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    sink = make_sink([f"http://127.0.0.1:{free_port()}/hook"], max_attempts=1, outbox_dir=tmp_path)
    await sink.start()
    try:
        await sink.send(make_alert())
    finally:
        await sink.close()
    assert fsynced_on and threading.main_thread().name not in fsynced_on


async def test_incident_notifications_instead_of_alerts(receiver: WebhookReceiver) -> None:
    sink = make_sink([receiver.url], notify="incidents")
    await sink.start()
    reports = incident_reports()
    try:
        await sink.send(make_alert())  # an alert: InfluxDB and the alerts topic have it, receivers not
        for report in reports:
            await sink.send_incident(report)
        await eventually(lambda: sink.stats.delivered == 3)
    finally:
        await sink.close()
    assert all(got.valid for got in receiver.received)
    got = [IncidentReport.model_validate_json(r.body) for r in receiver.received]
    assert sorted(r.status for r in got) == ["opened", "resolved", "updated"]
    assert {r.headers[ID_HEADER] for r in receiver.received} == {r.notification_id for r in reports}


async def test_alerts_only_ignores_incidents(receiver: WebhookReceiver) -> None:
    sink = make_sink([receiver.url], notify="alerts")
    await sink.start()
    try:
        await sink.send_incident(incident_reports()[0])
        await sink.send(make_alert())
        await eventually(lambda: sink.stats.delivered == 1)
    finally:
        await sink.close()
    [got] = receiver.received
    assert Alert.model_validate_json(got.body) == make_alert()
