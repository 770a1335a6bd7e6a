"""Publish prediction requests and outcomes to Kafka: a scripted drift scenario, or a CSV replay.

``scenario NAME`` draws rows from an example model's own data and applies a seeded drift schedule
(covariate shifts, a changed labelling rule, broken and garbage messages), printed before the run;
``--list`` shows every scenario's schedule, and ``--schedule FILE`` runs your own (TOML or JSON, see
``producers/schedule.py``). ``replay FILE --package PATH`` sends the rows of a CSV file whose columns
are the package's features. The same seed and options send byte-identical messages.

Topics and the broker come from the agent's variables: ``DRIFTLINE_TOPICS__REQUESTS``,
``DRIFTLINE_TOPICS__OUTCOMES``, ``DRIFTLINE_KAFKA__*`` (or ``KAFKA_BOOTSTRAP_SERVERS``).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import ConfigurationError, ServiceUnavailableError

if TYPE_CHECKING:
    from producers.stream import EventStream

__all__ = ["add_arguments", "run"]


def _rate(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 (as fast as possible) or more")
    return value


def _start_time(text: str) -> datetime:
    if text == "now":
        return datetime.now(UTC)
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected an ISO 8601 time or 'now'") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="seeds every random choice (default: 0)")
    parser.add_argument("--count", type=int, help="events to send (default: the scenario's / every row)")
    parser.add_argument(
        "--rate",
        type=_rate,
        help="events per second, 0 for as fast as possible (default: the scenario's; 1000 for a replay)",
    )
    parser.add_argument(
        "--outcome-share", type=float, default=1.0, help="share of requests followed by an outcome"
    )
    parser.add_argument(
        "--outcome-delay-s", type=float, default=0.0, help="seconds an outcome follows its request"
    )
    parser.add_argument("--run-id", help="request-id prefix (default: SCENARIO-sSEED); one per run")
    parser.add_argument("--model-name", help="the requests' model name (default: the data's model)")
    parser.add_argument("--model-version", help="the requests' model version (default: the newest)")
    parser.add_argument(
        "--start-time",
        type=_start_time,
        help="event time of the first event, ISO 8601 or 'now' (default: 2026-01-01T00:00:00Z)",
    )
    parser.add_argument(
        "--event-interval-s", type=float, default=0.01, help="event time between events (default: 0.01)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress line")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="source", required=True, metavar="SOURCE")
    scenario = sub.add_parser(
        "scenario",
        help="an example model's data under a scripted drift schedule",
        description="Rows drawn from an example model's dataset, under a seeded drift schedule.",
    )
    scenario.add_argument(
        "name",
        nargs="?",
        metavar="NAME",
        help="calm, covariate, gradual, recurring, concept, schema or demo (see --list)",
    )
    scenario.add_argument(
        "--model",
        default="breast-cancer",
        help="breast-cancer, classification-20 or diabetes (default: %(default)s)",
    )
    scenario.add_argument("--schedule", type=Path, help="your own scenario, a .toml or .json file")
    scenario.add_argument("--list", action="store_true", help="print every scenario's schedule and exit")
    _common(scenario)

    replay = sub.add_parser(
        "replay",
        help="the rows of a CSV file whose columns are a package's features",
        description="Replay a CSV file; its columns must be the package's features (and the label).",
    )
    replay.add_argument("file", type=Path, help="CSV file with a header row")
    replay.add_argument(
        "--package", type=Path, required=True, help="model package directory (or its manifest.json)"
    )
    replay.add_argument("--label-column", help="column with the true label or value, sent as outcomes")
    replay.add_argument("--schedule", type=Path, help="a drift schedule to apply, a .toml or .json file")
    replay.add_argument(
        "--shuffle",
        action="store_true",
        help="replay the rows in an order drawn from --seed instead of file order (a file sorted or "
        "grouped by time, class or source drifts by itself in file order)",
    )
    _common(replay)


def run(args: argparse.Namespace) -> int:
    # Importing agent.kafka installs the filter that keeps SASL login tokens out of aiokafka's DEBUG
    # log; the producers package cannot import agent, so the command installs it for them.
    import agent.kafka  # noqa: F401
    from producers.errors import ProducerError, PublishError

    try:
        if args.source == "scenario" and args.list:
            _list(args.model)
            return 0
        stream = _stream(args)
        return _publish(args, stream)
    except PublishError as exc:
        raise ServiceUnavailableError(str(exc)) from exc
    except ProducerError as exc:
        raise ConfigurationError(str(exc)) from exc


def _list(model: str) -> None:
    from agent.cli.extras import require

    require("build", "driftline produce scenario", modules=("sklearn",))
    from producers.scenarios import SCENARIOS, builtin_scenario

    for name in SCENARIOS:
        scenario = builtin_scenario(name, model)
        print(f"{scenario.table()}\n  default rate {scenario.rate:g} events/s\n")


def _stream(args: argparse.Namespace) -> EventStream:
    from producers.schedule import Scenario
    from producers.stream import DEFAULT_START_TIME

    options = {
        "seed": args.seed,
        "count": args.count,
        "outcome_share": args.outcome_share,
        "outcome_delay_s": args.outcome_delay_s,
        "run_id": args.run_id,
        "model_name": args.model_name,
        "model_version": args.model_version,
        "start_time": args.start_time or DEFAULT_START_TIME,
        "event_interval_s": args.event_interval_s,
    }
    schedule = Scenario.load(args.schedule) if args.schedule is not None else None
    if args.source == "replay":
        from producers.replay import replay

        return replay(
            args.file,
            args.package,
            label_column=args.label_column,
            scenario=schedule,
            shuffle=args.shuffle,
            **options,
        )

    from agent.cli.extras import require

    # The built-in scenarios draw their rows from scikit-learn's bundled datasets.
    require("build", "driftline produce scenario", modules=("sklearn",))
    from producers.scenarios import builtin_scenario, generate

    if (args.name is None) == (schedule is None):
        raise ConfigurationError("give a scenario NAME or --schedule FILE (one of the two)")
    scenario = schedule if schedule is not None else builtin_scenario(args.name, args.model)
    return generate(scenario, model=args.model, **options)


def _publish(args: argparse.Namespace, stream: EventStream) -> int:
    import asyncio

    from producers.config import ProducerSettings
    from producers.publish import Progress, publish

    settings = ProducerSettings()
    rate = stream.scenario.rate if args.rate is None else args.rate
    print(stream.table())
    print(
        f"sending {stream.count:,} events for model {stream.model_name!r} to "
        f"{settings.topics.requests!r} (outcomes to {settings.topics.outcomes!r}) at "
        f"{settings.kafka.bootstrap_servers}, "
        + (f"{rate:g} events/s" if rate > 0 else "as fast as possible"),
        flush=True,
    )
    progress = None if args.quiet else Progress(sys.stderr)
    summary = asyncio.run(
        publish(stream, settings=settings, rate=rate, outcome_delay_s=args.outcome_delay_s, progress=progress)
    )
    print(summary.format())
    return 0
