"""Request features straight into a model's float32 input matrix, with one typed decoder per model.

:class:`ColumnarFeatures` is the fast path of :mod:`agent.models.encoding` for a model whose features
are all numeric. Its :attr:`~ColumnarFeatures.row_type` is a msgspec struct with one ``float`` field
per feature, under the feature's own name, and no other field allowed: decoding a request's
``features`` object with it parses every value as a number in C, with no dictionary in between.
:meth:`~ColumnarFeatures.matrix` turns a batch of decoded rows into the float32 matrix and a validity
mask (the rows the model may see: finite as float32), and :meth:`~ColumnarFeatures.merge` puts those
rows and the ones :class:`~agent.models.encoding.FeatureEncoder` encoded into one
:class:`~agent.models.encoding.EncodedBatch`, in input order.

A row the struct refuses (a missing feature, a field the model has no feature for, a string, null,
NaN, a number beyond float64) or the mask refuses is not this module's business: the caller gives
it to the :class:`~agent.models.encoding.FeatureEncoder`, which handles it and says what is wrong
with it in the words the dead letters have always used. The struct accepts nothing the encoder
would not take as a plain row of numbers, and yields the same float64 values (msgspec parses
JSON numbers exactly as Python does: correctly rounded, an integer to the nearest float).

Example:
    >>> import msgspec
    >>> from schemas.manifest import Feature
    >>> columns = ColumnarFeatures.of(
    ...     [Feature(name="x", type="numeric", range=(0.0, 10.0)), Feature(name="mean area", type="numeric")]
    ... )
    >>> decode = msgspec.json.Decoder(columns.row_type).decode
    >>> rows = [decode(b'{"mean area": 2, "x": 1.5}'), decode(b'{"x": 12, "mean area": 1e300}'),
    ...         decode(b'{"x": 11, "mean area": -3.25}')]
    >>> matrix, valid = columns.matrix(rows)
    >>> matrix.tolist(), valid.tolist()
    ([[1.5, 2.0], [11.0, -3.25]], [True, False, True])
    >>> ColumnarFeatures.of([Feature(name="c", type="categorical", categories=("a",))]) is None
    True
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any, Final

import msgspec
import numpy as np
import numpy.typing as npt

from agent.models.encoding import EncodedBatch
from schemas.manifest import Feature

__all__ = ["ColumnarFeatures"]

# Models take float32 inputs: a float64 at or past this magnitude rounds to infinity in the cast
# (as agent.models.encoding: halfway between float32's largest value and 2**128).
_FLOAT32_LIMIT: Final = 2.0**128 - 2.0**103

_astuple = msgspec.structs.astuple
_chain = itertools.chain.from_iterable


class ColumnarFeatures:
    """The typed decoder of one model's features, and the matrix of the rows it decoded.

    Build it with :meth:`of`, which answers ``None`` for a model with a categorical feature.

    Parameters:
        features: The manifest's features, in input-column order, all numeric.
    """

    def __init__(self, features: Sequence[Feature]) -> None:
        if any(f.type != "numeric" for f in features):
            raise ValueError("ColumnarFeatures takes numeric features only")
        self.names: tuple[str, ...] = tuple(f.name for f in features)
        # Fields f0, f1, ... under the features' own names: a name need not be a Python identifier.
        fields = [(f"f{i}", float) for i in range(len(self.names))]
        self.row_type: type[msgspec.Struct] = msgspec.defstruct(
            "Features",
            fields,
            rename={f"f{i}": name for i, name in enumerate(self.names)},
            forbid_unknown_fields=True,
            gc=False,
        )
        """A request's ``features`` object as a struct: every feature a number, nothing else."""
        self._low = np.array([f.range[0] if f.range else -np.inf for f in features], dtype=np.float32)
        self._high = np.array([f.range[1] if f.range else np.inf for f in features], dtype=np.float32)
        self._has_range = any(f.range for f in features)

    @classmethod
    def of(cls, features: Sequence[Feature]) -> ColumnarFeatures | None:
        """The columnar decoder of ``features``, or ``None`` if one is categorical."""
        if not features or any(f.type != "numeric" for f in features):
            return None
        return cls(features)

    def matrix(self, rows: Sequence[Any]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        """Which of ``rows`` (instances of :attr:`row_type`) the model may see (finite as float32),
        and the float32 matrix of those."""
        n, k = len(rows), len(self.names)
        values = np.fromiter(_chain(map(_astuple, rows)), np.float64, count=n * k).reshape(n, k)
        valid = np.asarray((np.abs(values) < _FLOAT32_LIMIT).all(axis=1), dtype=np.bool_)
        if not valid.all():
            values = values[valid]
        return values.astype(np.float32), valid

    def merge(
        self,
        rows: npt.NDArray[np.float32],
        positions: list[int],
        careful: EncodedBatch,
        careful_positions: list[int],
    ) -> EncodedBatch:
        """One batch of ``rows`` (a matrix from :meth:`matrix`, its rows at ``positions`` of the input) and
        ``careful`` (what the encoder made of the requests at ``careful_positions``), in input order.

        Everything the encoder counted (unseen fields, missing values) comes from ``careful``:
        the struct admits neither. Out-of-range values are counted over both.
        """
        accepted = [careful_positions[i] for i in careful.accepted]
        rejected = [(careful_positions[i], why) for i, why in careful.rejected]
        out_of_range = careful.out_of_range
        if self._has_range and len(rows):
            with np.errstate(invalid="ignore"):
                outside = (rows < self._low) | (rows > self._high)
            counts = outside.sum(axis=0, dtype=np.int64)
            out_of_range = counts + out_of_range if len(out_of_range) else counts
        if accepted:
            order = np.argsort(np.array(positions + accepted), kind="stable")
            matrix = np.concatenate([rows, careful.matrix])[order]
            accepted = np.array(positions + accepted)[order].tolist()
        else:
            matrix, accepted = rows, list(positions)
        return dataclasses.replace(
            careful, matrix=matrix, accepted=accepted, rejected=rejected, out_of_range=out_of_range
        )
