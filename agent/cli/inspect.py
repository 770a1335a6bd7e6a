"""Verify a model package and print a summary of its manifest.

PATH is a package directory (NAME/VERSION/), its model.onnx or manifest.json, or a model's folder
NAME/ (then its newest version). The package is loaded exactly as the server would load it (digest,
manifest, graph, opsets, ONNX Runtime session) and scored once on a row of reference medians.
Technical-drift findings (libraries installed at other versions than the package was built with)
are listed; with --strict they make the exit status 1.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.models.package import LoadedModel
    from schemas.manifest import Manifest

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, metavar="PATH", help="package directory (or NAME/ folder)")
    parser.add_argument("--json", action="store_true", help="print the manifest as JSON instead")
    parser.add_argument(
        "--strict", action="store_true", help="exit with status 1 if there are technical-drift findings"
    )


def _resolve(path: Path) -> Path:
    """A model's folder (versions inside, no manifest) stands for its newest package."""
    from agent.models.repository import MANIFEST_FILE, ModelRepository

    if path.is_dir() and not (path / MANIFEST_FILE).exists():
        newest = ModelRepository(path.parent).newest(path.name)
        if newest is not None:
            return newest.path
    return path


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _median_row(manifest: Manifest) -> list[float]:
    from schemas.manifest import CategoricalStatistics

    row = []
    for feature in manifest.features:
        stats = manifest.reference.features[feature.name]
        if isinstance(stats, CategoricalStatistics):
            most_common = max(stats.frequencies, key=stats.frequencies.__getitem__)
            row.append(feature.category_index(most_common))
        else:
            row.append(stats.quantiles[50] if stats.quantiles else 0.0)
    return row


