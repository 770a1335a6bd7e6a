"""The reference percentiles of a whole matrix at once (GridInterp for columns without ties,
TiedPercentiles for those with), the same floats as ``np.interp`` and as each column's own
:class:`PercentileTransform`."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.monitoring.transforms import (
    CategoricalTransform,
    GridInterp,
    PercentileTransform,
    ReferenceTransform,
    SegmentGrid,
    TiedPercentiles,
)

PROBS = np.linspace(0.0, 1.0, 101)


def _edges(knots: np.ndarray) -> np.ndarray:
    """Values where a lookup can go wrong: each knot, the floats on either side of it, the grid's
    cell edges (for every grid it may pick) and the floats beside them, and the far outside."""
    lo, hi = knots[0], knots[-1]
    cells = np.concatenate(
        [lo + np.arange(g + 1) * ((hi - lo) / g) for g in knots.size * np.array([8, 16, 32, 64])]
    )
    near = np.r_[knots, cells]
    return np.r_[
        near,
        np.nextafter(near, -np.inf),
        np.nextafter(near, np.inf),
        [np.nan, -np.inf, np.inf, -1e300, 1e300, lo - 1.0, hi + 1.0],
    ]


def _interp(x: np.ndarray, knots: list[np.ndarray], values: list[np.ndarray]) -> np.ndarray:
    return np.stack([np.interp(x[:, j], knots[j], values[j]) for j in range(len(knots))], axis=1)


REFERENCES = {
    "normal": lambda rng: rng.normal(size=1_000),
    "exponential": lambda rng: rng.exponential(size=1_000),
    "uniform": lambda rng: rng.uniform(-3.0, 7.0, size=200),
    "narrow, far from zero": lambda rng: 1e6 + 1e-3 * rng.normal(size=1_000),
    "tiny": lambda rng: 1e-200 * rng.normal(size=1_000),
    "large sample": lambda rng: rng.normal(5.0, 40.0, size=100_000),
    "log-normal": lambda rng: np.exp(rng.normal(size=1_000)),
}


@pytest.mark.parametrize("name", list(REFERENCES))
def test_every_value_is_np_interps_float(name: str) -> None:
    rng = np.random.default_rng(sum(map(ord, name)))
    knots = [np.quantile(REFERENCES[name](rng), PROBS) for _ in range(3)]
    grid = GridInterp(knots, [PROBS] * 3)
    assert grid.columns == (0, 1, 2) and grid.steps in (1, 2)
    spread = knots[0][-1] - knots[0][0]
    x = np.concatenate(
        [
            np.stack([_edges(k) for k in knots], axis=1),
            np.stack([rng.uniform(k[0] - 0.1 * spread, k[-1] + 0.1 * spread, 20_000) for k in knots], axis=1),
        ]
    )
    np.testing.assert_array_equal(grid(x), _interp(x, knots, [PROBS] * 3), strict=True)


@settings(max_examples=200, deadline=None)
@given(
    knots=st.lists(
        st.floats(-1e12, 1e12, allow_nan=False, allow_infinity=False), min_size=2, max_size=40, unique=True
    ),
    values=st.lists(
        st.floats(
            -1e6,
            1e6,
            allow_nan=False,
        ),
        min_size=40,
        max_size=40,
    ),
    x=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=60),
)
def test_any_knots_and_values_give_np_interps_float(
    knots: list[float], values: list[float], x: list[float]
) -> None:
    k = np.sort(np.array(knots))
    v = np.array(values[: k.size])
    grid = GridInterp([k], [v])
    probe = np.r_[np.array(x), _edges(k)][:, None]
    if grid.columns:
        np.testing.assert_array_equal(grid(probe), _interp(probe, [k], [v]), strict=True)
    else:  # knots too bunched for a grid of a few steps, or a slope that overflows: np.interp's
        assert grid.steps == 0


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(st.integers(-30, 30), min_size=3, max_size=101).map(sorted),
    scale=st.floats(1e-6, 1e6),
    offset=st.floats(-1e6, 1e6),
    x=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=60),
)
def test_any_tied_quantiles_give_the_columns_own_floats(
    steps: list[int], scale: float, offset: float, x: list[float]
) -> None:
    # Quantiles on a lattice: whole runs of tied values, as a discrete feature's are.
    column = PercentileTransform(offset + scale * np.array(steps, dtype=np.float64))
    tied = TiedPercentiles([column])
    if column.interpolation is not None or not tied.columns:
        return  # no ties after all, or a single value: the column's own transform
    k = column._knots
    probe = np.r_[np.array(x), _edges(k), k + column._tolerance, k - column._tolerance]
    np.testing.assert_array_equal(tied(probe[:, None])[:, 0], column.transform(probe), strict=True)


def test_a_column_too_bunched_for_a_grid_is_left_to_np_interp() -> None:
    rng = np.random.default_rng(3)
    long_tail = np.quantile(rng.pareto(1.0, size=1_000), PROBS)
    normal = np.quantile(rng.normal(size=1_000), PROBS)
    grid = GridInterp([long_tail, normal], [PROBS, PROBS])
    assert grid.columns == (1,)
    columns = [PercentileTransform(long_tail), PercentileTransform(normal)]
    reference = ReferenceTransform(columns)
    x = np.c_[rng.pareto(1.0, size=500), rng.normal(size=500)]
    expected = np.c_[columns[0].transform(x[:, 0]), columns[1].transform(x[:, 1])]
    np.testing.assert_array_equal(reference.transform(x), expected, strict=True)


TIED = {
    "counts": lambda rng: rng.integers(0, 12, 2_000).astype(float),
    "few values": lambda rng: rng.choice([0.1, 0.2, 0.8, 0.30000000000000004], 2_000),
    "mostly zero": lambda rng: np.r_[np.zeros(1_400), rng.exponential(size=600)],
    "rounded": lambda rng: np.round(rng.normal(size=2_000), 1),
    "probabilities": lambda rng: np.round(rng.beta(2.0, 5.0, 2_000), 2),
    "large, far from zero": lambda rng: -1e5 + np.round(10 * rng.normal(size=2_000)),
}


@pytest.mark.parametrize("name", list(TIED))
def test_tied_percentiles_are_each_columns_own_floats(name: str) -> None:
    rng = np.random.default_rng(sum(map(ord, name)))
    samples = [TIED[name](rng) * scale for scale in (1.0, 1e-3, 7.0)]
    columns = [PercentileTransform(np.quantile(d, PROBS)) for d in samples]
    assert all(c.interpolation is None for c in columns)  # every one has ties
    tied = TiedPercentiles(columns)
    assert tied.columns == (0, 1, 2)

    def probes(c: PercentileTransform, d: np.ndarray) -> np.ndarray:
        k, tol = c._knots, c._tolerance
        # As served: float32 values, which land within rounding of a tied value (snapped onto it).
        served = rng.choice(d, 5_000).astype(np.float32).astype(np.float64)
        beside = np.r_[k + tol, k - tol, np.nextafter(k + tol, np.inf), np.nextafter(k - tol, -np.inf)]
        return np.r_[served, rng.uniform(k[0] - 1.0, k[-1] + 1.0, 5_000), _edges(k), beside]

    each = [probes(c, d) for c, d in zip(columns, samples, strict=True)]
    longest = max(p.size for p in each)
    x = np.stack([np.r_[p, np.full(longest - p.size, np.nan)] for p in each], axis=1)
    expected = np.stack([c.transform(x[:, j]) for j, c in enumerate(columns)], axis=1)
    np.testing.assert_array_equal(tied(x), expected, strict=True)


def test_a_range_past_the_largest_float_is_left_to_each_columns_own_transform() -> None:
    # hi - lo overflows: no grid could be computed on it, and none is (the columns go one by one).
    huge = np.r_[np.linspace(-1e308, 0.0, 51), np.linspace(0.0, 1e308, 51)[1:]]
    assert np.all(np.isfinite(huge)) and float(huge[-1]) - float(huge[0]) == float("inf")
    assert GridInterp([huge], [PROBS]).columns == ()
    x = np.r_[np.linspace(-1.2e308, 0.0, 501), np.linspace(0.0, 1.2e308, 501), huge, np.nan]
    np.testing.assert_array_equal(
        ReferenceTransform([PercentileTransform(huge)]).transform(x[:, None])[:, 0],
        PercentileTransform(huge).transform(x),
        strict=True,
    )
    # Just inside the largest float, the grid holds.
    wide = huge / 2.5
    grid = GridInterp([wide], [PROBS])
    assert grid.columns == (0,)
    probe = np.r_[x, _edges(wide)][:, None]
    np.testing.assert_array_equal(grid(probe), _interp(probe, [wide], [PROBS]), strict=True)


def test_the_reference_transform_gives_each_column_its_own_transforms_floats() -> None:
    rng = np.random.default_rng(4)
    columns = [
        PercentileTransform(np.quantile(rng.normal(size=1_000), PROBS)),
        PercentileTransform(np.r_[np.zeros(40), np.linspace(1.0, 4.0, 61)]),  # ties: mid-ranks
        CategoricalTransform({0.0: 0.5, 1.0: 0.3, 2.0: 0.2}),
        PercentileTransform(np.quantile(rng.exponential(size=1_000), PROBS)),
        PercentileTransform(np.full(101, 3.0)),  # one value: left to its own transform
        PercentileTransform(np.quantile(rng.integers(0, 6, 1_000), PROBS)),
    ]
    reference = ReferenceTransform(columns)
    x = np.c_[
        rng.normal(size=2_000),
        rng.choice([0.0, 0.5, 2.0, np.nan], size=2_000),
        rng.choice([0.0, 1.0, 2.0, 3.0], size=2_000),
        rng.exponential(size=2_000),
        rng.choice([2.0, 3.0, 4.0], size=2_000),
        rng.integers(-1, 8, 2_000),
    ].astype(np.float32)
    expected = np.stack([c.transform(x[:, j].astype(np.float64)) for j, c in enumerate(columns)], axis=1)
    np.testing.assert_array_equal(reference.transform(x), expected, strict=True)
    as_objects = x.astype(object)  # what a matrix with a text category column is: one by one
    np.testing.assert_array_equal(reference.transform(as_objects), expected, strict=True)


def test_a_grid_names_knots_it_cannot_take() -> None:
    with pytest.raises(ValueError, match="column 1: knots must be finite and strictly increasing"):
        SegmentGrid([np.array([0.0, 1.0]), np.array([2.0, 2.0])])
    assert SegmentGrid([]).columns == () and TiedPercentiles([]).columns == ()


@pytest.mark.parametrize(
    ("knots", "values", "message"),
    [
        ([[0.0, 1.0]], [], "1 columns of knots for 0 of values"),
        ([[0.0]], [[0.0]], "column 0: knots and values must be 1-D"),
        ([[0.0, 1.0, 2.0]], [[0.0, 1.0]], "column 0: knots and values must be 1-D"),
        ([[0.0, 1.0], [1.0, 1.0]], [[0.0, 1.0], [0.0, 1.0]], "column 1: knots must be finite and strictly"),
        ([[0.0, np.nan]], [[0.0, 1.0]], "column 0: knots must be finite"),
    ],
)
def test_bad_knots_are_named(knots: list[list[float]], values: list[list[float]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GridInterp(knots, values)
