"""ONNX Runtime against the original model (agent/packaging/parity.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.errors import ParityError
from agent.models.repository import ModelRepository
from agent.packaging.builder import build_package
from agent.packaging.parity import compare_predictions
from tests.support.models import leftovers, nan_routing_forest


def test_a_conversion_that_disagrees_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    with pytest.raises(ParityError) as caught:
        build_package(nan_routing_forest(), name="iris-nan", version="1", repository=repo)
    message = str(caught.value)
    assert "parity FAILED on 150 holdout rows" in message
    assert "label mismatches" in message and "max abs diff" in message
    assert "refusing to write the package" in message
    assert repo.scan() == {} and not (tmp_path / "iris-nan" / "1").exists()
    assert leftovers(tmp_path) == []


def test_regression_tolerance_is_relative() -> None:
    values = np.array([1000.0, -2.0, 0.5])

    def report(actual: Any) -> Any:
        return compare_predictions("regression", {"values": values}, {"values": np.asarray(actual)})

    assert report(values * (1 + 5e-5)).passed
    failed = report(values * (1 + 5e-4))
    assert not failed.passed and failed.max_rel_diff == pytest.approx(5e-4)
    assert failed.max_abs_diff == pytest.approx(0.5)
    assert not report([np.nan, -2.0, 0.5]).passed


def test_a_tie_decided_the_other_way_is_not_a_mismatch() -> None:
    expected = {"labels": np.array(["a", "a"]), "probabilities": np.array([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]])}
    actual = {
        "labels": np.array(["b", "c"], dtype=object),
        "probabilities": np.array([[0.49999994, 0.50000006, 0.0], [0.49999994, 0.50000006, 0.0]]),
    }
    report = compare_predictions("multiclass_classification", expected, actual, class_labels=("a", "b", "c"))
    # Row 0 picked the other tied class; row 1 picked a class with probability 0: a real mismatch.
    assert (report.label_ties, report.label_mismatches, report.passed) == (1, 1, False)


def test_rows_within_float32_rounding_of_a_split_are_left_out_up_to_one_percent() -> None:
    n = 200
    want = np.full(n, 10.0)
    got = want.copy()
    got[:2] = 12.0  # two rows answered otherwise
    uncertain = np.zeros(n, dtype=bool)
    uncertain[[0, 1, 5]] = True  # three rows near a split; row 5 agrees anyway

    def report(flags: np.ndarray) -> Any:
        return compare_predictions("regression", {"values": want}, {"values": got}, uncertain=flags)

    left_out = report(uncertain)
    assert left_out.passed and left_out.rounding_rows == 2 and left_out.max_abs_diff == 0.0
    assert "2 rows within float32 rounding of a split not compared" in str(left_out)
    # A row answered otherwise that is not near a split is still a difference.
    only_one = report(np.isin(np.arange(n), [0, 5]))
    assert not only_one.passed and only_one.max_abs_diff == pytest.approx(2.0)
    # More than 1 % of the rows near a split: the feature needs more than float32.
    got[:4] = 12.0
    assert not report(np.arange(n) < 4).passed
    # Nothing to leave out: the plain report.
    same = compare_predictions("regression", {"values": want}, {"values": want}, uncertain=uncertain)
    assert same.passed and same.rounding_rows == 0
