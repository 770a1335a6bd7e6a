from __future__ import annotations

import math
from pathlib import Path

import pytest

from agent.errors import ConfigurationError, PickleRefusedError
from agent.packaging.csv_reference import parse_labels, read_rows


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_feature_columns_follow_the_reference_order_and_the_label_is_kept_apart(tmp_path: Path) -> None:
    holdout = write(tmp_path / "h.csv", "y,b,a\n1,2.5,3\n0,,4\n")
    rows = read_rows(holdout, label_column="y", require_label=True, features=("a", "b"))
    assert rows.feature_names == ("a", "b")
    assert rows.X[0].tolist() == [3.0, 2.5]
    assert rows.X[1, 0] == 4.0 and math.isnan(rows.X[1, 1])
    assert rows.labels == ("1", "0")


def test_a_reference_without_its_label_column_has_no_labels(tmp_path: Path) -> None:
    rows = read_rows(write(tmp_path / "r.csv", "a,b\n1,2\n"), label_column="y")
    assert rows.feature_names == ("a", "b") and rows.labels is None


@pytest.mark.parametrize(
    ("text", "kwargs", "message"),
    [
        ("", {}, "empty; expected a header row"),
        ("a,b\n", {}, "a header but no rows"),
        ("a,a\n1,2\n", {}, "duplicate columns ['a']"),
        ("a,b\n1,2,3\n", {}, "line 2: 3 cells, the header has 2"),
        ("a,b\n1,high\n", {}, "line 2, column 'b': 'high' is not a finite number"),
        ("a,b\n1,inf\n", {}, "column 'b': 'inf' is not a finite number"),
        ("a,b\n1,2\n", {"label_column": "y", "require_label": True}, "no label column 'y'"),
        ("a,c\n1,2\n", {"features": ("a", "b")}, "missing ['b'], unexpected ['c']"),
        ("y\n1\n", {"label_column": "y"}, "no feature columns besides the label 'y'"),
    ],
)
def test_what_is_not_a_numeric_table_is_refused_by_name(
    tmp_path: Path, text: str, kwargs: dict[str, object], message: str
) -> None:
    path = write(tmp_path / "data.csv", text)
    with pytest.raises(ConfigurationError) as caught:
        read_rows(path, **kwargs)  # type: ignore[arg-type]
    assert str(caught.value).startswith(str(path)) and message in str(caught.value)


def test_a_pickle_given_as_data_is_refused_unread(tmp_path: Path) -> None:
    with pytest.raises(PickleRefusedError, match="runs arbitrary code"):
        read_rows(tmp_path / "reference.pkl")


def test_labels_take_the_classes_type(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    assert parse_labels(("1", "0.0", ""), "binary_classification", (0, 1), path).tolist() == [1, 0, None]
    assert parse_labels(("b", "a"), "binary_classification", ("a", "b"), path).tolist() == ["b", "a"]
    values = parse_labels(("1.5", ""), "regression", (), path)
    assert values[0] == 1.5 and math.isnan(values[1])
    with pytest.raises(
        ConfigurationError, match=r"labels \['2'\] are not among the model's classes \[0, 1\]"
    ):
        parse_labels(("1", "2"), "binary_classification", (0, 1), path)
    with pytest.raises(ConfigurationError, match="row 1: label 'big' is not a finite number"):
        parse_labels(("big",), "regression", (), path)
