"""Requests off the wire and predictions onto it, a batch at a time: the request handler's fast path.

**Decoding.** :class:`RequestDecoder` decodes a request payload with one msgspec struct per served
model: :class:`schemas.events.PredictionRequest`'s envelope (the same fields, lengths and literal,
no unknown field) around the model's :class:`~agent.models.columnar.ColumnarFeatures` row, so that
the features are parsed as numbers straight into a row of the model's matrix. It answers ``None``
for whatever it does not take, and the handler then validates the payload with pydantic as it
always did, so that a dead letter says exactly what it always said; what it does take, pydantic
takes too, with the same values. The event time is left as text: :func:`parse_event_times` parses
a batch's at once.

**Encoding.** :func:`prediction_values` serialises a model batch's predictions from its arrays: the
request ids, the event times and every probability column each go through one ``orjson.dumps``
call for the whole batch, and each message is filled into a template made once per batch. The
bytes are the ones the handler wrote with one ``orjson.dumps`` per prediction before.

Example:
    >>> parse_event_times(["2026-01-01T00:00:00Z", "2026-01-01T01:00:00.1234567Z", "soon"])
    [datetime.datetime(2026, 1, 1, 0, 0, tzinfo=datetime.timezone.utc), None, None]
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Final, Literal, Protocol

import msgspec
import numpy as np
import orjson

from agent.models.columnar import ColumnarFeatures
from agent.models.package import Predictions
from agent.models.registry import ServedModel

__all__ = ["DecodedRequest", "RequestDecoder", "TypedRequests", "parse_event_times", "prediction_values"]

# As schemas.events.PredictionRequest: RequestId and ModelName (tests/agent/serving/test_wire.py
# holds the two to the same answers).
_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class DecodedRequest(Protocol):
    """What the handler reads of a request, decoded either way (a ``PredictionRequest`` fits)."""

    @property
    def request_id(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def model_version(self) -> str | None: ...
    @property
    def event_time(self) -> Any: ...


class _ModelName(msgspec.Struct, gc=False):
    """Just the model a payload asks for (every other field skipped)."""

    model: str


class TypedRequests:
    """The struct of one model's requests and its decoder.

    ``event_time`` stays a string (or ``msgspec.UNSET``) until :func:`parse_event_times` turns a
    batch of them into datetimes; ``features`` is a :attr:`ColumnarFeatures.row_type`.
    """

    def __init__(self, columns: ColumnarFeatures) -> None:
        self.columns = columns
        self.request_type: type[msgspec.Struct] = msgspec.defstruct(
            "WireRequest",
            [
                ("request_id", _Name),
                ("model", _Name),
                ("features", columns.row_type),
                ("schema_version", Literal["1"], "1"),
                ("model_version", str | None, None),
                ("event_time", str | msgspec.UnsetType, msgspec.UNSET),
            ],
            forbid_unknown_fields=True,
            gc=False,
        )
        self.decode = msgspec.json.Decoder(self.request_type).decode


_PLAIN: Final = object()
"""The guess for a model with no typed decoder (a categorical feature): pydantic decodes it."""


class RequestDecoder:
    """Decodes request payloads with the typed decoder of the model they ask for, when it can.

    It guesses that a payload asks for the model the last one did (:meth:`learn`); when that
    decoder refuses it, it reads the model's name and tries that model's decoder once.
    """

    def __init__(self) -> None:
        self._name = msgspec.json.Decoder(_ModelName).decode
        self._typed: weakref.WeakKeyDictionary[ServedModel, TypedRequests | None] = (
            weakref.WeakKeyDictionary()
        )
        self._by_name: dict[str, TypedRequests | None] = {}
        self._guess: object = None

    def typed(self, served: ServedModel) -> TypedRequests | None:
        """The typed decoder of ``served`` (``None``: it has a categorical feature)."""
        try:
            return self._typed[served]
        except KeyError:
            columns = ColumnarFeatures.of(served.manifest.features)
            typed = self._typed[served] = TypedRequests(columns) if columns is not None else None
            return typed

    def learn(self, served: ServedModel) -> None:
        """``served`` answers a request: guess it for the next payloads."""
        typed = self.typed(served)
        self._by_name[served.name] = typed
        self._guess = typed if typed is not None else _PLAIN

    def decode(self, value: bytes) -> Any | None:
        """The payload as a :class:`TypedRequests` struct, or ``None``: pydantic must decide."""
        guess = self._guess
        if guess is _PLAIN:
            return None
        if isinstance(guess, TypedRequests):
            try:
                return guess.decode(value)
            except _REFUSED:
                pass
        try:
            other = self._by_name.get(self._name(value).model)
        except _REFUSED:
            return None
        if other is None or other is guess:
            return None
        try:
            request = other.decode(value)
        except _REFUSED:
            return None
        self._guess = other
        return request


# What msgspec raises for a payload it will not take: a decode or validation error, or, for JSON
# nested deeper than the interpreter's recursion limit (skipping an unknown field), RecursionError.
_REFUSED: Final = (msgspec.DecodeError, RecursionError)

_DATETIMES: Final = msgspec.json.Decoder(list[datetime]).decode
# msgspec rounds a fraction of a second past microseconds, pydantic truncates it: leave those to
# pydantic. Anything else msgspec parses as a datetime, pydantic parses to the same value.
_LONG_FRACTION: Final = re.compile(r"\.\d{7}").search


def parse_event_times(texts: Sequence[str]) -> list[datetime | None]:
    """Each text as the datetime pydantic would make of it, or ``None`` where it is left to pydantic
    (not an RFC 3339 date and time msgspec reads, or a fraction of a second past microseconds)."""
    if not texts:
        return []
    joined = "\n".join(texts)
    # One decode for the batch: a JSON array of the texts (a text holding a quote, a backslash or a
    # newline would not be one element; those are not dates anyway).
    if '"' not in joined and "\\" not in joined and _LONG_FRACTION(joined) is None:
        try:
            parsed: list[Any] = _DATETIMES(('["' + joined.replace("\n", '","') + '"]').encode())
        except msgspec.DecodeError:
            pass
        else:
            if len(parsed) == len(texts):
                return parsed
    return [_parse_one(text) for text in texts]


def _parse_one(text: str) -> datetime | None:
    if '"' in text or "\\" in text or _LONG_FRACTION(text) is not None:
        return None
    try:
        parsed: datetime = _DATETIMES(b'["' + text.encode() + b'"]')[0]
    except (msgspec.DecodeError, UnicodeEncodeError):
        return None
    return parsed


def prediction_values(
    head: bytes,
    request_ids: list[str],
    event_times: list[Any],
    predictions: Predictions,
    class_keys: Sequence[str],
) -> tuple[list[bytes], list[bytes]]:
    """The message keys and values of a model batch's predictions.

    ``head`` is the JSON of the fields every prediction of the batch shares, without its closing
    brace and with a comma after the last member (``{"schema_version":"1",...,``). Each value is
    ``head`` followed by ``"request_id"``, ``"event_time"`` and ``"label"`` with ``"probabilities"``
    (classifiers) or ``"value"`` (regressors), as ``orjson.dumps`` writes them.
    """
    dumps = orjson.dumps
    if not request_ids:
        return [], []
    ids = dumps(request_ids)
    if b"\\" not in ids:
        # No escape anywhere: each id's JSON is its UTF-8 bytes in quotes, and '","' only stands
        # between two of them.
        keys = ids[2:-2].split(b'","')
        fields: list[Any] = [keys]
        template = head.replace(b"%", b"%%") + b'"request_id":"%b","event_time":%b'
    else:
        keys = [rid.encode() for rid in request_ids]
        fields = [[dumps(rid) for rid in request_ids]]
        template = head.replace(b"%", b"%%") + b'"request_id":%b,"event_time":%b'
    # A datetime's JSON holds no comma: one dumps for the batch, split.
    fields.append(dumps(event_times)[1:-1].split(b","))
    if predictions.values is not None:
        fields.append(_numbers(predictions.values.astype(np.float64).ravel().tolist()))
        template += b',"value":%b}'
    else:
        assert predictions.labels is not None and predictions.probabilities is not None
        labels = predictions.labels.tolist()
        cache = {label: dumps(label) for label in set(labels)}
        fields.append([cache[label] for label in labels])
        probabilities = np.round(predictions.probabilities.astype(np.float64), 6)
        width = probabilities.shape[1]
        if len(class_keys) != width:
            raise ValueError(f"{width} probability columns for {len(class_keys)} class keys")
        flat = _numbers(probabilities.ravel().tolist())
        fields.extend(flat[j::width] for j in range(width))
        members = b",".join(dumps(key).replace(b"%", b"%%") + b":%b" for key in class_keys)
        template += b',"label":%b,"probabilities":{' + members + b"}}"
    return keys, [template % row for row in zip(*fields, strict=True)]


def _numbers(values: list[float]) -> list[bytes]:
    """Each float as ``orjson.dumps`` writes it (a float's JSON holds no comma: one call, split)."""
    return orjson.dumps(values)[1:-1].split(b",")
