"""Build a verified ONNX model package (model.onnx + manifest.json).

From a bundled example (--example), your own training module (--module FILE.py or pkg.mod), whose
function (--function, default `train`) returns an agent.packaging.training.TrainingResult holding a
scikit-learn, XGBoost or LightGBM model (see examples/train_example.py, examples/train_lightgbm.py),
or an ONNX file you already have (--onnx model.onnx --reference reference.csv [--holdout holdout.csv
--label-column y], see examples/credit/; without --holdout a seeded 20 % of the reference rows is split
off as the holdout, with a warning, unless --no-holdout-split). A trained model is converted to ONNX
(skl2onnx, onnxmltools) and checked against its own library on the holdout rows; an ONNX file is checked
against the CSV's columns. Either is summarised and written atomically to REPOSITORY/NAME/VERSION/.
Pickle and joblib files are refused: loading them runs arbitrary code. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.models.repository import ModelRepository
    from agent.packaging.builder import BuiltPackage
    from agent.packaging.progress import Progress

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
    source.add_argument(
        "--onnx", type=Path, metavar="FILE", help="an ONNX model you already have (needs --reference)"
    )
    parser.add_argument(
        "--reference",
        type=Path,
        metavar="CSV",
        help="with --onnx: the reference (training) rows, one numeric column per feature",
    )
    parser.add_argument(
        "--holdout",
        type=Path,
        metavar="CSV",
        help="with --onnx: rows kept out of training, for the scores and the output's reference "
        "(default: a seeded 20%% of the reference rows, see --no-holdout-split)",
    )
    parser.add_argument(
        "--no-holdout-split",
        dest="holdout_split",
        action="store_false",
        help="with --onnx and no --holdout: keep every reference row in the reference instead of "
        "splitting a seeded 20%% off as the holdout (scores and the output's reference then come from "
        "the reference rows)",
    )
    parser.add_argument(
        "--label-column", metavar="NAME", help="with --onnx: the CSVs' label column (not a feature)"
    )
    parser.add_argument(
        "--missing",
        choices=("reject", "allow"),
        help="with --onnx: what serving does with a request that lacks a feature (an empty cell, null): "
        "reject it to the dead-letter topic (the default), or allow it through to the graph as NaN, "
        "for a graph that handles NaN itself (an imputer in it, trees that route NaN)",
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
    if args.onnx:
        return Path(args.onnx).stem.replace("_", "-")
    module = str(args.module)
    stem = Path(module).stem if module.endswith(".py") or "/" in module else module.rsplit(".", 1)[-1]
    return stem.replace("_", "-")


def run(args: argparse.Namespace) -> int:
    from agent.cli.extras import require

    require("build", "driftline package")
    from agent.errors import ConfigurationError
    from agent.models.repository import ModelRepository
    from agent.packaging.progress import Progress
    from agent.settings import Settings

    started = time.perf_counter()
    _check_paths(args)
    root = args.repository if args.repository is not None else Settings().serving.model_repository
    repository = ModelRepository(root)
    name = args.name or _default_name(args)
    version = args.version or repository.next_version(name)
    target = repository.package_dir(name, version)
    if target.exists() and not args.force:
        raise ConfigurationError(f"{target}: package already exists; pass --force to replace it")
    progress = Progress(None if args.quiet else sys.stderr)

    built: BuiltPackage
    changes: tuple[str, ...] = ()
    if args.onnx:
        from agent.packaging.onnx_import import build_from_onnx

        imported = build_from_onnx(
            args.onnx,
            args.reference,
            holdout=args.holdout,
            label_column=args.label_column,
            name=name,
            version=version,
            repository=repository,
            force=args.force,
            progress=progress,
            split_holdout=args.holdout_split,
            missing=args.missing or "reject",
        )
        built, changes = imported, imported.changes
    else:
        built = _train_and_build(args, name, version, repository, progress)

    if args.quiet:
        # No progress on stderr, but what the build warned about must still be said.
        for warning in progress.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    manifest = built.manifest
    training = manifest.training
    if training.evaluated_on == "none":
        scores = "no scores: no labelled rows (name the label column with --label-column)"
    elif manifest.task == "regression":
        r2 = "n/a" if training.r2 is None else f"{training.r2:.4f}"
        scores = f"{training.evaluated_on} MAE {training.mae:.4g}, R^2 {r2}"
    else:
        auc = "n/a" if training.roc_auc is None else f"{training.roc_auc:.4f}"
        scores = f"{training.evaluated_on} accuracy {training.accuracy:.4f}, ROC AUC {auc}"
    estimator = manifest.estimator.rsplit(".", 1)[-1]
    print(f"built {built.path} ({estimator}, {manifest.task}, {len(manifest.features)} features)")
    print(f"  {built.parity}")
    for change in changes:
        print(f"  graph: {change}")
    print(f"  {scores}")
    for note in built.notes:
        print(f"  {note}")
    print(f"  sha256 {manifest.onnx_sha256}")
    print(f"  total {time.perf_counter() - started:.2f} s")
    return 0


def _check_paths(args: argparse.Namespace) -> None:
    """Refuses pickles by name before anything is read, and --onnx's companions without it."""
    from agent.errors import ConfigurationError
    from agent.models.package import PICKLE_SUFFIXES, refuse_pickle

    for given in (args.module, args.onnx, args.reference, args.holdout):
        if given is not None and Path(given).suffix.lower() in PICKLE_SUFFIXES:
            refuse_pickle(Path(given))
    if args.onnx is not None and args.reference is None:
        raise ConfigurationError(
            "--onnx needs --reference FILE.csv: the reference rows give the model its feature names "
            "and the statistics drift is measured against"
        )
    if args.onnx is None:
        given = ("reference", "holdout", "label_column", "missing")
        extra = [f"--{a.replace('_', '-')}" for a in given if getattr(args, a) is not None]
        if not args.holdout_split:
            extra.append("--no-holdout-split")
        if extra:
            raise ConfigurationError(f"{', '.join(extra)}: only with --onnx")


def _train_and_build(
    args: argparse.Namespace, name: str, version: str, repository: ModelRepository, progress: Progress
) -> BuiltPackage:
    from agent.packaging.builder import build_package
    from agent.packaging.training import TrainingResult, load_training_function

    with progress.step("train"):
        if args.example:
            from agent.packaging.examples import EXAMPLES

            result: TrainingResult = EXAMPLES[args.example]()
        else:
            result = load_training_function(args.module, args.function)()
    return build_package(
        result,
        name=name,
        version=version,
        repository=repository,
        force=args.force,
        progress=progress,
    )
