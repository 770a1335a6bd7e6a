"""The manifest of a model package: ``NAME/VERSION/manifest.json`` next to ``model.onnx``.

The manifest is the contract between ``driftline package`` (which writes it) and everything that
serves or monitors the model (which only reads it). It says how to build the model's input, what the
outputs mean, how the model scored when it was built, what its inputs and outputs looked like on the
reference (training) data, and which library versions produced it.

The ONNX graph it describes has exactly one input, ``input``: float32, shape ``[None, n_features]``,
columns in the order of :attr:`Manifest.features`. A categorical feature is fed as the float index of
its category in :attr:`Feature.categories`. Classifiers have a label output and a float32
``[None, n_classes]`` probabilities output whose columns follow :attr:`Outputs.class_labels`;
regressors have one float32 value output. :class:`Outputs` records the actual names.

Every model is frozen and rejects unknown fields and non-finite floats, so a manifest that validates
is also strict JSON. The JSON Schema is ``Manifest.model_json_schema()``.

Example:
    >>> feature = Feature(name="colour", type="categorical", categories=("red", "blue"))
    >>> feature.category_index("blue")
    1.0
    >>> Feature(name="age", type="numeric", range=(0, 130)).range
    (0.0, 130.0)
    >>> len(QUANTILE_PROBABILITIES), QUANTILE_PROBABILITIES[1]
    (101, 0.01)
"""

from __future__ import annotations

from itertools import pairwise
from typing import Annotated, Literal, Self

import numpy as np
import numpy.typing as npt
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    model_validator,
)

__all__ = [
    "MANIFEST_SCHEMA_VERSION",
    "MODEL_NAME_PATTERN",
    "MODEL_VERSION_PATTERN",
    "QUANTILE_PROBABILITIES",
    "BuildVersions",
    "Calibration",
    "CalibrationCurve",
    "CategoricalStatistics",
    "ErrorModel",
    "Feature",
    "FeatureImportance",
    "FeatureStatistics",
    "Manifest",
    "MissingPolicy",
    "NumericStatistics",
    "OutputStatistics",
    "Outputs",
    "Reconstruction",
    "ReferenceStatistics",
    "RowsFrom",
    "Task",
    "TrainingSummary",
    "reconstruction_errors",
]

MANIFEST_SCHEMA_VERSION: Literal["1"] = "1"
"""The only ``schema_version`` this code reads and writes."""

# Names and versions become directory names, so they must be safe path components that never start
# with "." (hidden directories are where the builder stages half-written packages).
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
MODEL_VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"

QUANTILE_PROBABILITIES: tuple[float, ...] = tuple(i / 100 for i in range(101))
"""Probabilities at which :attr:`NumericStatistics.quantiles` are taken: 0, 0.01, ..., 1."""

