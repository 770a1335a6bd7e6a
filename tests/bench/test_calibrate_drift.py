"""The calibration bench's pure parts: the curve fit and the Poisson interval (no simulation run here)."""

from __future__ import annotations

import math

import pytest

from bench.calibrate_drift import _poisson_ci, fit_log_rate


def test_fit_log_rate_recovers_an_exponential_curve_and_skips_empty_points() -> None:
    xs = [3.0, 4.0, 5.0, 6.0, 7.0]
    exposures = [1e8, 1e9, 1e10, 1e11, 1e9]
    # Counts exactly on ln(rate per 1e6) = 9 - 2.8 x, but the last point counted nothing.
    alarms = [round(math.exp(9 - 2.8 * x) * e / 1e6) for x, e in zip(xs[:4], exposures, strict=False)] + [0]
    a, b = fit_log_rate(xs, alarms, exposures)
    assert a == pytest.approx(9.0, abs=0.05)
    assert b == pytest.approx(-2.8, abs=0.01)


def test_poisson_interval() -> None:
    assert _poisson_ci(0) == (0.0, pytest.approx(3.689, abs=1e-3))
    lo, hi = _poisson_ci(100)
    assert lo == pytest.approx(81.36, abs=0.01) and hi == pytest.approx(121.63, abs=0.01)
