"""The ``driftline`` command.

Each subcommand lives in its own module with two functions, ``add_arguments(parser)`` and
``run(args) -> int``; this module only builds the parser and dispatches. Subcommand modules keep their
heavy imports (ONNX, scikit-learn, Faust) inside ``run`` so that ``driftline --help`` stays fast.

May import: anything in :mod:`agent`, and :mod:`producers`, :mod:`schemas`: the commands are the outermost
layer. Commands that need an optional extra check for it first (:mod:`agent.cli.extras`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from agent.errors import DriftlineError

__all__ = ["main"]

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("agent.cli.run", "run a worker: serve models on Kafka and REST, and watch them for drift"),
    "check": ("agent.cli.check", "check that Kafka and InfluxDB answer (a round trip through each)"),
    "alerts": ("agent.cli.alerts", "list recent drift alerts from InfluxDB, newest first"),
    "report": ("agent.cli.report", "write a model's drift report: one self-contained HTML page"),
    "package": ("agent.cli.package", "package a model: scikit-learn, XGBoost, LightGBM, an ONNX file"),
    "inspect": ("agent.cli.inspect", "verify a model package and print its manifest"),
    "produce": ("agent.cli.produce", "publish requests and outcomes: a drift scenario or a CSV replay"),
    "demo": ("agent.cli.demo", "the demo: a scripted drift scenario through a worker, alerts shown live"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftline",
        description="Serve ONNX models on Kafka and watch them for drift.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=module.__doc__)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args._module.run(args))
    except DriftlineError as exc:
        print(f"driftline {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
