"""One root error type for driftline, with narrow subclasses.

Callers catch :class:`DriftlineError` to handle anything driftline raises on purpose; a sink or loader
never lets a raw client exception escape, it wraps it in one of these with the cause chained.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError

__all__ = [
    "ConfigurationError",
    "CorruptModelError",
    "DigestMismatchError",
    "DriftlineError",
    "GraphMismatchError",
    "ManifestError",
    "PackageError",
    "ParityError",
    "PickleRefusedError",
    "PredictionError",
    "ServiceUnavailableError",
    "SinkError",
    "UnsupportedOpsetError",
    "describe_validation_error",
]


class DriftlineError(Exception):
    """Root of every error driftline raises on purpose."""


class ConfigurationError(DriftlineError):
    """A setting or command-line argument is invalid; the message names it."""


class PackageError(DriftlineError):
    """A model package is missing, corrupt or inconsistent; the message names the file and the problem."""


class PickleRefusedError(PackageError):
    """A pickle/joblib file was offered as a model: loading it would run arbitrary code."""


class ManifestError(PackageError):
    """``manifest.json`` is missing, is not valid JSON, fails validation or has an unknown schema version."""


class CorruptModelError(PackageError):
    """``model.onnx`` is missing, unreadable or not a valid ONNX model."""


class DigestMismatchError(PackageError):
    """``model.onnx`` does not have the SHA-256 digest its manifest records."""


class GraphMismatchError(PackageError):
    """The ONNX graph's inputs or outputs do not match the manifest's features or outputs."""


class UnsupportedOpsetError(PackageError):
    """The model needs an opset or IR version that the installed onnxruntime does not support."""


class ParityError(PackageError):
    """The converted ONNX model disagrees with the scikit-learn estimator beyond tolerance."""


class PredictionError(DriftlineError):
    """A batch could not be scored: wrong shape, model not loaded, or the runtime failed."""


class SinkError(DriftlineError):
    """An alert or metrics sink failed to deliver; wraps the client's own exception."""


class ServiceUnavailableError(DriftlineError):
    """A service driftline needs (Kafka, InfluxDB) did not answer."""


def describe_validation_error(exc: ValidationError, limit: int = 3, *, whole: str = "event") -> str:
    """A pydantic error on one line: ``loc: message`` for the first ``limit`` problems.

    ``whole`` names an error about the whole object (an empty location).
    """
    errors = exc.errors(include_url=False, include_input=False)
    parts = [f"{'.'.join(str(p) for p in e['loc']) or whole}: {e['msg']}" for e in errors[:limit]]
    more = exc.error_count() - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)
