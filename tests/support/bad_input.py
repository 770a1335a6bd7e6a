"""Bad input for the serving path, drawn with hypothesis, and the outcome each event must have.

:class:`CaseMaker` draws request payloads of many kinds (good ones, random bytes, truncated and
oversized payloads, wrong types, NaN and infinities, deeply nested junk, unknown models, duplicate
request ids, ...). :func:`expected_outcome` says what driftline must make of a payload: a prediction,
or a dead letter with a given reason. It is written from the wire contract (README "Events on the
wire", ``schemas/events.py``, the manifests' missing-value policies), not from the agent's code, so
a disagreement between the two is a finding about one of them.

The unit property test (tests/agent/test_bad_input.py) draws many small batches; the integration
barrage (tests/integration/test_reliability.py) draws one fixed, seeded batch with
:func:`seeded_batch` and sends it through a real worker.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from agent.models.repository import ModelRepository

PREDICTION = "prediction"
"""The expected outcome of a request that must be served."""

DEPTH_LIMIT = 201
"""The deepest JSON nesting the request parser (pydantic's jiter) accepts; deeper is a decode error.
Generated nesting stays far from it on both sides (at most 60 or at least 300 levels), so the exact
value only matters for payloads that happen to land near it."""

_VALID_EVENT_TIMES = ("2026-01-01T00:00:00Z", "2026-03-01T12:30:00+02:00", "2025-12-31T23:59:59.5Z")
_INVALID_EVENT_TIMES: tuple[Any, ...] = ("yesterday", "", None, [2026], {"t": 1}, True)
# The largest magnitude that survives the cast to the model's float32 input: halfway between
# float32's largest value and 2**128 (which rounds to infinity).
_FLOAT32_LIMIT = 2.0**128 - 2.0**103


@dataclass(frozen=True)
class ModelSpec:
    """What the oracle needs of a served model: its name, version and feature names in order."""

    name: str
    version: str
    features: tuple[str, ...]

    @classmethod
    def served_in(cls, root: Path) -> dict[str, ModelSpec]:
        """The newest version of every model in a repository (what a worker serves)."""
        specs = {}
        for name, refs in ModelRepository(root).scan().items():
            manifest = json.loads(refs[-1].manifest_path.read_text())
            # The oracle below knows numeric features with the "reject" missing-value policy only;
            # a test repository with other kinds must teach it those first.
            for f in manifest["features"]:
                assert f["type"] == "numeric" and f["missing"]["action"] == "reject", (name, f)
            specs[name] = cls(name, refs[-1].version, tuple(f["name"] for f in manifest["features"]))
        return specs


@dataclass(frozen=True)
class Case:
    """One payload and what driftline must make of it."""

    kind: str
    value: bytes | None
    expected: str
    """``"prediction"`` or the dead-letter reason (``DeadLetterReason`` value)."""
    request_id: str | None = None
    """The request id a prediction must carry (when ``expected`` is a prediction)."""


# --- the oracle --------------------------------------------------------------------------------


def _depth_and_surrogates(document: Any) -> tuple[int, bool]:
    """Nesting depth of a parsed document, and whether any string in it holds a lone surrogate.
    Iterative: a document may be nested hundreds of levels deep."""
    deepest, lone = 0, False
    stack = [(document, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            stack.extend((k, depth + 1) for k in value)
            stack.extend((v, depth + 1) for v in value.values())
            deepest = max(deepest, depth + 1)
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
            deepest = max(deepest, depth + 1)
        elif isinstance(value, str):
            lone = lone or any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    return deepest, lone


def _parse(value: bytes) -> tuple[bool, Any]:
    """(True, document) for a JSON text the wire accepts: UTF-8, NaN/Infinity literals allowed,
    no lone surrogates (not Unicode), no deeper than :data:`DEPTH_LIMIT`."""
    try:
        document = json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False, None
    depth, lone_surrogate = _depth_and_surrogates(document)
    if lone_surrogate or depth > DEPTH_LIMIT:
        return False, None
    return True, document


def _is_text(value: Any, longest: int) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= longest


def _is_feature_value(value: Any) -> bool:
    return value is None or (isinstance(value, int | float | str) and not isinstance(value, bool))


def _model_input(value: int | float) -> float:
    """The value as the model sees it: a float32 (a huge integer or float overflows to infinity)."""
    try:
        x = float(value)
    except OverflowError:
        return math.inf
    return x if math.isnan(x) or abs(x) < _FLOAT32_LIMIT else math.copysign(math.inf, x)


def expected_outcome(value: bytes | None, models: dict[str, ModelSpec], max_event_bytes: int) -> str:
    """What driftline must make of one request payload: ``"prediction"`` or a dead-letter reason.

    In order: no value -> ``decode_error``; larger than ``max_event_bytes`` -> ``too_large`` (unparsed);
    not JSON -> ``decode_error``; not an object, or a field of the wrong shape -> ``invalid``; a model
    (or version) not served -> ``unknown_model``; then the features in the model's order, the first bad
    one deciding: absent or null -> ``missing_feature``, text -> ``wrong_type``, NaN or not finite as a
    float32 -> ``non_finite``.
    """
    if not value:
        return "decode_error"
    if len(value) > max_event_bytes:
        return "too_large"
    ok, document = _parse(value)
    if not ok:
        return "decode_error"
    if not isinstance(document, dict):
        return "invalid"
    if "schema_version" in document and document["schema_version"] != "1":
        return "invalid"
    if not (_is_text(document.get("request_id"), 256) and _is_text(document.get("model"), 256)):
        return "invalid"
    version = document.get("model_version")
    if version is not None and not isinstance(version, str):
        return "invalid"
    if "event_time" in document and document["event_time"] not in _VALID_EVENT_TIMES:
        return "invalid"
    features = document.get("features")
    if not isinstance(features, dict) or not all(_is_feature_value(v) for v in features.values()):
        return "invalid"
    spec = models.get(document["model"])
    if spec is None or (version is not None and version != spec.version):
        return "unknown_model"
    for name in spec.features:
        x = features.get(name)
        if x is None:
            return "missing_feature"
        if isinstance(x, str):
            return "wrong_type"
        if not math.isfinite(_model_input(x)):
            return "non_finite"
    return PREDICTION


# --- the generator ------------------------------------------------------------------------------

GOOD_KINDS = ("good", "good_with_extras", "duplicate")
BAD_KINDS = (
    "random_bytes",
    "truncated",
    "oversized",
    "wrong_type",
    "envelope",
    "non_finite",
    "nested",
    "unknown_model",
    "missing",
    "empty",
)
KINDS = GOOD_KINDS + BAD_KINDS

_finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False) | st.integers(-(10**6), 10**6)
_wrong_value = st.one_of(
    st.text(max_size=12),
    st.booleans(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
_not_finite = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf]),
    # Finite in float64, infinite as the model's float32 input.
    st.floats(min_value=3.5e38, max_value=1.7e308),
    st.floats(min_value=-1.7e308, max_value=-3.5e38),
    # Integers JSON allows, beyond any float: 10**400.
    st.integers(min_value=310, max_value=900).map(lambda d: 10**d),
)


def _dumps(document: Any) -> bytes:
    # Python's json writes NaN and Infinity literals, as the README says producers may.
    return json.dumps(document).encode()


@dataclass
class CaseMaker:
    """Draws :class:`Case` s; remembers good payloads so that later ones can repeat their request id.

    Parameters:
        models: The served models (:meth:`ModelSpec.served_in`).
        max_event_bytes: The worker's ``DRIFTLINE_SERVING__MAX_EVENT_BYTES``.
    """

    models: dict[str, ModelSpec]
    max_event_bytes: int
    prefix: str = ""
    """Put before each request id, to keep the ids of several makers apart."""
    _made: int = 0
    _good: list[tuple[bytes, str]] = field(default_factory=list)

    def case(self, kind: str, value: bytes | None, request_id: str | None = None) -> Case:
        expected = expected_outcome(value, self.models, self.max_event_bytes)
        return Case(kind, value, expected, request_id if expected == PREDICTION else None)

    def _bad_features(self, data: st.DataObject, kind: str, values: st.SearchStrategy[Any]) -> Case:
        """A valid request with one to three of its features replaced by draws of ``values``."""
        document, spec = self._request(data)
        bad = data.draw(st.lists(st.sampled_from(spec.features), min_size=1, max_size=3, unique=True))
        for name in bad:
            document["features"][name] = data.draw(values)
        return self.case(kind, _dumps(document), document["request_id"])

    def _request(self, data: st.DataObject) -> tuple[dict[str, Any], ModelSpec]:
        spec = data.draw(st.sampled_from(sorted(self.models.values(), key=lambda s: s.name)))
        self._made += 1
        # Unique per drawn request (the counter), any text after it.
        request_id = f"{self.prefix}{self._made}:{data.draw(st.text(max_size=24))}"
        values = data.draw(st.lists(_finite, min_size=len(spec.features), max_size=len(spec.features)))
        document: dict[str, Any] = {
            "request_id": request_id,
            "model": spec.name,
            "features": dict(zip(spec.features, values, strict=True)),
        }
        if data.draw(st.booleans()):
            document["event_time"] = data.draw(st.sampled_from(_VALID_EVENT_TIMES))
        if data.draw(st.booleans()):
            document["model_version"] = spec.version
        return document, spec

    def _good_case(self, data: st.DataObject, document: dict[str, Any], kind: str = "good") -> Case:
        value = _dumps(document)
        made = self.case(kind, value, document["request_id"])
        if made.expected == PREDICTION:
            self._good.append((value, document["request_id"]))
        return made

    def draw(self, data: st.DataObject, kind: str) -> Case:
        """One case of ``kind`` (one of :data:`KINDS`)."""
        if kind == "good":
            return self._good_case(data, self._request(data)[0])
        if kind == "good_with_extras":
            document, _ = self._request(data)
            extras = data.draw(st.dictionaries(st.sampled_from(["colour", "zz", "x99", "age2"]), _finite))
            document["features"].update(extras)
            document["trace"] = data.draw(st.text(max_size=20))
            return self._good_case(data, document, kind)
        if kind == "duplicate":
            if not self._good:
                return self._good_case(data, self._request(data)[0])
            value, request_id = data.draw(st.sampled_from(self._good))
            return self.case(kind, value, request_id)
        if kind == "random_bytes":
            size = st.integers(self.max_event_bytes + 1, self.max_event_bytes + 64)
            return self.case(kind, data.draw(st.binary(max_size=200) | size.flatmap(_binary_of)))
        if kind == "truncated":
            value = _dumps(self._request(data)[0])
            return self.case(kind, value[: data.draw(st.integers(0, len(value) - 1))])
        if kind == "oversized":
            document, _ = self._request(data)
            document["pad"] = ""
            base = len(_dumps(document))
            # Right at the limit (served) or past it (dead-lettered unparsed), as far as 3x past it.
            target = data.draw(
                st.integers(self.max_event_bytes - 2, self.max_event_bytes + 2)
                | st.integers(self.max_event_bytes, 3 * self.max_event_bytes)
            )
            document["pad"] = "x" * max(target - base, 0)
            return self.case(kind, _dumps(document), document["request_id"])
        if kind == "wrong_type":
            return self._bad_features(data, kind, _wrong_value)
        if kind == "envelope":
            document, _ = self._request(data)
            where = data.draw(
                st.sampled_from(
                    ["request_id", "model", "features", "model_version", "schema_version", "event_time"]
                )
            )
            if where == "request_id":
                bad: Any = data.draw(
                    st.sampled_from(["", "r" * 257, None, 7, ["r"]]) | st.text(min_size=257, max_size=300)
                )
            elif where == "model":
                bad = data.draw(st.sampled_from(["", "m" * 257, None, 3, {"name": "x"}]))
            elif where == "features":
                bad = data.draw(st.sampled_from([None, [], "x00=1", 1.5, [["x00", 1.0]]]))
            elif where == "model_version":
                bad = data.draw(st.sampled_from([1, 1.0, ["1"], {"v": "1"}, False]))
            elif where == "schema_version":
                bad = data.draw(st.sampled_from(["2", 1, "", None, "1.0"]))
            else:
                bad = data.draw(st.sampled_from(_INVALID_EVENT_TIMES))
            if data.draw(st.booleans()) and where in ("request_id", "model", "features"):
                del document[where]
            else:
                document[where] = bad
            return self.case(kind, _dumps(document), document.get("request_id"))
        if kind == "non_finite":
            return self._bad_features(data, kind, _not_finite)
        if kind == "nested":
            depth = data.draw(st.integers(1, 60) | st.integers(300, 1200))
            shape = data.draw(st.sampled_from(["[", "{"]))
            junk = "[" * depth + "]" * depth if shape == "[" else '{"a":' * depth + "1" + "}" * depth
            where = data.draw(st.sampled_from(["payload", "feature", "extra field"]))
            if where == "payload":
                return self.case(kind, junk.encode())
            document, spec = self._request(data)
            name = data.draw(st.sampled_from(spec.features)) if where == "feature" else "extra"
            target = document["features"] if where == "feature" else document
            target[name] = "@JUNK@"
            return self.case(
                kind, _dumps(document).replace(b'"@JUNK@"', junk.encode()), document["request_id"]
            )
        if kind == "unknown_model":
            document, spec = self._request(data)
            if data.draw(st.booleans()):
                document["model"] = data.draw(
                    st.text(min_size=1, max_size=40).filter(lambda s: s not in self.models)
                )
            else:
                document["model_version"] = data.draw(
                    st.text(min_size=0, max_size=10).filter(lambda s: s != spec.version)
                )
            return self.case(kind, _dumps(document), document["request_id"])
        if kind == "missing":
            document, spec = self._request(data)
            gone = data.draw(st.lists(st.sampled_from(spec.features), min_size=1, unique=True))
            nulls = data.draw(st.booleans())
            for name in gone:
                if nulls:
                    document["features"][name] = None
                else:
                    del document["features"][name]
            return self.case(kind, _dumps(document), document["request_id"])
        if kind == "empty":
            return self.case(kind, data.draw(st.sampled_from([None, b""])))
        raise ValueError(f"unknown kind {kind!r}")


def _binary_of(size: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=size, max_size=size)


def seeded_batch(
    models: dict[str, ModelSpec], max_event_bytes: int, size: int, *, chunk: int = 20
) -> list[Case]:
    """``size`` cases, the same on every run: in each chunk of ``chunk``, good kinds and bad kinds
    alternate, each bad kind once (with the default chunk of 20), the good ones in turn.

    One hypothesis run with ``derandomize=True`` (its seed comes from this function, not from the
    clock), generation only, one chunk per example: a fixed batch, not a search. Each example draws
    with a fresh :class:`CaseMaker`, so that what it draws does not depend on earlier examples (which
    hypothesis would rightly call a flaky strategy); duplicates repeat request ids within a chunk.
    """
    cases: list[Case] = []

    @settings(
        max_examples=size // chunk,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.data())
    def collect(data: st.DataObject) -> None:
        # Kept only once the whole chunk is drawn: hypothesis may abandon an example half-drawn (a draw
        # past its buffer), and does not count it towards max_examples.
        maker = CaseMaker(models, max_event_bytes, prefix=f"{len(cases) // chunk}.")
        drawn = []
        for j in range(chunk):
            kinds = GOOD_KINDS if j % 2 == 0 else BAD_KINDS
            drawn.append(maker.draw(data, kinds[(j // 2) % len(kinds)]))
        cases.extend(drawn)

    collect()
    assert len(cases) == size, f"hypothesis drew {len(cases)} cases, not {size}"
    return cases


def float32_finite(matrix: Sequence[Sequence[float]] | np.ndarray) -> bool:
    """Whether every value of a model input matrix is finite."""
    return bool(np.isfinite(np.asarray(matrix, dtype=np.float32)).all())
