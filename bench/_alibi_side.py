"""alibi-detect's half of ``bench/compare_alibi.py``, run in a venv of its own.

alibi-detect 0.13 needs numpy < 2 and numba < 0.60, driftline's river 0.26 needs numpy >= 2.2.5:
the two cannot share a venv. The driver therefore writes the streams to ``.npy`` files (no
pickle) with a ``job.json`` beside them and runs this script with the compare venv's Python::

    .venv-compare/bin/python bench/_alibi_side.py JOB_DIR

It imports only the standard library, numpy and alibi-detect, and writes ``result.json`` to
``JOB_DIR``. Detectors are used as alibi-detect documents them: one ``predict`` per event, the
thresholds configured by alibi-detect's own simulation (``_configure_thresholds``), whose result is
cached in a JSON file keyed by every input it depends on (detector, reference size, windows, ERT,
bootstraps, features, seed, and for FET the reference counts), since that simulation takes minutes.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

_SIMULATED: dict[tuple[Any, ...], np.ndarray] = {}


def _encode(a: np.ndarray) -> list[Any]:
    return [None if math.isnan(v) else ("inf" if math.isinf(v) else float(v)) for v in a.ravel().tolist()]


def _decode(values: list[Any], shape: list[int], dtype: Any) -> np.ndarray:
    floats = [math.nan if v is None else (math.inf if v == "inf" else v) for v in values]
    return np.array(floats, dtype=dtype).reshape(shape)


class ThresholdCache:
    """alibi-detect's configured thresholds, by configuration, in one JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        self.dirty = False

    def save(self) -> None:
        if self.dirty:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.entries, indent=1, sort_keys=True) + "\n")


def make_detector(kind: str, x_ref: np.ndarray, job: dict[str, Any], cache: ThresholdCache) -> Any:
    """A ``CVMDriftOnline`` (numeric) or ``FETDriftOnline`` (0/1 indicators) on ``x_ref``."""
    from alibi_detect.cd import CVMDriftOnline, FETDriftOnline

    base = CVMDriftOnline if kind == "cvm" else FETDriftOnline
    seed = int(job["seed"])
    key = "|".join(
        [
            base.__name__,
            f"n_ref={x_ref.shape[0]}",
            f"features={x_ref.shape[1]}",
            f"windows={job['windows']}",
            f"ert={job['ert']:g}",
            f"n_bootstraps={job['n_bootstraps']}",
            f"seed={seed}",
        ]
        + ([f"ref_counts={x_ref.sum(axis=0).astype(int).tolist()}"] if kind == "fet" else [])
    )

    class Cached(base):  # type: ignore[valid-type,misc]
        configure_seconds = 0.0
        cached = False

        def _simulate_streams(self, *args: Any) -> np.ndarray:
            # CVM's simulation depends only on the reference size, t_max, windows, bootstraps and
            # the seed, not on the number of features (that enters the quantile): run it once.
            if kind != "cvm":
                return super()._simulate_streams(*args)
            memo = (x_ref.shape[0], *args, tuple(job["windows"]), job["n_bootstraps"], seed)
            if memo not in _SIMULATED:
                _SIMULATED[memo] = super()._simulate_streams(*args)
            return _SIMULATED[memo]

        def _configure_thresholds(self) -> None:
            hit = cache.entries.get(key)
            if hit is not None:
                self.thresholds = _decode(hit["thresholds"], hit["shape"], hit["dtype"])
                if "permit_probs" in hit:
                    self.permit_probs = _decode(hit["permit_probs"], hit["shape"], "float64")
                Cached.cached = True
                Cached.configure_seconds = hit["seconds"]
                return
            np.random.seed(seed)  # alibi-detect simulates with numpy's global generator
            start = time.perf_counter()
            super()._configure_thresholds()
            seconds = time.perf_counter() - start
            entry = {
                "thresholds": _encode(self.thresholds),
                "shape": list(self.thresholds.shape),
                "dtype": str(self.thresholds.dtype),
                "seconds": round(seconds, 1),
            }
            if hasattr(self, "permit_probs"):
                entry["permit_probs"] = _encode(self.permit_probs)
            cache.entries[key] = entry
            cache.dirty = True
            cache.save()
            Cached.configure_seconds = seconds

    kwargs: dict[str, Any] = {"n_bootstraps": int(job["n_bootstraps"]), "verbose": False}
    if kind == "cvm":
        # The boolean (n_ref + t_max)^2 matrices of its simulation, 64 streams at a time by default.
        kwargs["batch_size"] = 64
    detector = Cached(x_ref, ert=float(job["ert"]), window_sizes=list(job["windows"]), **kwargs)
    np.random.seed(seed + 1)  # FET breaks ties at the threshold with numpy's global generator
    return detector