def _summary(model: LoadedModel) -> list[str]:
    import numpy as np

    from schemas.manifest import CategoricalStatistics

    m = model.manifest
    t = m.training
    v = m.versions
    lines = [
        f"package     {model.path}",
        f"model       {m.name} {m.version} ({m.task})",
        f"estimator   {m.estimator}",
        f"created     {m.created_at.isoformat()}",
        f"sha256      {m.onnx_sha256} (verified)",
        "built with  "
        + ", ".join(f"{k} {val}" for k, val in v.packages().items())
        + "".join(f"; trained/converted with {k} {val}" for k, val in v.frameworks.items())
        + "; opsets "
        + ", ".join(f"{d} {n}" for d, n in v.opsets.items()),
    ]
    if t.evaluated_on == "none":
        scores = "no scores (no labelled rows)"
    elif m.task == "regression":
        scores = f"MAE {_fmt(t.mae)}, R^2 {_fmt(t.r2)} (on {t.evaluated_on})"
    else:
        scores = f"accuracy {_fmt(t.accuracy)}, ROC AUC {_fmt(t.roc_auc)} (on {t.evaluated_on})"
    lines.append(f"training    {t.rows} rows, {t.holdout_rows} holdout; {scores}")
    o = m.outputs
    if o.value is not None:
        lines.append(f"outputs     value={o.value!r}")
    else:
        classes = list(o.class_labels or ())
        lines.append(f"outputs     label={o.label!r} probabilities={o.probabilities!r} classes={classes}")
    out = m.reference.output
    s = out.statistics
    quantiles = f"p05 {_fmt(s.quantiles[5])} p50 {_fmt(s.quantiles[50])} p95 {_fmt(s.quantiles[95])}"
    line = f"reference   {m.reference.rows} rows; {out.quantity}: mean {_fmt(s.mean)}, {quantiles}"
    if out.label_frequencies:
        shares = ", ".join(f"{k} {share:.1%}" for k, share in out.label_frequencies.items())
        line += f"; predicted labels {shares}"
    lines.append(line + f" (output on the {out.rows_from} rows)")
    r = m.reference.reconstruction
    if r is not None:
        lines.append(
            f"multivar.   {len(r.components)} of {len(r.features)} principal components of the numeric "
            f"features kept ({r.variance_kept:.1%} of the variance); reconstruction error mean "
            f"{_fmt(r.error.mean)} ({r.error.count} rows, {r.error_from.replace('_', ' ')})"
        )
    c = m.calibration
    if c is not None:
        curves = ", a curve per predicted class" if c.per_class is not None else ""
        lines.append(
            f"calibration {c.method} on {c.rows} rows ({c.fitted_on.replace('+', ' + ').replace('_', ' ')}"
            f"{curves}); estimated error {c.reference_error:.1%} on the holdout: the reference of the "
            f"served estimate (performance alerts)"
        )
    elif m.task != "regression":
        lines.append(
            "calibration none (too few labelled holdout rows, or none wrong): no estimated error, no "
            "performance alerts"
        )
    elif m.error_model is None:
        lines.append(
            "error model none (it needs 200 labelled holdout rows with no missing value, and to beat a "
            "constant on the checked ones): no estimated error, no performance alerts"
        )
    imp = m.importance
    if imp is not None:
        top = sorted(imp.values.items(), key=lambda kv: -kv[1])
        shown = ", ".join(f"{name} {value:.3g}" for name, value in top[:5])
        more = f" (top 5 of {len(top)})" if len(top) > 5 else ""
        lines.append(
            f"importance  {imp.method.replace('_', ' ')} on {imp.rows} {imp.fitted_on} rows, "
            f"{imp.repeats} repeats: {shown}{more}"
        )
    lines.append(f"features    {len(m.features)}, in input-column order:")
    width = max(len(f.name) for f in m.features)
    for i, feature in enumerate(m.features):
        stats = m.reference.features[feature.name]
        policy: str = feature.missing.action
        value = feature.missing.value
        if value is not None:
            policy += f"({value:.6g})" if isinstance(value, float) else f"({value})"
        if feature.unknown_category == "missing":
            policy += ", unknown as missing"
        if isinstance(stats, CategoricalStatistics):
            ref = ", ".join(f"{c} {share:.0%}" for c, share in stats.frequencies.items())
        else:
            ref = f"mean {_fmt(stats.mean)} std {_fmt(stats.std)} [{_fmt(stats.min)}, {_fmt(stats.max)}]"
            if feature.range is not None:
                ref += f" allowed [{feature.range[0]:g}, {feature.range[1]:g}]"
        ref += f", missing {stats.missing_rate:.1%}"
        lines.append(f"  {i:>3}  {feature.name:<{width}}  {feature.type:<11}  {policy:<12}  {ref}")
    row = np.asarray([_median_row(m)], dtype=np.float32)
    p = model.predict(row)
    if p.values is not None:
        smoke = f"value {p.values[0]:.6g}"
    else:
        assert p.labels is not None and p.probabilities is not None
        rounded = [round(float(x), 4) for x in p.probabilities[0]]
        label = p.labels[0]  # a numpy integer, or a str for string class labels
        smoke = f"label {label.item() if isinstance(label, np.generic) else label!r}, probabilities {rounded}"
    e = m.error_model
    if e is not None and p.values is not None:
        # The second graph is verified like the first when the package loads; run it too.
        expected = model.estimate_errors(row, p.values)[0]
        lines.append(
            f"error model {e.file} sha256 {e.sha256} (verified), reads {e.inputs}; fitted on {e.rows} "
            f"holdout rows, checked on {e.checked_rows}: off by {_fmt(e.check_mae)} vs "
            f"{_fmt(e.constant_mae)} for a constant; estimated MAE {_fmt(e.reference_error)} on the "
            f"holdout"
        )
        smoke += f", estimated absolute error {expected:.6g}"
    lines.append(f"smoke test  reference medians -> {smoke}")
    if model.findings:
        lines.append(f"findings    {len(model.findings)} technical-drift finding(s):")
        lines.extend(f"  - {finding}" for finding in model.findings)
    else:
        lines.append("findings    none: installed versions match the build")
    return lines


def run(args: argparse.Namespace) -> int:
    from agent.models.package import load_package

    model = load_package(_resolve(args.path))
    try:
        if args.json:
            print(model.manifest.model_dump_json(indent=2))
        else:
            print("\n".join(_summary(model)))
        return 1 if args.strict and model.findings else 0
    finally:
        model.close()
