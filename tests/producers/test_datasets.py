from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from agent.packaging import examples
from producers.datasets import CLASSIFICATION_20, MODELS, SEED, load_dataset
from producers.errors import SourceError


class _Stop(Exception):
    pass


def test_classification_20_parameters_equal_the_agents(monkeypatch: pytest.MonkeyPatch) -> None:
    import sklearn.datasets

    seen: dict[str, Any] = {}

    def record(*args: Any, **kwargs: Any) -> Any:
        seen.update(kwargs, args=args)
        raise _Stop

    # examples.classification_20 imports make_classification when called, so it finds the recorder.
    monkeypatch.setattr(sklearn.datasets, "make_classification", record)
    with pytest.raises(_Stop):
        examples.classification_20()
    assert seen.pop("args") == ()
    assert seen == CLASSIFICATION_20
    assert SEED == examples.SEED


def test_data_and_feature_names_equal_the_examples() -> None:
    for model, train in [
        ("breast-cancer", lambda: examples.breast_cancer(n_estimators=1)),
        ("classification-20", lambda: examples.classification_20(n_estimators=1)),
    ]:
        result = train()
        data = load_dataset(model)
        assert data.feature_names == tuple(result.feature_names)
        assert result.X_holdout is not None
        both = np.vstack([result.X_reference, result.X_holdout])
        # The examples split the very same rows into training and holdout.
        np.testing.assert_array_equal(np.unique(both, axis=0), np.unique(data.X, axis=0))
    assert set(MODELS) == set(examples.EXAMPLES)


def test_diabetes_is_a_regression_on_the_bundled_data() -> None:
    data = load_dataset("diabetes")
    assert data.task == "regression" and data.outcome_field == "value"
    assert data.feature_names[:3] == ("age", "sex", "bmi")
    assert data.X.shape == (442, 10)


def test_unknown_model() -> None:
    with pytest.raises(SourceError, match="unknown example model 'iris'; choose one of breast-cancer"):
        load_dataset("iris")
