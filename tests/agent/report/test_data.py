"""The report's data from a real package's manifest: each feature's and the output's distributions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from agent.errors import ConfigurationError
from agent.models.repository import ModelRepository
from agent.report.data import categorical_distribution, distributions, parse_period
from schemas.manifest import CategoricalStatistics, Manifest

DATA = load_breast_cancer()
NAMES = [str(n) for n in DATA.feature_names]


def test_distributions_of_every_feature_and_the_output(model_repository: ModelRepository) -> None:
    ref = model_repository.newest("breast-cancer")
    assert ref is not None
    manifest = Manifest.model_validate_json(ref.manifest_path.read_bytes())
    rows = DATA.data[:300].copy()
    rows[:, 0] += 10.0  # mean radius shifted
    requests = [dict(zip(NAMES, map(float, row), strict=True)) for row in rows]
    predictions = [
        {"probabilities": {"0": 0.2, "1": 0.8}},
        {"probabilities": {"0": 0.6, "1": 0.4}},
        {"label": 1},
    ]
    found = distributions(manifest, requests, predictions)
    assert [d.column for d in found] == [*NAMES, "prediction"]
    radius = found[0]
    assert radius.kind == "numeric" and radius.recent_count == 300 and len(radius.reference) == 101
    # The recent median is about ten above the reference median; a quiet feature's is close to it.
    assert radius.recent[50][0] - radius.reference[50][0] == pytest.approx(10.0, abs=1.5)
    texture = found[1]
    assert abs(texture.recent[50][0] - texture.reference[50][0]) < 0.2 * texture.reference[100][0]
    output = found[-1]
    assert output.recent_count == 2 and output.recent[0][0] == 0.4 and output.recent[-1][0] == 0.8


def test_categorical_shares_include_unseen_categories() -> None:
    stats = CategoricalStatistics(count=10, missing_rate=0.0, frequencies={"a": 0.7, "b": 0.3})
    d = categorical_distribution("plan", stats, ["a", "c", "c", None, "b"])
    assert d.categories == (("a", 0.7, 0.25), ("b", 0.3, 0.25), ("c", 0.0, 0.5)) and d.recent_count == 4


def test_parse_period() -> None:
    assert parse_period("90s", now=1000.0) == 910.0 and parse_period("1w", now=1e6) == 1e6 - 604800
    assert parse_period("2026-01-01T00:00:00Z") == 1_767_225_600.0
    with pytest.raises(ConfigurationError, match="neither a duration"):
        parse_period("yesterday")
    assert np.isclose(parse_period("1.5h", now=0.0), -5400.0)
