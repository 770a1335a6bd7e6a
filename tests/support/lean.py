"""A Python interpreter that behaves as if driftline were installed without its optional extras.

The development environment has every extra installed, and some libraries import scikit-learn when
they find it (river does, for an optional helper). :data:`LEAN` is a ``python -c`` program that first
makes the extras' modules unimportable (an ``ImportError``, exactly what a missing distribution gives),
then runs ``driftline`` with the remaining arguments.
"""

from __future__ import annotations

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
"""The top-level modules of the ``build`` and ``demo`` extras."""

LEAN = f"""
import importlib.abc
import sys

BLOCKED = {EXTRA_MODULES!r}


class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (a lean install)", name=name)
        return None


sys.meta_path.insert(0, NotInstalled())
sys.argv[0] = "driftline"
from agent.cli import main

sys.exit(main())
"""
