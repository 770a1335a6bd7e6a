"""The reconstruction fitted at packaging time (agent/packaging/reconstruction.py), and the references
taken from rows the model and the reconstruction were not fitted on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.linear_model import LogisticRegression

from agent.models.package import load_package
from agent.models.repository import ModelRepository
from agent.packaging.builder import NO_HOLDOUT_WARNING, build_package
from agent.packaging.progress import Progress
from agent.packaging.reconstruction import MAX_VALUES, cross_fitted_errors, fit_reconstruction, split_rows
from agent.packaging.training import TrainingResult
from schemas.manifest import Manifest, Reconstruction, ReferenceStatistics
from tests.agent.conftest import ExamplePackages


def rows(rng: np.random.Generator, n: int) -> npt.NDArray[np.float64]:
    """Four features: a and b correlated 0.9, c and d independent, d ten times larger."""
    a, b, c, d = rng.standard_normal((4, n))
    return np.c_[a, 0.9 * a + np.sqrt(0.19) * b, c, 10.0 * d + 3.0]


def test_the_components_keep_the_variance_share_and_leave_a_direction_out() -> None:
    X = rows(np.random.default_rng(0), 4_000)
    # Standardised, the four features have variances 1.9, 1, 1 and 0.1 along the components:
    # cumulative shares 0.475, 0.725, 0.975 and 1.
    for share, kept, variance in ((0.5, 2, 0.725), (0.7, 2, 0.725), (0.9, 3, 0.975)):
        r = fit_reconstruction(list("abcd"), X[:3_000], X[3_000:], variance_share=share)
        assert r is not None and len(r.components) == kept, share
        assert r.variance_kept >= share and r.variance_kept == pytest.approx(variance, abs=0.02)
    # Never every direction, even when asked for all the variance.
    r = fit_reconstruction(list("abcd"), X[:3_000], X[3_000:], variance_share=0.999999)
    assert r is not None and len(r.components) == 3
    # Standardised: d's scale of 10 does not make it the first component.
    assert r.scale[3] == pytest.approx(10.0, rel=0.05) and r.mean[3] == pytest.approx(3.0, abs=0.5)


def test_the_error_quantiles_come_from_rows_the_components_were_not_fitted_on() -> None:
    # Twenty unrelated features and only 60 rows to fit on: the components fit those rows' noise.
    X = np.random.default_rng(1).standard_normal((560, 20))
    names = tuple(f"x{i}" for i in range(20))
    fit, held = X[:60], X[60:]
    r = fit_reconstruction(names, fit, held)
    assert r is not None and r.fitted_rows == 60 and r.error_from == "holdout_and_cross_fit"
    # Each of the 60 reference rows' error under components fitted on the other 48, and the 500
    # holdout rows' under the final components.
    unseen = np.r_[cross_fitted_errors(fit, len(r.components)), r.errors(held, names)]
    assert r.error.count == 560
    assert r.error.quantiles == pytest.approx(np.quantile(unseen, np.linspace(0, 1, 101)))
    # A PCA explains its own rows better than new ones: quantiles from its own rows would be too low,
    # and every new row would look like drift.
    own = float(np.mean(r.errors(fit, names)))
    assert r.error.mean is not None and own < 0.75 * r.error.mean
    # The cross-fitted errors are errors of unseen rows: like the holdout's, not like the fitted rows'.
    assert np.mean(unseen[:60]) == pytest.approx(np.mean(unseen[60:]), rel=0.25)
    # Without a holdout, the cross-fitted reference rows alone.
    alone = fit_reconstruction(names, fit)
    assert alone is not None and (alone.error_from, alone.error.count) == ("cross_fit", 60)


def test_a_wide_model_keeps_at_most_max_values_numbers_in_its_components() -> None:
    X = np.random.default_rng(5).standard_normal((400, 300))
    r = fit_reconstruction([f"x{i}" for i in range(300)], X)
    # Unrelated features: 90 % of the variance would take ~250 components; 20,000 // 300 = 66 kept.
    assert r is not None and len(r.components) == MAX_VALUES // 300 == 66
    assert 0.4 < r.variance_kept < 0.9


def test_what_it_leaves_out() -> None:
    X = rows(np.random.default_rng(2), 200)
    X[:, 2] = 5.0  # constant: nothing to model
    r = fit_reconstruction(list("abcd"), X, X, numeric=[True, True, True, False])
    assert r is not None and r.features == ("a", "b")  # c is constant, d categorical
    assert fit_reconstruction(list("abcd"), X, X, numeric=[True, False, True, False]) is None
    assert fit_reconstruction(list("abcd"), X[:10], X) is None  # too few rows


def test_split_rows_is_seeded_and_disjoint() -> None:
    kept, held = split_rows(1_000)
    assert (len(kept), len(held)) == (800, 200)
    assert not set(kept.tolist()) & set(held.tolist())
    assert [p.tolist() for p in split_rows(1_000)] == [kept.tolist(), held.tolist()]


def test_the_manifest_round_trips_it_and_refuses_a_bad_one() -> None:
    X = rows(np.random.default_rng(3), 500)
    r = fit_reconstruction(list("abcd"), X)
    assert r is not None and r.error_from == "cross_fit"
    again = Reconstruction.model_validate_json(r.model_dump_json())
    assert again == r
    data = json.loads(r.model_dump_json())
    data["components"] = [[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]
    with pytest.raises(ValueError, match="orthonormal"):
        Reconstruction.model_validate(data)
    data["components"] = [[1.0, 0.0, 0.0, 0.0]] * 4
    with pytest.raises(ValueError, match="at least one direction must be left out"):
        Reconstruction.model_validate(data)


def test_a_package_with_a_holdout_takes_every_unseen_reference_from_it(
    example_packages: ExamplePackages,
) -> None:
    m = example_packages.classifier.manifest
    r = m.reference.reconstruction
    assert r is not None and r.features == m.feature_names  # breast cancer: 30 numeric features
    # Fitted on the 426 training rows; its error's reference from the 143 holdout rows and the 426
    # training rows cross-fitted.
    assert (r.error_from, r.fitted_rows, r.error.count) == ("holdout_and_cross_fit", 426, 569)
    assert 1 <= len(r.components) < 30 and r.variance_kept >= 0.9
    assert m.reference.output.rows_from == "holdout" and m.reference.output.statistics.count == 143
    assert (m.training.evaluated_on, m.training.holdout_rows) == ("holdout", 143)
    assert m.calibration is not None and m.calibration.fitted_on == "holdout+out_of_fold"
    # Written and read back through the loader: the same reconstruction.
    with load_package(example_packages.classifier.path) as model:
        assert model.manifest.reference.reconstruction == r


def test_without_a_holdout_the_build_warns_and_cross_fits_the_reconstruction(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(4)
    X = rows(rng, 1_000)
    y = (X[:, 0] + X[:, 2] > 0).astype(int)
    result = TrainingResult(LogisticRegression().fit(X, y), X, y, list("abcd"))
    progress = Progress(None)
    built = build_package(
        result, name="m", version="1", repository=ModelRepository(tmp_path), progress=progress
    )
    assert progress.warnings == [NO_HOLDOUT_WARNING]
    assert NO_HOLDOUT_WARNING.startswith("no holdout (TrainingResult.X_holdout and y_holdout)")
    m = built.manifest
    r = m.reference.reconstruction
    assert r is not None and (r.error_from, r.fitted_rows, r.error.count) == ("cross_fit", 1_000, 1_000)
    # The model was trained on every reference row: its output there is all there is, and says so.
    assert m.reference.output.rows_from == "reference" and m.reference.output.statistics.count == 1_000
    assert m.training.evaluated_on == "reference"


def test_older_manifests_without_the_new_fields_still_load(example_packages: ExamplePackages) -> None:
    data = json.loads(example_packages.classifier.manifest.model_dump_json())
    del data["reference"]["reconstruction"]
    del data["reference"]["output"]["rows_from"]
    old = Manifest.model_validate(data)
    assert old.reference.reconstruction is None and old.reference.output.rows_from == "reference"
    # And what a new build writes without them (no reconstruction, training rows) omits them.
    reference = ReferenceStatistics.model_validate(data["reference"])
    assert set(json.loads(reference.model_dump_json())) == {"rows", "features", "output"}
    assert "rows_from" not in json.loads(reference.model_dump_json())["output"]
