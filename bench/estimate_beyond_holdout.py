"""How far the estimated error (CBPE) follows the realised one when inputs move past the holdout.

The bundled examples' ``gradual`` scenario ramps one feature to +2 sd while each row keeps its label,
and there the estimate is 3.1-3.3 points off (the README's table). That scenario mixes two things:
inputs leaving the region the calibration saw, and labels that no longer follow the inputs (a change
of P(y | x)). This separates them on data whose P(y | x) is known: 20 standard-normal features, a
label drawn from ``sigmoid(x @ W)`` (8 informative features, ``x05`` the strongest; 3,000 training
rows, 1,000 holdout rows, seed 0), for two models packaged by the real builder: a random forest (100
trees, as ``classification-20``) and a logistic regression (the true model's own form).

Each run serves ``--events`` fresh rows (seed 1) through the real handler, in process, every outcome
joined: from event 3,000, ``x05`` ramps to +2 sd over 4,000 events (the ``gradual`` scenario's shape).
The labels are drawn after the shift, from P(y | x) (``labels="redrawn"``: pure covariate shift), or
before it and kept (``labels="kept"``: what the scenarios do). Per window of 2,000 labelled events,
the estimated error beside the realised one (``estimate_check``, what InfluxDB's
``driftline_performance`` gets).

Run: ``.venv/bin/python -m bench.estimate_beyond_holdout [--events 20000]`` (about 15 s). Results in
``README.md`` ("What estimation cannot see").
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from bench._harness import in_process_record, in_process_serving

WINDOW = 2000
NAMES = [f"x{i:02d}" for i in range(20)]
WEIGHTS = np.array([2.0, -1.5, 1.2, 1.0, -0.8, 2.5, 0.6, -0.5] + [0.0] * 12)
"""The true logit's coefficients: ``x05`` the strongest, the last 12 features noise."""
SHIFTED = NAMES.index("x05")
START, RAMP, SIZE = 3000, 4000, 2.0
MODELS = ("forest", "logistic")
Labels = Literal["redrawn", "kept"]
LABELS: tuple[Labels, ...] = ("redrawn", "kept")


@dataclass(frozen=True)
class Window:
    """One window of labelled events: the estimated and the realised error rate."""

    first: int
    estimated: float
    realised: float

    @property
    def gap(self) -> float:
        return self.estimated - self.realised


def draw_labels(X: npt.NDArray[np.float64], rng: np.random.Generator) -> npt.NDArray[np.int64]:
    """Labels from the true P(y = 1 | x) = sigmoid(x @ WEIGHTS)."""
    return np.asarray(rng.random(len(X)) < 1.0 / (1.0 + np.exp(-(X @ WEIGHTS))), dtype=np.int64)


def build(root: Path) -> None:
    """Both models' packages (``forest/1`` and ``logistic/1``) in ``root``."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    from agent.models.repository import ModelRepository
    from agent.packaging.builder import build_package
    from agent.packaging.training import TrainingResult

    rng = np.random.default_rng(0)
    X, X_holdout = rng.standard_normal((3000, len(NAMES))), rng.standard_normal((1000, len(NAMES)))
    y, y_holdout = draw_labels(X, rng), draw_labels(X_holdout, rng)
    estimators = {
        "forest": RandomForestClassifier(n_estimators=100, random_state=0),
        "logistic": LogisticRegression(),
    }
    for name, estimator in estimators.items():
        result = TrainingResult(estimator.fit(X, y), X, y, NAMES, X_holdout, y_holdout)
        build_package(result, name=name, version="1", repository=ModelRepository(root))


def run(root: Path, model: str, labels: Labels, events: int) -> list[Window]:
    """One stream of ``model`` through a fresh handler; its windows of ``WINDOW`` labelled events."""
    handler, observer = in_process_serving(root, outcomes=True)
    rng = np.random.default_rng(1)
    rows = rng.standard_normal((events, len(NAMES)))
    y = draw_labels(rows, rng)
    rows[:, SHIFTED] += np.clip((np.arange(events) - START) / RAMP, 0.0, 1.0) * SIZE
    if labels == "redrawn":
        y = draw_labels(rows, rng)
    windows = []
    for start in range(0, events - WINDOW + 1, WINDOW):
        span = range(start, start + WINDOW)
        handler.handle(
            [
                in_process_record(
                    model, "requests", i, {"features": dict(zip(NAMES, rows[i].tolist(), strict=True))}
                )
                for i in span
            ]
        )
        handler.handle([in_process_record(model, "outcomes", i, {"label": int(y[i])}) for i in span])
        check = observer.monitors()[0].estimate_check.current()
        windows.append(Window(start, check.estimated, check.realised))
    return windows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per run (default: 20,000)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build(root)
        ramp = f"events {START:,}-{START + RAMP:,}"
        print(f"x05 ramps to +{SIZE:g} sd over {ramp}; {args.events:,} events per run")
        print(f"{'model':>8}  {'labels':>7}  {'window':>13}  {'estimated':>9}  {'realised':>8}  {'gap':>6}")
        for model in MODELS:
            for labels in LABELS:
                windows = run(root, model, labels, args.events)
                for w in windows:
                    span = f"{w.first:,}-{w.first + WINDOW:,}"
                    print(
                        f"{model:>8}  {labels:>7}  {span:>13}  {w.estimated:>9.1%}  {w.realised:>8.1%}"
                        f"  {w.gap * 100:>+5.1f}"
                    )
                worst = max(windows, key=lambda w: abs(w.gap))
                print(f"{'':>8}  {'':>7}  worst window: {worst.gap * 100:+.1f} points (from {worst.first:,})")


if __name__ == "__main__":
    main()
