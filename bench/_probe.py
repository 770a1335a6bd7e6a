"""``driftline`` as the bench runs it when it looks closer: garbage collections written down, and the
worker as ``pip install .`` installs it.

Run by ``bench/run.py`` as ``python bench/_probe.py [--gc-log PATH] [--lean] run ...`` (a script,
not ``-m bench._probe``, so that ``PYTHONPATH`` alone picks the ``agent`` of the tree under test, as
for ``--baseline-ref``); everything from ``run`` on goes to ``agent.cli.main``.

* ``--gc-log PATH``: a ``gc.callbacks`` hook appends every collection of generation 2, and every one
  of 1 ms or more, to ``PATH`` as ``<wall clock end, s> <duration, ms> <generation>`` when it ends;
  the bench lines them up with the slow requests of its latency phases. Two Python calls per
  collection.
* ``--lean``: the optional extras' modules are unimportable, as in a lean install (the development
  environment has them all, and river imports scikit-learn, and with it SciPy, when it finds it:
  ~90 MB of the worker's memory that the worker image does not have). The same list as
  ``tests/support/lean.py``.
"""

from __future__ import annotations

import gc
import importlib.abc
import sys
import time
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

EXTRA_MODULES = (
    "sklearn",
    "skl2onnx",
    "onnx",
    "onnxconverter_common",
    "onnxmltools",
    "xgboost",
    "lightgbm",
    "matplotlib",
)


class _NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name.split(".")[0] in EXTRA_MODULES:
            raise ModuleNotFoundError(f"No module named {name!r} (a lean install)", name=name)
        return None


def _log_collections(path: str) -> None:
    out = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    started = [0.0]

    def hook(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        took = (time.perf_counter() - started[0]) * 1000.0
        generation = info.get("generation", -1)
        if generation == 2 or took >= 1.0:
            out.write(f"{time.time():.6f} {took:.3f} {generation}\n")

    gc.callbacks.append(hook)


def main(argv: list[str]) -> int:
    args = argv[1:]
    while args and args[0].startswith("--"):
        option = args.pop(0)
        if option == "--gc-log":
            _log_collections(args.pop(0))
        elif option == "--lean":
            sys.meta_path.insert(0, _NotInstalled())
        else:
            raise SystemExit(f"unknown option {option}")
    sys.argv[0] = "driftline"
    from agent.cli import main as driftline

    return driftline(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
