"""All monitors of one served model version, built from its package's manifest.

May import: :mod:`agent.monitoring` (its other modules), :mod:`agent.models`, :mod:`schemas`.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from agent.models.package import Predictions
from agent.models.registry import ServedModel
from agent.monitoring.budget import BudgetSplit, within_budget
from agent.monitoring.columns import ColumnSet
from agent.monitoring.concept import ErrorMonitor
from agent.monitoring.detectors import Detection, DriftConfig
from agent.monitoring.estimation import (
    EstimateCheck,
    EstimatedAbsErrorMonitor,
    EstimatedErrorMonitor,
    JoinedTally,
)
from agent.monitoring.features import FeatureDriftMonitor
from agent.monitoring.incidents import IncidentKey
from agent.monitoring.multivariate import RECONSTRUCTION_COLUMN, ReconstructionMonitor
from agent.monitoring.technical import LatencyWatch, RateWatch
from agent.monitoring.transforms import (
    CategoricalTransform,
    ColumnTransform,
    PercentileTransform,
    ReferenceTransform,
)
from schemas.alert import AlertKind
from schemas.manifest import CategoricalStatistics, Manifest, NumericStatistics

__all__ = [
    "RECOVERY_EVENTS",
    "ModelMonitor",
    "MonitorSettingsView",
    "class_indices",
    "output_quantity",
    "recovery_blocks",
    "reference_range",
    "settled_before",
]


@dataclass(frozen=True)
class MonitorSettingsView:
    """The monitoring knobs (a plain copy of ``Settings().monitoring``)."""

    false_alarms_per_million: float = 1.0
    recovery_shift_sd: float = 0.15
    alert_margin_z: float = 2.0
    rate_window_events: int = 2000
    rate_margin: float = 0.05
    max_watched_fields: int = 32
    latency_warmup_batches: int = 50
    latency_threshold: float = 20.0
    concept_drift: bool = True
    join_ttl_s: float = 900.0
    join_max_entries: int = 1_000_000
    join_restore_timeout_s: float = 120.0
    join_grace_s: float = 60.0


def output_quantity(manifest: Manifest, predictions: Predictions) -> npt.NDArray[np.float64]:
    """The monitored output per row: P(positive class), the highest probability, or the value."""
    quantity = manifest.reference.output.quantity
    if quantity == "value":
        assert predictions.values is not None
        return predictions.values.astype(np.float64)
    assert predictions.probabilities is not None
    probabilities = np.asarray(predictions.probabilities, dtype=np.float64)
    if quantity == "positive_probability":
        return probabilities[:, 1]
    return np.asarray(probabilities.max(axis=1), dtype=np.float64)


def class_indices(label_index: dict[str, int], predictions: Predictions) -> npt.NDArray[np.float64] | None:
    """Each row's predicted class as its index (``NaN`` for a label the manifest does not list), or
    ``None`` when the batch carries no labels (a regressor).

    >>> labels = np.array(["yes", "no", "maybe"], dtype=object)
    >>> class_indices({"no": 0, "yes": 1}, Predictions(labels=labels)).tolist()
    [1.0, 0.0, nan]
    >>> class_indices({"0": 0, "1": 1}, Predictions(labels=np.array([1, 0, 7]))).tolist()
    [1.0, 0.0, nan]
    """
    labels = predictions.labels
    if labels is None:
        return None
    if labels.dtype.kind in "iu" and all(label_index.get(str(i)) == i for i in range(len(label_index))):
        # Integer labels 0..k-1 in order: the label is the index.
        out = labels.astype(np.float64)
        out[(out < 0) | (out >= len(label_index))] = np.nan
        return out
    get = label_index.get
    return np.array([get(str(label), math.nan) for label in labels.tolist()], dtype=np.float64)


def _column_transform(stats: NumericStatistics | CategoricalStatistics) -> ColumnTransform:
    if isinstance(stats, CategoricalStatistics):
        # The serving matrix holds a category's index as a float, so the transform is keyed by it
        # (and names each category by its name in alerts).
        names = list(stats.frequencies)
        return CategoricalTransform(
            {float(i): f for i, f in enumerate(stats.frequencies.values())},
            labels={float(i): name for i, name in enumerate(names)},
        )
    if not stats.quantiles:
        # Every reference value was missing: nothing to compare against; a flat transform.
        return PercentileTransform([0.0, 0.0])
    return PercentileTransform(stats.quantiles)


def _error_monitor(manifest: Manifest) -> ErrorMonitor | None:
    """The concept-drift monitor, against the error the package measured on its holdout."""
    t = manifest.training
    if manifest.task == "regression":
        return ErrorMonitor.for_regression(t.mae) if t.mae else None
    if t.accuracy is None:
        return None
    # A perfect (or hopeless) holdout score gives no rate to standardise against: bound it.
    return ErrorMonitor.for_classification(min(max(1.0 - t.accuracy, 0.01), 0.99))


def _class_transform(manifest: Manifest) -> CategoricalTransform | None:
    """A classifier's predicted classes on its reference, keyed by class index (as the observer feeds
    them); ``None`` for a regressor or a reference with no class predicted."""
    frequencies = manifest.reference.output.label_frequencies
    labels = manifest.outputs.class_labels
    if not frequencies or not labels:
        return None
    index = {str(label): i for i, label in enumerate(labels)}
    known: dict[Hashable, float] = {float(index[k]): f for k, f in frequencies.items() if k in index}
    if sum(known.values()) <= 0:
        return None
    return CategoricalTransform(known, labels={float(index[k]): k for k in frequencies if k in index})


def reference_range(stats: NumericStatistics) -> tuple[float, float] | None:
    """``[min, max]`` of a numeric feature's reference values, widened by a few float32 ulps (the
    serving matrix is float32: a reference extreme may come back one rounding step beyond it);
    ``None`` when every reference value was missing.

    >>> low, high = reference_range(NumericStatistics.from_values(np.arange(101.0)))
    >>> low < 0.0 < 100.0 < high < 100.00005
    True
    """
    if not stats.quantiles:
        return None
    low, high = stats.quantiles[0], stats.quantiles[-1]
    slack = 4 * float(np.finfo(np.float32).eps)
    return low - slack * abs(low) - 1e-12, high + slack * abs(high) + 1e-12


def _estimate_monitor(served: ServedModel) -> EstimatedErrorMonitor | EstimatedAbsErrorMonitor | None:
    """The estimated-error monitor the package allows: from a classifier's calibration, or from a
    regressor's error model (loaded with the package)."""
    m = served.manifest
    if m.calibration is not None:
        return EstimatedErrorMonitor(m.calibration)
    if m.error_model is not None and served.model.has_error_model:
        return EstimatedAbsErrorMonitor(m.error_model)
    return None


