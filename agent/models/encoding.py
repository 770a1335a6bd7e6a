"""Feature encoding: validated requests of one model -> its float32 input matrix.

:class:`FeatureEncoder` applies the manifest's per-feature rules (type, categories, missing-value
policy, finiteness) and says, for every request it cannot encode, why, naming the feature and value.
It also counts what the technical-drift monitor watches: unseen fields, missing values, out-of-range
values.

This runs once per request on the serving path, so the rules are compiled once per model into plain
tuples and checked with ``type(...) is`` tests; the range and missing-value counts are taken on the
finished matrix with numpy.

Example:
    >>> from schemas.manifest import Feature, MissingPolicy
    >>> enc = FeatureEncoder(
    ...     [
    ...         Feature(name="x", type="numeric", range=(0.0, 10.0)),
    ...         Feature(name="c", type="categorical", categories=("red", "blue")),
    ...         Feature(name="z", type="numeric", missing=MissingPolicy(action="impute", value=0.5)),
    ...     ]
    ... )
    >>> out = enc.encode([{"x": 1.0, "c": "blue"}, {"x": 12, "c": "green", "z": 2.0}, {"c": "red"}])
    >>> out.matrix.tolist(), out.accepted
    ([[1.0, 1.0, 0.5]], [0])
    >>> [(i, r.reason.value, r.detail) for i, r in out.rejected]  # doctest: +NORMALIZE_WHITESPACE
    [(1, 'unknown_category', "feature 'c': category 'green' is not one of the model's 2 categories"),
     (2, 'missing_feature', "feature 'x' is missing and the model requires it")]

    A category the model was not built with is served as a missing value where the manifest says
    so (``unknown_category="missing"``), and counted apart from the missing ones:

    >>> enc = FeatureEncoder([Feature(name="c", type="categorical", categories=("red", "blue"),
    ...     missing=MissingPolicy(action="impute", value="red"), unknown_category="missing")])
    >>> out = enc.encode([{"c": "green"}, {"c": "blue"}, {}])
    >>> out.matrix.tolist(), out.unknown_categories.tolist(), out.missing.tolist()
    ([[0.0], [1.0], [0.0]], [1], [1])
    >>> out.unknown_values  # which ones, for the alert
    {0: {'green': 1}}
"""

from __future__ import annotations

import logging
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from schemas.events import DeadLetterReason, FeatureValue
from schemas.manifest import Feature

__all__ = ["UNKNOWN_EXAMPLES", "EncodedBatch", "FeatureEncoder", "Rejection", "shorten_category", "tally"]

log = logging.getLogger(__name__)

_ABSENT: Final = object()

UNKNOWN_EXAMPLES: Final = 8
"""Distinct unknown categories per feature that a batch (and a rate window) names, with their counts,
for the technical alert (:func:`tally`)."""

_REJECT, _IMPUTE, _ALLOW = 0, 1, 2
_POLICY = {"reject": _REJECT, "impute": _IMPUTE, "allow": _ALLOW}


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one request could not be encoded."""

    reason: DeadLetterReason
    detail: str
    feature: str | None = None
    """The feature at fault, for the technical-drift monitor."""


@dataclass(slots=True)
class EncodedBatch:
    """The matrix of the accepted requests and what was seen on the way.

    ``accepted[i]`` is the index (in the input sequence) of the request in row ``i``.
    """

    matrix: npt.NDArray[np.float32]
    accepted: list[int]
    rejected: list[tuple[int, Rejection]]
    unseen_fields: dict[str, int] = field(default_factory=dict)
    """Field name -> requests that carried it although the model has no such feature."""
    with_unseen: int = 0
    """Requests that carried at least one field the model has no feature for, whatever its name."""
    missing: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """Per feature: accepted requests whose value was missing (imputed or passed on as NaN)."""
    out_of_range: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """Per feature: accepted requests whose value lies outside the manifest's range."""
    unknown_categories: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """Per feature: accepted requests with a category the model was not built with, served as a
    missing value (the feature's ``unknown_category`` policy ``missing``; not counted in
    :attr:`missing`)."""
    unknown_values: dict[int, dict[str, int]] = field(default_factory=dict)
    """Per feature index: those categories (:func:`shorten_category`) and how many accepted requests
    carried each, at most :data:`UNKNOWN_EXAMPLES` distinct ones per feature (:func:`tally`)."""


@dataclass(frozen=True, slots=True)
class _Rule:
    name: str
    categorical: bool
    categories: Mapping[str, float]
    policy: int
    impute: float
    n_categories: int
    unknown_missing: bool