def indicators(codes: np.ndarray, categories: int) -> np.ndarray:
    """One-vs-rest 0/1 columns of category codes ``(n, 1)`` -> ``(n, categories)``."""
    return (codes.reshape(-1, 1) == np.arange(categories)[None, :]).astype(np.float64)


def run_stream(
    stream: dict[str, Any], job: dict[str, Any], root: Path, cache: ThresholdCache
) -> dict[str, Any]:
    """Detection events per replicate (delay streams) or alarms over events (stable streams)."""
    reference = np.load(root / stream["reference"], allow_pickle=False)
    live = np.load(root / stream["live"], allow_pickle=False)
    kind = "fet" if stream["kind"] == "categorical" else "cvm"
    if kind == "fet":
        reference = indicators(reference, int(stream["categories"]))
        live = np.stack([indicators(rep, int(stream["categories"])) for rep in live])
    detector = make_detector(kind, reference, job, cache)
    lead = int(stream["lead"])
    stop_at_first = stream["mode"] == "delay"
    events: list[list[int]] = []
    updates = 0
    spent = 0.0
    for rep in live:
        detector.reset_state()
        fired: list[int] = []
        previous = False
        start = time.perf_counter()
        for i, x in enumerate(rep):
            drift = bool(detector.predict(x, return_test_stat=False)["data"]["is_drift"])
            if stop_at_first:
                # Before the change, an alarm is a false one: counted once per run of alarms, and
                # the detector goes on (so that it meets the change in its steady state).
                if drift and (i >= lead or not previous):
                    fired.append(i)
                if drift and i >= lead:
                    break
                previous = drift
            elif drift:
                # On a stable stream a user resets the detector after each alarm; its ERT counts
                # from a fresh start.
                fired.append(i)
                detector.reset_state()
        spent += time.perf_counter() - start
        updates += i + 1
        events.append(fired)
    return {
        "name": stream["name"],
        "detector": type(detector).__mro__[1].__name__,
        "features": int(reference.shape[1]),
        "events": events,
        "updates": updates,
        "seconds": spent,
        "configure_seconds": type(detector).configure_seconds,
        "thresholds_cached": type(detector).cached,
    }


def cost(job: dict[str, Any], root: Path, cache: ThresholdCache) -> list[dict[str, Any]]:
    """Microseconds per ``predict`` (and per feature) over the last ``measured`` of ``n`` updates.

    The first ``n - measured`` updates fill the windows; a long ``n`` shows what alibi-detect's
    history costs: each detector appends every event and every statistic to numpy arrays
    (``xs``, ``test_stats``, ``drift_preds``), so an update copies them all.
    """
    rng = np.random.default_rng(int(job["seed"]) + 7)
    n_ref = int(job["n_ref"])
    out = []
    categorical = next(s for s in job["streams"] if s["kind"] == "categorical")
    for kind, d, n, measured in job["cost_cases"]:
        if kind == "cvm":
            x_ref = rng.standard_normal((n_ref, d))
            xs = rng.standard_normal((n, d))
        else:
            # The mix streams' reference, whose thresholds are configured already.
            x_ref = indicators(np.load(root / categorical["reference"], allow_pickle=False), d)
            xs = indicators(rng.integers(0, d, (n, 1)).astype(np.float64), d)
        # Its cost does not depend on the thresholds, but its simulation for d features wants
        # 10 * ERT * d bootstraps (the quantile 1 - 1/(ERT d)): configure d features for ERT / d,
        # whose per-feature quantile is the one already simulated.
        fewer = {**job, "ert": job["ert"] / d} if kind == "cvm" and d > 2 else job
        detector = make_detector(kind, x_ref, fewer, cache)
        for x in xs[: n - measured]:
            detector.predict(x, return_test_stat=False)
        start = time.perf_counter()
        for x in xs[n - measured :]:
            detector.predict(x, return_test_stat=False)
        us = (time.perf_counter() - start) / measured * 1e6
        out.append(
            {
                "detector": type(detector).__mro__[1].__name__,
                "features": d,
                "after_updates": n - measured,
                "updates": measured,
                "us_per_update": round(us, 1),
                "us_per_update_per_feature": round(us / d, 1),
            }
        )
    return out


def main() -> None:
    root = Path(sys.argv[1])
    job = json.loads((root / "job.json").read_text())
    import alibi_detect
    import numba
    import scipy

    cache = ThresholdCache(Path(job["thresholds_cache"]))
    started = time.perf_counter()
    results = [run_stream(stream, job, root, cache) for stream in job["streams"]]
    result = {
        "versions": {
            "alibi-detect": alibi_detect.__version__,
            "numpy": np.__version__,
            "numba": numba.__version__,
            "scipy": scipy.__version__,
            "python": sys.version.split()[0],
        },
        "streams": results,
        "cost": cost(job, root, cache),
        "seconds": time.perf_counter() - started,
    }
    cache.save()
    (root / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