RECOVERY_EVENTS = 512
"""About how many outcomes the joined error judges its recovery over. Its blocks are large (a block
holds about 8 expected errors: 320 outcomes at a 2.6 % error rate), and its whole window of 64 of
them (20,480 outcomes there) kept an incident open through a 1,000-event lull, so that the next
rise, from a new cause, was a reminder the gate held: on an iris tree, the demo's label flip after a
covariate shift went unreported. 512 events measure the mean within 0.05 of its reference sd, a
third of the recovery bound (0.15)."""


def recovery_blocks(config: DriftConfig) -> int:
    """Blocks over which the joined error judges its recovery: about :data:`RECOVERY_EVENTS`, at
    least 2, at most its window.

    >>> from agent.monitoring.detectors import DriftConfig
    >>> recovery_blocks(DriftConfig().with_block_size(320)), recovery_blocks(DriftConfig())
    (2, 16)
    """
    return min(config.window_blocks, max(2, math.ceil(RECOVERY_EVENTS / config.block_size)))


def settled_before(n_events: int, config: DriftConfig, blocks: int | None = None) -> int:
    """The latest event count of a column's last detection for which its window of recent blocks may
    judge a recovery: the window must hold no event from before that detection (nor from before the
    monitor started). Right after a detection the window still holds mostly events from before the
    change and looks back to normal: the incident just opened would close at once, and the same
    ongoing drift be alerted again (by a restarted worker, whose detectors start from the reference).
    ``blocks``: the window's length when it is not the whole window (:func:`recovery_blocks`)."""
    return n_events - (config.window_blocks if blocks is None else blocks) * config.block_size


