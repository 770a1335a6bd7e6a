"""How often a concept alert says the right thing about its cause: the inputs, or the labels.

A classifier's concept alert sets its realised error beside the error estimated for the same joined
predictions when they were made (``agent.monitoring.wording.explained_by_inputs``): within
``EXPLAINED_MARGIN`` (5 points) plus two standard errors, the inputs explain it; above, the labels no
longer follow the inputs (a change in P(y | x)), and the alert opens an incident of its own. This
runs seeded streams whose cause is known and counts what the alerts said.

The model is ``tests/agent/monitoring/test_estimation.py``'s ``middle``: a logistic regression of
three standard-normal features, P(y=1) = sigmoid(4 x0 + 0.5 x1), packaged by the real builder (its
calibration and importances measured on a 3,000-row holdout). Each stream is 20,000 events through
the real handler, in process, every outcome joined after its request's batch; from event 10,000:

* ``squeeze``: x0's spread shrinks five-fold (toward the boundary), labels from the same rule: the
  error goes from ~13 % to ~33 % and the inputs explain it;
* ``halve``: x0's spread halves, labels from the same rule: a milder rise (to ~20 %), explained by
  the inputs;
* ``flip``: the inputs do not change and every label follows the opposite rule;
* ``flip20``: the inputs do not change and 20 % of the labels are flipped;
* ``flip10``: the same with 10 % (the realised error rises ~7.5 points over the estimate: near the
  margin, where the verdict is a coin toss);
* ``squeeze+flip``: the squeeze, and the labels follow the opposite rule.

``--model forest`` runs the same streams through a random forest of a rule that is not linear
(:data:`MODELS`).

``--model noisy`` is a regressor: ``tests/agent/monitoring/test_estimation.py``'s linear regression of
y = x0 + 2 x1 + noise whose spread is 0.2 + |x0|, with the error model its package fits on the
holdout. Its streams (:data:`REGRESSOR_SCENARIOS`), from event 10,000:

* ``shift``: x0 moves up 1.5 sd, to where the noise is larger: the MAE rises ~1.8x, which the error
  model foresees (the inputs);
* ``widen``: x0's spread doubles: the same rise, partly beyond the holdout's range of x0 (the inputs);
* ``noise2``: the inputs do not change and the noise doubles (the targets);
* ``noise1.25``: the same with the noise 1.25 times as large: the MAE rises about as much as the
  margin allows (near it, where the verdict is a coin toss);
* ``offset``: the inputs do not change and every target is 1 higher, about 1.25 reference MAEs (the
  targets);
* ``shift+noise2``: the shift, and the noise doubles (the targets).

Run: ``.venv/bin/python -m bench.concept_explained [--seeds 20] [--model forest]`` (about 0.2 s per
stream). Results in ``README.md`` ("Telling the causes apart") and ``bench/results/concept_explained*.txt``.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bench._harness import in_process_record, in_process_serving
from schemas.alert import Alert, AlertKind
from schemas.incident import decode_record

NAMES = ("x0", "x1", "x2")
EVENTS, CHANGE, BATCH = 20_000, 10_000, 500
SCENARIOS = ("squeeze", "halve", "flip", "flip20", "flip10", "squeeze+flip")
REGRESSOR_SCENARIOS = ("shift", "widen", "noise2", "noise1.25", "offset", "shift+noise2")
CAUSE = {
    "squeeze": "inputs",
    "halve": "inputs",
    "flip": "labels",
    "flip20": "labels",
    "flip10": "labels",
    "squeeze+flip": "labels",
    "shift": "inputs",
    "widen": "inputs",
    "noise2": "labels",
    "noise1.25": "labels",
    "offset": "labels",
    "shift+noise2": "labels",
}


MODELS = ("middle", "forest", "noisy")
"""``middle``: the test's logistic regression. ``forest``: a random forest (50 trees, leaves of at
least 20 rows) of a rule that is not linear, P(y=1) = sigmoid(4 x0 + 3 sin(2 x1)), whose
probabilities only the calibration makes honest. ``noisy``: the test's regressor."""


def noisy_target(
    rng: np.random.Generator, X: npt.NDArray[np.float64], noise: float = 1.0
) -> npt.NDArray[np.float64]:
    """y = x0 + 2 x1 + noise whose spread is ``noise`` (0.2 + |x0|) (the test's ``noisy_target``)."""
    return np.asarray(X[:, 0] + 2 * X[:, 1] + rng.normal(size=len(X)) * noise * (0.2 + np.abs(X[:, 0])))


def probability(X: npt.NDArray[np.float64], model: str = "middle") -> npt.NDArray[np.float64]:
    if model == "forest":
        return np.asarray(1.0 / (1.0 + np.exp(-(4.0 * X[:, 0] + 3.0 * np.sin(2.0 * X[:, 1])))))
    return np.asarray(1.0 / (1.0 + np.exp(-(4.0 * X[:, 0] + 0.5 * X[:, 1]))))


