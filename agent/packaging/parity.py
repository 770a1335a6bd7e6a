"""Step 2: ONNX Runtime and the original model must agree on the holdout rows.

Labels identical, probabilities within 1e-5, regression values within 1e-4 relative; otherwise the
build stops with :class:`~agent.errors.ParityError` saying by how much they disagree.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from agent.errors import ParityError
from agent.packaging import boosting
from schemas.manifest import (
    Outputs,
    Task,
)

if TYPE_CHECKING:
    import onnxruntime

from agent.packaging.convert import ConvertedModel, task_of

__all__ = [
    "PROBABILITY_TOLERANCE",
    "VALUE_RELATIVE_TOLERANCE",
    "ParityReport",
    "check_parity",
    "compare_predictions",
    "float32_uncertain",
    "rows_within",
]


PROBABILITY_TOLERANCE = 1e-5
"""Largest absolute difference allowed between ONNX and scikit-learn class probabilities."""

VALUE_RELATIVE_TOLERANCE = 1e-4
"""Largest relative difference allowed between ONNX and scikit-learn regression values."""

MAX_REFERENCE_PARITY_ROWS = 5000

MAX_ROUNDING_SHARE = 0.01
"""Largest share of checked rows allowed to be *rounding rows* (see :class:`ParityReport`)."""


@dataclass(frozen=True)
class ParityReport:
    """How closely the ONNX model reproduces the estimator on the checked rows.

    ``max_abs_diff`` is over probabilities (classifiers) or values (regressors); ``max_rel_diff``
    only matters for regressors. ``label_ties`` counts rows whose label differs only because the
    estimator's top probabilities tie (within the probability tolerance): a random forest of 100
    trees split 50/50 gives exactly 0.5 and 0.5 in float64, scikit-learn's argmax takes the first
    class, and ONNX Runtime's float32 sums land a hair apart either way. Either label is the
    model's answer there, so a tie is not a mismatch.

    ``rounding_rows`` counts, for an estimator that compares its rows in float64 (LightGBM,
    scikit-learn's HistGradientBoosting*), rows that sit within float32 rounding of one of its split
    points (an amount of 101.95 against a split at 101.94999999999999): the estimator answers them
    one way as given and another once rounded to float32. The ONNX graph, fed float32 at serving
    time too, compares the rounded value with the rounded split, which neither reproduces, so these
    rows are not compared. Up to :data:`MAX_ROUNDING_SHARE` of the rows may be such; more means a
    feature needs more precision than float32 holds (a timestamp in seconds, an id), and the build
    stops.
    """

    rows: int
    checked_on: Literal["holdout", "reference"]
    label_mismatches: int
    label_ties: int
    max_abs_diff: float
    max_rel_diff: float
    passed: bool
    labels: bool = True
    """Whether labels were compared (a classifier); a regressor's values have none."""
    rounding_rows: int = 0

    def __str__(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        ties = f" ({self.label_ties} tied rows decided the other way)" if self.label_ties else ""
        labels = f"{self.label_mismatches} label mismatches{ties}, " if self.labels else ""
        rounding = (
            f"; {self.rounding_rows} rows within float32 rounding of a split not compared"
            if self.rounding_rows
            else ""
        )
        return (
            f"parity {verdict} on {self.rows} {self.checked_on} rows: "
            f"{labels}max abs diff {self.max_abs_diff:.3g}, max rel diff {self.max_rel_diff:.3g}{rounding}"
        )


def onnx_session(onnx_bytes: bytes) -> onnxruntime.InferenceSession:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def _run(
    session: onnxruntime.InferenceSession, outputs: Outputs, X: npt.NDArray[np.float64]
) -> dict[str, npt.NDArray[Any]]:
    names = list(outputs.names)
    results = session.run(names, {"input": np.ascontiguousarray(X, dtype=np.float32)})
    return dict(zip(names, results, strict=True))


def compare_predictions(
    task: Task,
    expected: Mapping[str, npt.NDArray[Any]],
    actual: Mapping[str, npt.NDArray[Any]],
    checked_on: Literal["holdout", "reference"] = "holdout",
    class_labels: Sequence[Any] = (),
    uncertain: npt.NDArray[np.bool_] | None = None,
) -> ParityReport:
    """Compares scikit-learn's (``expected``) and ONNX's (``actual``) predictions.

    Both map ``labels``/``probabilities`` (classifiers) or ``values`` (regressors) to arrays;
    ``class_labels`` gives the probability columns' classes (to recognise ties, see
    :class:`ParityReport`). ``uncertain``: per row, whether a value of it lies within float32
    rounding of a split (:func:`float32_uncertain`); those rows ONNX answers otherwise are rounding
    rows (:class:`ParityReport`), left out of the comparison.

    Example:
        >>> tie = [0.5, 0.5]
        >>> report = compare_predictions(
        ...     "binary_classification",
        ...     {"labels": np.array([0, 1, 0]), "probabilities": np.array([[0.9, 0.1], [0.2, 0.8], tie])},
        ...     {
        ...         "labels": np.array([0, 0, 1]),
        ...         "probabilities": np.array([[0.9, 0.1], [0.5, 0.5], [0.49999994, 0.50000006]]),
        ...     },
        ...     class_labels=(0, 1),
        ... )
        >>> print(report)
        parity FAILED on 3 holdout rows: 1 label mismatches (1 tied rows decided the other way), \
max abs diff 0.3, max rel diff 0
    """
    if uncertain is not None:
        plain = compare_predictions(task, expected, actual, checked_on, class_labels)
        if plain.passed:
            return plain
        skipped = ~rows_within(task, expected, actual) & uncertain
        merged = {key: np.where(_column(skipped, v), actual[key], v) for key, v in expected.items()}
        report = compare_predictions(task, merged, actual, checked_on, class_labels)
        count = int(skipped.sum())
        passed = report.passed and count <= MAX_ROUNDING_SHARE * report.rows
        return dataclasses.replace(report, rounding_rows=count, passed=passed)
    if task == "regression":
        want = np.asarray(expected["values"], dtype=np.float64).ravel()
        got = np.asarray(actual["values"], dtype=np.float64).ravel()
        diff = np.abs(got - want)
        rel = _relative(diff, want)
        max_abs = float(np.max(diff, initial=0.0))
        max_rel = float(np.max(rel, initial=0.0))
        mismatches = ties = 0
        passed = max_rel <= VALUE_RELATIVE_TOLERANCE and bool(np.all(np.isfinite(got)))
        rows = len(want)
    else:
        want_p = np.asarray(expected["probabilities"], dtype=np.float64)
        got_p = np.asarray(actual["probabilities"], dtype=np.float64)
        if want_p.shape != got_p.shape:
            raise ParityError(f"probabilities have shape {got_p.shape}, expected {want_p.shape}")
        max_abs = float(np.max(np.abs(got_p - want_p), initial=0.0))
        max_rel = 0.0
        got_labels = np.asarray(actual["labels"])
        differs = np.flatnonzero(got_labels != np.asarray(expected["labels"]))
        column = {label: i for i, label in enumerate(class_labels)}
        ties = 0
        for row in differs:
            label = got_labels[row]
            col = column.get(label.item() if isinstance(label, np.generic) else label)
            if col is not None and want_p[row].max() - want_p[row, col] <= PROBABILITY_TOLERANCE:
                ties += 1
        mismatches = len(differs) - ties
        passed = mismatches == 0 and max_abs <= PROBABILITY_TOLERANCE
        rows = len(want_p)
    if math.isnan(max_abs):
        passed = False
    return ParityReport(rows, checked_on, mismatches, ties, max_abs, max_rel, passed, task != "regression")


def _relative(diff: npt.NDArray[np.float64], want: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    # Relative to each value, but not below a thousandth of the largest: float32 cannot give
    # relative precision to a value that is a cancellation of much larger terms.
    floor = max(float(np.max(np.abs(want), initial=0.0)) * 1e-3, np.finfo(np.float64).tiny)
    return diff / np.maximum(np.abs(want), floor)


def rows_within(
    task: Task, expected: Mapping[str, npt.NDArray[Any]], actual: Mapping[str, npt.NDArray[Any]]
) -> npt.NDArray[np.bool_]:
    """Per row: whether ``actual`` agrees with ``expected``: the same label and probabilities within
    :data:`PROBABILITY_TOLERANCE`, or a value within :data:`VALUE_RELATIVE_TOLERANCE`."""
    if task == "regression":
        want = np.asarray(expected["values"], dtype=np.float64).ravel()
        diff = np.abs(np.asarray(actual["values"], dtype=np.float64).ravel() - want)
        return _relative(diff, want) <= VALUE_RELATIVE_TOLERANCE
    want_p = np.asarray(expected["probabilities"], dtype=np.float64)
    got_p = np.asarray(actual["probabilities"], dtype=np.float64)
    close = np.abs(got_p - want_p).max(axis=1) <= PROBABILITY_TOLERANCE
    agree: npt.NDArray[np.bool_] = close & (np.asarray(expected["labels"]) == np.asarray(actual["labels"]))
    return agree


def _column(rows: npt.NDArray[np.bool_], value: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    """``rows`` shaped to select whole rows of ``value`` (a vector or a matrix)."""
    return rows.reshape(-1, *([1] * (np.ndim(value) - 1)))


def float32_uncertain(
    task: Task,
    estimator: Any,
    X: npt.NDArray[np.float64],
    as_given: Mapping[str, npt.NDArray[Any]] | None = None,
) -> npt.NDArray[np.bool_]:
    """Per row of ``X``: whether the estimator, comparing in float64, answers otherwise somewhere
    else among the values that round to the same float32 row (what the ONNX graph is fed): near the
    low and the high end of each value's float32 rounding interval, all values at once.
    ``as_given``: its predictions on ``X`` itself, if already made."""
    center = X.astype(np.float32)
    ulp = np.spacing(np.abs(center)).astype(np.float64)
    if as_given is None:
        as_given = _sklearn_predictions(task, estimator, X, as_given=True)
    # A quarter of an ulp below (the ulp below a power of two is half the one above) and just under
    # half an ulp above: both still round to ``center``.
    out = np.zeros(len(X), dtype=bool)
    for moved in (center - 0.24 * ulp, center + 0.49 * ulp):
        there = _sklearn_predictions(task, estimator, moved.astype(np.float64), as_given=True)
        out |= ~rows_within(task, as_given, there)
    return out


def _sklearn_predictions(
    task: Task, estimator: Any, X: npt.NDArray[np.float64], as_given: bool | None = None
) -> dict[str, Any]:
    # Through float32 first: that is what the ONNX model is fed, and scikit-learn's trees compare
    # float32 thresholds anyway, so both sides see the same numbers. Not for LightGBM or
    # HistGradientBoosting*, which compare float64 thresholds: on rounded values they would answer
    # for other rows (see boosting.py).
    if as_given is None:
        as_given = boosting.compares_in_float64(estimator)
    X32 = X if as_given else X.astype(np.float32).astype(np.float64)
    if task == "regression":
        return {"values": np.asarray(estimator.predict(X32))}
    return {
        "labels": np.asarray(estimator.predict(X32)),
        "probabilities": np.asarray(estimator.predict_proba(X32)),
    }


def onnx_predictions(
    task: Task, converted: ConvertedModel, session: onnxruntime.InferenceSession, X: npt.NDArray[np.float64]
) -> dict[str, npt.NDArray[Any]]:
    out = _run(session, converted.outputs, X)
    if task == "regression":
        assert converted.outputs.value is not None
        return {"values": out[converted.outputs.value].reshape(len(X))}
    assert converted.outputs.label is not None and converted.outputs.probabilities is not None
    return {"labels": out[converted.outputs.label], "probabilities": out[converted.outputs.probabilities]}


def check_parity(
    estimator: Any,
    converted: ConvertedModel,
    X: npt.NDArray[np.float64],
    checked_on: Literal["holdout", "reference"] = "holdout",
    session: onnxruntime.InferenceSession | None = None,
) -> ParityReport:
    """Runs both models on ``X`` and raises :class:`~agent.errors.ParityError` if they disagree."""
    task = task_of(estimator)
    session = session or onnx_session(converted.onnx_bytes)
    expected = _sklearn_predictions(task, estimator, X)
    actual = onnx_predictions(task, converted, session, X)
    labels = converted.outputs.class_labels or ()
    report = compare_predictions(task, expected, actual, checked_on, labels)
    if not report.passed and boosting.compares_in_float64(estimator):
        # Rows as given (see _sklearn_predictions): some may sit within float32 rounding of a split.
        uncertain = float32_uncertain(task, estimator, X, expected)
        report = compare_predictions(task, expected, actual, checked_on, labels, uncertain=uncertain)
    if not report.passed:
        limit = (
            f"values must agree within {VALUE_RELATIVE_TOLERANCE:g} relative"
            if task == "regression"
            else f"labels must be identical except at ties, probabilities within {PROBABILITY_TOLERANCE:g}"
        )
        if report.rounding_rows > MAX_ROUNDING_SHARE * report.rows:
            limit += (
                f", and at most {MAX_ROUNDING_SHARE:.0%} of the rows may sit within float32 rounding of "
                "a split: the graph is fed float32, so a feature needs more precision than float32 "
                "holds (a timestamp in seconds, an id?)"
            )
        raise ParityError(
            f"the ONNX conversion of {type(estimator).__name__} does not reproduce it: {report} "
            f"({limit}); refusing to write the package"
        )
    return report
