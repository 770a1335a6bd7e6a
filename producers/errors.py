"""Errors the producers raise on purpose: one root, a narrow subclass per kind of problem."""

from __future__ import annotations

__all__ = ["ColumnMismatchError", "ProducerError", "PublishError", "ScheduleError", "SourceError"]


class ProducerError(Exception):
    """Root of every error the producers raise on purpose; the message says what to fix."""


class ScheduleError(ProducerError):
    """A drift schedule is invalid or does not fit the model (unknown feature, no labels, ...)."""


class SourceError(ProducerError):
    """A data source cannot be read: unknown example model, unreadable CSV or manifest."""


class ColumnMismatchError(SourceError):
    """A CSV's columns do not match the package's features; nothing was sent.

    Parameters:
        path: The CSV file.
        missing: Features the file lacks.
        unexpected: Columns of the file that are neither a feature nor the label column.

    Example:
        >>> print(ColumnMismatchError("rows.csv", ["plan"], ["colour"]))
        rows.csv: columns do not match the package's features: missing 'plan'; unexpected 'colour'
    """

    def __init__(self, path: str, missing: list[str], unexpected: list[str]) -> None:
        self.path = path
        self.missing = missing
        self.unexpected = unexpected
        parts = []
        if missing:
            parts.append("missing " + ", ".join(repr(c) for c in missing))
        if unexpected:
            parts.append("unexpected " + ", ".join(repr(c) for c in unexpected))
        super().__init__(f"{path}: columns do not match the package's features: {'; '.join(parts)}")


class PublishError(ProducerError):
    """Kafka refused or did not acknowledge messages, or could not be reached."""
