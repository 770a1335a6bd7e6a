"""Building a model package from a fitted scikit-learn estimator (or an XGBoost or LightGBM
scikit-learn wrapper, whose onnxmltools converters :mod:`agent.packaging.boosting` registers).

The steps, each a plain function a test can call on its own:

1. :func:`convert` the estimator to ONNX with skl2onnx: one float32 input named ``input``, no ZipMap
   on classifiers (it is several times slower than a plain probabilities tensor), opsets capped at
   what the installed onnxruntime supports (:func:`target_opsets`).
2. :func:`check_parity`: ONNX Runtime and scikit-learn must agree on the holdout rows (labels
   identical, probabilities within 1e-5; regression values within 1e-4 relative), or the build
   stops with :class:`~agent.errors.ParityError` saying by how much they disagree.
3. :func:`reference_statistics` of the inputs on the reference data and of the model's output on
   the holdout (rows it was not trained on, as it will meet them when served; the training rows when
   there is no holdout, with a warning); the reconstruction of the numeric features fitted on the
   reference rows, its error's reference from rows it was not fitted on (cross-fitted reference
   rows and the holdout; :mod:`agent.packaging.reconstruction`); on the rows it was verified on,
   the calibration of a classifier's confidence (:mod:`agent.packaging.calibration`), a regressor's
   model of its absolute error (:mod:`agent.packaging.error_model`) and each feature's permutation
   importance (:mod:`agent.packaging.importance`).
4. :func:`write_package` atomically: files are written into a hidden staging directory next to the
   target and renamed into place, so a scan never sees half a package.

:func:`build_package` runs them in order with :class:`Progress` reporting on stderr. A training
module hands the builder a :class:`TrainingResult`; see ``examples/train_example.py``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import ValidationError

from agent.errors import ConfigurationError, PackageError, describe_validation_error
from agent.models.repository import ModelRepository
from agent.packaging import boosting
from agent.packaging.calibration import (
    MAX_HOLDOUT_FOR_OUT_OF_FOLD,
    OutOfFold,
    calibrate,
    constant_confidence_warning,
    out_of_fold,
)
from agent.packaging.convert import (
    convert,
    hyperparameters,
    target_opsets,
    task_of,
)
from agent.packaging.error_model import FittedErrorModel, fit_error_model
from agent.packaging.importance import permutation_importance
from agent.packaging.parity import (
    MAX_REFERENCE_PARITY_ROWS,
    ParityReport,
    check_parity,
    onnx_predictions,
    onnx_session,
)
from agent.packaging.progress import Progress
from agent.packaging.reconstruction import fit_reconstruction
from agent.packaging.reference import as_matrix, holdout_scores, prepared_mask, reference_statistics
from agent.packaging.training import TrainingResult
from agent.packaging.write import build_versions, write_package
from schemas.manifest import (
    Manifest,
    TrainingSummary,
)

__all__ = ["NO_HOLDOUT_WARNING", "BuiltPackage", "TrainingResult", "build_package"]

NO_HOLDOUT_WARNING = (
    "no holdout (TrainingResult.X_holdout and y_holdout): parity, scores, calibration and importance "
    "use training rows, and the output's reference is the model's output on the rows it was trained "
    "on, more extreme than on new data. Return rows kept out of training as X_holdout/y_holdout."
)
"""What :func:`build_package` warns when the training result has no holdout."""


@dataclass(frozen=True)
class BuiltPackage:
    """A package written to the repository."""

    path: Path
    manifest: Manifest
    parity: ParityReport
    timings: dict[str, float]
    notes: tuple[str, ...] = ()
    """What the build chose to leave out or add, and why (printed by ``driftline package``)."""


def _estimator_path(estimator: Any) -> str:
    cls = type(estimator)
    return f"{cls.__module__}.{cls.__qualname__}"


def build_package(
    result: TrainingResult,
    *,
    name: str,
    version: str,
    repository: ModelRepository,
    force: bool = False,
    progress: Progress | None = None,
    created_at: datetime | None = None,
) -> BuiltPackage:
    """Converts, verifies, summarises and writes ``result`` as package ``name``/``version``.

    Raises :class:`~agent.errors.ParityError` (nothing written) if the ONNX model disagrees with
    the estimator, :class:`~agent.errors.ConfigurationError` for an inconsistent ``result`` or an
    existing package without ``force``.
    """
    progress = progress or Progress(None)
    target = repository.package_dir(name, version)  # validates name and version early
    if target.exists() and not force:
        raise ConfigurationError(f"{target}: package already exists; pass --force to replace it")
    features = result.features()
    n = len(features)
    X_ref = as_matrix(result.X_reference, n, "X_reference")
    y_ref = np.asarray(result.y_reference)
    if len(y_ref) != len(X_ref):
        raise ConfigurationError(
            f"TrainingResult.y_reference has {len(y_ref)} rows, X_reference {len(X_ref)}"
        )
    estimator = result.estimator
    task = task_of(estimator)
    if result.X_holdout is None or result.y_holdout is None:
        progress.warn(NO_HOLDOUT_WARNING)

    with progress.step("convert"):
        # XGBoost and LightGBM wrappers need onnxmltools' converters registered first.
        converted = convert(estimator, n, boosting.prepare(estimator, target_opsets()))

    with progress.step("verify"):
        session = onnx_session(converted.onnx_bytes)
        if result.X_holdout is not None and result.y_holdout is not None:
            checked_on: Literal["holdout", "reference"] = "holdout"
            X_check = as_matrix(result.X_holdout, n, "X_holdout")
            y_check = np.asarray(result.y_holdout)
            if len(y_check) != len(X_check):
                raise ConfigurationError(
                    f"TrainingResult.y_holdout has {len(y_check)} rows, X_holdout {len(X_check)}"
                )
        else:
            checked_on = "reference"
            pick = np.random.default_rng(0).permutation(len(X_ref))[:MAX_REFERENCE_PARITY_ROWS]
            X_check, y_check = X_ref[np.sort(pick)], y_ref[np.sort(pick)]
        holdout_rows = len(X_check) if checked_on == "holdout" else 0
        X_check = X_check.copy()
        keep = prepared_mask(features, X_check)
        X_check, y_check = X_check[keep], y_check[keep]
        if len(X_check) == 0:
            raise ConfigurationError(f"no {checked_on} rows left to verify after the missing-value policy")
        parity = check_parity(estimator, converted, X_check, checked_on, session)
        predicted = onnx_predictions(task, converted, session, X_check)
        scores = holdout_scores(task, y_check, predicted, converted.outputs.class_labels or ())

    with progress.step("explain"):
        classes = converted.outputs.class_labels or ()
        calibration = (
            None
            if task == "regression"
            else calibrate(
                y_check,
                predicted,
                classes,
                fitted_on=checked_on,
                out_of_fold=_out_of_fold(estimator, features, X_ref, y_ref, checked_on, holdout_rows),
            )
        )
        fitted = _error_model(task, checked_on, X_check, y_check, predicted)
        importance = permutation_importance(
            task,
            lambda rows: onnx_predictions(task, converted, session, rows),
            X_check,
            [f.name for f in features],
            fitted_on=checked_on,
        )

    with progress.step("stats"):
        X_served = X_ref.copy()
        keep = prepared_mask(features, X_served)
        if not keep.any():
            raise ConfigurationError("every reference row is rejected by the missing-value policy")
        X_served = X_served[keep]
        numeric = [f.type == "numeric" for f in features]
        names = [f.name for f in features]
        if checked_on == "holdout":
            # The model's output on rows it was not trained on, as it will meet them when served.
            output_predictions = predicted
            reconstruction = fit_reconstruction(names, X_served, X_check, numeric=numeric)
        else:
            output_predictions = onnx_predictions(task, converted, session, X_served)
            reconstruction = fit_reconstruction(names, X_served, numeric=numeric)
        reference = reference_statistics(
            features,
            X_ref,
            task,
            converted.outputs,
            output_predictions,
            output_rows_from=checked_on,
            reconstruction=reconstruction,
        )
        try:
            manifest = Manifest(
                name=name,
                version=version,
                task=task,
                estimator=_estimator_path(estimator),
                features=features,
                outputs=converted.outputs,
                hyperparameters=hyperparameters(estimator),
                training=TrainingSummary(
                    rows=len(X_ref),
                    holdout_rows=holdout_rows,
                    evaluated_on=checked_on,
                    **scores,
                ),
                reference=reference,
                versions=build_versions(converted.opsets, boosting.framework_versions(estimator)),
                created_at=created_at or datetime.now(UTC),
                onnx_sha256=hashlib.sha256(converted.onnx_bytes).hexdigest(),
                calibration=calibration,
                importance=importance,
                error_model=fitted.entry if fitted is not None else None,
            )
        except ValidationError as exc:
            raise PackageError(
                f"the manifest does not validate: {describe_validation_error(exc, 5, whole='(top level)')}"
            ) from exc

    if (warning := constant_confidence_warning(manifest)) is not None:
        progress.warn(warning)
    with progress.step("write"):
        path = write_package(
            repository,
            manifest,
            converted.onnx_bytes,
            force=force,
            error_model=fitted.onnx_bytes if fitted is not None else None,
        )
    notes = (fitted.note,) if fitted is not None else ()
    return BuiltPackage(path, manifest, parity, dict(progress.timings), notes)


def _out_of_fold(
    estimator: Any,
    features: Any,
    X_ref: np.ndarray[Any, Any],
    y_ref: np.ndarray[Any, Any],
    checked_on: Literal["holdout", "reference"],
    holdout_rows: int,
) -> OutOfFold | None:
    """More rows for a classifier's calibration when its holdout is small: the training rows'
    out-of-fold predictions (as served: after the missing-value policy)."""
    if checked_on != "holdout" or holdout_rows >= MAX_HOLDOUT_FOR_OUT_OF_FOLD:
        return None
    X = X_ref.copy()
    keep = prepared_mask(features, X)
    return out_of_fold(estimator, X[keep], y_ref[keep])


def _error_model(
    task: str,
    checked_on: Literal["holdout", "reference"],
    X: np.ndarray[Any, Any],
    y: np.ndarray[Any, Any],
    predicted: dict[str, np.ndarray[Any, Any]],
) -> FittedErrorModel | None:
    """A regressor's error model, fitted on part of its holdout (``None`` for classifiers)."""
    if task != "regression":
        return None
    if checked_on != "holdout":
        return FittedErrorModel(
            None,
            None,
            "no error model: no holdout rows (one fitted on the training rows would learn the "
            "training error, which is optimistic)",
        )
    return fit_error_model(X, y, predicted["values"])
