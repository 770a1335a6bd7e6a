"""bench/oracle_cusum.py: the oracle CUSUM's recursion, thresholds and delays (no timing asserted)."""

from __future__ import annotations

import doctest

import numpy as np

import bench.oracle_cusum
from bench.oracle_cusum import (
    cusum_first_alarm,
    mix_increments,
    oracle_delays,
    siegmund_arl,
    simulated_arl,
    threshold_for_arl,
)


def test_examples() -> None:
    result = doctest.testmod(bench.oracle_cusum)
    assert result.attempted > 0 and result.failed == 0


def test_lindleys_recursion_is_page_s_cusum() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal(5000) + 0.1
    s, first = 0.0, None
    for i, v in enumerate(x):
        s = max(0.0, s + v - 0.25)
        if s > 6.0:
            first = i
            break
    assert first is not None and cusum_first_alarm(x, 0.25, 6.0) == first
    assert cusum_first_alarm(np.zeros(10), 0.25, 6.0) is None


def test_thresholds_give_their_run_length() -> None:
    h = threshold_for_arl(0.5, 1000)
    assert abs(siegmund_arl(0.25, h) - 1000) < 1e-6 * 1000
    assert threshold_for_arl(0.5, 1e6) > threshold_for_arl(0.5, 1e4) > h
    assert 900 < simulated_arl(0.25, h, 300, seed=2) < 1100


def test_a_stricter_rate_or_a_smaller_shift_takes_longer() -> None:
    fast = np.median(oracle_delays(1.0, 1e3, 200, 500, seed=3))
    strict = np.median(oracle_delays(1.0, 1e6, 200, 500, seed=3))
    small = np.median(oracle_delays(0.5, 1e3, 200, 500, seed=3))
    assert fast < strict and fast < small


def test_the_mix_likelihood_ratio() -> None:
    llr = mix_increments((0.5, 0.5), (0.25, 0.75))
    np.testing.assert_allclose(llr, [np.log(0.5), np.log(1.5)])
