"""Reference and holdout rows from CSV files, for packaging a model that arrives as an ONNX file.

A training module hands the builder its matrices; a model brought as an ONNX file comes with its data
as CSV instead: one header row naming the columns, one row per example. Every column except the
label column is a feature, in file order, and must be numeric, since the ONNX input is a float32
matrix; an empty cell (or ``nan``) is a missing value. Label cells are kept as text and parsed once
the model's task and classes are known (:func:`parse_labels`).

Example:
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "reference.csv"
    >>> _ = path.write_text("age,income,churned\\n31,52000,0\\n47,,1\\n")
    >>> rows = read_rows(path, label_column="churned")
    >>> rows.feature_names, rows.X.tolist(), rows.labels
    (('age', 'income'), [[31.0, 52000.0], [47.0, nan]], ('0', '1'))
    >>> parse_labels(rows.labels, "binary_classification", (0, 1), path).tolist()
    [0, 1]
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.errors import ConfigurationError
from agent.models.package import refuse_pickle
from schemas.manifest import Task

__all__ = ["CsvRows", "parse_labels", "read_rows"]


@dataclass(frozen=True, eq=False)
class CsvRows:
    """The rows of one CSV file.

    Parameters:
        path: The file.
        feature_names: Feature columns, in the order of ``X``'s columns.
        X: ``(n, n_features)`` float64, NaN where a cell was empty.
        labels: The label column's cells (stripped; ``""`` where empty), or ``None`` when the file
            has no label column.
    """

    path: Path
    feature_names: tuple[str, ...]
    X: npt.NDArray[np.float64]
    labels: tuple[str, ...] | None


def _number(cell: str) -> float:
    text = cell.strip()
    if not text:
        return math.nan
    value = float(text)  # ValueError for text; "nan" parses as NaN, a missing value
    if math.isinf(value):
        raise ValueError("infinite")
    return value


def read_rows(
    path: Path,
    *,
    label_column: str | None = None,
    require_label: bool = False,
    features: Sequence[str] | None = None,
) -> CsvRows:
    """Reads ``path``; :class:`~agent.errors.ConfigurationError` naming the file (and the line and
    column) for anything that is not a numeric table.

    ``features``: the feature columns the file must have (the reference file's), returned in that
    order whatever the file's order. ``label_column``: dropped from the features when present;
    ``require_label``: it must be present.
    """
    refuse_pickle(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.reader(file)
            header = [c.strip() for c in next(reader, [])]
            if not any(header):
                raise ConfigurationError(f"{path}: empty; expected a header row naming the columns")
            duplicates = sorted({c for c in header if header.count(c) > 1})
            if duplicates:
                raise ConfigurationError(f"{path}: duplicate columns {duplicates}")
            if "" in header:
                raise ConfigurationError(f"{path}: column {header.index('') + 1} has no name")
            has_label = label_column is not None and label_column in header
            if require_label and not has_label:
                raise ConfigurationError(f"{path}: no label column {label_column!r}; columns are {header}")
            names = [c for c in header if not (has_label and c == label_column)]
            if not names:
                raise ConfigurationError(f"{path}: no feature columns besides the label {label_column!r}")
            if features is not None:
                missing = [f for f in features if f not in names]
                unexpected = [c for c in names if c not in features]
                if missing or unexpected:
                    raise ConfigurationError(
                        f"{path}: its feature columns differ from the reference file's: "
                        f"missing {missing}, unexpected {unexpected}"
                    )
                names = list(features)
            positions = [header.index(n) for n in names]
            label_at = header.index(label_column) if has_label and label_column is not None else -1
            rows: list[list[float]] = []
            labels: list[str] = []
            for cells in reader:
                if not cells:
                    continue  # csv yields [] for a blank line
                if len(cells) != len(header):
                    raise ConfigurationError(
                        f"{path}, line {reader.line_num}: {len(cells)} cells, the header has {len(header)}"
                    )
                try:
                    rows.append([_number(cells[p]) for p in positions])
                except ValueError:
                    bad = next(p for p in positions if _is_bad(cells[p]))
                    raise ConfigurationError(
                        f"{path}, line {reader.line_num}, column {header[bad]!r}: {cells[bad]!r} is not a "
                        "finite number; every feature column must be numeric (the ONNX input is float32; "
                        "encode categories as numbers before exporting the model)"
                    ) from None
                if label_at >= 0:
                    labels.append(cells[label_at].strip())
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ConfigurationError(f"{path}: not a readable UTF-8 CSV file: {exc}") from exc
    if not rows:
        raise ConfigurationError(f"{path}: a header but no rows")
    X = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(names))
    return CsvRows(path, tuple(names), X, tuple(labels) if label_at >= 0 else None)


def _is_bad(cell: str) -> bool:
    try:
        _number(cell)
    except ValueError:
        return True
    return False


def parse_labels(
    cells: Sequence[str], task: Task, class_labels: Sequence[int] | Sequence[str], path: Path
) -> npt.NDArray[Any]:
    """Label cells as the model's labels: floats for a regressor (NaN where empty), else the classes'
    type (``None`` where empty). A class the model does not have is a
    :class:`~agent.errors.ConfigurationError` naming it."""
    if task == "regression":
        values = []
        for i, cell in enumerate(cells):
            try:
                values.append(_number(cell))
            except ValueError:
                raise ConfigurationError(
                    f"{path}, row {i + 1}: label {cell!r} is not a finite number (the model is a regressor)"
                ) from None
        return np.asarray(values, dtype=np.float64)
    numeric = all(isinstance(c, int) for c in class_labels)
    known = set(class_labels)
    parsed: list[int | str | None] = []
    unknown: set[str] = set()
    for cell in cells:
        if not cell:
            parsed.append(None)
            continue
        label: int | str = cell
        if numeric:
            try:
                number = float(cell)
            except ValueError:
                number = math.nan
            if number.is_integer():
                label = int(number)
        if label not in known:
            unknown.add(cell)
        parsed.append(label)
    if unknown:
        raise ConfigurationError(
            f"{path}: labels {sorted(unknown)[:10]} are not among the model's classes {list(class_labels)}"
        )
    return np.asarray(parsed, dtype=object)
