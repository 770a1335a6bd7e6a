"""Alerts POSTed as JSON to every configured receiver, signed as Standard Webhooks, retried, never
blocking the stream.

Each alert is POSTed to each URL as its JSON (the same bytes as on the alerts topic), signed as the
`Standard Webhooks <https://www.standardwebhooks.com/>`_ specification says, so that a receiver can
verify it with that project's library in its own language:

* ``Content-Type: application/json``
* ``webhook-id: <alert id>``: the message id, the same on every attempt and after a restart
  (deterministic per incident): drop duplicates by it.
* ``webhook-timestamp: <unix time in whole seconds>``: when this attempt was signed.
* ``webhook-signature: v1,<base64>``: ``HMAC-SHA256(key, id + "." + timestamp + "." + body)``, where
  ``body`` is the raw request body, byte for byte as received (verify before parsing the JSON).

The secret is a ``whsec_`` string: ``whsec_`` and the base64 of the key's bytes (:func:`new_secret`
makes one). A secret without the prefix (what driftline took before) is used as its UTF-8 bytes;
receivers then give the libraries those bytes (``Webhook(secret.encode())`` in Python).

For one release the old headers are sent too (``legacy_headers``, on by default), so that receivers
written against them keep working while they move: ``X-Driftline-Alert-Id``, ``X-Driftline-Timestamp``
and ``X-Driftline-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>``, keyed by the
secret string's UTF-8 bytes exactly as before (:func:`verify_legacy_signature`).

A receiver recomputes the HMAC, compares it in constant time, and rejects a timestamp more than a few
minutes from its clock, so that a captured request cannot be replayed later (:func:`verify_signature`
does all three). Each attempt is signed afresh, so a retry is never rejected as stale.

Delivery (:class:`~agent.alerting.sinks.delivery.DeliverySink`): :meth:`WebhookSink.send` only schedules one
delivery per URL and returns (a few microseconds); at most ``max_pending`` deliveries wait at once,
more are dropped, counted (``driftline_alerts_failed{reason="queue_full"}``) and logged. A delivery is
attempted up to ``max_attempts`` times: connection errors, timeouts, 408, 429 and 5xx answers are
retried after an exponential backoff with jitter (``Retry-After`` is honoured up to
``backoff_max_s``); other answers are final (2xx delivered, 3xx/4xx rejected). With an ``outbox_dir``
(the worker's ``<data dir>/spool/webhook``) every delivery is also a file in an
:class:`~agent.alerting.sinks.delivery.Outbox` from ``send`` until it is delivered, rejected or out of
attempts, so those still pending when the worker stops or crashes are sent again at its next start
(the alerts agent commits an alert's offset once ``send`` returned, so without the file a crash would
lose them); receivers may then see an alert id twice. At shutdown pending deliveries get
``drain_timeout_s`` to finish first.

Receiver URLs may carry credentials (tokens in paths or queries), so logs name a receiver by its
scheme, host and port only.

Example:
    >>> secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    >>> body = b'{"alert_id": "0123"}'
    >>> headers = signature_headers(secret, body, msg_id="0123", timestamp=1767225600)
    >>> headers["webhook-signature"][:11]
    'v1,GiluVXYe'
    >>> verify_signature(secret, body, headers, now=1767225630)
    True
    >>> verify_signature("whsec_" + "A" * 32, body, headers, now=1767225630)
    False
    >>> verify_signature(secret, body, headers, now=1767225600 + 3600)  # replayed an hour later
    False
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Unpack

from pydantic import SecretStr

from agent.alerting.sinks.base import Notify
from agent.alerting.sinks.delivery import DeliveryOptions, DeliverySink, Outbox, Request, redact_url
from agent.errors import ConfigurationError
from schemas import Alert
from schemas.alert import encode_alert
from schemas.incident import IncidentReport, encode_incident

__all__ = [
    "ID_HEADER",
    "LEGACY_ALERT_ID_HEADER",
    "LEGACY_SIGNATURE_HEADER",
    "LEGACY_TIMESTAMP_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Outbox",
    "WebhookSink",
    "new_secret",
    "redact_url",
    "sign",
    "signature_headers",
    "signing_key",
    "verify_legacy_signature",
    "verify_signature",
]

log = logging.getLogger(__name__)

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
LEGACY_SIGNATURE_HEADER = "X-Driftline-Signature"
LEGACY_TIMESTAMP_HEADER = "X-Driftline-Timestamp"
LEGACY_ALERT_ID_HEADER = "X-Driftline-Alert-Id"
_SECRET_PREFIX = "whsec_"


def _secret_text(secret: SecretStr | str | bytes) -> str | bytes:
    return secret.get_secret_value() if isinstance(secret, SecretStr) else secret


def signing_key(secret: SecretStr | str | bytes) -> bytes:
    """The HMAC key of ``secret``: the decoded base64 after ``whsec_``; otherwise its UTF-8 bytes (a
    ``bytes`` secret is the key itself). Raises :class:`ConfigurationError` (never showing the secret)
    if a ``whsec_`` secret is not base64 or empty.

    Example:
        >>> signing_key("whsec_c2VjcmV0LWtleS1ieXRlcw=="), signing_key("plain")
        (b'secret-key-bytes', b'plain')
    """
    text = _secret_text(secret)
    if isinstance(text, bytes):
        return bytes(text)
    if not text.startswith(_SECRET_PREFIX):
        return text.encode()
    try:
        key = base64.b64decode(text.removeprefix(_SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError(
            "the webhook secret starts with whsec_ but the rest is not base64 (DRIFTLINE_WEBHOOKS__SECRET)"
        ) from None
    if not key:
        raise ConfigurationError("the webhook secret whsec_ holds no key (DRIFTLINE_WEBHOOKS__SECRET)")
    return key


def new_secret(n_bytes: int = 32) -> str:
    """A fresh random ``whsec_`` secret of ``n_bytes`` bytes (the specification asks for 24 to 64)."""
    return _SECRET_PREFIX + base64.b64encode(secrets.token_bytes(n_bytes)).decode()


def sign(secret: SecretStr | str | bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` under ``secret``'s :func:`signing_key`."""
    signed = f"{msg_id}.{int(timestamp)}.".encode() + body
    mac = hmac.new(signing_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


def _legacy_sign(secret: SecretStr | str | bytes, timestamp: str, body: bytes) -> str:
    text = _secret_text(secret)
    key = text.encode() if isinstance(text, str) else bytes(text)
    return hmac.new(key, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def signature_headers(
    secret: SecretStr | str | bytes, body: bytes, *, msg_id: str, timestamp: int, legacy: bool = False
) -> dict[str, str]:
    """The Standard Webhooks headers for ``body`` with id ``msg_id``, signed at ``timestamp`` (unix
    seconds); with ``legacy`` the ``X-Driftline-*`` ones too."""
    ts = str(int(timestamp))
    headers = {ID_HEADER: msg_id, TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: sign(secret, msg_id, int(ts), body)}
    if legacy:
        headers[LEGACY_ALERT_ID_HEADER] = msg_id
        headers[LEGACY_TIMESTAMP_HEADER] = ts
        headers[LEGACY_SIGNATURE_HEADER] = "sha256=" + _legacy_sign(secret, ts, body)
    return headers


def _fresh(timestamp: str, tolerance_s: float, now: float | None) -> bool:
    if not timestamp.isdigit() or not timestamp.isascii():
        return False
    current = time.time() if now is None else now
    return abs(current - int(timestamp)) <= tolerance_s


def verify_signature(
    secret: SecretStr | str | bytes,
    body: bytes,
    headers: Mapping[str, str],
    *,
    tolerance_s: float = 300.0,
    now: float | None = None,
) -> bool:
    """Whether ``body`` with ``headers`` carries a Standard Webhooks signature made with ``secret``
    within ``tolerance_s`` of ``now``.

    Parameters:
        secret: The shared secret (``whsec_...``, or the raw key as for :func:`signing_key`).
        body: The raw request body, exactly as received.
        headers: The request headers (looked up case-insensitively).
        tolerance_s: Largest accepted difference between the signing time and ``now``, either way.
        now: Unix time to check against; default the current time.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get(ID_HEADER, "")
    timestamp = lowered.get(TIMESTAMP_HEADER, "")
    if not msg_id or not _fresh(timestamp, tolerance_s, now):
        return False
    try:
        expected = sign(secret, msg_id, int(timestamp), body).encode()
    except ConfigurationError:
        return False
    # The header may list several signatures (a key rotation): one match is enough.
    return any(hmac.compare_digest(expected, s.encode()) for s in lowered.get(SIGNATURE_HEADER, "").split())


def verify_legacy_signature(
    secret: SecretStr | str | bytes,
    body: bytes,
    headers: Mapping[str, str],
    *,
    tolerance_s: float = 300.0,
    now: float | None = None,
) -> bool:
    """Whether ``body`` carries a valid ``X-Driftline-Signature`` (the scheme before Standard
    Webhooks, sent for one more release): the same checks as :func:`verify_signature`."""
    lowered = {k.lower(): v for k, v in headers.items()}
    timestamp = lowered.get(LEGACY_TIMESTAMP_HEADER.lower(), "")
    signature = lowered.get(LEGACY_SIGNATURE_HEADER.lower(), "")
    if not signature.startswith("sha256=") or not _fresh(timestamp, tolerance_s, now):
        return False
    return hmac.compare_digest(_legacy_sign(secret, timestamp, body), signature.removeprefix("sha256="))


class WebhookSink(DeliverySink):
    """POSTs each alert, signed as Standard Webhooks, to every URL, with retries; ``send`` never waits
    for the network.

    Parameters:
        urls: Receivers (``http``/``https``); each alert goes to each.
        secret: The signing secret, ``whsec_<base64 key>`` (:func:`signing_key`); never logged.
        legacy_headers: Also send the ``X-Driftline-*`` headers of the previous scheme (for one release).
        notify: ``incidents``: POST each incident notification (its JSON, ``webhook-id`` its
            ``notification_id``); ``alerts``: POST each alert; ``both``.
        **options: Delivery options of :class:`~agent.alerting.sinks.delivery.DeliverySink` (timeouts,
            attempts, backoff, queue and outbox).
    """

    name = "webhook"
    outbox_setting = "DRIFTLINE_WEBHOOKS__OUTBOX_DIR"

    def __init__(
        self,
        urls: Sequence[str],
        secret: SecretStr | str | bytes,
        *,
        legacy_headers: bool = False,
        notify: Notify = "alerts",
        **options: Unpack[DeliveryOptions],
    ) -> None:
        super().__init__(urls, **options)
        self.notify = notify
        text = _secret_text(secret)
        if not text:
            raise ConfigurationError("the webhook secret is empty (DRIFTLINE_WEBHOOKS__SECRET)")
        signing_key(text)  # a bad whsec_ secret fails the configuration, not every delivery
        if isinstance(text, str) and not text.startswith(_SECRET_PREFIX):
            log.warning(
                "webhook: the secret is not a whsec_ secret; using its UTF-8 bytes as the key "
                "(receivers verify with those bytes; see the README to move to a whsec_ secret)"
            )
        self._secret = text
        self.legacy_headers = legacy_headers

    async def send(self, alert: Alert) -> None:
        if self.notify == "incidents":
            return
        body = encode_alert(alert)
        for url in self.urls:
            await self.deliver(url, body, alert.alert_id)

    async def send_incident(self, report: IncidentReport) -> None:
        if self.notify == "alerts":
            return
        body = encode_incident(report)
        for url in self.urls:
            await self.deliver(url, body, report.notification_id)

    def request(self, url: str, document: bytes, delivery_id: str) -> Request:
        headers = signature_headers(
            self._secret,
            document,
            msg_id=delivery_id,
            timestamp=int(self._clock()),
            legacy=self.legacy_headers,
        )
        return Request(document, {"Content-Type": "application/json", **headers})
