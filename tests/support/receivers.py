"""Real local HTTP receivers (aiohttp on 127.0.0.1) standing in for Slack's incoming webhooks and
PagerDuty's Events API v2: each checks every request against the service's documented schema and
limits, answers as the service does, and keeps what it got.

Slack (Block Kit reference, incoming webhooks): a JSON object with a ``text`` and at most 50 ``blocks``;
a header's ``plain_text`` at most 150 characters; a section's text at most 3,000, its ``fields`` at most
10 of 2,000 each; a context at most 10 elements; a ``block_id`` at most 255; ``mrkdwn`` with ``&``,
``<``, ``>`` escaped. Answers ``200 ok``, or ``400 invalid_blocks`` / ``invalid_payload``.

PagerDuty (Events API v2, ``/v2/enqueue``): a JSON object of at most 512 KB with only the documented
keys; ``routing_key`` the 32-character integration key; ``event_action`` ``trigger``, ``acknowledge`` or
``resolve``; ``dedup_key`` at most 255 characters (required but for a trigger); a trigger's ``payload``
with ``summary`` (1-1,024 characters), ``source`` and ``severity`` (``critical``, ``error``,
``warning``, ``info``), an ISO 8601 ``timestamp`` and an object ``custom_details`` where present.
Answers ``202`` with ``{"status": "success", "dedup_key": ...}`` or ``400`` with ``{"status": "invalid
event", "errors": [...]}``, and keeps the alerts' state as PagerDuty does: a trigger opens an alert or
adds to the open one with its ``dedup_key``, a resolve closes it (or is dropped), and a trigger after
a resolve opens a new alert.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

SLACK_BLOCK_TYPES = {"header", "section", "context", "divider"}
PAGERDUTY_SEVERITIES = {"critical", "error", "warning", "info"}
PAGERDUTY_KEYS = {
    "routing_key",
    "event_action",
    "dedup_key",
    "payload",
    "images",
    "links",
    "client",
    "client_url",
}
PAGERDUTY_PAYLOAD_KEYS = {
    "summary",
    "source",
    "severity",
    "timestamp",
    "component",
    "group",
    "class",
    "custom_details",
}
_RAW_MRKDWN = re.compile(r"[<>]|&(?!amp;|lt;|gt;)")


@dataclass
class Got:
    """One request: the parsed body (None if not JSON), its headers, and what was wrong with it."""

    body: Any
    raw: bytes
    headers: dict[str, str]
    errors: list[str]
    status: int


@dataclass
class _Receiver:
    """An aiohttp server on 127.0.0.1. ``statuses`` answers valid requests in turn (the last one
    repeats; a 429 carries ``Retry-After: 0``); an invalid one is answered 400 whatever it says."""

    path: str = "/"
    port: int = 0
    statuses: list[int] = field(default_factory=lambda: [0])
    """0: the service's success status."""
    delay_s: float = 0.0
    received: list[Got] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    @property
    def valid(self) -> list[Got]:
        return [g for g in self.received if not g.errors]

    def check(self, body: Any) -> list[str]:
        raise NotImplementedError

    def answer(self, got: Got) -> web.Response:
        raise NotImplementedError

    def refuse(self, errors: list[str]) -> web.Response:
        raise NotImplementedError

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        errors: list[str] = []
        body: Any = None
        if request.content_type != "application/json":
            errors.append(f"Content-Type is {request.content_type!r}, not application/json")
        try:
            body = json.loads(raw)
        except ValueError:
            errors.append("the body is not JSON")
        if body is not None:
            errors.extend(self.check(body))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        valid_so_far = sum(1 for g in self.received if not g.errors)
        status = 400 if errors else self.statuses[min(valid_so_far, len(self.statuses) - 1)]
        got = Got(body, raw, dict(request.headers), errors, status)
        self.received.append(got)
        if errors:
            response = self.refuse(errors)
        elif status == 429:
            response = web.Response(status=429, text="rate_limited", headers={"Retry-After": "0"})
        elif status:
            response = web.Response(status=status, text="error")
        else:
            response = self.answer(got)
        got.status = response.status
        return response

    async def start(self) -> _Receiver:
        app = web.Application()
        app.router.add_post(self.path, self._handle)
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
            self._runner = None


def _text_object(obj: Any, where: str, limit: int, types: set[str]) -> list[str]:
    if not isinstance(obj, dict) or obj.get("type") not in types:
        return [f"{where}: not a text object of type {sorted(types)}"]
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        return [f"{where}: empty text"]
    errors = []
    if len(text) > limit:
        errors.append(f"{where}: {len(text)} characters, more than {limit}")
    if obj["type"] == "mrkdwn" and _RAW_MRKDWN.search(text):
        errors.append(f"{where}: unescaped &, < or > in mrkdwn")
    return errors


