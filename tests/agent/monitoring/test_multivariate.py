"""The reconstruction-error column (agent/monitoring/multivariate.py) on seeded streams."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from agent.monitoring.features import FeatureDriftMonitor
from agent.monitoring.multivariate import RECONSTRUCTION_COLUMN, ReconstructionErrors, ReconstructionMonitor
from agent.packaging.reconstruction import fit_reconstruction
from schemas.manifest import Reconstruction

NAMES = ("a", "b", "c")
QUANTILES = np.linspace(0.0, 1.0, 101)


def correlated(rng: np.random.Generator, n: int, rho: float) -> npt.NDArray[np.float64]:
    """Three standard-normal features; ``a`` and ``b`` correlated ``rho``, ``c`` independent. Every
    marginal is N(0, 1) whatever ``rho``."""
    a, b, c = rng.standard_normal((3, n))
    return np.c_[a, rho * a + np.sqrt(1.0 - rho**2) * b, c]


@pytest.fixture(scope="module")
def reference() -> tuple[Reconstruction, npt.NDArray[np.float64]]:
    rng = np.random.default_rng(2026)
    fit, holdout = correlated(rng, 5_000, 0.9), correlated(rng, 2_000, 0.9)
    reconstruction = fit_reconstruction(NAMES, fit, holdout)
    assert reconstruction is not None
    return reconstruction, np.quantile(fit, QUANTILES, axis=0).T


def feed(
    monitor: ReconstructionMonitor | FeatureDriftMonitor, rows: npt.NDArray[np.float64], batch: int = 500
) -> list[tuple[str, str, int]]:
    found = []
    for start in range(0, len(rows), batch):
        found += [
            (d.name, d.detector, d.event_index) for d in monitor.update_batch(rows[start : start + batch])
        ]
    return found


def test_a_decorrelation_with_the_same_marginals_fires_the_reconstruction_column_only(
    reference: tuple[Reconstruction, npt.NDArray[np.float64]],
) -> None:
    reconstruction, quantiles = reference
    # The pair keeps 2 of 3 components (97 % of the variance): the direction in which a and b
    # disagree is left out, and its share of the variance grows tenfold when they decorrelate.
    assert len(reconstruction.components) == 2
    rng = np.random.default_rng(7)
    stream = np.r_[correlated(rng, 10_000, 0.9), correlated(rng, 30_000, 0.0)]
    assert np.allclose(stream[10_000:].std(axis=0), 1.0, atol=0.02)  # the marginals stay put
    multivariate = ReconstructionMonitor(reconstruction, NAMES)
    assert feed(multivariate, stream) == [(RECONSTRUCTION_COLUMN, "page_hinkley_up", 10_079)]
    # The same stream, watched one feature at a time, shows nothing: not before, not after.
    per_feature = FeatureDriftMonitor.from_quantiles(NAMES, quantiles)
    assert feed(per_feature, stream) == []
    # The recent errors are well above the reference's, in its own standard deviations.
    assert multivariate.error_shift_sd() == pytest.approx(2.7, abs=0.1)


def test_a_long_stationary_stream_raises_nothing(
    reference: tuple[Reconstruction, npt.NDArray[np.float64]],
) -> None:
    reconstruction, _ = reference
    monitor = ReconstructionMonitor(reconstruction, NAMES)
    rng = np.random.default_rng(8)
    assert feed(monitor, correlated(rng, 200_000, 0.9), batch=1_000) == []
    assert monitor.n_events == 200_000
    window = monitor.window_stats()
    assert abs(window.shift_sd) < 0.1 and window.raw_mean == pytest.approx(
        reconstruction.error.mean, rel=0.05
    )


def test_fewer_errors_than_the_reference_are_not_reported(
    reference: tuple[Reconstruction, npt.NDArray[np.float64]],
) -> None:
    # a and b in lockstep: nothing is left unexplained, far below the reference, and that is no drift.
    reconstruction, _ = reference
    monitor = ReconstructionMonitor(reconstruction, NAMES)
    rng = np.random.default_rng(9)
    assert feed(monitor, correlated(rng, 40_000, 1.0)) == []
    assert monitor.window_stats().shift_sd < -1.0


def test_the_errors_are_the_manifests_and_float32_batches_give_the_same(
    reference: tuple[Reconstruction, npt.NDArray[np.float64]],
) -> None:
    reconstruction, _ = reference
    rows = correlated(np.random.default_rng(10), 100, 0.5)
    # Served matrices have the model's columns, in any number, in manifest order.
    matrix = np.c_[rows[:, :1], np.zeros(100), rows[:, 1:]]
    names = ("a", "unused", "b", "c")
    errors = ReconstructionErrors(reconstruction, names)
    assert np.allclose(errors(matrix), reconstruction.errors(matrix, names))
    assert np.allclose(errors(matrix.astype(np.float32)), errors(matrix), atol=1e-5)
    # A missing value counts as the reference mean: the row's other features alone are judged.
    with_missing = matrix.copy()
    with_missing[0, 0] = np.nan
    at_mean = matrix.copy()
    at_mean[0, 0] = reconstruction.mean[0]
    assert errors(with_missing)[0] == pytest.approx(errors(at_mean)[0])
