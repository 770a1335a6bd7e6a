"""bench/compare_alibi.py's pure parts: seeded streams, delay counting, the alibi side's plumbing.

No alibi-detect here (it lives in a venv of its own), and no timing asserted.
"""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

import bench._drift_streams
import bench.compare_alibi
from bench._alibi_side import _decode, _encode, indicators
from bench._drift_streams import (
    MIX_AFTER,
    MIX_BEFORE,
    PHASE,
    STREAMS,
    first_after,
    make_stream,
    summarise,
)
from bench.compare_alibi import driftline_events, reference_transform, score


def test_examples() -> None:
    for module in (bench._drift_streams, bench.compare_alibi):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_streams_are_seeded_and_independent_of_each_other() -> None:
    spec = STREAMS["spread x2"]
    a = make_stream(spec, reps=4, warm=300, horizon=200, n_ref=100, seed=5)
    b = make_stream(spec, reps=4, warm=300, horizon=200, n_ref=100, seed=5)
    c = make_stream(spec, reps=4, warm=300, horizon=200, n_ref=100, seed=6)
    assert np.array_equal(a.live, b.live) and np.array_equal(a.change, b.change)
    assert np.array_equal(a.reference, b.reference)
    assert not np.array_equal(a.live, c.live)
    # A replicate does not depend on how many replicates were drawn.
    fewer = make_stream(spec, reps=2, warm=300, horizon=200, n_ref=100, seed=5)
    assert np.array_equal(fewer.live, a.live[:2])
    # Every numeric stream shares one reference sample.
    other = make_stream(STREAMS["location 1 sd"], reps=1, warm=300, horizon=200, n_ref=100, seed=5)
    assert np.array_equal(other.reference, a.reference)


def test_changes_fall_in_the_first_block_after_warm_and_leave_the_horizon() -> None:
    s = make_stream(STREAMS["location 1 sd"], reps=50, warm=1000, horizon=400, n_ref=10, seed=1)
    assert s.live.shape == (50, 1000 + PHASE + 400, 1)
    assert s.change.min() >= 1000 and s.change.max() < 1000 + PHASE
    assert len(set(s.change.tolist())) > 10
    pairs = list(zip(s.live, s.change.tolist(), strict=True))
    assert np.concatenate([rep[:at, 0] for rep, at in pairs]).mean() == pytest.approx(0.0, abs=0.01)
    assert np.concatenate([rep[at:, 0] for rep, at in pairs]).mean() == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize(
    ("name", "before_sd", "after_sd", "after_mean"),
    [
        ("spread x0.5", 1.0, 0.5, 0.0),
        ("bimodal split", 1.0, math.sqrt(1.25), 0.0),
        ("heavy tails", 1.0, 1.0, 0.0),
    ],
)
def test_shape_streams_keep_their_location(
    name: str, before_sd: float, after_sd: float, after_mean: float
) -> None:
    s = make_stream(STREAMS[name], reps=2, warm=20_000, horizon=60_000, n_ref=10, seed=2)
    before = np.concatenate([rep[: at - 1, 0] for rep, at in zip(s.live, s.change.tolist(), strict=True)])
    after = np.concatenate([rep[at:, 0] for rep, at in zip(s.live, s.change.tolist(), strict=True)])
    assert before.std() == pytest.approx(before_sd, rel=0.03)
    assert after.std() == pytest.approx(after_sd, rel=0.05)
    assert after.mean() == pytest.approx(after_mean, abs=0.02)
    assert np.median(after) == pytest.approx(0.0, abs=0.05)


def test_mix_and_correlation_change_as_specified() -> None:
    mix = make_stream(STREAMS["category mix"], reps=1, warm=30_000, horizon=30_000, n_ref=5000, seed=3)
    at = int(mix.change[0])
    for rows, shares in ((mix.live[0, :at, 0], MIX_BEFORE), (mix.live[0, at:, 0], MIX_AFTER)):
        assert np.bincount(rows.astype(int), minlength=3) / rows.size == pytest.approx(shares, abs=0.01)
    assert set(np.unique(mix.reference).tolist()) == {0.0, 1.0, 2.0}
    pair = make_stream(STREAMS["correlation"], reps=1, warm=30_000, horizon=30_000, n_ref=5000, seed=3)
    at = int(pair.change[0])
    assert np.corrcoef(pair.live[0, :at].T)[0, 1] == pytest.approx(0.9, abs=0.01)
    assert np.corrcoef(pair.live[0, at:].T)[0, 1] == pytest.approx(0.0, abs=0.02)
    assert pair.live[0, at:].std(axis=0) == pytest.approx([1.0, 1.0], abs=0.02)
    assert np.corrcoef(pair.reference.T)[0, 1] == pytest.approx(0.9, abs=0.02)


def test_delay_counting() -> None:
    # Fired on the first changed event: delay 1; earlier detections are false alarms.
    assert first_after([5, 99, 100, 180], 100) == (1, 2)
    assert first_after([5], 100) == (None, 1)
    summary = summarise([10, 20, 30, 40, None], horizon=1000)
    assert summary == {"median": 30.0, "p90": None, "missed": 1, "replicates": 5}
    assert summarise([10, 20], horizon=15)["p90"] is None  # beyond the horizon reads as a miss


def test_score_caps_at_the_horizon() -> None:
    s = make_stream(STREAMS["location 1 sd"], reps=2, warm=100, horizon=100, n_ref=10, seed=1)
    at = s.change.tolist()
    scored = score(s, [[at[0] + 9], [at[1] + 500]], at, horizon=100)
    assert scored["delays"] == [10, None] and scored["pre_change_alarms"] == 0


def test_driftline_sees_a_one_sd_shift_and_the_reference_it_was_given() -> None:
    spec = STREAMS["location 1 sd"]
    s = make_stream(spec, reps=1, warm=20_000, horizon=2_000, n_ref=1000, seed=4)
    events, _ = driftline_events(spec, s.reference, s.live[0])
    delay, before = first_after(events, int(s.change[0]))
    assert before == 0 and delay is not None and delay < 300
    mix = STREAMS["category mix"]
    transform = reference_transform(mix, make_stream(mix, 1, 10, 10, 1000, seed=4).reference)
    assert transform.columns[0].transform(np.array([0.0, 1.0, 2.0, 7.0])).tolist()[-1] == -1.0


def test_alibi_side_plumbing() -> None:
    codes = np.array([[0.0], [2.0], [1.0]])
    assert indicators(codes, 3).tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 0]]
    a = np.array([[np.nan], [1.5], [np.inf]], dtype=np.float32)
    back = _decode(_encode(a), [3, 1], "float32")
    assert back.dtype == np.float32 and np.isnan(back[0, 0]) and back[1, 0] == 1.5 and np.isinf(back[2, 0])


def test_a_budget_builds_the_monitor_serving_builds() -> None:
    from agent.monitoring.budget import config_for_budget

    spec = STREAMS["location 0.5 sd"]
    s = make_stream(spec, reps=1, warm=2000, horizon=1500, n_ref=1000, seed=3)
    transform = reference_transform(spec, s.reference)
    served = bench.compare_alibi.feature_monitor(["x0"], transform, 1.0)
    assert served.config == config_for_budget(1.0, served.n_streams)
    assert served.config.ph_threshold < 6  # looser than the library's default for one column
    default, _ = driftline_events(spec, s.reference, s.live[0])
    as_served, _ = driftline_events(spec, s.reference, s.live[0], 1.0)
    at = int(s.change[0])
    delay_default, delay_served = first_after(default, at)[0], first_after(as_served, at)[0]
    assert delay_default is not None and delay_served is not None and delay_served < delay_default
