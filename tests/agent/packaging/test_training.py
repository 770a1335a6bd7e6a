"""Training modules and what they return (agent/packaging/training.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.errors import ConfigurationError
from agent.models.repository import ModelRepository
from agent.packaging.builder import build_package
from agent.packaging.training import TrainingResult, load_training_function
from schemas.manifest import MissingPolicy
from tests.support.models import nan_routing_forest

EXAMPLE_TRAINING = Path(__file__).resolve().parents[3] / "examples" / "train_example.py"


def test_inconsistent_training_results_are_configuration_errors(tmp_path: Path) -> None:
    result = nan_routing_forest()
    repo = ModelRepository(tmp_path)
    cases = [
        ({"categories": {"nope": ["a"]}}, r"categories names unknown features \['nope'\]"),
        (
            {"unknown_categories": {"nope": "missing"}},
            r"unknown_categories names unknown features \['nope'\]",
        ),
        ({"unknown_categories": {"sl": "missing"}}, "feature 'sl': .*no categories to be unknown"),
        ({"feature_names": ["a", "b", "c"]}, r"X_reference has shape \(150, 4\), expected \(n >= 1, 3\)"),
        ({"y_reference": np.zeros(3)}, "y_reference has 3 rows"),
        ({"categories": {"sl": ["a", "b"]}}, "feature 'sl': category indexes must be integers"),
        ({"missing": {"pl": MissingPolicy(action="impute", value=1.0)}, "categories": {"pl": ["x"]}}, "pl"),
    ]
    for change, message in cases:
        broken = TrainingResult(**{**result.__dict__, "missing": {}, **change})
        with pytest.raises(ConfigurationError, match=message):
            build_package(broken, name="bad", version="1", repository=repo)
    assert repo.scan() == {}


def test_training_function_must_return_a_training_result(tmp_path: Path) -> None:
    module = tmp_path / "wrong.py"
    module.write_text("def train():\n    return 42\n\ndef broken():\n    raise ValueError('no data')\n")
    with pytest.raises(ConfigurationError, match=r"train\(\) returned int, expected .*TrainingResult"):
        load_training_function(str(module))()
    with pytest.raises(ConfigurationError, match="has no function 'fit'"):
        load_training_function(str(module), "fit")
    with pytest.raises(ValueError, match="no data"):  # the user's own error stays theirs
        load_training_function(str(module), "broken")()
    with pytest.raises(ConfigurationError, match="no such file"):
        load_training_function(str(tmp_path / "missing.py"))
    with pytest.raises(ConfigurationError, match="cannot import it"):
        load_training_function("no_such_package.train")


def test_a_dotted_module_name_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "mytraining"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text((EXAMPLE_TRAINING.read_text()).replace("def train()", "def build()"))
    monkeypatch.syspath_prepend(str(tmp_path))
    result = load_training_function("mytraining.models", "build")()
    assert list(result.feature_names) == ["age", "monthly_spend", "plan"]
