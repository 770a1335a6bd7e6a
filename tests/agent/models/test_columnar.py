"""The columnar fast path encodes exactly what the FeatureEncoder encodes, and refuses only what the
encoder would not take as a plain row of numbers."""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.models.columnar import ColumnarFeatures
from agent.models.encoding import FeatureEncoder
from schemas.manifest import Feature, MissingPolicy

FEATURES = [
    Feature(name="x", type="numeric", range=(-5.0, 5.0)),
    Feature(name="mean area", type="numeric"),
    Feature(name="class", type="numeric", missing=MissingPolicy(action="impute", value=0.0)),
]
NAMES = [f.name for f in FEATURES]

_number = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(2**70), 2**70),
    st.sampled_from([3.4028234e38, 3.5e38, -1e300, 2**128, -(2**127), 0.0, -0.0, 1e-320]),
)
_value = _number | st.sampled_from([None, "1.5", True, [1.0], {"a": 1}])


def _payload(row: dict[str, Any]) -> bytes:
    return json.dumps(row).encode()


def test_only_numeric_models_have_a_columnar_decoder() -> None:
    assert ColumnarFeatures.of(FEATURES) is not None
    assert (
        ColumnarFeatures.of([*FEATURES, Feature(name="c", type="categorical", categories=("a", "b"))]) is None
    )
    assert ColumnarFeatures.of([]) is None
    with pytest.raises(ValueError, match="numeric"):
        ColumnarFeatures([Feature(name="c", type="categorical", categories=("a",))])


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(
    rows=st.lists(
        st.dictionaries(st.sampled_from([*NAMES, "extra"]), _value, min_size=2, max_size=4),
        min_size=1,
        max_size=12,
    )
)
def test_fast_rows_and_the_encoder_agree_on_every_row(rows: list[dict[str, Any]]) -> None:
    columns = ColumnarFeatures.of(FEATURES)
    assert columns is not None
    decode = msgspec.json.Decoder(columns.row_type).decode
    encoder = FeatureEncoder(FEATURES)
    # What the encoder makes of the rows as pydantic would hand them over (JSON parsed by Python).
    parsed = [json.loads(_payload(row)) for row in rows]
    expected = encoder.encode(parsed)

    fast_at, structs, careful_at = [], [], []
    for i, row in enumerate(rows):
        try:
            structs.append(decode(_payload(row)))
            fast_at.append(i)
        except msgspec.ValidationError:
            careful_at.append(i)
    matrix, valid = columns.matrix(structs)
    kept = [i for i, ok in zip(fast_at, valid.tolist(), strict=True) if ok]
    careful_at = sorted(careful_at + [i for i, ok in zip(fast_at, valid.tolist(), strict=True) if not ok])
    for i in fast_at:
        # The struct takes a row only if every feature is a number and nothing else is there.
        assert set(rows[i]) == set(NAMES)
        assert all(isinstance(v, int | float) and not isinstance(v, bool) for v in rows[i].values())
    merged = columns.merge(matrix, kept, encoder.encode([parsed[i] for i in careful_at]), careful_at)

    assert merged.accepted == expected.accepted
    assert [(i, r.reason, r.detail, r.feature) for i, r in merged.rejected] == [
        (i, r.reason, r.detail, r.feature) for i, r in expected.rejected
    ]
    assert merged.matrix.dtype == np.float32 and merged.matrix.shape == expected.matrix.shape
    # Bit for bit, NaN (an imputed or allowed missing value) included.
    assert merged.matrix.tobytes() == expected.matrix.tobytes()
    assert merged.unseen_fields == expected.unseen_fields
    assert merged.missing.tolist() == expected.missing.tolist()
    assert merged.out_of_range.tolist() == expected.out_of_range.tolist()


def test_a_row_beyond_float32_is_left_out_of_the_matrix() -> None:
    columns = ColumnarFeatures.of(FEATURES[:1])
    assert columns is not None
    decode = msgspec.json.Decoder(columns.row_type).decode
    rows = [decode(b'{"x": 1e300}'), decode(b'{"x": 3.4028234e38}'), decode(b'{"x": -2}')]
    matrix, valid = columns.matrix(rows)
    assert valid.tolist() == [False, True, True]
    assert matrix.tolist() == [[3.4028234663852886e38], [-2.0]] and math.isfinite(matrix[0, 0])
    with pytest.raises(msgspec.ValidationError):
        decode(b'{"x": 1e400}')  # beyond float64: the encoder's business (it says non-finite)