class FeatureEncoder:
    """Encodes feature dictionaries into the model's input matrix, in manifest feature order.

    Parameters:
        features: The manifest's features, in input-column order.
        label: The model it encodes for (``name/version``), in its log lines.
    """

    def __init__(self, features: Sequence[Feature], label: str = "the model") -> None:
        self.label = label
        self._told_unknown: set[int] = set()
        """Features whose first unknown category, served as missing, has been logged."""
        self.names: tuple[str, ...] = tuple(f.name for f in features)
        self._name_set = frozenset(self.names)
        rules = []
        for f in features:
            categories = {c: float(i) for i, c in enumerate(f.categories or ())}
            impute = f.missing.value
            if isinstance(impute, str):
                impute_value = categories[impute]
            else:
                impute_value = math.nan if impute is None else float(impute)
            rules.append(
                _Rule(
                    name=f.name,
                    categorical=f.type == "categorical",
                    categories=categories,
                    policy=_POLICY[f.missing.action],
                    impute=impute_value,
                    n_categories=len(categories),
                    unknown_missing=f.unknown_category == "missing",
                )
            )
        self._rules: tuple[_Rule, ...] = tuple(rules)
        self._low = np.array([f.range[0] if f.range else -np.inf for f in features], dtype=np.float32)
        self._high = np.array([f.range[1] if f.range else np.inf for f in features], dtype=np.float32)
        self._has_range = any(f.range for f in features)
        self._all_numeric = all(f.type == "numeric" for f in features)
        # A request's values in input-column order, in one C call (KeyError if one is missing).
        self._take: Callable[[Mapping[str, FeatureValue]], tuple[FeatureValue, ...]] = (
            operator.itemgetter(*self.names)
            if len(self.names) > 1
            else lambda features: tuple(features[k] for k in self.names)
        )

    def encode(self, rows: Sequence[Mapping[str, FeatureValue]]) -> EncodedBatch:
        """Encodes ``rows`` (each a request's features by name); never raises for bad values."""
        n = len(self.names)
        unseen: dict[str, int] = {}
        with_unseen = 0
        # Fast path, for models whose features are all numeric: a row of plain numbers is taken
        # as is and checked for finiteness on the matrix, in one numpy call for the whole batch.
        fast_index: list[int] = []
        fast_rows: list[tuple[FeatureValue, ...]] = []
        slow: list[int] = []
        take = self._take
        for index, features in enumerate(rows):
            try:
                row = take(features)
            except KeyError:  # a feature is missing: the careful path says what to do
                row = None
            # Every feature present and no more fields than features: no unseen field either.
            if row is None or len(features) != n:
                extras = features.keys() - self._name_set
                with_unseen += bool(extras)
                for extra in extras:
                    unseen[extra] = unseen.get(extra, 0) + 1
            if row is not None and self._all_numeric and _NUMBERS.issuperset(map(type, row)):
                fast_index.append(index)
                fast_rows.append(row)
                continue
            slow.append(index)
        fast = _float_matrix(fast_rows, n)
        if fast is None:  # an integer beyond float range: let the careful path say which
            slow = sorted(slow + fast_index)
            fast_index, fast = [], np.empty((0, n), dtype=np.float64)
        else:
            # Finite as the model will see it: a float64 beyond float32's range is infinity there.
            finite = np.asarray((np.abs(fast) < _FLOAT32_LIMIT).all(axis=1), dtype=bool)
            if not finite.all():
                flags: list[bool] = finite.tolist()
                slow = sorted(slow + [i for i, ok in zip(fast_index, flags, strict=True) if not ok])
                fast_index = [i for i, ok in zip(fast_index, flags, strict=True) if ok]
                fast = fast[finite]

        accepted = fast_index
        rejected: list[tuple[int, Rejection]] = []
        missing_counts = [0] * n
        unknown_counts = [0] * n
        unknown_values: dict[int, dict[str, int]] = {}
        slow_index: list[int] = []
        slow_rows: list[list[float]] = []
        for index in slow:
            values, missing_at, unknown_at, problem = self._row(rows[index])
            if problem is not None:
                rejected.append((index, problem))
                continue
            slow_index.append(index)
            slow_rows.append(values)
            for i in missing_at:
                missing_counts[i] += 1
            for i, category in unknown_at:
                unknown_counts[i] += 1
                tally(unknown_values.setdefault(i, {}), {category: 1})
        if slow_rows:
            accepted = fast_index + slow_index
            matrix64 = np.concatenate([fast, np.array(slow_rows, dtype=np.float64).reshape(-1, n)])
            if fast_index:  # keep rows in input order
                order = np.argsort(np.array(accepted), kind="stable")
                matrix64 = matrix64[order]
                accepted = [accepted[i] for i in order.tolist()]
        else:
            matrix64 = fast
        matrix = matrix64.astype(np.float32)
        missing = np.array(missing_counts, dtype=np.int64)
        out_of_range = np.zeros(n, dtype=np.int64)
        if self._has_range and len(accepted):
            with np.errstate(invalid="ignore"):
                outside = (matrix < self._low) | (matrix > self._high)
            out_of_range = outside.sum(axis=0, dtype=np.int64)
        unknown = np.array(unknown_counts, dtype=np.int64)
        return EncodedBatch(
            matrix, accepted, rejected, unseen, with_unseen, missing, out_of_range, unknown, unknown_values
        )

    def _row(
        self, features: Mapping[str, FeatureValue]
    ) -> tuple[list[float], list[int], list[tuple[int, str]], Rejection | None]:
        """The request's row, the features it lacked, those whose category was unknown (served as
        missing; with the category, shortened), or why it cannot be served."""
        row: list[float] = []
        missing_at: list[int] = []
        unknown_at: list[tuple[int, str]] = []
        get = features.get
        for i, rule in enumerate(self._rules):
            value = get(rule.name, _ABSENT)
            kind = type(value)
            if not rule.categorical and (kind is float or kind is int):
                try:
                    x = float(value)  # type: ignore[arg-type]
                except OverflowError:  # an integer beyond float range: JSON allows it
                    x = math.inf if value > 0 else -math.inf  # type: ignore[operator]
                if -_FLOAT32_LIMIT < x < _FLOAT32_LIMIT:  # finite, also as the model's float32 input
                    row.append(x)
                    continue
                if x != x:  # NaN is a missing value
                    value = None
                elif rule.policy == _ALLOW:
                    row.append(x)
                    continue
                else:
                    what = f"{value!r}" if x - x != 0.0 else f"{_describe(value)}, beyond float32 range"
                    return (
                        row,
                        missing_at,
                        unknown_at,
                        Rejection(
                            DeadLetterReason.NON_FINITE,
                            f"feature {rule.name!r} is {what}; the model accepts finite numbers only",
                            rule.name,
                        ),
                    )
            elif rule.categorical and kind is str:
                code = rule.categories.get(value)  # type: ignore[call-overload]
                if code is not None:
                    row.append(code)
                    continue
                if rule.unknown_missing:  # served as missing: imputed or NaN (never "reject")
                    unknown_at.append((i, shorten_category(value)))  # type: ignore[arg-type]
                    if i not in self._told_unknown:  # once per feature: the rest are counted
                        self._told_unknown.add(i)
                        log.warning(
                            "%s, feature %r: %s is not one of the model's %d categories; served as a "
                            "missing value, as its manifest says (further ones are counted, not logged)",
                            self.label,
                            rule.name,
                            _describe(value),
                            rule.n_categories,
                        )
                    row.append(rule.impute if rule.policy == _IMPUTE else math.nan)
                    continue
                return (
                    row,
                    missing_at,
                    unknown_at,
                    Rejection(
                        DeadLetterReason.UNKNOWN_CATEGORY,
                        f"feature {rule.name!r}: category {value!r} is not one of the model's "
                        f"{rule.n_categories} categories",
                        rule.name,
                    ),
                )
            if value is _ABSENT or value is None:
                if rule.policy == _REJECT:
                    reason = DeadLetterReason.MISSING_FEATURE
                    if kind is float:
                        reason = DeadLetterReason.NON_FINITE
                        detail = f"feature {rule.name!r} is NaN and the model requires a value"
                    else:
                        detail = f"feature {rule.name!r} is missing and the model requires it"
                    return row, missing_at, unknown_at, Rejection(reason, detail, rule.name)
                missing_at.append(i)
                row.append(rule.impute if rule.policy == _IMPUTE else math.nan)
                continue
            expected = "a category name (string)" if rule.categorical else "a number"
            return (
                row,
                missing_at,
                unknown_at,
                Rejection(
                    DeadLetterReason.WRONG_TYPE,
                    f"feature {rule.name!r} is {_describe(value)}; expected {expected}",
                    rule.name,
                ),
            )
        return row, missing_at, unknown_at, None


