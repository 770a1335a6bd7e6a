"""Payloads and the fixed per-event work shared by every option of ``faust_options``.

Every option does exactly this per request: ``orjson.loads`` of the ~600-byte request, a tiny
"score" over its ~20 features, and ``orjson.dumps`` of a small prediction dict. Keeping it
identical means the differences between options are the framework path, not the work.
"""

from __future__ import annotations

import random
from typing import Any

import orjson

__all__ = ["MODEL", "build_output", "handle", "make_envelopes", "make_payloads"]

MODEL = "fraud-v3"
N_FEATURES = 20


def make_payloads(n: int, seed: int = 7) -> list[tuple[bytes, bytes]]:
    """Return ``n`` (key, value) pairs: key = request id, value = a ~600-byte JSON request."""
    rng = random.Random(seed)
    base_ts = 1_732_600_000.0
    out: list[tuple[bytes, bytes]] = []
    for i in range(n):
        rid = f"req-{seed:02d}-{i:010d}"
        req = {
            "request_id": rid,
            "model": MODEL,
            "ts": base_ts + i * 0.001,
            "tenant": "acme-payments",
            "features": {f"f{j:02d}": rng.gauss(0.0, 1.0) for j in range(N_FEATURES)},
        }
        out.append((rid.encode(), orjson.dumps(req)))
    return out


def make_envelopes(payloads: list[tuple[bytes, bytes]], size: int) -> list[tuple[bytes, bytes]]:
    """Group payloads into JSON-array envelopes of ``size`` requests (key = first request id)."""
    envs = []
    for i in range(0, len(payloads), size):
        chunk = payloads[i : i + size]
        envs.append((chunk[0][0], b"[" + b",".join(v for _, v in chunk) + b"]"))
    return envs


def build_output(req: dict[str, Any]) -> bytes:
    feats = req["features"]
    score = sum(feats.values()) / len(feats)
    return orjson.dumps(
        {"request_id": req["request_id"], "model": MODEL, "score": score, "ts": req["ts"], "drift": False}
    )


def handle(value: bytes) -> bytes:
    """The whole per-request work: decode, score, encode."""
    return build_output(orjson.loads(value))
