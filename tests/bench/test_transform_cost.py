"""bench.transform_cost runs, and checks what it times: the matrix path against each column's own."""

from __future__ import annotations

import pytest

from bench.transform_cost import SHAPES, measure


@pytest.mark.parametrize(("shape", "tied"), [("continuous", 0), ("discrete", 20), ("half and half", 10)])
def test_each_reference_is_timed_after_both_paths_agree(shape: str, tied: int) -> None:
    result = measure(shape, batch=64, repeats=1, seed=1)
    assert result["tied_columns"] == tied
    assert result["at_once"] > 0 and result["one_by_one"] > 0


def test_every_shape_is_measured() -> None:
    assert list(SHAPES) == ["continuous", "discrete", "half and half"]
