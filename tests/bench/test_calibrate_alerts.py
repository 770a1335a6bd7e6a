"""The alert calibration bench's pure part: the step in the monitors' own unit (no run here)."""

from __future__ import annotations

import numpy as np
import pytest

from agent.monitoring.transforms import REFERENCE_STD, PercentileTransform
from bench.calibrate_alerts import FEATURE, raw_step


@pytest.mark.parametrize("shift", [0.15, 0.5])
def test_a_raw_step_moves_the_standardised_stream_by_the_shift_asked_for(shift: float) -> None:
    rng = np.random.default_rng(5)
    rows = rng.normal(size=(4000, 6))
    # x03 bimodal: a step in its raw sd is not a step of the same size in the monitors' unit.
    rows[:, FEATURE] = np.where(rng.random(4000) < 0.5, -2.0, 2.0) + rng.normal(0, 0.5, 4000)
    x = rows[:, FEATURE]
    transform = PercentileTransform(np.quantile(x, np.linspace(0.0, 1.0, 101)))
    delta = raw_step(rows, shift)
    moved = (transform.transform(x + delta).mean() - transform.transform(x).mean()) / REFERENCE_STD
    assert moved == pytest.approx(shift, abs=1e-3)
    assert abs(delta - shift * x.std()) > 0.1 * shift * x.std()  # not the raw sd's step
