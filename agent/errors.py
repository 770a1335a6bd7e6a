"""One root error type for driftline, with narrow subclasses.

Callers catch :class:`DriftlineError` to handle anything driftline raises on purpose; a sink or loader
never lets a raw client exception escape, it wraps it in one of these with the cause chained.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "DriftlineError",
    "PackageError",
    "PickleRefusedError",
    "ServiceUnavailableError",
    "SinkError",
]


class DriftlineError(Exception):
    """Root of every error driftline raises on purpose."""


class ConfigurationError(DriftlineError):
    """A setting or command-line argument is invalid; the message names it."""


class PackageError(DriftlineError):
    """A model package is missing, corrupt or inconsistent; the message names the file and the problem."""


class PickleRefusedError(PackageError):
    """A pickle/joblib file was offered as a model: loading it would run arbitrary code."""


class SinkError(DriftlineError):
    """An alert or metrics sink failed to deliver; wraps the client's own exception."""


class ServiceUnavailableError(DriftlineError):
    """A service driftline needs (Kafka, InfluxDB) did not answer."""
