"""Monitoring: drift of a served model's inputs, output and error, and technical drift, as plain values.

Owns: reference standardisation (``transforms``), exact block sums (``blocks``), the block-mean detectors
(``detectors``, over river's ADWIN and Page-Hinkley imported without the rest of ``river.drift``:
``river_drift``) and their parameters from a model's false-alarm budget (``budget``), the column engine
(``columns``), the data/prediction monitor (``features``), the features' reconstruction error
(``multivariate``), the
concept monitor (``concept``), the estimated error of a calibrated classifier (``estimation``), the
likely drivers of an alert (``attribution``) and the observer's use of both (``performance``),
technical rates and latency (``technical``), the per-model monitors (``model_monitor``), alert wording
(``wording``), the outcome join (``join``), the incident gate (``incidents``) and the incidents
across kinds it groups (``grouping``), what changed in each model's serving context (``context``), and
the observer that the serving layer calls (``observer``,
with its contract in ``batch``).

May import: :mod:`agent.models`, :mod:`agent.errors`, :mod:`agent.metrics`, :mod:`agent.settings`,
:mod:`schemas`. Knows no transport: no Kafka client, topic name or message type; it returns alerts and
changelog records, and the serving layer publishes them.
"""

from __future__ import annotations

from agent.monitoring.columns import WindowStats
from agent.monitoring.concept import ErrorMonitor
from agent.monitoring.detectors import AdwinDetector, Detection, DriftConfig, PageHinkleyDetector
from agent.monitoring.features import FeatureDriftMonitor
from agent.monitoring.transforms import (
    REFERENCE_MEAN,
    REFERENCE_STD,
    UNSEEN,
    CategoricalTransform,
    ColumnTransform,
    PercentileTransform,
    ReferenceTransform,
)

__all__ = [
    "REFERENCE_MEAN",
    "REFERENCE_STD",
    "UNSEEN",
    "AdwinDetector",
    "CategoricalTransform",
    "ColumnTransform",
    "Detection",
    "DriftConfig",
    "ErrorMonitor",
    "FeatureDriftMonitor",
    "PageHinkleyDetector",
    "PercentileTransform",
    "ReferenceTransform",
    "WindowStats",
]
