"""bench/estimate_under_noise.py: the estimate follows the error on calm inputs and understates it on
noisy ones, as the README says (no timing asserted)."""

from __future__ import annotations

from pathlib import Path

from bench.estimate_under_noise import build_digits, run


def test_the_estimate_follows_calm_inputs_and_understates_noisy_ones(tmp_path: Path) -> None:
    build_digits(tmp_path)
    calm = run(tmp_path, 0.0, 8000)
    assert calm.alert_at is None
    assert all(abs(w.estimated - w.realised) < 0.03 for w in calm.windows), calm.windows
    noisy = run(tmp_path, 3.0, 8000)
    assert [w.first for w in noisy.windows] == [0, 2000, 4000, 6000]
    before, after = noisy.windows[:2], noisy.windows[2:]
    assert all(abs(w.estimated - w.realised) < 0.03 for w in before), before
    # The error rises past 25 %; the estimate rises too (an alert, no label needed), but to under 15 %.
    assert all(w.realised > 0.25 and 0.05 < w.estimated < 0.15 for w in after), after
    assert noisy.alert_at is not None and 4000 <= noisy.alert_at < 5000
