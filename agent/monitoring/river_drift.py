"""river's ADWIN and Page-Hinkley, imported without the rest of ``river.drift``.

``import river.drift`` runs the package's ``__init__``, which imports every detector it has: KSWIN
brings SciPy's ``stats`` (and, where scikit-learn is installed, scikit-learn), ~80 MB of a worker's
resident memory that nothing here uses. The worker needs two of its modules,
``river/drift/adwin.py`` and ``river/drift/page_hinkley.py``, which import only ``river.base``,
``river.stats`` and river's compiled core. This module loads those two files under their own names,
so that a later ``import river.drift`` (a user's, a test's) finds and reuses them: one class each,
whoever imports it. Where river's layout is not the one expected, it imports the package as before.

May import: river (nothing of driftline).

Example:
    >>> from agent.monitoring.river_drift import ADWIN, PageHinkley
    >>> import river.drift
    >>> ADWIN is river.drift.ADWIN and PageHinkley is river.drift.PageHinkley
    True
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import river

__all__ = ["ADWIN", "PageHinkley"]


def _load(name: str) -> ModuleType:
    """``river.drift.<name>``, loaded from its file without running ``river/drift/__init__.py``."""
    full = f"river.drift.{name}"
    if full in sys.modules:
        return sys.modules[full]
    if "river.drift" in sys.modules:
        return importlib.import_module(full)
    path = Path(river.__file__).parent / "drift" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(full, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {full} from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[full] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[full]
        raise
    return module


if TYPE_CHECKING:
    from river.drift import ADWIN, PageHinkley
else:
    try:
        ADWIN = _load("adwin").ADWIN
        PageHinkley = _load("page_hinkley").PageHinkley
    except (ImportError, AttributeError, OSError):  # another river layout: the package import, as before
        from river.drift import ADWIN, PageHinkley