Task = Literal["binary_classification", "multiclass_classification", "regression"]
ModelName = Annotated[str, StringConstraints(pattern=MODEL_NAME_PATTERN)]
ModelVersion = Annotated[str, StringConstraints(pattern=MODEL_VERSION_PATTERN)]
Rate = Annotated[float, Field(ge=0.0, le=1.0)]
RowsFrom = Literal["holdout", "reference"]
"""Which rows a reference was taken from: the ``holdout`` (rows the model was not trained on) or the
``reference`` (training) rows."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class MissingPolicy(_Frozen):
    """What the serving code does with a missing value (``None``/NaN) of one feature.

    Parameters:
        action: ``reject`` the request, ``impute`` ``value`` in its place, or ``allow`` it through
            to the model as NaN.
        value: The imputed value, only for ``impute``: a number for a numeric feature, a category
            name for a categorical one.

    Example:
        >>> MissingPolicy(action="impute", value=0.5).value
        0.5
        >>> from pydantic import ValidationError
        >>> try:
        ...     MissingPolicy(action="impute")
        ... except ValidationError as exc:
        ...     print(exc.errors()[0]["msg"])
        Value error, action 'impute' needs a value
    """

    action: Literal["reject", "impute", "allow"] = "reject"
    value: float | str | None = None

    @model_validator(mode="after")
    def _value_only_for_impute(self) -> Self:
        if self.action == "impute" and self.value is None:
            raise ValueError("action 'impute' needs a value")
        if self.action != "impute" and self.value is not None:
            raise ValueError(f"action {self.action!r} takes no value")
        return self


class Feature(_Frozen):
    """One column of the model's input matrix.

    Parameters:
        name: Feature name, unique within the manifest.
        type: ``numeric`` (fed as is) or ``categorical`` (fed as the float index of the category).
        categories: The categories of a categorical feature, in index order; required for
            categorical features, not allowed for numeric ones.
        range: Optional allowed ``[min, max]`` of a numeric feature.
        missing: What to do with a missing value.
        unknown_category: What to do with a category not in ``categories`` (categorical features
            only): ``reject`` the request to the dead-letter topic (the default), or serve it as
            a ``missing`` value, which ``missing`` then says what to do with (``impute`` or
            ``allow``, not ``reject``). Served, such values are counted and watched as a technical
            rate per feature.

    Example:
        >>> city = Feature(
        ...     name="city",
        ...     type="categorical",
        ...     categories=("Paris", "Lyon"),
        ...     missing=MissingPolicy(action="allow"),
        ...     unknown_category="missing",
        ... )
        >>> city.unknown_category
        'missing'
        >>> from pydantic import ValidationError
        >>> try:
        ...     Feature(name="city", type="categorical", categories=("Paris",), unknown_category="missing")
        ... except ValidationError as exc:
        ...     print(exc.errors()[0]["msg"])  # doctest: +NORMALIZE_WHITESPACE
        Value error, feature 'city' serves unknown categories as missing values, but rejects missing
        values: give it a missing policy of impute or allow
    """

    name: Annotated[str, Field(min_length=1)]
    type: Literal["numeric", "categorical"]
    categories: tuple[str, ...] | None = None
    range: tuple[float, float] | None = None
    missing: MissingPolicy = MissingPolicy()
    # Left out of the JSON when "reject", like BuildVersions.frameworks: such a package stays readable
    # by a worker of the previous release, which refuses unknown fields.
    unknown_category: Literal["reject", "missing"] = Field(
        default="reject", exclude_if=lambda value: value == "reject"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.type == "categorical":
            if not self.categories:
                raise ValueError(f"categorical feature {self.name!r} needs its list of categories")
            if len(set(self.categories)) != len(self.categories):
                raise ValueError(f"categorical feature {self.name!r} has duplicate categories")
            if self.range is not None:
                raise ValueError(f"categorical feature {self.name!r} cannot have a range")
            if self.missing.action == "impute" and self.missing.value not in self.categories:
                raise ValueError(
                    f"feature {self.name!r} imputes {self.missing.value!r}, not one of its categories"
                )
            if self.unknown_category == "missing" and self.missing.action == "reject":
                raise ValueError(
                    f"feature {self.name!r} serves unknown categories as missing values, but rejects "
                    "missing values: give it a missing policy of impute or allow"
                )
        else:
            if self.categories is not None:
                raise ValueError(f"numeric feature {self.name!r} cannot have categories")
            if self.unknown_category != "reject":
                raise ValueError(f"numeric feature {self.name!r} has no categories to be unknown")
            if self.range is not None and self.range[0] > self.range[1]:
                raise ValueError(f"feature {self.name!r}: range minimum is above its maximum")
            if self.missing.action == "impute" and not isinstance(self.missing.value, float):
                raise ValueError(f"numeric feature {self.name!r} must impute a number")
        return self

    def category_index(self, category: str) -> float:
        """The value to feed the model for ``category``; ``ValueError`` if it is not known."""
        if self.categories is None:
            raise ValueError(f"feature {self.name!r} is not categorical")
        try:
            return float(self.categories.index(category))
        except ValueError:
            raise ValueError(f"feature {self.name!r} has no category {category!r}") from None


class Outputs(_Frozen):
    """The ONNX graph's outputs, by their names in the graph.

    Parameters:
        label: Name of the predicted-label output (classifiers): the class label itself, int64 or
            string.
        probabilities: Name of the float32 ``[None, n_classes]`` output (classifiers).
        value: Name of the float32 prediction output (regressors).
        class_labels: The classes, in the order of the probability columns (classifiers).
    """

    label: str | None = None
    probabilities: str | None = None
    value: str | None = None
    class_labels: tuple[int, ...] | tuple[str, ...] | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """Every output name recorded, in ``label, probabilities, value`` order."""
        return tuple(n for n in (self.label, self.probabilities, self.value) if n is not None)


class TrainingSummary(_Frozen):
    """How the estimator was trained and how it scored.

    Metrics are computed on the holdout rows when there are any, otherwise on the reference
    (training) rows, which ``evaluated_on`` says; optimistic in the second case. A model packaged
    from an ONNX file without any labelled rows has no metrics: ``evaluated_on`` is ``none``.
    """

    rows: Annotated[int, Field(ge=1)]
    holdout_rows: Annotated[int, Field(ge=0)]
    evaluated_on: Literal["holdout", "reference", "none"]
    accuracy: Rate | None = None
    roc_auc: Rate | None = None
    """ROC AUC; for multiclass the macro average of one-vs-rest AUCs. None when undefined."""
    mae: Annotated[float, Field(ge=0.0)] | None = None
    r2: float | None = None


class NumericStatistics(_Frozen):
    """Distribution of a numeric quantity on the reference data.

    ``quantiles[i]`` is the value at probability ``QUANTILE_PROBABILITIES[i]`` (linear
    interpolation between order statistics); mean, std (population), min and max ignore missing
    values, and are ``None`` (quantiles empty) when every value is missing.

    Example:
        >>> stats = NumericStatistics.from_values(np.arange(101.0))
        >>> stats.quantiles[50], stats.mean, stats.missing_rate
        (50.0, 50.0, 0.0)
        >>> stats.percentile(25.5), stats.percentile(-3.0), stats.percentile(1e9)
        (0.255, 0.0, 1.0)
        >>> NumericStatistics.from_values(np.array([1.0, np.nan])).missing_rate
        0.5
    """

    kind: Literal["numeric"] = "numeric"
    count: Annotated[int, Field(ge=0)]
    """Rows with a (non-missing) value."""
    missing_rate: Rate
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    quantiles: tuple[float, ...]

    @model_validator(mode="after")
    def _shape(self) -> Self:
        expected = len(QUANTILE_PROBABILITIES) if self.count else 0
        if len(self.quantiles) != expected:
            raise ValueError(f"quantiles needs {expected} values, got {len(self.quantiles)}")
        if any(b < a for a, b in zip(self.quantiles, self.quantiles[1:], strict=False)):
            raise ValueError("quantiles must be non-decreasing")
        return self

    @classmethod
    def from_values(cls, values: npt.ArrayLike) -> NumericStatistics:
        """Statistics of ``values`` (1-D; NaN counts as missing)."""
        array = np.asarray(values, dtype=np.float64).ravel()
        if array.size == 0:
            raise ValueError("no values to summarise")
        present = array[~np.isnan(array)]
        missing_rate = 1.0 - present.size / array.size
        if present.size == 0:
            return cls(
                count=0, missing_rate=missing_rate, mean=None, std=None, min=None, max=None,
                quantiles=(),
            )  # fmt: skip
        quantiles = np.quantile(present, QUANTILE_PROBABILITIES)
        # Rounding in the interpolation can make neighbours differ in the last bit the wrong way.
        quantiles = np.maximum.accumulate(quantiles)
        return cls(
            count=int(present.size),
            missing_rate=missing_rate,
            mean=float(present.mean()),
            std=float(present.std()),
            min=float(present.min()),
            max=float(present.max()),
            quantiles=tuple(float(q) for q in quantiles),
        )

    def percentile(self, value: float) -> float:
        """The reference percentile of ``value`` in ``[0, 1]``, interpolated between quantiles.

        Inside a run of equal quantiles (a value taken by many rows) the middle of the run is
        returned; below the minimum 0, above the maximum 1.
        """
        if not self.quantiles:
            raise ValueError("no reference values: every value was missing")
        q = np.asarray(self.quantiles)
        p = np.asarray(QUANTILE_PROBABILITIES)
        # np.interp takes the right end of a flat run; interpolating the mirrored curve gives the
        # left end, and their mean the middle.
        right = float(np.interp(value, q, p))
        left = float(np.interp(-value, -q[::-1], p[::-1]))
        return (left + right) / 2


class CategoricalStatistics(_Frozen):
    """Distribution of a categorical feature on the reference data.

    ``frequencies`` maps every category to its share of the non-missing rows.

    Example:
        >>> stats = CategoricalStatistics.from_indices(
        ...     np.array([0.0, 0.0, 1.0, np.nan]), ("red", "blue", "green")
        ... )
        >>> stats.frequencies, stats.missing_rate
        ({'red': 0.6666666666666666, 'blue': 0.3333333333333333, 'green': 0.0}, 0.25)
    """

    kind: Literal["categorical"] = "categorical"
    count: Annotated[int, Field(ge=0)]
    missing_rate: Rate
    frequencies: dict[str, Rate]

    @classmethod
    def from_indices(cls, indices: npt.ArrayLike, categories: tuple[str, ...]) -> CategoricalStatistics:
        """Statistics of category indexes (floats, NaN is missing) into ``categories``."""
        array = np.asarray(indices, dtype=np.float64).ravel()
        if array.size == 0:
            raise ValueError("no values to summarise")
        present = array[~np.isnan(array)]
        codes = present.astype(np.int64)
        if np.any(codes != present) or np.any(codes < 0) or np.any(codes >= len(categories)):
            raise ValueError(f"category indexes must be integers in [0, {len(categories)})")
        counts = np.bincount(codes, minlength=len(categories))
        total = max(int(present.size), 1)
        return cls(
            count=int(present.size),
            missing_rate=1.0 - present.size / array.size,
            frequencies={c: int(n) / total for c, n in zip(categories, counts, strict=True)},
        )


FeatureStatistics = Annotated[NumericStatistics | CategoricalStatistics, Field(discriminator="kind")]


class OutputStatistics(_Frozen):
    """The model's output on the reference data, as served: after each feature's missing-value
    policy (imputed values filled in, rows with a rejected missing value left out).

    Parameters:
        quantity: ``positive_probability`` (binary: probability of ``class_labels[1]``),
            ``max_probability`` (multiclass) or ``value`` (regression).
        statistics: Distribution of that quantity.
        label_frequencies: Classifiers: share of each predicted label, keyed by ``str(label)``.
        rows_from: The rows the output was summarised on: the ``holdout`` (a model's outputs on rows
            it was not trained on, as it will meet them when served), or the ``reference`` (training)
            rows when there was no holdout; those outputs are more extreme than on new data.
    """

    quantity: Literal["positive_probability", "max_probability", "value"]
    statistics: NumericStatistics
    label_frequencies: dict[str, Rate] | None = None
    # Left out of the JSON when "reference" (what every older manifest meant): a package built
    # without a holdout stays readable by the previous release's workers (manifests forbid unknown
    # fields).
    rows_from: RowsFrom = Field(default="reference", exclude_if=lambda value: value == "reference")


def reconstruction_errors(
    matrix: npt.NDArray[np.floating], columns: npt.NDArray[np.intp], mean: npt.NDArray[np.float64],
    scale: npt.NDArray[np.float64], components: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:  # fmt: skip
    """The reconstruction error of each row of ``matrix`` ``(n, n_features)``: the norm of what the
    principal ``components`` ``(k, d)`` (orthonormal rows) leave unexplained of its ``columns``,
    standardised by ``mean`` and ``scale``. A missing value counts as the mean (0 once standardised).

    The one definition of the error, used by the packaging (its reference quantiles) and the worker.

    Example:
        >>> c = np.array([[1.0, 1.0]]) / np.sqrt(2)  # the two columns move together
        >>> m = np.array([[1.0, 1.0], [1.0, -1.0], [np.nan, 2.0]])
        >>> reconstruction_errors(m, np.array([0, 1]), np.zeros(2), np.ones(2), c).round(3).tolist()
        [0.0, 1.414, 1.414]
    """
    z = (np.asarray(matrix, dtype=np.float64)[:, columns] - mean) / scale
    z[np.isnan(z)] = 0.0
    explained = z @ components.T
    # ||z||^2 - ||projection||^2 is the squared residual (the rows of components are orthonormal),
    # without forming the n x d reconstruction; rounding can take it a hair below 0.
    squared = np.einsum("ij,ij->i", z, z) - np.einsum("ij,ij->i", explained, explained)
    errors: npt.NDArray[np.float64] = np.sqrt(np.maximum(squared, 0.0))
    return errors


class Reconstruction(_Frozen):
    """A linear reconstruction of the numeric features (PCA), for multivariate drift.

    At packaging time the numeric features of the reference rows are standardised (``mean``,
    ``scale``) and the leading principal ``components`` that keep ``variance_kept`` of their
    variance are stored; at serving time each request's reconstruction error (:meth:`errors`) is one
    more monitored column, against ``error``: its distribution on rows the components were not fitted
    on (``error_from``). When features stop moving together as they did, the error grows even if
    every feature's own distribution stays the same. Plain numbers, validated on read: no pickle.

    Parameters:
        features: The numeric features it covers, in feature order (categorical features, and those
            constant or always missing in the reference, are left out).
        mean: Each feature's mean on the rows it was fitted on.
        scale: Each feature's standard deviation there (> 0).
        components: ``k x d`` orthonormal rows, ``1 <= k < d``: at least one direction is left out.
        variance_kept: Share of the standardised variance the components explain.
        fitted_rows: Rows the components were fitted on.
        error: The reconstruction error on rows the components were not fitted on.
        error_from: Those rows: ``cross_fit``, each reference row's error under components fitted
            on the other four fifths of the reference rows (5-fold); ``holdout_and_cross_fit``, those
            and the holdout rows' errors under these components.

    Example:
        >>> r = Reconstruction(
        ...     features=("a", "b"), mean=(0.0, 0.0), scale=(1.0, 1.0),
        ...     components=((0.7071067811865476, 0.7071067811865476),), variance_kept=0.95,
        ...     fitted_rows=100, error=NumericStatistics.from_values(np.linspace(0, 1, 11)),
        ...     error_from="holdout_and_cross_fit")
        >>> r.errors(np.array([[2.0, 2.0], [1.0, -1.0]]), ("a", "b")).round(3).tolist()
        [0.0, 1.414]
    """

    features: Annotated[tuple[str, ...], Field(min_length=2)]
    mean: tuple[float, ...]
    scale: tuple[Annotated[float, Field(gt=0.0)], ...]
    components: Annotated[tuple[tuple[float, ...], ...], Field(min_length=1)]
    variance_kept: Rate
    fitted_rows: Annotated[int, Field(ge=2)]
    error: NumericStatistics
    error_from: Literal["holdout_and_cross_fit", "cross_fit"]

    @model_validator(mode="after")
    def _shapes(self) -> Self:
        d = len(self.features)
        if len(set(self.features)) != d:
            raise ValueError("reconstruction features must be unique")
        if len(self.mean) != d or len(self.scale) != d:
            raise ValueError(f"mean and scale need one value per feature ({d})")
        if len(self.components) >= d:
            raise ValueError(f"keep fewer than {d} components: at least one direction must be left out")
        if any(len(row) != d for row in self.components):
            raise ValueError(f"each component needs {d} values")
        c = np.asarray(self.components)
        if not np.allclose(c @ c.T, np.eye(len(c)), atol=1e-6):
            raise ValueError("components must be orthonormal")
        if not self.error.count:
            raise ValueError("error needs reference values")
        return self

    def errors(
        self, matrix: npt.NDArray[np.floating], feature_names: tuple[str, ...]
    ) -> npt.NDArray[np.float64]:
        """The reconstruction error of each row of a model input ``matrix`` whose columns are
        ``feature_names`` (the manifest's)."""
        columns = np.array([feature_names.index(f) for f in self.features], dtype=np.intp)
        return reconstruction_errors(
            matrix, columns, np.asarray(self.mean), np.asarray(self.scale), np.asarray(self.components)
        )


class ReferenceStatistics(_Frozen):
    """Per-feature and output distributions on the reference data, keyed by feature name, and the
    reconstruction of the numeric features (multivariate drift) when there are at least two."""

    rows: Annotated[int, Field(ge=1)]
    features: dict[str, FeatureStatistics]
    output: OutputStatistics
    # Left out of the JSON when absent, like Manifest.calibration: older workers still read it.
    reconstruction: Reconstruction | None = Field(default=None, exclude_if=lambda value: value is None)


class BuildVersions(_Frozen):
    """Library versions the package was built and verified with, and the graph's opsets.

    ``opsets`` maps each ONNX domain to its opset version; the default domain is ``ai.onnx``.
    """

    python: str
    numpy: str
    scikit_learn: str
    skl2onnx: str
    onnx: str
    onnxruntime: str
    """The onnxruntime that verified parity at build time."""
    opsets: dict[str, Annotated[int, Field(ge=1)]]
    # Left out of the JSON when empty, so that a package of a scikit-learn model stays readable by a
    # worker of the previous release (manifests forbid unknown fields) during a rolling upgrade.
    frameworks: dict[str, str] = Field(default_factory=dict, exclude_if=lambda value: not value)
    """Other libraries the model was trained or converted with (``xgboost``, ``lightgbm``,
    ``onnxmltools``), for the record only: the worker does not import them, so they are not
    compared with installed versions (:meth:`packages`)."""

    def packages(self) -> dict[str, str]:
        """Distribution name -> version, e.g. ``{"scikit-learn": "1.5.0", ...}``."""
        return {
            "python": self.python,
            "numpy": self.numpy,
            "scikit-learn": self.scikit_learn,
            "skl2onnx": self.skl2onnx,
            "onnx": self.onnx,
            "onnxruntime": self.onnxruntime,
        }


class CalibrationCurve(_Frozen):
    """One non-decreasing piecewise-linear map from a confidence to the probability of being right.

    Parameters:
        confidence: Breakpoints of the highest probability, strictly increasing, in ``[0, 1]``.
        correctness: Expected correctness at each breakpoint, non-decreasing, in ``[0, 1]``.
    """

    confidence: tuple[Rate, ...]
    correctness: tuple[Rate, ...]

    @model_validator(mode="after")
    def _monotone(self) -> Self:
        _check_curve(self.confidence, self.correctness)
        return self

    def expected_error(self, confidence: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """``1 - correctness`` at each ``confidence``."""
        x = np.asarray(confidence, dtype=np.float64)
        return 1.0 - np.interp(x, self.confidence, self.correctness)


def _check_curve(confidence: tuple[float, ...], correctness: tuple[float, ...]) -> None:
    if len(confidence) != len(correctness) or len(confidence) < 1:
        raise ValueError("confidence and correctness need the same number (at least 1) of breakpoints")
    if any(b <= a for a, b in pairwise(confidence)):
        raise ValueError("confidence breakpoints must be strictly increasing")
    if any(b < a for a, b in pairwise(correctness)):
        raise ValueError("correctness must be non-decreasing")


class Calibration(_Frozen):
    """A classifier's expected correctness given its confidence: the calibration that estimates its
    error without labels (CBPE-style), fitted on labelled rows it was not trained on.

    ``confidence`` is the model's highest class probability (the probability of the class it
    predicts), ``correctness`` the probability that such a prediction is right: the breakpoints of a
    non-decreasing piecewise-linear map (isotonic regression's), interpolated between them and flat
    beyond the ends. Plain numbers, validated when the manifest is read: no pickled model.

    With ``per_class`` (method ``isotonic_per_class``) each predicted class has a curve of its own, in
    the order of the probability columns: a model is often surer of one class than of another at the
    same confidence. The pooled curve stays, for a prediction whose class is not known.

    Parameters:
        method: ``isotonic`` (one curve) or ``isotonic_per_class``.
        rows: Labelled rows it was fitted on.
        fitted_on: ``holdout`` rows; ``holdout+out_of_fold``: the holdout rows and the training rows,
            each training row predicted by a copy of the model trained without it (cross-validation);
            or the ``reference`` (training) rows when there was no holdout (then optimistic: a model
            is surer of the rows it was trained on).
        confidence: Breakpoints of the highest probability, strictly increasing, in ``[0, 1]``.
        correctness: Expected correctness at each breakpoint, non-decreasing, in ``[0, 1]``.
        reference_error: Mean estimated error (1 - correctness) over the holdout rows (all the rows
            it was fitted on when there was no holdout).
        reference_error_std: Its standard deviation per row.
        per_class: A curve per predicted class (``isotonic_per_class`` only).

    Example:
        >>> c = Calibration(rows=4, fitted_on="holdout", confidence=(0.5, 0.9, 1.0),
        ...                 correctness=(0.5, 0.8, 1.0), reference_error=0.2, reference_error_std=0.1)
        >>> c.expected_error(np.array([0.5, 0.7, 0.95, 1.0])).round(3).tolist()
        [0.5, 0.35, 0.1, 0.0]
        >>> sure_of_1 = CalibrationCurve(confidence=(0.5, 1.0), correctness=(0.9, 1.0))
        >>> c2 = c.model_copy(update={"method": "isotonic_per_class", "per_class": (c.curve, sure_of_1)})
        >>> c2.expected_error(np.array([0.7, 0.7]), predicted=np.array([0, 1])).round(3).tolist()
        [0.35, 0.06]
    """

    method: Literal["isotonic", "isotonic_per_class"] = "isotonic"
    rows: Annotated[int, Field(ge=1)]
    fitted_on: Literal["holdout", "holdout+out_of_fold", "reference"]
    confidence: tuple[Rate, ...]
    correctness: tuple[Rate, ...]
    reference_error: Rate
    reference_error_std: Annotated[float, Field(ge=0.0)]
    # Left out of the JSON when absent: a single-curve calibration reads as before.
    per_class: tuple[CalibrationCurve, ...] | None = Field(
        default=None, exclude_if=lambda value: value is None
    )

    @model_validator(mode="after")
    def _monotone(self) -> Self:
        _check_curve(self.confidence, self.correctness)
        if (self.method == "isotonic_per_class") != (self.per_class is not None):
            raise ValueError("per_class curves go with method 'isotonic_per_class', and only with it")
        return self

    @property
    def curve(self) -> CalibrationCurve:
        """The pooled curve."""
        return CalibrationCurve(confidence=self.confidence, correctness=self.correctness)

    def expected_error(
        self, confidence: npt.ArrayLike, predicted: npt.ArrayLike | None = None
    ) -> npt.NDArray[np.float64]:
        """``1 - correctness`` at each ``confidence`` (the highest class probability of a row), through
        the curve of its ``predicted`` class (the index of its probability column) when given and
        there are per-class curves, else the pooled one."""
        x = np.asarray(confidence, dtype=np.float64)
        pooled = 1.0 - np.interp(x, self.confidence, self.correctness)
        if self.per_class is None or predicted is None:
            return pooled
        k = np.asarray(predicted).reshape(x.shape)
        out = pooled
        for i, curve in enumerate(self.per_class):
            rows = k == i
            if rows.any():
                out[rows] = curve.expected_error(x[rows])
        return out


class ErrorModel(_Frozen):
    """A regressor's model of its own absolute error, for estimating its error without labels
    (DLE-style): a second ONNX graph in the package, trained on part of the holdout to predict
    ``|y - y_hat|`` from the features (and the prediction), checked on the rest.

    The graph has one float32 input named ``input``, ``[None, n_features]`` (``inputs`` is
    ``features``) or ``[None, n_features + 1]`` with the model's prediction as the last column
    (``features+prediction``), and one float32 output: the expected absolute error, in the target's
    units (negative values are read as 0). It is verified when the package is loaded exactly as the
    main graph is: its SHA-256, its opsets and IR version, its input and output.

    Parameters:
        method: ``dle``: a direct model of the absolute error (NannyML's direct loss estimation).
        file: The graph's file name in the package directory.
        sha256: Hex SHA-256 of that file.
        estimator: Import path of the estimator's class that was converted.
        inputs: What the graph reads: the features, or the features and the prediction.
        fitted_on: Always ``holdout``: an error model fitted on training rows learns the training
            error, which is optimistic.
        rows: Holdout rows it was fitted on.
        checked_rows: Holdout rows it was checked on (not fitted on).
        reference_error: Mean estimated absolute error over all the holdout rows: what the served
            estimate is compared with (it depends on the inputs only, so every row counts).
        reference_error_std: Its standard deviation per row.
        checked_error: Mean estimated absolute error over the checked rows.
        realised_mae: The model's mean absolute error over the checked rows, to set beside it.
        check_mae: How far the estimate is from each checked row's absolute error (mean absolute
            difference).
        constant_mae: The same for a constant estimate (the fitted rows' mean absolute error): the
            error model is shipped only if it does better.

    Example:
        >>> e = ErrorModel(file="error_model.onnx", sha256="0" * 64, estimator="x.Y",
        ...                inputs="features+prediction", rows=600, checked_rows=400,
        ...                reference_error=1.2, reference_error_std=0.4, checked_error=1.22,
        ...                realised_mae=1.25, check_mae=0.7, constant_mae=0.8)
        >>> e.width(3)
        4
    """

    method: Literal["dle"] = "dle"
    file: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\.onnx$")]
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    estimator: str
    inputs: Literal["features", "features+prediction"]
    fitted_on: Literal["holdout"] = "holdout"
    rows: Annotated[int, Field(ge=1)]
    checked_rows: Annotated[int, Field(ge=1)]
    reference_error: Annotated[float, Field(ge=0.0)]
    reference_error_std: Annotated[float, Field(ge=0.0)]
    checked_error: Annotated[float, Field(ge=0.0)]
    realised_mae: Annotated[float, Field(ge=0.0)]
    check_mae: Annotated[float, Field(ge=0.0)]
    constant_mae: Annotated[float, Field(ge=0.0)]

    @model_validator(mode="after")
    def _own_file(self) -> Self:
        if self.file == "model.onnx":
            raise ValueError("the error model needs a file of its own, not model.onnx")
        return self

    def width(self, n_features: int) -> int:
        """Columns of the graph's input for a model of ``n_features`` features."""
        return n_features + (1 if self.inputs == "features+prediction" else 0)


class FeatureImportance(_Frozen):
    """How much the model's output depends on each feature, measured on labelled-or-not holdout rows.

    Permutation importance of the output (no labels needed): each feature's column is shuffled
    ``repeats`` times and the output's mean change is measured (classifiers: half the L1 distance
    between probability vectors; regressors: the absolute change of the value, in standard deviations
    of the output). ``values`` are each feature's share of the total, in feature order (all 0 when the
    output depends on none of them).

    Example:
        >>> FeatureImportance(rows=100, fitted_on="holdout", values={"a": 0.75, "b": 0.25}).values["a"]
        0.75
    """

    method: Literal["permutation_output"] = "permutation_output"
    rows: Annotated[int, Field(ge=1)]
    fitted_on: Literal["holdout", "reference"]
    repeats: Annotated[int, Field(ge=1)] = 3
    values: dict[str, Rate]


class Manifest(_Frozen):
    """Everything a server and a drift monitor need to know about one model package.

    Parameters:
        schema_version: Always ``"1"``; readers refuse other values.
        name: Model name (the package's parent directory).
        version: Model version (the package directory).
        task: What the model predicts.
        estimator: Import path of the estimator's class (scikit-learn, XGBoost, LightGBM), or
            ``onnx:<producer>`` for a model brought as an ONNX file.
        hyperparameters: The estimator's ``get_params(deep=False)``, made JSON-safe; for an ONNX
            file, where it came from (file name and SHA-256, producer, metadata) and what the
            packaging changed in its graph.
        features: The input columns, in order.
        outputs: The ONNX output names and class labels.
        training: Rows and scores.
        reference: Distributions on the reference data.
        versions: Library versions and opsets.
        created_at: When the package was built (timezone-aware).
        onnx_sha256: Hex SHA-256 of ``model.onnx``; the manifest itself is not covered.
        calibration: Classifiers: the expected correctness of a prediction given its confidence, fitted
            on the holdout (estimated performance without labels); absent when not measured.
        importance: How much the model's output depends on each feature (attribution of drift).
        error_model: Regressors: the model of the absolute error shipped beside ``model.onnx``
            (estimated performance without labels); absent when the holdout was too small for one.
    """

    schema_version: Literal["1"] = MANIFEST_SCHEMA_VERSION
    name: ModelName
    version: ModelVersion
    task: Task
    estimator: str
    features: Annotated[tuple[Feature, ...], Field(min_length=1)]
    outputs: Outputs
    hyperparameters: dict[str, JsonValue]
    training: TrainingSummary
    reference: ReferenceStatistics
    versions: BuildVersions
    created_at: AwareDatetime
    onnx_sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    # Left out of the JSON when absent, like BuildVersions.frameworks: a package without them stays
    # readable by the previous release's workers (manifests forbid unknown fields).
    calibration: Calibration | None = Field(default=None, exclude_if=lambda value: value is None)
    importance: FeatureImportance | None = Field(default=None, exclude_if=lambda value: value is None)
    error_model: ErrorModel | None = Field(default=None, exclude_if=lambda value: value is None)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Feature names in input-column order."""
        return tuple(f.name for f in self.features)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        names = self.feature_names
        if len(set(names)) != len(names):
            raise ValueError("feature names must be unique")
        _check_outputs(self.task, self.outputs)
        _check_metrics(self.task, self.training)
        _check_reference(self.task, self.features, self.reference)
        if self.calibration is not None and self.task == "regression":
            raise ValueError("calibration is for classifiers: a regressor has no class probabilities")
        if self.calibration is not None and self.calibration.per_class is not None:
            n_classes = len(self.outputs.class_labels or ())
            if len(self.calibration.per_class) != n_classes:
                raise ValueError(f"calibration.per_class needs one curve per class ({n_classes})")
        if self.error_model is not None and self.task != "regression":
            raise ValueError("error_model is for regressors: a classifier's error comes from its calibration")
        if self.importance is not None and tuple(self.importance.values) != names:
            raise ValueError("importance.values must have one entry per feature, in feature order")
        return self


def _check_outputs(task: Task, outputs: Outputs) -> None:
    if task == "regression":
        if outputs.value is None or outputs.label or outputs.probabilities or outputs.class_labels:
            raise ValueError("a regression model has exactly one output, 'value'")
        return
    if outputs.label is None or outputs.probabilities is None or outputs.value is not None:
        raise ValueError("a classifier has a 'label' and a 'probabilities' output and no 'value'")
    n_classes = len(outputs.class_labels or ())
    if len(set(outputs.class_labels or ())) != n_classes:
        raise ValueError("class labels must be unique")
    if task == "binary_classification" and n_classes != 2:
        raise ValueError(f"a binary classifier needs 2 class labels, got {n_classes}")
    if task == "multiclass_classification" and n_classes < 3:
        raise ValueError(f"a multiclass classifier needs at least 3 class labels, got {n_classes}")


def _check_metrics(task: Task, training: TrainingSummary) -> None:
    if training.evaluated_on == "none":
        scores = (training.accuracy, training.roc_auc, training.mae, training.r2)
        if any(score is not None for score in scores):
            raise ValueError("a model evaluated on no labelled rows reports no scores")
        return
    if task == "regression":
        if training.accuracy is not None or training.roc_auc is not None:
            raise ValueError("a regression model reports mae and r2, not accuracy or roc_auc")
        if training.mae is None or training.r2 is None:
            raise ValueError("a regression model reports mae and r2")
    else:
        if training.mae is not None or training.r2 is not None:
            raise ValueError("a classifier reports accuracy and roc_auc, not mae or r2")
        if training.accuracy is None:
            raise ValueError("a classifier reports accuracy")


def _check_reference(task: Task, features: tuple[Feature, ...], reference: ReferenceStatistics) -> None:
    expected = [f.name for f in features]
    if list(reference.features) != expected:
        raise ValueError("reference.features must have one entry per feature, in feature order")
    for feature in features:
        stats = reference.features[feature.name]
        if stats.kind != feature.type:
            raise ValueError(f"reference statistics of {feature.name!r} must be {feature.type}")
        if isinstance(stats, CategoricalStatistics) and tuple(stats.frequencies) != (feature.categories):
            raise ValueError(f"reference frequencies of {feature.name!r} must list its categories")
    quantity = {
        "binary_classification": "positive_probability",
        "multiclass_classification": "max_probability",
        "regression": "value",
    }[task]
    if reference.output.quantity != quantity:
        raise ValueError(f"reference.output.quantity must be {quantity!r} for {task}")
    if (task == "regression") != (reference.output.label_frequencies is None):
        raise ValueError("reference.output.label_frequencies is given for classifiers only")
    r = reference.reconstruction
    if r is not None:
        numeric = {f.name for f in features if f.type == "numeric"}
        if not set(r.features) <= numeric or list(r.features) != [n for n in expected if n in r.features]:
            raise ValueError("reference.reconstruction.features must be numeric features, in feature order")
