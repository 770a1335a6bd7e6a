"""Alerts for tests, and a real local webhook receiver that checks the Standard Webhooks signature with
the ``standardwebhooks`` package (an implementation independent of driftline's)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from schemas import Alert, AlertKind, Evidence, Severity
from schemas.incident import IncidentReport, decode_record


def make_alert(
    event: int = 1,
    *,
    model: str = "m",
    kind: AlertKind = AlertKind.DATA,
    subject: str = "x",
    version: str = "1",
    severity: Severity = Severity.WARNING,
    detected_at: datetime | None = None,
    message: str | None = None,
    detector: str = "adwin",
) -> Alert:
    return Alert.create(
        model=model,
        model_version=version,
        kind=kind,
        detector=detector,
        subject=subject,
        severity=severity,
        message=message or f"{subject} drifted up by 0.8 reference std",
        evidence=Evidence(
            reference_mean=0.5,
            reference_std=0.29,
            recent_mean=0.73,
            recent_std=0.27,
            shift_in_std=0.8,
            statistic=6.1,
            window_events=640,
            extra={"p_value": 0.001, "window": "tumbling"},
        ),
        opened_at_event=event,
        detected_at=detected_at or datetime(2026, 1, 1, tzinfo=UTC),
    )


def incident_reports(model: str = "m", start: float = 1_767_225_600.0) -> list[IncidentReport]:
    """An incident's three notifications (opened, updated, resolved), made by the real grouping: two
    features of ``model`` drift, the second alert critical, then both recover (the clock starts at
    ``start`` and moves 2 minutes in all)."""
    from agent.monitoring.grouping import IncidentGroups
    from agent.monitoring.incidents import IncidentKey, IncidentManager, InMemoryIncidentStore

    now = [start]
    manager = IncidentManager(InMemoryIncidentStore(), clock=lambda: now[0])
    groups = IncidentGroups(manager, clock=lambda: now[0])
    alerts = [
        make_alert(10, model=model, subject="x05"),
        make_alert(40, model=model, subject="x11", severity=Severity.CRITICAL),
    ]
    for alert in alerts:
        now[0] += 2
        assert manager.admit(alert)
        groups.admitted(alert)
    for alert in alerts:
        now[0] += 60
        manager.recover(IncidentKey.of(alert))
    return groups.drain()


def alerts_in(values: Iterable[bytes | None]) -> list[Alert]:
    """The alerts among alerts-topic record values; incident notifications are left out."""
    return [r for r in (decode_record(v or b"") for v in values) if isinstance(r, Alert)]


def opening_alerts(alerts: Iterable[Alert]) -> list[Alert]:
    """The alerts that opened an incident, in their order: an alert on the same model, version, kind
    and subject as an earlier one, and more severe than every one before it, is that incident's
    escalation (news by design: a warning become critical) and left out. A repeat at the same or a
    lower severity is kept, for the caller's count to see. Alerts carry no incident id, so a new,
    more severe incident after the first one resolved reads as an escalation too: where that
    matters, read the incident notifications (:func:`incidents_in`).

    >>> warning = make_alert(10)
    >>> critical = make_alert(40, severity=Severity.CRITICAL)
    >>> [a.opened_at_event for a in opening_alerts([warning, critical])]
    [10]
    >>> [a.opened_at_event for a in opening_alerts([critical, warning, make_alert(50, subject="y")])]
    [40, 10, 50]
    """
    worst: dict[tuple[str, str, str, str], int] = {}
    opened = []
    for alert in alerts:
        key = (alert.model, alert.model_version, alert.kind.value, alert.subject)
        rank = Severity(alert.severity).rank
        if key not in worst or rank <= worst[key]:
            opened.append(alert)
        worst[key] = max(rank, worst.get(key, rank))
    return opened


def incidents_in(values: Iterable[bytes | None]) -> list[IncidentReport]:
    """The incident notifications among alerts-topic record values."""
    return [r for r in (decode_record(v or b"") for v in values) if isinstance(r, IncidentReport)]


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]
    valid: bool
    at: float


def standard_verifier(secret: str) -> Webhook:
    """The ``standardwebhooks`` verifier for a driftline secret: a ``whsec_`` one as is, an older
    plain one as its UTF-8 bytes (what driftline signs with then)."""
    return Webhook(secret if secret.startswith("whsec_") else secret.encode())


def verifies(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    """Whether the ``standardwebhooks`` package accepts ``body`` with ``headers`` under ``secret``."""
    try:
        standard_verifier(secret).verify(body, headers, json_parse=False)
    except WebhookVerificationError:
        return False
    return True


@dataclass
class WebhookReceiver:
    """An aiohttp server on 127.0.0.1 that verifies each request's Standard Webhooks signature with the
    ``standardwebhooks`` package.

    ``statuses`` answers the requests in turn (the last one repeats); an invalid signature is answered
    401 whatever ``statuses`` says. ``delay_s`` makes it slow.
    """

    secret: str
    port: int = 0
    statuses: list[int] = field(default_factory=lambda: [200])
    delay_s: float = 0.0
    received: list[Received] = field(default_factory=list)
    policy: Callable[[Received], tuple[int, float]] | None = None
    """If set: each request's (status, delay in seconds), instead of ``statuses`` and ``delay_s``."""
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        valid = verifies(self.secret, body, dict(request.headers))
        received = Received(body, dict(request.headers), valid, time.monotonic())
        self.received.append(received)
        if self.policy is not None:
            status, delay = self.policy(received)
            await asyncio.sleep(delay)
            return web.Response(status=status if valid else 401)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if not valid:
            return web.Response(status=401, text="bad signature")
        status = self.statuses[min(len(self.received), len(self.statuses)) - 1]
        return web.Response(status=status)

    async def start(self) -> WebhookReceiver:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        app.router.add_post("/hook/{token}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        if not self.port:
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def eventually(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Polls ``condition`` every 10 ms until it holds; fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not met within {timeout:g} s"
        await asyncio.sleep(0.01)
