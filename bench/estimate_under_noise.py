"""How far the estimated error (CBPE) follows the realised one when every input gets noisier.

A classifier's estimated error is its calibrated confidence: right where the holdout was, an
extrapolation elsewhere. This measures where that stops holding, on a model nobody here wrote for
the purpose: a logistic regression of scikit-learn's 64-pixel digits (8 x 8 images, values 0-16;
1,257 training rows, 540 holdout rows, stratified, seed 0), packaged by the real builder.

Each run serves ``--events`` rows drawn with replacement from the whole dataset (seed 0) through the
real handler, in process, with every outcome joined: calm for the first half, then Gaussian noise of
sd ``s`` added to every pixel (clipped to 0-16), a failing sensor. Per window of 2,000 labelled
events, the estimated error beside the realised one (``estimate_check``, what InfluxDB's
``driftline_performance`` gets), and the first performance alert after the noise began; outcomes are
sent after each window's requests, so the estimate raises its alert before any label of the window
is known.

Run: ``.venv/bin/python -m bench.estimate_under_noise [--noise 0,1,2,3] [--events 16000]``
(about 10 s per noise level). Results in ``README.md`` ("What estimation cannot see").
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from agent.models.repository import ModelRepository
from bench._harness import in_process_record, in_process_serving
from schemas.alert import AlertKind
from schemas.incident import decode_record

WINDOW = 2000
NAMES = [f"px{i:02d}" for i in range(64)]


@dataclass(frozen=True)
class Window:
    """One window of labelled events: the estimated and the realised error rate."""

    first: int
    estimated: float
    realised: float


@dataclass(frozen=True)
class Run:
    noise: float
    windows: list[Window]
    alert_at: int | None
    """The prediction count at which the first performance alert after the change fired."""


def build_digits(root: Path) -> Path:
    """The digits model's package in ``root``; returns its directory."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from agent.packaging.builder import build_package
    from agent.packaging.training import TrainingResult

    digits = load_digits()
    X_train, X_test, y_train, y_test = train_test_split(
        digits.data, digits.target, test_size=0.3, random_state=0, stratify=digits.target
    )
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X_train, y_train)
    result = TrainingResult(model, X_train, y_train, NAMES, X_test, y_test)
    return build_package(result, name="digits", version="1", repository=ModelRepository(root)).path


def run(root: Path, noise: float, events: int) -> Run:
    """One stream through a fresh handler: calm, then noise of sd ``noise`` from ``events // 2``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    handler, observer = in_process_serving(root, outcomes=True)
    rng = np.random.default_rng(0)
    change = events // 2
    pick = rng.integers(0, len(digits.data), events)
    rows: npt.NDArray[np.float64] = digits.data[pick].copy()
    rows[change:] = np.clip(rows[change:] + rng.normal(0.0, noise, rows[change:].shape), 0, 16)
    labels = digits.target[pick]
    windows, alert_at = [], None
    for start in range(0, events, WINDOW):
        span = range(start, min(start + WINDOW, events))
        features = [dict(zip(NAMES, rows[i].tolist(), strict=True)) for i in span]
        requests = [
            in_process_record("digits", "requests", i, {"features": f})
            for i, f in zip(span, features, strict=True)
        ]
        for message in handler.handle(requests):
            if message.topic != "alerts":
                continue
            record = decode_record(message.value)
            if getattr(record, "kind", None) is AlertKind.PERFORMANCE and alert_at is None:
                at = int(record.evidence.extra["event_index"])  # type: ignore[union-attr]
                alert_at = at if at >= change else None
        handler.handle([in_process_record("digits", "outcomes", i, {"label": int(labels[i])}) for i in span])
        check = observer.monitors()[0].estimate_check.current()
        windows.append(Window(span.start, check.estimated, check.realised))
    return Run(noise, windows, alert_at)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise", default="0,1,2,3", help="noise sds, comma-separated (default: 0,1,2,3)")
    parser.add_argument("--events", type=int, default=16_000, help="events per run (default: 16,000)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_digits(root)
        print(f"digits/1, {args.events:,} events per run, noise from event {args.events // 2:,}")
        print(f"{'noise sd':>8}  {'window':>13}  {'estimated':>9}  {'realised':>8}  {'gap':>6}")
        for noise in (float(s) for s in args.noise.split(",")):
            result = run(root, noise, args.events)
            for w in result.windows:
                span = f"{w.first:,}-{w.first + WINDOW:,}"
                gap = w.estimated - w.realised
                print(f"{noise:>8g}  {span:>13}  {w.estimated:>9.1%}  {w.realised:>8.1%}  {gap * 100:>+5.1f}")
            alert = "none" if result.alert_at is None else f"at prediction {result.alert_at:,}"
            print(f"{'':>8}  first performance alert after the noise began: {alert}")


if __name__ == "__main__":
    main()
