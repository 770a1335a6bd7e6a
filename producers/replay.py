"""Replay a CSV file as a stream of requests (and outcomes, given a label column) for a model package.

The columns must be exactly the package's features, plus the label column if one is named; the
feature names come from the package's ``manifest.json``, read with :class:`schemas.manifest.Manifest`.
A file whose columns do not match is rejected before anything is sent, naming the missing and the
unexpected columns. Rows are replayed in file order (from the top again when ``count`` asks for more
rows than the file has), or with ``shuffle`` in an order drawn from the seed: a file sorted or grouped
(by time, by class, by whoever wrote its rows) drifts by itself in file order, which the monitor then
reports (scikit-learn's digits, in their file order, raised 18 data alerts in 30,000 events; shuffled,
none); a drift schedule applies as it does to a scenario, with the manifest's
reference standard deviations as the unit of a covariate shift.

Values are sent as they are in the file: a numeric feature's cell is parsed as a number, and a cell
that is not a number is sent as the string it is (the agent counts it as a wrong type), an empty
cell as ``null`` (missing). The whole file is read into memory first.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import ValidationError

from producers.errors import ColumnMismatchError, SourceError
from producers.schedule import Scenario
from producers.stream import DEFAULT_START_TIME, EventStream, Label, next_class
from schemas.manifest import Manifest, NumericStatistics

__all__ = ["CsvSource", "load_csv", "read_manifest", "replay", "shuffled"]


def read_manifest(package: Path) -> Manifest:
    """The manifest of a package directory (``NAME/VERSION/``) or of a ``manifest.json`` path."""
    path = package / "manifest.json" if package.is_dir() else package
    try:
        return Manifest.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise SourceError(f"cannot read the package manifest {path}: {exc.strerror or exc}") from exc
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "manifest"
        raise SourceError(f"{path} is not a valid manifest: {where}: {first['msg']}") from None


@dataclass(frozen=True, eq=False)
class CsvSource:
    """The rows of a CSV file, in file order, as a row source for an
    :class:`~producers.stream.EventStream`.

    Parameters:
        model: The package's model name.
        feature_names: The package's features, in order.
        rows: One list of values per row, in feature order.
        labels: Each row's label (``None`` where unknown or when the file has no label column).
        reference_std: The manifest's reference standard deviation of each numeric feature.
        outcome_field: ``value`` for a regressor, ``label`` for a classifier.
        has_labels: Whether the file has a label column.
        classes: The classifier's class labels, in order (concept drift moves a label to the next).
        target_mean: A regressor's mean label in the file (concept drift mirrors values around it).
        lenient: Features whose missing-value policy lets a request without them through (``allow``
            or ``impute``): a request that lacks one is no broken request.
    """

    model: str
    feature_names: tuple[str, ...]
    rows: list[list[Any]]
    labels: list[Label | None]
    reference_std: Mapping[str, float]
    outcome_field: Literal["label", "value"]
    has_labels: bool
    classes: tuple[Label, ...]
    target_mean: float
    lenient: frozenset[str] = frozenset()

    def take(self, start: int, n: int, rng: np.random.Generator) -> tuple[list[list[Any]], list[Any]]:
        size = len(self.rows)
        index = [(start + k) % size for k in range(n)]
        return [list(self.rows[i]) for i in index], [self.labels[i] for i in index]

    def alter_label(self, label: Label) -> Label:
        if self.outcome_field == "value":
            return 2.0 * self.target_mean - float(label)
        return next_class(self.classes, label)


def load_csv(path: Path, manifest: Manifest, label_column: str | None = None) -> CsvSource:
    """Reads and checks ``path`` against ``manifest``; :class:`ColumnMismatchError` if the columns
    are not exactly the features (plus ``label_column``)."""
    features = manifest.feature_names
    try:
        with path.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.reader(file)
            header = [c.strip() for c in next(reader, [])]
            if not header:
                raise SourceError(f"{path} is empty: expected a header row naming the features")
            if len(set(header)) != len(header):
                duplicates = sorted({c for c in header if header.count(c) > 1})
                raise SourceError(f"{path}: duplicate columns {', '.join(map(repr, duplicates))}")
            expected = set(features) | ({label_column} if label_column else set())
            missing = [f for f in features if f not in header]
            if label_column and label_column not in header:
                missing.append(label_column)
            unexpected = [c for c in header if c not in expected]
            if missing or unexpected:
                raise ColumnMismatchError(str(path), missing, unexpected)
            position = [header.index(f) for f in features]
            parsers = [_numeric if f.type == "numeric" else _category for f in manifest.features]
            label_at = header.index(label_column) if label_column else -1
            to_label = _label_parser(manifest)
            rows: list[list[Any]] = []
            labels: list[Label | None] = []
            for cells in reader:
                if not cells:
                    continue  # csv yields [] for a blank line
                if len(cells) != len(header):
                    raise SourceError(
                        f"{path}, line {reader.line_num}: {len(cells)} cells, the header has {len(header)}"
                    )
                rows.append([parse(cells[p]) for parse, p in zip(parsers, position, strict=True)])
                if label_at >= 0:
                    try:
                        labels.append(to_label(cells[label_at]))
                    except ValueError as exc:
                        raise SourceError(f"{path}, line {reader.line_num}: {exc}") from None
                else:
                    labels.append(None)
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise SourceError(f"{path} is not a readable UTF-8 CSV file: {exc}") from exc
    if not rows:
        raise SourceError(f"{path} has a header but no rows")

    std = {
        name: stats.std
        for name, stats in manifest.reference.features.items()
        if isinstance(stats, NumericStatistics) and stats.std is not None
    }
    known = [float(v) for v in labels if v is not None] if manifest.task == "regression" else []
    return CsvSource(
        model=manifest.name,
        feature_names=features,
        rows=rows,
        labels=labels,
        reference_std=std,
        outcome_field="value" if manifest.task == "regression" else "label",
        has_labels=label_column is not None,
        classes=tuple(manifest.outputs.class_labels or ()),
        target_mean=math.fsum(known) / len(known) if known else 0.0,
        lenient=frozenset(f.name for f in manifest.features if f.missing.action != "reject"),
    )


def shuffled(source: CsvSource, seed: int) -> CsvSource:
    """``source`` with its rows (and their labels) in an order drawn from ``seed``.

    Example:
        >>> rows, labels = [[1.0], [2.0], [3.0], [4.0]], ["a", "b", "c", "d"]
        >>> source = CsvSource("m", ("x",), rows, labels, {}, "label", True, ("a", "b", "c", "d"), 0.0)
        >>> again = shuffled(source, 0)
        >>> [row[0] for row in again.rows], again.labels
        ([2.0, 4.0, 3.0, 1.0], ['b', 'd', 'c', 'a'])
    """
    # A stream of its own: the event stream draws from ``seed`` too.
    order = np.random.default_rng([seed, 0x5EED]).permutation(len(source.rows)).tolist()
    return replace(source, rows=[source.rows[i] for i in order], labels=[source.labels[i] for i in order])


def _numeric(cell: str) -> float | str | None:
    text = cell.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        return cell


def _category(cell: str) -> str | None:
    return cell if cell.strip() else None


def _label_parser(manifest: Manifest) -> Any:
    classes = manifest.outputs.class_labels
    if manifest.task == "regression" or classes is None:

        def as_value(cell: str) -> float | None:
            text = cell.strip()
            if not text:
                return None
            try:
                return float(text)
            except ValueError:
                raise ValueError(f"label {cell!r} is not a number") from None

        return as_value

    numeric = all(isinstance(c, int) for c in classes)

    def as_class(cell: str) -> Label | None:
        text = cell.strip()
        if not text:
            return None
        label: Label = text
        if numeric:
            try:
                number = float(text)
            except ValueError:
                number = math.nan
            label = int(number) if number.is_integer() else text
        if label not in classes:
            raise ValueError(f"label {cell!r} is not one of the model's classes {list(classes)}")
        return label

    return as_class


def replay(
    path: Path,
    package: Path | Manifest,
    *,
    label_column: str | None = None,
    scenario: Scenario | None = None,
    seed: int = 0,
    count: int | None = None,
    outcome_share: float = 1.0,
    outcome_delay_s: float = 0.0,
    run_id: str | None = None,
    model_name: str | None = None,
    model_version: str | None = None,
    start_time: datetime = DEFAULT_START_TIME,
    event_interval_s: float = 0.01,
    shuffle: bool = False,
) -> EventStream:
    """A stream replaying ``path`` for the package at ``package`` (a directory, a manifest path or a
    :class:`~schemas.manifest.Manifest`), optionally under a drift ``scenario``.

    ``count`` defaults to the number of rows in the file. ``shuffle`` replays the rows in an order
    drawn from ``seed`` (each row once per pass) instead of file order. See
    :class:`~producers.stream.EventStream` for the other parameters.
    """
    manifest = package if isinstance(package, Manifest) else read_manifest(package)
    source = load_csv(path, manifest, label_column)
    if shuffle:
        source = shuffled(source, seed)
    if scenario is None:
        scenario = Scenario(name=(path.stem or "replay")[:64], description=f"replay of {path.name}")
    return EventStream(
        source,
        scenario,
        seed=seed,
        count=len(source.rows) if count is None else count,
        outcome_share=outcome_share,
        outcome_delay_s=outcome_delay_s,
        run_id=run_id,
        model_name=model_name,
        model_version=model_version,
        start_time=start_time,
        event_interval_s=event_interval_s,
    )
