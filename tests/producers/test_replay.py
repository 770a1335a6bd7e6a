from __future__ import annotations

from pathlib import Path

import pytest

from producers.errors import ColumnMismatchError, ScheduleError, SourceError
from producers.replay import load_csv, read_manifest, replay
from producers.schedule import Scenario, ScheduledDrift
from producers.stream import MessageKind
from schemas.events import Outcome, PredictionRequest
from schemas.manifest import MissingPolicy
from tests.producers.conftest import body, make_manifest, manifest_for_example, requests_of

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "breast-cancer-sample.csv"

ROWS = "age,plan,income,churned\n41,pro,2500.5,1\n,basic,n/a,0\n33.5,,1800,\n"


def write(tmp_path: Path, text: str, name: str = "rows.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_rows_replay_in_file_order_as_requests_and_outcomes(tmp_path: Path, package: Path) -> None:
    stream = replay(write(tmp_path, ROWS), package, label_column="churned")
    messages = list(stream)
    assert [m.kind for m in messages] == [
        MessageKind.REQUEST,
        MessageKind.OUTCOME,
        MessageKind.REQUEST,
        MessageKind.OUTCOME,
        MessageKind.REQUEST,  # no label in the third row: no outcome
    ]
    first, second, third = (PredictionRequest.model_validate_json(m.value) for m in requests_of(messages))
    assert first.model == "churn" and first.model_version is None
    assert first.features == {"age": 41.0, "plan": "pro", "income": 2500.5}
    # Empty cells are missing; a cell that is no number goes out as the string it is.
    assert second.features == {"age": None, "plan": "basic", "income": "n/a"}
    assert third.features == {"age": 33.5, "plan": None, "income": 1800.0}
    assert [Outcome.model_validate_json(m.value).label for m in messages[1::2][:2]] == [1, 0]
    assert stream.count == 3 and first.request_id == "rows-s0-0"


def test_shuffle_replays_every_row_once_per_pass_in_a_seeded_order(tmp_path: Path, package: Path) -> None:
    path = write(tmp_path, "income,age,plan,churned\n" + "".join(f"1,{i},pro,{i % 2}\n" for i in range(50)))

    def ages_and_labels(**options: object) -> list[tuple[float, int]]:
        messages = list(replay(path, package, label_column="churned", count=100, **options))  # type: ignore[arg-type]
        ages = [body(m)["features"]["age"] for m in requests_of(messages)]
        labels = [
            Outcome.model_validate_json(m.value).label for m in messages if m.kind is MessageKind.OUTCOME
        ]
        return list(zip(ages, labels, strict=True))

    in_order = ages_and_labels()
    shuffled = ages_and_labels(shuffle=True)
    assert [a for a, _ in in_order[:50]] == [float(i) for i in range(50)]
    assert shuffled[:50] != in_order[:50] and sorted(shuffled[:50]) == in_order[:50]
    assert shuffled[50:] == shuffled[:50]  # the same order on the next pass
    assert all(label == int(age) % 2 for age, label in shuffled)  # each row keeps its label
    assert ages_and_labels(shuffle=True) == shuffled
    assert ages_and_labels(shuffle=True, seed=1) != shuffled


def test_a_broken_request_stays_broken_for_a_model_that_takes_missing_features(tmp_path: Path) -> None:
    # A package whose 'age' may be missing (its graph imputes it): a request without 'age', or with
    # it renamed, is a valid one there. Its broken requests break it another way: a wrong type.
    manifest = make_manifest()
    features = [
        f.model_copy(update={"missing": MissingPolicy(action="allow")}) if f.name == "age" else f
        for f in manifest.features
    ]
    lenient = manifest.model_copy(update={"features": features})
    path = write(tmp_path, "age,plan,income\n" + "41,pro,2500\n" * 10)
    schedule = Scenario(name="s", drifts=[ScheduledDrift(kind="schema", start=0, size=1.0, feature="age")])
    for package, allowed in ((lenient, True), (manifest, False)):
        broken = [
            body(m)
            for m in replay(path, package, scenario=schedule, count=400)
            if m.kind is MessageKind.BROKEN
        ]
        assert len(broken) == 400
        without_age = [b for b in broken if "features" in b and "age" not in b["features"]]
        wrong_type = [b for b in broken if isinstance(b.get("features", {}).get("age"), str)]
        if allowed:
            assert not without_age and len(wrong_type) > 250, (len(without_age), len(wrong_type))
        else:
            assert len(without_age) > 150 and len(wrong_type) > 50, (len(without_age), len(wrong_type))


def test_columns_may_come_in_any_order_and_count_cycles(tmp_path: Path, package: Path) -> None:
    path = write(tmp_path, "income,age,plan\n1,2,pro\n3,4,basic\n")
    requests = requests_of(replay(path, package, count=5))
    assert [body(m)["features"]["age"] for m in requests] == [2.0, 4.0, 2.0, 4.0, 2.0]
    assert all(m.kind is MessageKind.REQUEST for m in requests)


@pytest.mark.parametrize(
    ("header", "label", "missing", "unexpected"),
    [
        ("age,plan,colour", None, ["income"], ["colour"]),
        ("age,plan,income,churned", None, [], ["churned"]),
        ("age,plan,income", "churned", ["churned"], []),
        ("Age,plan,income_eur,x", None, ["age", "income"], ["Age", "income_eur", "x"]),
    ],
)
def test_mismatching_columns_are_named_before_anything_is_sent(
    tmp_path: Path, package: Path, header: str, label: str | None, missing: list[str], unexpected: list[str]
) -> None:
    path = write(tmp_path, header + "\n" + ",".join("1" * len(header.split(","))) + "\n")
    with pytest.raises(ColumnMismatchError) as caught:
        replay(path, package, label_column=label)
    assert (caught.value.missing, caught.value.unexpected) == (missing, unexpected)
    message = str(caught.value)
    assert all(repr(c) in message for c in missing + unexpected)


def test_error_message_names_missing_and_unexpected(tmp_path: Path, package: Path) -> None:
    with pytest.raises(ColumnMismatchError, match="missing 'income'; unexpected 'colour'"):
        replay(write(tmp_path, "age,plan,colour\n1,pro,red\n"), package)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("age,plan,income\n", "has a header but no rows"),
        ("age,plan,income\n1,pro\n", "line 2: 2 cells, the header has 3"),
        ("age,plan,income,age\n1,pro,2,3\n", "duplicate columns 'age'"),
        ("age,plan,income,churned\n1,pro,2,yes\n", r"line 2: label 'yes' is not one of .* \[0, 1\]"),
        ("age,plan,income,churned\n1,pro,2,2\n", "label '2' is not one of"),
    ],
)
def test_unreadable_files(tmp_path: Path, package: Path, text: str, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        replay(write(tmp_path, text), package, label_column="churned" if "churned" in text else None)


def test_not_utf8_and_missing_file(tmp_path: Path, package: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("age,plan,income\n1,pr\xf6,2\n".encode("latin-1"))
    with pytest.raises(SourceError, match="not a readable UTF-8 CSV"):
        replay(path, package)
    with pytest.raises(SourceError, match="cannot read"):
        replay(tmp_path / "absent.csv", package)


def test_manifest_from_directory_file_or_model(tmp_path: Path, package: Path) -> None:
    assert read_manifest(package) == read_manifest(package / "manifest.json") == make_manifest()
    with pytest.raises(SourceError, match="cannot read the package manifest"):
        read_manifest(tmp_path / "nowhere")
    (tmp_path / "bad.json").write_text('{"name": "x"}')
    with pytest.raises(SourceError, match="is not a valid manifest"):
        read_manifest(tmp_path / "bad.json")


def test_a_schedule_shifts_in_reference_sd_and_alters_labels(tmp_path: Path) -> None:
    rows = "age,plan,income,churned\n" + "".join(f"30,basic,{1000 + i},{i % 2}\n" for i in range(40))
    scenario = Scenario(
        name="late",
        drifts=[
            ScheduledDrift(kind="covariate", start=20, feature="income", size=2.0),
            ScheduledDrift(kind="concept", start=30, size=1.0),
        ],
    )
    manifest = make_manifest()
    messages = list(replay(write(tmp_path, rows), manifest, label_column="churned", scenario=scenario))
    requests = [body(m) for m in requests_of(messages)]
    # Reference std of income is 1000 (values 1000 and 3000): +2 sd is +2000.
    shifts = [r["features"]["income"] - (1000 + i) for i, r in enumerate(requests)]
    assert shifts == [0.0] * 20 + [2000.0] * 20
    labels = [Outcome.model_validate_json(m.value).label for m in messages if m.kind is MessageKind.OUTCOME]
    assert labels == [i % 2 for i in range(30)] + [1 - i % 2 for i in range(30, 40)]


def test_regression_labels_are_values_and_mirror_around_their_mean(tmp_path: Path) -> None:
    manifest = make_manifest("regression")
    path = write(tmp_path, "age,plan,income,y\n1,pro,2,10\n1,pro,2,30\n")
    flip = Scenario(drifts=[ScheduledDrift(kind="concept", start=1, size=1.0)])
    values = [
        Outcome.model_validate_json(m.value).value
        for m in replay(path, manifest, label_column="y", scenario=flip)
        if m.kind is MessageKind.OUTCOME
    ]
    assert values == [10.0, 10.0]  # 30 mirrored around the mean 20


def test_schedules_that_do_not_fit_the_file(tmp_path: Path, package: Path) -> None:
    path = write(tmp_path, "age,plan,income\n1,pro,2\n")
    shift_plan = Scenario(drifts=[ScheduledDrift(kind="covariate", start=0, feature="plan", size=1)])
    with pytest.raises(ScheduleError, match="'plan' is not numeric"):
        replay(path, package, scenario=shift_plan)
    concept = Scenario(drifts=[ScheduledDrift(kind="concept", start=0, size=1)])
    with pytest.raises(ScheduleError, match="no labels"):
        replay(path, package, scenario=concept)


def test_load_csv_reads_labels_typed_like_the_classes(tmp_path: Path) -> None:
    source = load_csv(write(tmp_path, "age,plan,income,c\n1,pro,2,1.0\n1,pro,2, 0\n"), make_manifest(), "c")
    assert source.labels == [1, 0] and source.classes == (0, 1)


def test_the_bundled_sample_replays_for_a_breast_cancer_package() -> None:
    from producers.datasets import load_dataset

    data = load_dataset("breast-cancer")
    stream = replay(SAMPLE, manifest_for_example("breast-cancer"), label_column="target")
    messages = list(stream)
    assert stream.stats.requests == stream.stats.outcomes == 200
    rows = {tuple(row) for row in data.X.tolist()}
    for m in requests_of(messages):
        request = PredictionRequest.model_validate_json(m.value)
        assert tuple(request.features.values()) in rows  # the dataset's own rows, unchanged
    labels = [Outcome.model_validate_json(m.value).label for m in messages if m.kind is MessageKind.OUTCOME]
    assert set(labels) == {0, 1}