_NUMBERS: Final = frozenset({float, int})

# Models take float32 inputs: a float64 at or past this magnitude rounds to infinity in the cast
# (halfway between float32's largest value, 2**128 - 2**104, and 2**128).
_FLOAT32_LIMIT: Final = 2.0**128 - 2.0**103


def _float_matrix(rows: list[tuple[FeatureValue, ...]], n: int) -> npt.NDArray[np.float64] | None:
    try:
        return np.array(rows, dtype=np.float64).reshape(len(rows), n)
    except OverflowError:
        return None


def tally(into: dict[str, int], more: Mapping[str, int]) -> None:
    """Adds ``more``'s counts of categories to ``into``, which keeps at most :data:`UNKNOWN_EXAMPLES`
    of them: the Space-Saving summary (Metwally, Agrawal and El Abbadi, 2005). A category met when
    ``into`` is full takes the place of the least counted one, and its count over. So the counts are
    exact while no more distinct categories are met, and upper bounds after; every category with more
    than 1/:data:`UNKNOWN_EXAMPLES` of the total is kept, however many others pass.

    >>> kept = {}
    >>> for i in range(20):  # a flood of distinct junk between the ones that matter
    ...     tally(kept, {"enterprise": 3, f"junk-{i}": 1})
    >>> kept["enterprise"], len(kept)
    (60, 8)
    """
    for value, hits in more.items():
        if value in into:
            into[value] += hits
        elif len(into) < UNKNOWN_EXAMPLES:
            into[value] = hits
        else:
            least = min(into, key=into.__getitem__)
            into[value] = into.pop(least) + hits


def shorten_category(value: str) -> str:
    """A category as alerts and statistics records carry it: at most 40 characters.

    >>> shorten_category("enterprise"), shorten_category("x" * 50)
    ('enterprise', 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...')
    """
    return value if len(value) <= 40 else value[:37] + "..."


def _describe(value: object) -> str:
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"