@dataclass(eq=False)
class ModelMonitor:
    """All drift monitors of one served model version."""

    served: ServedModel
    settings: MonitorSettingsView
    features: FeatureDriftMonitor = field(init=False)
    budget: BudgetSplit = field(init=False)
    """The false-alarm budget split over the feature monitor's streams: its detectors' parameters."""
    missing: list[RateWatch] = field(init=False)
    out_of_range: dict[int, RateWatch] = field(init=False)
    """Features whose training module declared a range: values outside it (counted by the encoder)."""
    outside_reference: dict[int, RateWatch] = field(init=False)
    """Every other numeric feature: values strictly outside its reference ``[min, max]``."""
    unknown_categories: dict[int, RateWatch] = field(init=False)
    """Categorical features that serve an unknown category as missing: such values (counted by the
    encoder), which the model was not built with."""
    unknown_seen: dict[int, dict[str, int]] = field(init=False)
    """Per such feature, the categories met since its watch's last window closed (a bounded tally:
    :func:`~agent.monitoring.technical.tally`), which its alert names."""
    reference_bounds: tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]] = field(
        init=False
    )
    """The columns of :attr:`outside_reference` and their reference minima and maxima, as arrays."""
    wrong_type: dict[str, RateWatch] = field(default_factory=dict)
    unseen: dict[str, RateWatch] = field(default_factory=dict)
    unknown_fields: RateWatch = field(init=False)
    """Requests carrying any field the model has no feature for, whatever its name."""
    dead_letters: RateWatch = field(init=False)
    """Requests for the model dead-lettered, among all its requests (accepted or not)."""
    latency: LatencyWatch = field(init=False)
    errors: ErrorMonitor | None = field(init=False)
    label_index: dict[str, int] = field(init=False)
    """A classifier's class label (as text) -> its index in ``manifest.outputs.class_labels``."""
    findings_alerted: bool = False
    findings_heard: set[tuple[str, str | None]] = field(default_factory=set)
    """A fleet monitor's: the (package, installed version) findings workers shipped, alerted once."""
    last_detection: dict[str, int] = field(default_factory=dict)
    """Column -> the feature monitor's event count when a detector last fired on it."""
    unconfirmed: dict[str, tuple[Detection, int]] = field(default_factory=dict)
    """Column -> a detection away from the reference that measured under ``recovery_shift_sd``, and
    the event count then: judged again over the next full window (``DriftObserver``)."""
    last_error_detection: int = 0
    """The error monitor's event count when a detector last fired on it."""
    column_incidents: tuple[IncidentKey, ...] = field(init=False)
    """The incident key of every monitored column (data drift per feature, prediction drift)."""
    estimated: EstimatedErrorMonitor | EstimatedAbsErrorMonitor | None = field(init=False)
    """The estimated error of a classifier whose package carries a calibration, or of a regressor
    whose package carries an error model."""
    estimate_check: EstimateCheck = field(default_factory=EstimateCheck)
    joined: JoinedTally = field(default_factory=JoinedTally)
    """A classifier's joined predictions, wrong and estimated, for its concept alerts (in a fleet, as
    the workers that joined them shipped them)."""
    """Joined predictions' realised error beside the error estimated for them."""
    last_estimate_detection: int = 0
    """The estimated-error monitor's event count when a detector last fired on it."""
    reconstruction: ReconstructionMonitor | None = field(init=False)
    """The reconstruction error of the numeric features (multivariate drift), when the package has a
    reconstruction (two or more numeric features)."""

    def __post_init__(self) -> None:
        m = self.served.manifest
        ref = m.reference
        columns = [_column_transform(ref.features[f.name]) for f in m.features]
        output = ref.output.statistics
        s = self.settings

        def feature_monitor(config: DriftConfig) -> FeatureDriftMonitor:
            return FeatureDriftMonitor(
                m.feature_names,
                ReferenceTransform(columns),
                output_reference=PercentileTransform(output.quantiles) if output.quantiles else None,
                output_name="prediction",
                class_reference=_class_transform(m),
                class_name="predicted_class",
                output_shape=m.task == "regression",
                config=config,
            )

        self.features, self.budget = within_budget(feature_monitor, s.false_alarms_per_million)
        self.missing = [
            RateWatch(ref.features[f.name].missing_rate, s.rate_margin, s.rate_window_events)
            for f in m.features
        ]
        self.out_of_range = {
            i: RateWatch(0.0, s.rate_margin, s.rate_window_events)
            for i, f in enumerate(m.features)
            if f.range
        }
        self.unknown_categories = {
            i: RateWatch(0.0, s.rate_margin, s.rate_window_events)
            for i, f in enumerate(m.features)
            if f.unknown_category == "missing"
        }
        self.unknown_seen = {i: {} for i in self.unknown_categories}
        bounds = {
            i: reference_range(stats)
            for i, f in enumerate(m.features)
            if not f.range and isinstance(stats := ref.features[f.name], NumericStatistics)
        }
        watched = {i: b for i, b in bounds.items() if b is not None}
        self.outside_reference = {i: RateWatch(0.0, s.rate_margin, s.rate_window_events) for i in watched}
        self.reference_bounds = (
            np.array(list(watched), dtype=np.int64),
            np.array([b[0] for b in watched.values()], dtype=np.float64),
            np.array([b[1] for b in watched.values()], dtype=np.float64),
        )
        self.dead_letters = RateWatch(0.0, s.rate_margin, s.rate_window_events)
        self.unknown_fields = RateWatch(0.0, s.rate_margin, s.rate_window_events)
        self.latency = LatencyWatch(s.latency_warmup_batches, s.latency_threshold)
        self.label_index = {str(label): i for i, label in enumerate(m.outputs.class_labels or ())}
        self.errors = _error_monitor(m)
        self.estimated = _estimate_monitor(self.served)
        outputs = self.features.output_columns
        self.column_incidents = tuple(
            IncidentKey(m.name, (AlertKind.PREDICTION if j in outputs else AlertKind.DATA).value, name)
            for j, name in enumerate(self.features.names)
        )
        self.reconstruction = None
        if ref.reconstruction is not None:
            # Its own calibration, not the budget's: the error is a skewed, upward-only stream whose
            # block z-scores have a heavier upper tail than the Gaussian ones the budget's curves were
            # measured on. Given a small model's loose budget parameters it fired on a stationary pair
            # after 1,000 events; with these, 2 false alarms in 2e7 events
            # (bench/calibrate_reconstruction.py).
            self.reconstruction = ReconstructionMonitor(
                ref.reconstruction, m.feature_names, config=DriftConfig()
            )
            self.column_incidents += (IncidentKey(m.name, AlertKind.DATA.value, RECONSTRUCTION_COLUMN),)

    def column_sets(self) -> dict[str, ColumnSet]:
        """The detectors' column sets by name (:data:`~agent.monitoring.fleet.PARTS`): what a fleet
        worker ships as blocks and the model's monitor consumes."""
        sets = {"features": self.features.columns}
        if self.reconstruction is not None:
            sets["reconstruction"] = self.reconstruction.columns
        if self.estimated is not None:
            sets["estimated"] = self.estimated.columns
        if self.errors is not None:
            sets["errors"] = self.errors.columns
        return sets

    @property
    def name(self) -> str:
        return self.served.name

    @property
    def version(self) -> str:
        return self.served.version
