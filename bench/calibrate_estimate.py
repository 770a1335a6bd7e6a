"""Calibrate the estimated-error monitors by simulation: false alarms and detection delays.

The estimated error is not the Uniform(0, 1) stream the feature detectors are calibrated on
(``bench/calibrate_drift.py``): it is whatever the calibration or the error model makes of the inputs,
skewed and lumpy. This measures, with fixed seeds, how often the two estimated-error monitors fire on
a stream whose inputs do not move, and how soon they fire when the inputs move to where the model errs
more. Each monitor sees what it sees in production: batches of 500 through ``update`` /
``update_expected``, and a detection counts as an alert only if its shift reaches
``recovery_shift_sd`` (``agent.monitoring.performance.observe_estimate``).

* **Regressor (DLE).** ``noisy`` (tests/agent/monitoring/test_estimation.py): y = x0 + 2 x1 + noise of
  spread 0.2 + |x0|, a linear model, its error model fitted on 1,800 holdout rows. Stationary:
  N(0, 1) inputs. Shifted: x0 + 1.5 (into the noisy region) from event 20,000 + U[0, 500); x2 + 1
  (a feature neither the model nor the noise depends on), also from the first event on, where every
  alert is a false one.
* **Classifier (CBPE).** The bundled breast-cancer forest with its per-class calibration. Stationary:
  its 569 rows drawn with replacement (the scenarios' ``calm``). Shifted: 'worst radius' + 1 sd (the
  ``covariate`` scenario's shift).

Run: ``.venv/bin/python -m bench.calibrate_estimate [--events N] [--replicates R]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from agent.models.package import LoadedModel, load_package
from agent.models.repository import ModelRepository
from agent.monitoring.estimation import EstimatedAbsErrorMonitor, EstimatedErrorMonitor
from agent.monitoring.model_monitor import MonitorSettingsView

BATCH = 500
LEAST_SHIFT_SD = MonitorSettingsView().recovery_shift_sd

Monitor = EstimatedAbsErrorMonitor | EstimatedErrorMonitor
Expected = Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]]


def noisy_target(rng: np.random.Generator, X: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.asarray(X[:, 0] + 2 * X[:, 1] + rng.normal(size=len(X)) * (0.2 + np.abs(X[:, 0])))


def build_noisy(root: str) -> LoadedModel:
    from sklearn.linear_model import LinearRegression

    from agent.packaging.builder import build_package
    from agent.packaging.training import TrainingResult

    rng = np.random.default_rng(3)
    X, X_holdout = rng.normal(size=(6000, 3)), rng.normal(size=(3000, 3))
    y, y_holdout = noisy_target(rng, X), noisy_target(rng, X_holdout)
    result = TrainingResult(LinearRegression().fit(X, y), X, y, ["x0", "x1", "x2"], X_holdout, y_holdout)
    built = build_package(result, name="noisy", version="1", repository=ModelRepository(root))
    return load_package(built.path)


def build_breast_cancer(root: str) -> LoadedModel:
    from agent.packaging.builder import build_package
    from agent.packaging.examples import breast_cancer

    built = build_package(
        breast_cancer(), name="breast-cancer", version="1", repository=ModelRepository(root)
    )
    return load_package(built.path)


def alerts(monitor: Monitor, expected: npt.NDArray[np.float64]) -> list[int]:
    """Event indices of the detections that would be alerts."""
    out = []
    for start in range(0, len(expected), BATCH):
        for d in monitor.update_expected(expected[start : start + BATCH]):
            if d.shift_sd >= LEAST_SHIFT_SD:
                out.append(d.event_index)
    return out


def false_alarms(name: str, make: Callable[[], Monitor], expected: npt.NDArray[np.float64]) -> None:
    started = time.perf_counter()
    fired = alerts(make(), expected)
    per_million = len(fired) / len(expected) * 1e6
    print(
        f"{name}: {len(fired)} alerts in {len(expected):,} stationary events "
        f"({per_million:.2f} per 1e6; first at {fired[:3]}) [{time.perf_counter() - started:.0f} s]"
    )


def delays(
    name: str,
    make: Callable[[], Monitor],
    draw: Callable[[np.random.Generator, int], npt.NDArray[np.float64]],
    shift: Callable[[npt.NDArray[np.float64]], None],
    expected_of: Expected,
    replicates: int,
) -> None:
    found: list[int] = []
    missed = early = 0
    for seed in range(replicates):
        rng = np.random.default_rng(1000 + seed)
        change = 20_000 + int(rng.integers(0, BATCH))
        rows = draw(rng, change + 10_000)
        shift(rows[change:])
        fired = alerts(make(), expected_of(rows))
        early += sum(i < change for i in fired)
        after = [i for i in fired if i >= change]
        if after:
            found.append(after[0] - change + 1)
        else:
            missed += 1
    if found:
        found.sort()
        p90 = found[min(len(found) - 1, int(0.9 * len(found)))]
        summary = f"median {statistics.median(found):.0f}, p90 {p90}, max {found[-1]} events"
    else:
        summary = "never detected"
    print(
        f"{name}: {replicates} replicates: delay {summary}; missed within 10,000 events: {missed}; "
        f"alerts before the change: {early}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="stationary events per monitor")
    parser.add_argument("--replicates", type=int, default=20, help="seeded replicates per shift")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        noisy = build_noisy(root)
        cancer = build_breast_cancer(root)
        error_model = noisy.manifest.error_model
        calibration = cancer.manifest.calibration
        assert error_model is not None and calibration is not None

        def regressor_expected(rows: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
            m = rows.astype(np.float32)
            values = noisy.predict(m).values
            assert values is not None
            return noisy.estimate_errors(m, values)

        data = cancer_rows()

        def classifier_expected(rows: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
            probabilities = cancer.predict(rows.astype(np.float32)).probabilities
            assert probabilities is not None
            p = np.asarray(probabilities, dtype=np.float64)
            return calibration.expected_error(p.max(axis=1), p.argmax(axis=1))

        def regressor() -> Monitor:
            return EstimatedAbsErrorMonitor(error_model)

        def classifier() -> Monitor:
            return EstimatedErrorMonitor(calibration)

        def normal(rng: np.random.Generator, n: int) -> npt.NDArray[np.float64]:
            return rng.normal(size=(n, 3))

        def resample(rng: np.random.Generator, n: int) -> npt.NDArray[np.float64]:
            return data[rng.integers(0, len(data), n)].copy()

        radius = 20  # 'worst radius'
        sd = float(data[:, radius].std())

        def x0(rows: npt.NDArray[np.float64]) -> None:
            rows[:, 0] += 1.5

        def x2(rows: npt.NDArray[np.float64]) -> None:
            rows[:, 2] += 1.0

        def worst_radius(rows: npt.NDArray[np.float64]) -> None:
            rows[:, radius] += sd

        rng = np.random.default_rng(7)
        false_alarms("regressor DLE", regressor, regressor_expected(normal(rng, args.events)))
        false_alarms("classifier CBPE", classifier, classifier_expected(resample(rng, args.events)))
        # A shift the error does not depend on, from the first event on: every alert is a false one.
        moved = normal(rng, args.events)
        x2(moved)
        false_alarms("regressor DLE, x2 +1 throughout", regressor, regressor_expected(moved))
        delays("regressor DLE, x0 +1.5", regressor, normal, x0, regressor_expected, args.replicates)
        delays(
            "regressor DLE, x2 +1 (noise feature)", regressor, normal, x2, regressor_expected, args.replicates
        )
        delays(
            "classifier CBPE, worst radius +1 sd",
            classifier,
            resample,
            worst_radius,
            classifier_expected,
            args.replicates,
        )


def cancer_rows() -> npt.NDArray[np.float64]:
    from sklearn.datasets import load_breast_cancer

    return np.asarray(load_breast_cancer().data, dtype=np.float64)


if __name__ == "__main__":
    main()
