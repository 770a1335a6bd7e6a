"""A training module for ``driftline package --module``: the smallest complete example.

    driftline package --module examples/train_example.py --name churn

``driftline package`` imports this file, calls ``train()`` (or the function named by --function)
and packages what it returns: a fitted estimator plus the data it was trained on, as an
``agent.packaging.training.TrainingResult``.

The matrices are what the model is fed at serving time: one column per feature, in
``feature_names`` order, all floats. A categorical feature's column holds the index of the category
in its ``categories`` list (here "plan": 0.0 = basic, 1.0 = plus, 2.0 = pro), and NaN marks a
missing value. The estimator must therefore accept category indexes (a tree ensemble does as is; a
linear model wants a OneHotEncoder, as below). Each feature's missing-value policy says what the
server does when a request lacks it.
"""

from __future__ import annotations

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from agent.packaging.training import TrainingResult
from schemas.manifest import MissingPolicy

PLANS = ["basic", "plus", "pro"]


def train() -> TrainingResult:
    rng = np.random.default_rng(7)
    n = 2000
    age = rng.uniform(18, 80, n)
    monthly_spend = rng.gamma(2.0, 20.0, n)
    plan = rng.integers(0, len(PLANS), n).astype(np.float64)
    logit = -0.04 * (age - 45) - 0.02 * (monthly_spend - 40) + 0.9 * (plan == 0) - 0.6 * (plan == 2)
    churned = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    X = np.column_stack([age, monthly_spend, plan])

    X_train, X_test, y_train, y_test = train_test_split(
        X, churned, test_size=0.25, random_state=7, stratify=churned
    )
    model = Pipeline(
        [
            (
                "prepare",
                ColumnTransformer(
                    [
                        ("numbers", StandardScaler(), [0, 1]),
                        ("plan", OneHotEncoder(handle_unknown="ignore"), [2]),
                    ]
                ),
            ),
            ("classify", LogisticRegression()),
        ]
    ).fit(X_train, y_train)

    return TrainingResult(
        estimator=model,
        X_reference=X_train,
        y_reference=y_train,
        feature_names=["age", "monthly_spend", "plan"],
        X_holdout=X_test,
        y_holdout=y_test,
        categories={"plan": PLANS},
        missing={
            "monthly_spend": MissingPolicy(action="impute", value=round(float(np.median(X_train[:, 1])), 2)),
            "plan": MissingPolicy(action="impute", value="basic"),
        },
        ranges={"age": (18.0, 120.0)},
    )
