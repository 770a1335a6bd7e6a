"""One false-alarm budget per model: the split over streams and detectors, and its use by ModelMonitor."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from pydantic import ValidationError

from agent.models.registry import ModelRegistry, ServedModel
from agent.models.repository import ModelRepository
from agent.monitoring.budget import (
    ADWIN_DELTA_BOUNDS,
    PH_THRESHOLD_BOUNDS,
    adwin_false_alarms,
    config_for_budget,
    ph_false_alarms,
    split_budget,
    within_budget,
)
from agent.monitoring.detectors import AdwinDetector, DriftConfig, PageHinkleyDetector
from agent.monitoring.features import FeatureDriftMonitor
from agent.monitoring.incidents import IncidentManager, InMemoryIncidentStore
from agent.monitoring.model_monitor import ModelMonitor, MonitorSettingsView
from agent.monitoring.observer import DriftObserver
from agent.monitoring.transforms import REFERENCE_STD
from agent.settings import Settings

# Budgets and widths where neither parameter hits its bounds.
BUDGETS = [1e-3, 0.01, 0.1, 1.0]
WIDTHS = [3, 21, 101, 1000]


def test_a_bigger_budget_gives_looser_detectors() -> None:
    for n in WIDTHS:
        configs = [split_budget(b, n).config for b in BUDGETS]
        thresholds = [c.ph_threshold for c in configs]
        deltas = [c.adwin_delta for c in configs]
        assert thresholds == sorted(thresholds, reverse=True), n
        assert deltas == sorted(deltas), n
        assert len(set(thresholds)) == len(set(deltas)) == len(BUDGETS), n


def test_more_streams_give_stricter_detectors() -> None:
    configs = [split_budget(1.0, n).config for n in WIDTHS]
    thresholds = [c.ph_threshold for c in configs]
    deltas = [c.adwin_delta for c in configs]
    assert thresholds == sorted(thresholds) and len(set(thresholds)) == len(WIDTHS)
    assert deltas == sorted(deltas, reverse=True) and len(set(deltas)) == len(WIDTHS)


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("n", WIDTHS)
def test_the_split_spends_the_budget_and_no_more(budget: float, n: int) -> None:
    split = split_budget(budget, n)
    assert split.clipped == ()
    # Rounded on the safe side (threshold up to 0.01, delta down to 2 digits): a little under.
    assert 0.85 * budget <= split.expected_per_million <= budget
    assert split.ph_per_million == pytest.approx(split.adwin_per_million, rel=0.05)


def test_the_curves_fall_with_the_parameters() -> None:
    assert ph_false_alarms(4.0) > ph_false_alarms(5.0) > ph_false_alarms(6.0) > 0
    assert adwin_false_alarms(1e-2) > adwin_false_alarms(1e-3) > adwin_false_alarms(1e-6) > 0


def test_extreme_budgets_are_clipped_to_sane_parameters_and_say_so() -> None:
    huge = split_budget(1e6, 1)
    assert huge.config.ph_threshold == PH_THRESHOLD_BOUNDS[0]
    assert huge.config.adwin_delta == ADWIN_DELTA_BOUNDS[1]
    assert huge.clipped == ("ph_threshold", "adwin_delta")
    assert huge.expected_per_million < 1e6  # clipping loose parameters keeps within the budget

    tiny = split_budget(1e-9, 10_000)
    assert tiny.config.ph_threshold == PH_THRESHOLD_BOUNDS[1]
    assert tiny.config.adwin_delta == ADWIN_DELTA_BOUNDS[0]
    assert tiny.clipped == ("ph_threshold", "adwin_delta")
    assert tiny.expected_per_million > 1e-9  # and says that it cannot keep this one

    for budget in (1e-12, 1e-6, 1.0, 1e3, 1e9):
        for n in (1, 10, 10**6):
            c = split_budget(budget, n).config
            assert PH_THRESHOLD_BOUNDS[0] <= c.ph_threshold <= PH_THRESHOLD_BOUNDS[1]
            assert ADWIN_DELTA_BOUNDS[0] <= c.adwin_delta <= ADWIN_DELTA_BOUNDS[1]


def test_only_the_two_thresholds_move() -> None:
    config = config_for_budget(1.0, 21)
    default = DriftConfig()
    assert (config.block_size, config.ph_allowance, config.window_blocks) == (
        default.block_size,
        default.ph_allowance,
        default.window_blocks,
    )
    assert (config.ph_min_instances, config.adwin_grace_period, config.reference_blocks) == (
        default.ph_min_instances,
        default.adwin_grace_period,
        default.reference_blocks,
    )


def test_the_default_budget_for_a_20_feature_model_is_what_the_docs_say() -> None:
    # 20 features and the output: the figures in agent/monitoring/detectors.py and the README.
    split = split_budget(1.0, 21)
    assert split.config.ph_threshold == 4.59
    assert split.config.adwin_delta == 1.2e-4
    assert split.clipped == ()
    assert Settings(_env_file=None).monitoring.false_alarms_per_million == 1.0
    assert MonitorSettingsView().false_alarms_per_million == 1.0


@pytest.mark.parametrize("budget, n", [(0.0, 3), (-1.0, 3), (math.inf, 3), (math.nan, 3), (1.0, 0)])
def test_nonsense_is_refused(budget: float, n: int) -> None:
    with pytest.raises(ValueError):
        split_budget(budget, n)


def test_the_setting_reads_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLINE_MONITORING__FALSE_ALARMS_PER_MILLION", "0.25")
    assert Settings(_env_file=None).monitoring.false_alarms_per_million == 0.25
    for nonsense in ("0", "-1", "inf", "nan"):
        monkeypatch.setenv("DRIFTLINE_MONITORING__FALSE_ALARMS_PER_MILLION", nonsense)
        with pytest.raises(ValidationError):
            Settings(_env_file=None)


def test_within_budget_counts_the_streams_then_builds_with_their_parameters() -> None:
    rng = np.random.default_rng(5)
    quantiles = np.quantile(rng.standard_normal((10_000, 4)), np.linspace(0, 1, 101), axis=0).T
    built: list[DriftConfig] = []

    def build(config: DriftConfig) -> FeatureDriftMonitor:
        built.append(config)
        return FeatureDriftMonitor.from_quantiles(["a", "b", "c", "d"], quantiles, config=config)

    monitor, split = within_budget(build, 1.0)
    # Each numeric column runs three streams: its location, spread and tails.
    assert monitor.n_streams == split.n_streams == 12
    assert built == [DriftConfig(), split.config]
    assert monitor.config == split.config == config_for_budget(1.0, 12)

    # A stream that another monitor runs with the same parameters takes its share as well.
    monitor, split = within_budget(build, 1.0, extra_streams=1)
    assert monitor.n_streams == 12 and split.n_streams == 13
    assert monitor.config == config_for_budget(1.0, 13)
    with pytest.raises(ValueError):
        within_budget(build, 1.0, extra_streams=-1)


def _detectors(monitor: ModelMonitor) -> tuple[list[PageHinkleyDetector], list[AdwinDetector]]:
    groups = monitor.features._columns.detectors
    ph = [d for g in groups for d in g if isinstance(d, PageHinkleyDetector)]
    adwin = [d for g in groups for d in g if isinstance(d, AdwinDetector)]
    return ph, adwin


def _served(repository: ModelRepository) -> ServedModel:
    registry = ModelRegistry(repository.root)
    registry.refresh()
    served = registry.resolve("classification-20")
    assert served is not None
    return served


def test_model_monitor_derives_its_detectors_from_the_budget(model_repository: ModelRepository) -> None:
    served = _served(model_repository)
    default = ModelMonitor(served, MonitorSettingsView())
    strict = ModelMonitor(served, MonitorSettingsView(false_alarms_per_million=1e-3))
    # 20 numeric features (location, spread, tails each), the output (a classifier's: its location
    # alone), the predicted class (location and one share: with two classes the other share is its
    # complement). The reconstruction error's column keeps its own calibration, outside the budget.
    streams = default.features.n_streams
    assert streams == strict.features.n_streams == len(default.features.streams) == 20 * 3 + 1 + 2
    assert default.reconstruction is not None and default.reconstruction.config == DriftConfig()
    assert default.budget == split_budget(1.0, streams)
    assert strict.budget == split_budget(1e-3, streams)
    assert strict.features.config.ph_threshold > default.features.config.ph_threshold
    assert strict.features.config.adwin_delta < default.features.config.adwin_delta
    for monitor in (default, strict):
        ph, adwin = _detectors(monitor)
        # Page-Hinkley on the locations (20 features, the output, the predicted class) and the share of
        # class 0; ADWIN on all.
        assert (len(ph), len(adwin)) == (23, streams)
        assert {d.threshold for d in ph} == {monitor.budget.config.ph_threshold}
        assert {d.delta for d in adwin} == {monitor.budget.config.adwin_delta}
        # ... and so do river's detectors inside the wrappers.
        assert {d._detector.threshold for d in ph} == {monitor.budget.config.ph_threshold}
        assert {d._detector.delta for d in adwin} == {monitor.budget.config.adwin_delta}


def test_a_stricter_budget_detects_the_same_shift_later(model_repository: ModelRepository) -> None:
    served = _served(model_repository)
    ref = served.manifest.reference
    quantiles = [ref.features[name].quantiles for name in served.manifest.feature_names]
    quantiles.append(ref.output.statistics.quantiles)
    # Reference percentiles drawn uniformly, mapped back through the reference quantiles; from event
    # 10,000 feature x03's percentiles rise by half a reference standard deviation.
    rng = np.random.default_rng(11)
    u = rng.random((20_000, 21))
    u[10_000:, 3] = np.minimum(u[10_000:, 3] + 0.5 * REFERENCE_STD, 1.0)
    x = np.column_stack([np.interp(u[:, j], np.linspace(0, 1, len(q)), q) for j, q in enumerate(quantiles)])
    found = {}
    for budget in (1.0, 1e-3):
        monitor = ModelMonitor(served, MonitorSettingsView(false_alarms_per_million=budget))
        found[budget] = [
            (d.name, d.detector, d.event_index)
            for lo in range(0, len(x), 500)
            for d in monitor.features.update_batch(
                x[lo : lo + 500, :20], x[lo : lo + 500, 20], (x[lo : lo + 500, 20] > 0.5).astype(np.float64)
            )
        ]
    # The same step, 64 events (two blocks) later for a budget a thousand times smaller.
    assert found == {
        1.0: [("x03", "page_hinkley_up", 10_239)],
        1e-3: [("x03", "page_hinkley_up", 10_303)],
    }


def test_the_observer_logs_each_models_split_and_warns_when_it_is_clipped(
    model_repository: ModelRepository, caplog: pytest.LogCaptureFixture
) -> None:
    served = _served(model_repository)
    for budget, level in ((1.0, logging.INFO), (1e-30, logging.WARNING)):
        observer = DriftObserver(
            IncidentManager(InMemoryIncidentStore(), cooldown_s=3600),
            settings=MonitorSettingsView(false_alarms_per_million=budget),
        )
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="agent.monitoring.observer"):
            observer.monitor(served)
            observer.monitor(served)  # once per model version, not per batch
        [record] = [r for r in caplog.records if "false-alarm budget" in r.getMessage()]
        assert record.levelno == level
        message = record.getMessage()
        assert message.startswith(
            f"classification-20/1: false-alarm budget {budget:.3g} per 1e6 events over 63 streams"
        )
        assert ("ph_threshold and adwin_delta clipped" in message) == (level == logging.WARNING)
