"""Build a verified ONNX model package from a scikit-learn estimator.

Either a bundled example (--example) or your own training module (--module FILE.py or pkg.mod),
whose function (--function, default `train`) returns an
agent.packaging.training.TrainingResult: see examples/train_example.py. The estimator is converted
with skl2onnx, checked against scikit-learn on the holdout rows, summarised, and written atomically
to REPOSITORY/NAME/VERSION/ (model.onnx + manifest.json). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

__all__ = ["add_arguments", "run"]

# Listed here rather than imported from agent.packaging.examples so that `driftline --help` does not
# import numpy; a test keeps the two lists equal.
EXAMPLE_NAMES = ("breast-cancer", "diabetes", "classification-20")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--example", choices=EXAMPLE_NAMES, help="build a bundled example model")
    source.add_argument(
        "--module",
        metavar="MODULE",
        help="your training module: a path to a .py file or a dotted module name",
    )
    parser.add_argument(
        "--function",
        default="train",
        help="function of --module that returns a TrainingResult (default: %(default)s)",
    )
    parser.add_argument(
        "--name", help="model name (default: the example's name, or the module's last component)"
    )
    parser.add_argument(
        "--version",
        help="package version (default: one after the newest in the repository, or 1)",
    )
    parser.add_argument(
        "--repository",
        type=Path,
        help="model repository folder (default: DRIFTLINE_SERVING__MODEL_REPOSITORY, or ./models)",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing package")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")


def _default_name(args: argparse.Namespace) -> str:
    if args.example:
        return str(args.example)
    module = str(args.module)
    stem = Path(module).stem if module.endswith(".py") or "/" in module else module.rsplit(".", 1)[-1]
    return stem.replace("_", "-")


def run(args: argparse.Namespace) -> int:
    from agent.cli.extras import require

    require("build", "driftline package")
    from agent.errors import ConfigurationError
    from agent.models.repository import ModelRepository
    from agent.packaging.builder import build_package
    from agent.packaging.progress import Progress
    from agent.packaging.training import TrainingResult, load_training_function
    from agent.settings import Settings

    started = time.perf_counter()
    root = args.repository if args.repository is not None else Settings().serving.model_repository
    repository = ModelRepository(root)
    name = args.name or _default_name(args)
    version = args.version or repository.next_version(name)
    target = repository.package_dir(name, version)
    if target.exists() and not args.force:
        raise ConfigurationError(f"{target}: package already exists; pass --force to replace it")
    progress = Progress(None if args.quiet else sys.stderr)

    with progress.step("train"):
        if args.example:
            from agent.packaging.examples import EXAMPLES

            result: TrainingResult = EXAMPLES[args.example]()
        else:
            result = load_training_function(args.module, args.function)()
    built = build_package(
        result,
        name=name,
        version=version,
        repository=repository,
        force=args.force,
        progress=progress,
    )

    manifest = built.manifest
    training = manifest.training
    if manifest.task == "regression":
        r2 = "n/a" if training.r2 is None else f"{training.r2:.4f}"
        scores = f"MAE {training.mae:.4g}, R^2 {r2}"
    else:
        auc = "n/a" if training.roc_auc is None else f"{training.roc_auc:.4f}"
        scores = f"accuracy {training.accuracy:.4f}, ROC AUC {auc}"
    estimator = manifest.estimator.rsplit(".", 1)[-1]
    print(f"built {built.path} ({estimator}, {manifest.task}, {len(manifest.features)} features)")
    print(f"  {built.parity}")
    print(f"  {training.evaluated_on} {scores}")
    print(f"  sha256 {manifest.onnx_sha256}")
    print(f"  total {time.perf_counter() - started:.2f} s")
    return 0