@dataclass
class SlackReceiver(_Receiver):
    """Slack's incoming webhook, at ``/services/T000/B000/<token>``."""

    path: str = "/services/T0000/B0000/XXXXSECRETTOKEN"

    def check(self, body: Any) -> list[str]:
        if not isinstance(body, dict):
            return ["the payload is not an object"]
        errors = []
        text = body.get("text")
        if not isinstance(text, str) or not text:
            errors.append("no text (the notification's fallback)")
        elif len(text) > 40_000:
            errors.append("text longer than 40,000 characters")
        blocks = body.get("blocks")
        if not isinstance(blocks, list) or not 1 <= len(blocks) <= 50:
            return [*errors, "blocks: not a list of 1 to 50 blocks"]
        for i, block in enumerate(blocks):
            where = f"blocks[{i}]"
            if not isinstance(block, dict) or block.get("type") not in SLACK_BLOCK_TYPES:
                errors.append(f"{where}: unknown block type")
                continue
            if len(str(block.get("block_id", ""))) > 255:
                errors.append(f"{where}: block_id longer than 255")
            kind = block["type"]
            if kind == "header":
                errors += _text_object(block.get("text"), f"{where}.text", 150, {"plain_text"})
            elif kind == "section":
                if "text" not in block and "fields" not in block:
                    errors.append(f"{where}: a section needs text or fields")
                if "text" in block:
                    errors += _text_object(block["text"], f"{where}.text", 3000, {"plain_text", "mrkdwn"})
                if "fields" in block:
                    fields = block["fields"]
                    if not isinstance(fields, list) or not 1 <= len(fields) <= 10:
                        errors.append(f"{where}.fields: not 1 to 10 fields")
                        continue
                    for j, f in enumerate(fields):
                        errors += _text_object(f, f"{where}.fields[{j}]", 2000, {"plain_text", "mrkdwn"})
            elif kind == "context":
                elements = block.get("elements")
                if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
                    errors.append(f"{where}.elements: not 1 to 10 elements")
                    continue
                for j, e in enumerate(elements):
                    errors += _text_object(e, f"{where}.elements[{j}]", 3000, {"plain_text", "mrkdwn"})
        return errors

    def answer(self, got: Got) -> web.Response:
        return web.Response(status=200, text="ok")

    def refuse(self, errors: list[str]) -> web.Response:
        return web.Response(status=400, text="invalid_blocks")

    def texts(self, got: Got) -> str:
        """Every text of a message, joined: what a person sees."""
        parts = [got.body["text"]]
        for block in got.body["blocks"]:
            if "text" in block:
                parts.append(block["text"]["text"])
            parts += [f["text"] for f in block.get("fields", [])]
            parts += [e["text"] for e in block.get("elements", [])]
        return "\n".join(parts)


@dataclass
class PagerDutyReceiver(_Receiver):
    """PagerDuty's Events API v2 at ``/v2/enqueue``, for one integration's routing key."""

    path: str = "/v2/enqueue"
    routing_key: str = "R0UT1NGKEY0123456789abcdefABCDEF"
    alerts: dict[str, list[str]] = field(default_factory=dict)
    """dedup_key -> the alert's history, e.g. ``["triggered", "triggered", "resolved"]``; a trigger
    after a resolve starts a new history (the old one is kept in ``closed``)."""
    closed: list[tuple[str, list[str]]] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)
    """(action, dedup_key) of resolves and acknowledges for no open alert."""

    def check(self, body: Any) -> list[str]:
        if not isinstance(body, dict):
            return ["the event is not an object"]
        errors = []
        if len(json.dumps(body).encode()) > 512 * 1024:
            errors.append("the event is larger than 512 KB")
        unknown = set(body) - PAGERDUTY_KEYS
        if unknown:
            errors.append(f"unknown keys {sorted(unknown)}")
        if body.get("routing_key") != self.routing_key:
            errors.append("routing_key is not this integration's key")
        action = body.get("event_action")
        if action not in ("trigger", "acknowledge", "resolve"):
            errors.append(f"event_action {action!r}")
        dedup = body.get("dedup_key")
        if dedup is not None and (not isinstance(dedup, str) or not 1 <= len(dedup) <= 255):
            errors.append("dedup_key: not a string of 1 to 255 characters")
        if action != "trigger":
            if dedup is None:
                errors.append(f"{action}: no dedup_key")
            return errors
        payload = body.get("payload")
        if not isinstance(payload, dict):
            return [*errors, "trigger: no payload object"]
        unknown = set(payload) - PAGERDUTY_PAYLOAD_KEYS
        if unknown:
            errors.append(f"payload: unknown keys {sorted(unknown)}")
        summary = payload.get("summary")
        if not isinstance(summary, str) or not 1 <= len(summary) <= 1024:
            errors.append("payload.summary: not 1 to 1,024 characters")
        if not isinstance(payload.get("source"), str) or not payload["source"]:
            errors.append("payload.source: missing")
        if payload.get("severity") not in PAGERDUTY_SEVERITIES:
            errors.append(f"payload.severity {payload.get('severity')!r}")
        if "timestamp" in payload:
            try:
                datetime.fromisoformat(payload["timestamp"])
            except (TypeError, ValueError):
                errors.append("payload.timestamp: not ISO 8601")
        for name in ("component", "group", "class"):
            if name in payload and not isinstance(payload[name], str):
                errors.append(f"payload.{name}: not a string")
        if "custom_details" in payload and not isinstance(payload["custom_details"], dict):
            errors.append("payload.custom_details: not an object")
        return errors

    def answer(self, got: Got) -> web.Response:
        action, dedup = (
            got.body["event_action"],
            got.body.get("dedup_key") or f"generated-{len(self.received)}",
        )
        if action == "trigger":
            self.alerts.setdefault(dedup, []).append("triggered")
        elif dedup in self.alerts:
            history = self.alerts[dedup]
            history.append("resolved" if action == "resolve" else "acknowledged")
            if action == "resolve":
                self.closed.append((dedup, self.alerts.pop(dedup)))
        else:
            self.dropped.append((action, dedup))
        return web.json_response(
            {"status": "success", "message": "Event processed", "dedup_key": dedup}, status=202
        )

    def refuse(self, errors: list[str]) -> web.Response:
        return web.json_response(
            {"status": "invalid event", "message": "Event object is invalid", "errors": errors}, status=400
        )
