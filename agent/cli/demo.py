"""The driftline demo: a scripted drift scenario through a real worker, with the alerts shown live.

Packages the example model into DIR/models (reusing a package that still verifies), starts one
``driftline run`` worker with its own app id and topics, a local webhook receiver that checks every
signature, and sends the ``demo`` scenario (a covariate shift, a concept change and a few bad
messages). Alerts are printed as they reach the alerts topic. At the end: a summary with the detection
delay of each scripted drift, the alerts read back from InfluxDB, and a plot (DIR/demo.png).

``--package DIR --data FILE.csv`` runs it on any model package instead (one built with ``driftline
package --onnx``, from XGBoost, LightGBM or scikit-learn): the worker serves a copy of it, the
stream replays the CSV's rows (``producers.replay``), the covariate shift moves ``--feature``
(default: the package's first numeric feature) and, with ``--label-column``, the outcomes come from
that column and the concept change flips them; without labels the schedule has no concept change.

Exit status 0 when every scripted drift was detected, 1 when one was missed (named in the summary),
2 when the demo could not run (Kafka unreachable, the worker did not start).

Kafka and InfluxDB come from the usual settings (``KAFKA_BOOTSTRAP_SERVERS``, ``INFLUXDB_*`` or
``DRIFTLINE_*``); ``scripts/demo`` starts local ones first. A shorter ``--count`` compresses the
schedule, so every drift still happens.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from agent.errors import ConfigurationError

__all__ = ["add_arguments", "run"]

# Listed here rather than imported so that `driftline --help` does not import the producers.
_SCENARIOS = ("demo", "covariate", "gradual", "recurring", "concept", "schema", "calm")
_MODELS = ("breast-cancer", "classification-20", "diabetes")


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be above 0")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 100:
        raise argparse.ArgumentTypeError("at least 100 events")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rate", type=_positive, help="events per second (default: the scenario's, 100 for demo: ~2 min)"
    )
    parser.add_argument(
        "--count",
        type=_count,
        help="events to send (default: the scenario's, 12,000 for demo); fewer compress the schedule "
        "(below ~8,000 the concept change may come before the error monitor's warm-up ends)",
    )
    parser.add_argument("--scenario", default="demo", choices=_SCENARIOS, help="default: %(default)s")
    parser.add_argument("--model", default="breast-cancer", choices=_MODELS, help="default: %(default)s")
    parser.add_argument(
        "--package",
        type=Path,
        metavar="DIR",
        help="serve this model package (NAME/VERSION) instead of an example --model; needs --data",
    )
    parser.add_argument(
        "--data", type=Path, metavar="CSV", help="with --package: rows to replay, one column per feature"
    )
    parser.add_argument(
        "--label-column", metavar="NAME", help="with --package: the CSV's label column (outcomes)"
    )
    parser.add_argument(
        "--feature", help="with --package: the feature the covariate drift shifts (default: first numeric)"
    )
    parser.add_argument(
        "--shuffle",
        action="store_true",
        help="with --package: replay the CSV's rows in an order drawn from --seed, not file order (a "
        "file sorted or grouped by time, class or source drifts by itself in file order)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the stream (default: 0)")
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(".driftline-demo"),
        help="model repository, worker logs and the plot go here (default: %(default)s)",
    )
    parser.add_argument(
        "--ready-timeout", type=_positive, default=180.0, help="seconds to wait for the worker (default: 180)"
    )
    parser.add_argument(
        "--keep-topics", action="store_true", help="keep the run's Kafka topics (deleted by default)"
    )


def run(args: argparse.Namespace) -> int:
    import logging

    from agent.cli.extras import require

    require("demo", "driftline demo")
    given = [
        f"--{a.replace('_', '-')}" for a in ("data", "label_column", "feature", "shuffle") if getattr(args, a)
    ]
    if args.package is None and given:
        raise ConfigurationError(f"{', '.join(given)}: only with --package")
    if args.package is not None and args.data is None:
        raise ConfigurationError("--package needs --data FILE.csv: the rows the demo replays through it")

    if not getattr(args, "verbose", False):
        # The demo's own lines are the output; client libraries' INFO records would drown them.
        logging.getLogger().setLevel(logging.WARNING)
    from agent.demo.session import Demo

    return asyncio.run(Demo(args, sys.stdout).run())
