"""Write a model's drift report: one self-contained HTML file (no network needed to open it).

The page shows the alerts on a timeline and in a table, each feature's and the output's reference
distribution against the recent one, each monitored statistic over time with the detections marked,
and the joined error over time. It reads the alerts and time series from InfluxDB, the recent requests
and predictions from Kafka, and the reference from the newest package of the model in the repository
(same settings as ``driftline run``). ``--since`` takes a duration (``30m``, ``6h``, ``2d``) or an ISO
time. A worker serves the same page at ``GET /report?model=NAME&since=6h``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from agent.errors import ConfigurationError

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="the model to report on")
    parser.add_argument("--version", help="the package version whose reference to use (default: newest)")
    parser.add_argument(
        "--since", default="6h", help="start: a duration back from now or an ISO time (default: 6h)"
    )
    parser.add_argument(
        "-o", "--output", type=Path, default=Path("report.html"), help="where to write the page"
    )
    parser.add_argument(
        "--sample",
        type=int,
        default=5000,
        help="most recent requests read for the distributions (default: 5000)",
    )


def run(args: argparse.Namespace) -> int:
    from agent.models.repository import ModelRepository
    from agent.report.data import gather, parse_period
    from agent.report.html import render
    from agent.settings import Settings
    from schemas.manifest import Manifest

    settings = Settings()
    repository = ModelRepository(settings.serving.model_repository)
    ref = repository.resolve(args.model, args.version) if args.version else repository.newest(args.model)
    if ref is None:
        raise ConfigurationError(
            f"no package of model {args.model!r} in {settings.serving.model_repository} "
            "(DRIFTLINE_SERVING__MODEL_REPOSITORY)"
        )
    manifest = Manifest.model_validate_json(ref.manifest_path.read_bytes())
    since, until = parse_period(args.since), time.time()
    report = asyncio.run(gather(settings, manifest, since=since, until=until, sample=args.sample))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render([report], generated_at=until), encoding="utf-8")
    for note in report.notes:
        print(f"driftline report: {note}", file=sys.stderr)
    print(f"{args.output} ({len(report.alerts)} alerts, {len(report.distributions)} distributions)")
    return 0