def build(root: Path, model: str = "middle") -> None:
    """The ``model`` package in ``root``."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    from agent.models.repository import ModelRepository
    from agent.packaging.builder import build_package
    from agent.packaging.training import TrainingResult

    rng = np.random.default_rng(3)  # drawn in the test's order: the same package
    if model == "noisy":
        from sklearn.linear_model import LinearRegression

        X, X_holdout = rng.normal(size=(6000, 3)), rng.normal(size=(3000, 3))
        y_reg, y_reg_holdout = noisy_target(rng, X), noisy_target(rng, X_holdout)
        regression = TrainingResult(
            LinearRegression().fit(X, y_reg), X, y_reg, list(NAMES), X_holdout, y_reg_holdout
        )
        build_package(regression, name=model, version="1", repository=ModelRepository(root))
        return
    X, y = _labelled(rng, 6000, model)
    X_holdout, y_holdout = _labelled(rng, 3000, model)
    forest = RandomForestClassifier(n_estimators=50, min_samples_leaf=20, random_state=0)
    fitted = (forest if model == "forest" else LogisticRegression()).fit(X, y)
    result = TrainingResult(fitted, X, y, list(NAMES), X_holdout, y_holdout)
    build_package(result, name=model, version="1", repository=ModelRepository(root))


def _labelled(
    rng: np.random.Generator, n: int, model: str = "middle"
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    X = rng.normal(size=(n, 3))
    return X, (rng.random(n) < probability(X, model)).astype(np.int64)


def stream(
    scenario: str, seed: int, model: str = "middle"
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64] | npt.NDArray[np.int64]]:
    """A stream's rows and their outcomes (labels, or a regressor's targets)."""
    if model == "noisy":
        return regressor_stream(scenario, seed)
    rng = np.random.default_rng((16, SCENARIOS.index(scenario), seed))
    rows = rng.normal(size=(EVENTS, 3))
    if "squeeze" in scenario:
        rows[CHANGE:, 0] *= 0.2
    if scenario == "halve":
        rows[CHANGE:, 0] *= 0.5
    labels = (rng.random(EVENTS) < probability(rows, model)).astype(np.int64)
    if "flip" in scenario:
        share = {"flip20": 0.2, "flip10": 0.1}.get(scenario, 1.0)
        flipped = rng.random(EVENTS - CHANGE) < share
        labels[CHANGE:][flipped] = 1 - labels[CHANGE:][flipped]
    return rows, labels


def regressor_stream(scenario: str, seed: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    rng = np.random.default_rng((17, REGRESSOR_SCENARIOS.index(scenario), seed))
    rows = rng.normal(size=(EVENTS, 3))
    if "shift" in scenario:
        rows[CHANGE:, 0] += 1.5
    if scenario == "widen":
        rows[CHANGE:, 0] *= 2.0
    targets = noisy_target(rng, rows)
    if "noise" in scenario:
        noise = 1.25 if scenario == "noise1.25" else 2.0
        targets[CHANGE:] = noisy_target(rng, rows[CHANGE:], noise=noise)
    if scenario == "offset":
        targets[CHANGE:] += 1.0
    return rows, targets


def concept_alert(root: Path, scenario: str, seed: int, model: str = "middle") -> Alert | None:
    """The first concept alert of a stream, if any."""
    handler, _ = in_process_serving(root, outcomes=True)
    rows, labels = stream(scenario, seed, model)
    for start in range(0, EVENTS, BATCH):
        span = range(start, start + BATCH)
        requests = [
            in_process_record(
                model,
                "requests",
                i,
                {"features": dict(zip(NAMES, rows[i].tolist(), strict=True))},
                partitions=4,
            )
            for i in span
        ]
        outcomes = [
            in_process_record(model, "outcomes", i, _outcome(labels[i], model), partitions=4) for i in span
        ]
        for records in (requests, outcomes):
            for message in handler.handle(records):
                if message.topic != "alerts" or message.value is None:
                    continue
                record = decode_record(message.value)
                if isinstance(record, Alert) and record.kind is AlertKind.CONCEPT:
                    return record
    return None


def _outcome(observed: float, model: str) -> dict[str, object]:
    return {"value": float(observed)} if model == "noisy" else {"label": int(observed)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="streams per scenario (default: 20)")
    parser.add_argument("--model", choices=MODELS, default="middle", help="the model (default: middle)")
    args = parser.parse_args(argv)
    model = args.model
    logging.disable(logging.WARNING)  # the alerts' own log lines: the table is the output
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build(root, model)
        print(
            f"{model}/1, {EVENTS:,} events per stream, the change at event {CHANGE:,}, "
            f"seeds 0-{args.seeds - 1}"
        )
        print(f"{'scenario':>13}  {'cause':>6}  {'alerts':>6}  {'said inputs':>11}  {'said labels':>11}  "
              f"{'realised':>8}  {'estimated':>9}  {'right':>5}")  # fmt: skip
        regressor = model == "noisy"
        for scenario in REGRESSOR_SCENARIOS if regressor else SCENARIOS:
            said: Counter[str] = Counter()
            realised, estimated = [], []
            for seed in range(args.seeds):
                alert = concept_alert(root, scenario, seed, model)
                if alert is None:
                    continue
                extra = alert.evidence.extra
                said["labels" if extra.get("unexplained_by_inputs") == 1.0 else "inputs"] += 1
                realised.append(float(extra.get("realised_error_same", np.nan)))
                estimated.append(float(extra.get("estimated_error_same", np.nan)))
            alerts = sum(said.values())
            right = said[CAUSE[scenario]]
            unit = ".3f" if regressor else ".1%"  # an MAE, or an error rate
            print(
                f"{scenario:>13}  {CAUSE[scenario]:>6}  {alerts:>6}  "
                f"{said['inputs']:>11}  {said['labels']:>11}  "
                f"{np.median(realised) if realised else np.nan:>8{unit}}  "
                f"{np.median(estimated) if estimated else np.nan:>9{unit}}  {right:>2}/{alerts}"
            )


if __name__ == "__main__":
    main()
