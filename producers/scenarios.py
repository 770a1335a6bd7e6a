"""Named scenarios over the example models' data, and :func:`generate`, the stream without Kafka.

Each scenario is a :class:`~producers.schedule.Scenario`: a list of scheduled drifts, sized in events.
The drifted features are picked per model among the ones its forest relies on, so a shift also moves
the predictions: ``worst radius`` / ``mean texture`` (breast-cancer), ``x05`` / ``x11``
(classification-20), ``bmi`` / ``s5`` (diabetes).

========== ======== ==================================================================================
name       events   schedule
========== ======== ==================================================================================
calm       10 000   no drift
covariate  10 000   from event 5 000: +1 sd on the primary feature (abrupt)
gradual    10 000   from event 3 000: the primary feature ramps up to +2 sd over 4 000 events
recurring  10 000   from event 2 000: +1.5 sd on the primary feature, on 1 000 events, off 1 000
concept    10 000   from event 5 000: every outcome's label flipped (features unchanged)
schema      5 000   from event 1 000: 10 % broken requests, 5 % garbage
demo       12 000   2 000-6 000 +1.5 sd on the primary feature (breast-cancer: and on 'worst concave
                    points', into a region where the forest is less sure of itself); from 7 000 half
                    the labels flipped; from 500 1 % broken and 0.5 % garbage. At 100 events/s: two
                    minutes.
========== ======== ==================================================================================

Rows are drawn from the example's whole dataset, three quarters of which its model was trained on,
while a package's output reference comes from its holdout (the model's answers on rows it never saw).
Where a model answers its training rows differently, ``calm`` shows that too: over 20,000 ``calm``
requests of seed 0, the ``diabetes`` regressor (its answers on its training rows spread 1.14x as
wide as on its holdout) raised an output-spread alert at event 543 and ``classification-20`` an
output alert at event 17,215; ``breast-cancer`` raised none.

Example:
    >>> stream = generate("covariate", model="classification-20", seed=1, count=3)
    >>> [m.kind.value for m in stream]
    ['request', 'outcome', 'request', 'outcome', 'request', 'outcome']
    >>> print(stream.table())
    covariate: 3 events (abrupt +1 sd on one feature at event 5000)
     from   to  kind       shape   feature  size
     5000  end  covariate  abrupt  x05      +1 sd
      (drift 1 starts after the last event)
"""

from __future__ import annotations

import functools
from datetime import datetime

from producers.datasets import MODELS, Dataset, load_dataset
from producers.errors import ScheduleError
from producers.schedule import Scenario, ScheduledDrift
from producers.stream import DEFAULT_START_TIME, EventStream

__all__ = ["DEMO_COMPANIONS", "FOCUS_FEATURES", "SCENARIOS", "builtin_scenario", "dataset", "generate"]

SCENARIOS: dict[str, str] = {
    "calm": "no drift",
    "covariate": "abrupt +1 sd on one feature at event 5000",
    "gradual": "one feature ramps up to +2 sd over events 3000-7000",
    "recurring": "+1.5 sd on one feature, 1000 events on, 1000 off, from event 2000",
    "concept": "every label flipped from event 5000, features unchanged",
    "schema": "10% broken requests and 5% garbage from event 1000",
    "demo": "a covariate shift, then a concept change, and a few bad messages; 2 min at 100/s",
}
"""Scenario name -> one-line description."""

FOCUS_FEATURES: dict[str, tuple[str, str]] = {
    "breast-cancer": ("worst radius", "mean texture"),
    "classification-20": ("x05", "x11"),
    "diabetes": ("bmi", "s5"),
}
"""Model -> (primary, secondary) feature the scenarios shift."""

DEMO_COMPANIONS: dict[str, str] = {"breast-cancer": "worst concave points"}
"""Model -> the feature the ``demo`` scenario shifts with the primary one. The bundled breast-cancer
forest has several size features to go by, so one shifted feature leaves it as sure as before; with
'worst concave points' shifted too it is less sure of many rows (its estimated error rises well before
any label says so), while few of its answers change (the labels, flipped later, are what the concept
monitor then sees)."""


def builtin_scenario(name: str, model: str = "breast-cancer", *, feature: str | None = None) -> Scenario:
    """Scenario ``name`` (one of :data:`SCENARIOS`) for example model ``model``, or for any model
    when ``feature`` names the feature its covariate drifts shift.

    Example:
        >>> [d.feature for d in builtin_scenario("covariate", feature="debt_ratio").drifts]
        ['debt_ratio']
    """
    if name not in SCENARIOS:
        raise ScheduleError(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}")
    if feature is not None:
        primary = feature
    elif model in FOCUS_FEATURES:
        primary, _ = FOCUS_FEATURES[model]
    else:
        raise ScheduleError(f"unknown example model {model!r}; choose one of {', '.join(MODELS)}")
    drifts: list[ScheduledDrift] = []
    count, rate = 10_000, 1000.0
    if name == "covariate":
        drifts = [ScheduledDrift(kind="covariate", start=5000, feature=primary, size=1.0)]
    elif name == "gradual":
        drifts = [ScheduledDrift(kind="covariate", start=3000, feature=primary, size=2.0, ramp=4000)]
    elif name == "recurring":
        drifts = [ScheduledDrift(kind="covariate", start=2000, feature=primary, size=1.5, period=2000)]
    elif name == "concept":
        drifts = [ScheduledDrift(kind="concept", start=5000, size=1.0)]
    elif name == "schema":
        count = 5000
        drifts = [
            ScheduledDrift(kind="schema", start=1000, size=0.1),
            ScheduledDrift(kind="garbage", start=1000, size=0.05),
        ]
    elif name == "demo":
        count, rate = 12_000, 100.0
        drifts = [ScheduledDrift(kind="covariate", start=2000, end=6000, feature=primary, size=1.5)]
        if feature is None and model in DEMO_COMPANIONS:
            companion = DEMO_COMPANIONS[model]
            drifts.append(ScheduledDrift(kind="covariate", start=2000, end=6000, feature=companion, size=1.5))
        drifts += [
            ScheduledDrift(kind="concept", start=7000, size=0.5),
            ScheduledDrift(kind="schema", start=500, size=0.01),
            ScheduledDrift(kind="garbage", start=500, size=0.005),
        ]
    return Scenario(name=name, description=SCENARIOS[name], count=count, rate=rate, drifts=tuple(drifts))


@functools.cache
def dataset(model: str) -> Dataset:
    """The example model's data, loaded once per process (it is never modified)."""
    return load_dataset(model)


def generate(
    scenario: str | Scenario = "calm",
    *,
    model: str = "breast-cancer",
    seed: int = 0,
    count: int | None = None,
    outcome_share: float = 1.0,
    outcome_delay_s: float = 0.0,
    run_id: str | None = None,
    model_name: str | None = None,
    model_version: str | None = None,
    start_time: datetime = DEFAULT_START_TIME,
    event_interval_s: float = 0.01,
) -> EventStream:
    """A seeded stream of ``model``'s data under ``scenario`` (a name or your own schedule).

    Iterate it for ``(key, value, kind)`` :class:`~producers.stream.Message` items; nothing is sent.
    See :class:`~producers.stream.EventStream` for the other parameters.
    """
    if isinstance(scenario, str):
        scenario = builtin_scenario(scenario, model)
    return EventStream(
        dataset(model),
        scenario,
        seed=seed,
        count=count,
        outcome_share=outcome_share,
        outcome_delay_s=outcome_delay_s,
        run_id=run_id,
        model_name=model_name,
        model_version=model_version,
        start_time=start_time,
        event_interval_s=event_interval_s,
    )
