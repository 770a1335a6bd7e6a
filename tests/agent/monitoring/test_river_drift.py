"""river's detectors without the rest of river.drift: the worker does not import SciPy's stats."""

from __future__ import annotations

import subprocess
import sys


def _modules_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return set(out.split())


def test_the_worker_imports_neither_kswin_nor_scipy_stats() -> None:
    modules = _modules_after("import agent.app")
    assert "river.drift.adwin" in modules and "river.drift.page_hinkley" in modules
    assert "river.drift" not in modules and "river.drift.kswin" not in modules
    assert "scipy.stats" not in modules and "sklearn" not in modules


def test_a_later_import_of_river_drift_reuses_the_same_classes() -> None:
    modules = _modules_after(
        "from agent.monitoring.river_drift import ADWIN, PageHinkley\n"
        "import river.drift\n"
        "assert river.drift.ADWIN is ADWIN and river.drift.PageHinkley is PageHinkley\n"
        "assert river.drift.KSWIN is not None"
    )
    assert "river.drift.kswin" in modules


def test_river_drift_imported_first_is_used_as_it_is() -> None:
    _modules_after(
        "import river.drift\n"
        "from agent.monitoring.river_drift import ADWIN\n"
        "assert ADWIN is river.drift.ADWIN"
    )


def test_the_detectors_behave_as_rivers() -> None:
    from agent.monitoring.river_drift import ADWIN, PageHinkley

    adwin, ph = ADWIN(delta=0.002), PageHinkley(threshold=5.0)
    drifts = [
        i for i, x in enumerate([0.0] * 500 + [1.0] * 200) if (adwin.update(x), adwin.drift_detected)[1]
    ]
    assert drifts and 500 < drifts[0] < 560
    alarms = [i for i, x in enumerate([0.0] * 300 + [0.5] * 100) if (ph.update(x), ph.drift_detected)[1]]
    assert alarms and 300 < alarms[0] < 330
