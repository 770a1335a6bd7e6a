"""Pure helpers of ``python -m bench``: statistics, the steady-state window, /proc readings, profiles.

Nothing here talks to Kafka or starts a process, so ``tests/bench/test_smoke.py`` can call all of it.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import socket
import statistics
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "CLOCK_TICKS",
    "PROFILE_PHASES",
    "Sample",
    "SteadyWindow",
    "cpu_model",
    "export_tree",
    "free_port",
    "in_process_serving",
    "jvm_gc_pauses",
    "latency_parts",
    "latency_summary",
    "machine_busy_ticks",
    "median",
    "package_versions",
    "percentile",
    "phase_of_stack",
    "probe_pauses",
    "proc_cpu_seconds",
    "proc_peak_rss_mb",
    "profile_split",
    "short_frame",
    "stall_runs",
    "stalls",
    "steady_window",
]

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, linear between closest ranks (numpy's default).

    Example:
        >>> percentile([1, 2, 3, 4], 50)
        2.5
        >>> percentile(list(range(1, 101)), 99)
        99.01
    """
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    lo = math.floor(rank)
    hi = min(lo + 1, len(ordered) - 1)
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo))


def median(values: Iterable[float | None]) -> float | None:
    """Median of the values that are not None (None if there are none)."""
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def latency_summary(
    sent_ms: dict[bytes, int], done_ms: dict[bytes, int], *, skip_before_ms: int | None = None
) -> dict[str, float | int]:
    """p50/p99/max of ``done - sent`` (milliseconds) over the keys found in both maps.

    ``sent_ms``: request key -> the request record's timestamp (its CreateTime); ``done_ms``:
    request key -> the prediction record's timestamp (LogAppendTime). Requests sent before
    ``skip_before_ms`` (the warm-up) are left out; ``missing`` counts requests with no prediction.

    Example:
        >>> latency_summary({b"a": 0, b"b": 10, b"c": 20}, {b"a": 5, b"b": 30})
        {'count': 2, 'missing': 1, 'p50_ms': 12.5, 'p99_ms': 19.85, 'max_ms': 20}
    """
    latencies = []
    missing = 0
    for key, sent in sent_ms.items():
        if skip_before_ms is not None and sent < skip_before_ms:
            continue
        done = done_ms.get(key)
        if done is None:
            missing += 1
            continue
        latencies.append(done - sent)
    return {
        "count": len(latencies),
        "missing": missing,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies) if latencies else math.nan,
    }


def stalls(
    sent_ms: dict[bytes, int],
    done_ms: dict[bytes, int],
    *,
    skip_before_ms: int | None = None,
    window_ms: int = 100,
    over_ms: float = 50.0,
    top: int = 3,
) -> dict[str, Any]:
    """Where the tail comes from: the windows (by request send time) holding requests slower than
    ``over_ms``, the worst first, and the share of all slow requests the ``top`` worst windows hold.

    A p99 made by one stall (every request of a few windows waited for the same pause) reads
    differently from one made by slowness spread over the run.

    Example:
        >>> sent = {bytes([i]): i * 10 for i in range(40)}
        >>> done = {k: v + (120 if 200 <= v < 260 else 5) for k, v in sent.items()}
        >>> stalls(sent, done)
        {'slow': 6, 'windows': 1, 'top': [{'at_ms': 200, 'slow': 6, 'max_ms': 120}], 'top_share': 1.0}
    """
    windows: dict[int, list[int]] = {}
    start = min(sent_ms.values(), default=0)
    for key, sent in sent_ms.items():
        if skip_before_ms is not None and sent < skip_before_ms:
            continue
        done = done_ms.get(key)
        if done is None or done - sent <= over_ms:
            continue
        windows.setdefault((sent - start) // window_ms, []).append(done - sent)
    slow = sum(len(v) for v in windows.values())
    worst = sorted(windows.items(), key=lambda kv: (-max(kv[1]), kv[0]))[:top]
    return {
        "slow": slow,
        "windows": len(windows),
        "top": [{"at_ms": w * window_ms, "slow": len(v), "max_ms": max(v)} for w, v in worst],
        "top_share": round(sum(len(v) for _, v in worst) / slow, 3) if slow else 0.0,
    }


def stall_runs(runs: Sequence[dict[str, Any]], share: float = 0.1) -> dict[str, Any]:
    """How many runs had a stall: one 100 ms window (by send time) holding more than ``share`` of the
    run's slow requests, from each run's :func:`stalls` report (``{"stalls": {...}}``).

    Example:
        >>> runs = [{"stalls": {"slow": 50, "top": [{"slow": 30}, {"slow": 5}]}},
        ...         {"stalls": {"slow": 40, "top": [{"slow": 3}, {"slow": 2}]}},
        ...         {"stalls": {"slow": 0, "top": []}}]
        >>> stall_runs(runs)
        {'runs': 3, 'with_stall': 1, 'worst_window_shares': [0.6, 0.075, 0.0]}
    """
    shares = []
    for run in runs:
        report = run.get("stalls") or {}
        slow = report.get("slow", 0)
        top = max((w["slow"] for w in report.get("top", [])), default=0)
        shares.append(round(top / slow, 3) if slow else 0.0)
    return {"runs": len(shares), "with_stall": sum(x > share for x in shares), "worst_window_shares": shares}


_JVM_PAUSE = re.compile(r"^\[([0-9T:.+\-]+)\].*\bGC\(\d+\) (Pause [A-Za-z ]+?)(?: \(.*\))? .*? ([0-9.]+)ms$")


# ZGC and Shenandoah pause only briefly, but an allocating thread waits when the collector is late.
_JVM_STALL = re.compile(r"^\[([0-9T:.+\-]+)\].*\b(Allocation Stall) \(.*\) ([0-9.]+)ms$")


def jvm_gc_pauses(lines: Iterable[str], since: float = 0.0, until: float = math.inf) -> list[dict[str, Any]]:
    """The stop-the-world pauses (and ZGC's allocation stalls) in a JVM unified GC log
    (``-Xlog:gc*:...:time``) that ended between ``since`` and ``until`` (Unix seconds): each
    ``{"start", "end", "ms", "kind"}``.

    Example:
        >>> log = ["[2026-12-04T18:45:59.516+0000][gc          ] GC(1460) Pause Young (Normal) "
        ...        "(G1 Evacuation Pause) 229M->186M(469M) 20.405ms",
        ...        "[2026-12-04T18:45:59.516+0000][gc,cpu      ] GC(1460) User=0.02s Sys=0.00s Real=0.02s",
        ...        "[2026-12-04T18:45:05.081+0000][gc] GC(1448) Pause Cleanup 239M->239M(469M) 0.127ms",
        ...        "[2026-12-04T18:53:35.448+0000][gc,phases   ] GC(0) Pause Mark End 0.007ms",
        ...        "[2026-12-04T18:53:36.448+0000][gc] Allocation Stall (kafka-request-handler-0) 3.250ms"]
        >>> for p in jvm_gc_pauses(log):
        ...     print(p["kind"], p["ms"], round(p["end"] - p["start"], 5))
        Pause Young 20.405 0.02041
        Pause Cleanup 0.127 0.00013
        Pause Mark 0.007 1e-05
        Allocation Stall 3.25 0.00325
    """
    from datetime import datetime

    pauses = []
    for line in lines:
        if not line.rstrip().endswith("ms") or ("Pause" not in line and "Allocation Stall" not in line):
            continue
        match = _JVM_PAUSE.match(line.rstrip()) or _JVM_STALL.match(line.rstrip())
        if match is None:
            continue
        stamp, kind, ms = match.groups()
        end = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
        if since <= end <= until:
            pauses.append({"start": end - float(ms) / 1000, "end": end, "ms": float(ms), "kind": kind})
    return pauses


def probe_pauses(lines: Iterable[str]) -> list[dict[str, Any]]:
    """The worker's garbage collections that ``bench/_probe.py`` wrote down.

    Example:
        >>> probe_pauses(["1764874000.500000 12.500 2", "junk"])
        [{'start': 1764874000.4875, 'end': 1764874000.5, 'ms': 12.5, 'kind': 'gen2'}]
    """
    pauses = []
    for line in lines:
        fields = line.split()
        if len(fields) != 3:
            continue
        end, ms = float(fields[0]), float(fields[1])
        pauses.append({"start": end - ms / 1000, "end": end, "ms": ms, "kind": f"gen{fields[2]}"})
    return pauses


def latency_parts(
    sent_ms: dict[bytes, int],
    done_ms: dict[bytes, int],
    handled: dict[bytes, tuple[float, float]],
    *,
    skip_before_ms: int | None = None,
    slow_ms: float = 25.0,
    pauses: dict[str, list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """Where each request's latency went, and what the slow ones (over ``slow_ms``) ran into.

    ``handled``: request key -> (the prediction's ``predicted_at``, its ``latency_ms``), both the
    worker's clock (this machine's, as the record timestamps). A request's latency splits into
    **before** (send to the start of its batch's handling: producer linger, broker, fetch, the batch's
    fill wait, waiting for the batches ahead), **handling** (decode, encode, inference) and **after**
    (serialising, the monitors, producing, the broker's append). ``pauses`` maps a source (``broker``,
    ``worker``) to its stop-the-world pauses (:func:`jvm_gc_pauses`, :func:`probe_pauses`); a slow
    request ran into one if it overlaps its send-to-append span.

    Example:
        >>> sent = {b"a": 1000, b"b": 1000, b"c": 1000}
        >>> done = {b"a": 1010, b"b": 1040, b"c": 1050}
        >>> handled = {b"a": (1.006, 2.0), b"b": (1.008, 2.0), b"c": (1.034, 30.0)}
        >>> pauses = {"broker": [{"start": 1.02, "end": 1.035, "ms": 15.0, "kind": "Pause Young"}]}
        >>> parts = latency_parts(sent, done, handled, pauses=pauses)
        >>> parts["p50_ms"], parts["slow"], parts["slow_by_part"], parts["slow_in_pause"]
        ({'before': 4.0, 'handling': 2.0, 'after': 16.0}, 2, {'after': 1, 'handling': 1}, {'broker': 2})
    """
    rows = []
    for key, sent in sent_ms.items():
        if skip_before_ms is not None and sent < skip_before_ms:
            continue
        done, seen = done_ms.get(key), handled.get(key)
        if done is None or seen is None:
            continue
        predicted_ms, inside = seen[0] * 1000.0, seen[1]
        start = predicted_ms - inside
        rows.append((sent, done, start - sent, inside, done - predicted_ms))
    names = ("before", "handling", "after")
    out: dict[str, Any] = {
        "count": len(rows),
        "p50_ms": {n: round(percentile([r[2 + i] for r in rows], 50), 2) for i, n in enumerate(names)},
        "p99_ms": {n: round(percentile([r[2 + i] for r in rows], 99), 2) for i, n in enumerate(names)},
    }
    slow = [r for r in rows if r[1] - r[0] > slow_ms]
    by_part: dict[str, int] = {}
    for r in slow:
        part = names[max(range(3), key=lambda i: r[2 + i])]
        by_part[part] = by_part.get(part, 0) + 1
    in_pause: dict[str, int] = {}
    for source, spans in (pauses or {}).items():
        hit = 0
        for r in slow:
            lo, hi = r[0] / 1000.0, r[1] / 1000.0
            if any(p["start"] < hi and p["end"] > lo for p in spans):
                hit += 1
        in_pause[source] = hit
    out.update(
        {
            "slow_over_ms": slow_ms,
            "slow": len(slow),
            "slow_by_part": dict(sorted(by_part.items(), key=lambda kv: -kv[1])),
            "slow_in_pause": in_pause,
        }
    )
    return out


@dataclass(frozen=True)
class Sample:
    """One reading taken while a topic drains.

    ``cpu`` maps a process label (``worker0``, ``broker``, ``bench``) to its CPU seconds so far;
    ``machine_busy`` is the whole machine's busy CPU seconds so far (all cores).
    """

    t: float
    count: int
    cpu: dict[str, float]
    machine_busy: float
    ready: bool = True
    """Every worker had its partitions at this reading (after start-up and rebalances)."""


@dataclass(frozen=True)
class SteadyWindow:
    """The steady part of a drain: between the samples bounding ``low``..``high`` of the target."""

    start: Sample
    end: Sample

    @property
    def events(self) -> int:
        return self.end.count - self.start.count

    @property
    def seconds(self) -> float:
        return self.end.t - self.start.t

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else math.nan

    def cpu_seconds(self, label: str) -> float:
        return self.end.cpu.get(label, 0.0) - self.start.cpu.get(label, 0.0)

    def cpu_share(self, label: str) -> float:
        """CPU of ``label`` over the window, in cores (1.0 = one core busy all the time)."""
        return self.cpu_seconds(label) / self.seconds if self.seconds > 0 else math.nan

    def machine_cores_busy(self) -> float:
        return (self.end.machine_busy - self.start.machine_busy) / self.seconds if self.seconds else math.nan


def steady_window(
    samples: Sequence[Sample], target: int, low: float = 0.1, high: float = 0.9
) -> SteadyWindow | None:
    """The window from the first ready sample at or past ``low * target`` outputs to the first one at
    or past ``high * target``: start-up, group joins and the tail are left out.

    Example:
        >>> s = [Sample(t, c, {}, 0.0) for t, c in [(0, 0), (1, 0), (2, 100), (3, 300), (4, 500), (5, 500)]]
        >>> w = steady_window(s, 500)
        >>> (w.start.t, w.end.t, w.events, w.rate)
        (2, 4, 400, 200.0)
    """
    start = next((s for s in samples if s.ready and s.count >= low * target), None)
    if start is None:
        return None
    end = next((s for s in samples if s.t > start.t and s.count >= high * target), None)
    if end is None or end.count <= start.count:
        return None
    return SteadyWindow(start, end)


# --- /proc readings ------------------------------------------------------------------------------


def proc_cpu_seconds(pid: int | str) -> float | None:
    """User + system CPU seconds of a process (all its threads) from ``/proc/<pid>/stat``."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its closing one.
    fields = raw[raw.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / CLOCK_TICKS


def proc_peak_rss_mb(pid: int | str) -> float | None:
    """Peak resident set size (``VmHWM``) of a process, in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def machine_busy_ticks(stat_text: str | None = None) -> float:
    """Busy CPU seconds of the whole machine so far (all cores), from the ``cpu`` line of /proc/stat."""
    text = stat_text if stat_text is not None else Path("/proc/stat").read_text()
    first = text.splitlines()[0].split()
    values = [int(v) for v in first[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    busy = sum(values[:8]) - idle  # user nice system idle iowait irq softirq steal (guest is in user)
    return busy / CLOCK_TICKS


# --- the hot path's profile ----------------------------------------------------------------------

PROFILE_PHASES: list[tuple[str, tuple[str, ...]]] = [
    ("inference (ONNX Runtime)", ("onnxruntime/", "agent/models/package.py")),
    (
        "encode features (agent/models/encoding.py, columnar.py)",
        (
            "agent/models/encoding.py",
            "agent/models/columnar.py",
            "_fast_rows (agent/serving/handler.py",
            "_encode (agent/serving/handler.py",
        ),
    ),
    (
        "decode + validate (msgspec; pydantic for the rest)",
        (
            "pydantic",
            "msgspec/",
            "_decode (agent/serving/handler.py",
            "_decode_request (agent/serving/handler.py",
            "decode (agent/serving/wire.py",
            "parse_event_times (agent/serving/wire.py",
            "_parse_one (agent/serving/wire.py",
        ),
    ),
    ("monitoring (agent/monitoring, river)", ("agent/monitoring/", "river/")),
    ("metrics (prometheus_client)", ("prometheus_client/",)),
    (
        "build + serialize predictions (agent/serving/handler.py, wire.py)",
        ("agent/serving/handler.py", "agent/serving/wire.py"),
    ),
    (
        "produce (batch building, aiokafka producer)",
        ("_publish (agent/serving/loop.py", "aiokafka/producer/"),
    ),
    ("consume (aiokafka fetcher, record parsing)", ("aiokafka/consumer/",)),
    ("commit, acks (agent/serving/loop.py)", ("agent/serving/loop.py",)),
    (
        "network + protocol (aiokafka conn/client)",
        ("aiokafka/conn.py", "aiokafka/client.py", "aiokafka/protocol/"),
    ),
    ("faust + mode (web, timers, sensors)", ("faust/", "mode/", "aiohttp/")),
    ("event loop (asyncio, selectors)", ("asyncio/", "selectors.py", "uvloop")),
]
"""(phase, markers): a sample belongs to the phase of the deepest stack frame holding a marker."""


_REPO = str(Path(__file__).resolve().parent.parent) + "/"
_PREFIX = re.compile(r"\((?:[^()]*?/site-packages/|" + re.escape(_REPO) + ")")


def short_frame(frame: str) -> str:
    """A py-spy frame with its path made relative to site-packages or the repository.

    Example:
        >>> short_frame("run (/x/.venv/lib/python3.11/site-packages/onnxruntime/capi/s.py:220)")
        'run (onnxruntime/capi/s.py:220)'
    """
    return _PREFIX.sub("(", frame, count=1)


def phase_of_stack(frames: Sequence[str]) -> str:
    """The phase of one sampled stack (root first), by the deepest frame that names a phase.

    Example:
        >>> phase_of_stack(["_run (agent/serving/loop.py:1)", "_publish (agent/serving/loop.py:2)",
        ...                 "handle (agent/serving/handler.py:3)", "run (onnxruntime/capi/session.py:4)"])
        'inference (ONNX Runtime)'
        >>> phase_of_stack(["_publish (agent/serving/loop.py:2)", "append (aiokafka/record/records.py:9)"])
        'produce (batch building, aiokafka producer)'
    """
    for raw in reversed(frames):
        frame = short_frame(raw)
        for phase, markers in PROFILE_PHASES:
            if any(m in frame for m in markers):
                return phase
    return "other"


def profile_split(raw_lines: Iterable[str]) -> dict[str, float]:
    """Shares (0-1) of py-spy samples per phase, from py-spy's ``--format raw`` output.

    Example:
        >>> shares = profile_split(["a (agent/models/encoding.py:1) 3", "b (asyncio/events.py:2) 1"])
        >>> [(phase.split(" (")[0], share) for phase, share in shares.items()]
        [('encode features', 0.75), ('event loop', 0.25)]
    """
    counts: dict[str, int] = {}
    total = 0
    for line in raw_lines:
        line = line.strip()
        if not line:
            continue
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        phase = phase_of_stack(stack.split(";"))
        counts[phase] = counts.get(phase, 0) + int(n)
        total += int(n)
    return {k: v / total for k, v in sorted(counts.items(), key=lambda kv: -kv[1])} if total else {}


def export_tree(ref: str, target: Path) -> Path:
    """agent/, schemas/ and producers/ as they are at ``ref``, in ``target`` (``git archive``): another
    commit's code for a same-run baseline (``--baseline-ref``)."""
    target.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", "--format=tar", ref, "agent", "schemas", "producers"],
        cwd=_REPO,
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a worker's web server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_model() -> str:
    """The CPU's model name as ``/proc/cpuinfo`` gives it (``?`` elsewhere)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "?"


def package_versions(names: Iterable[str]) -> dict[str, str]:
    """Installed versions of ``names`` (those not installed are left out)."""
    versions = {}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def in_process_serving(root: Path, *, outcomes: bool = False) -> tuple[Any, Any]:
    """A ``RequestHandler`` over the packages in ``root`` and its ``DriftObserver``, as one worker runs
    them (its detectors in process), alerts to the topic ``alerts`` and, with ``outcomes``, outcomes
    joined from the topic ``outcomes``. An in-process timing is no serving latency: the latency watch
    is left out of the count."""
    from agent.models.registry import ModelRegistry
    from agent.monitoring.incidents import IncidentManager, InMemoryIncidentStore
    from agent.monitoring.model_monitor import MonitorSettingsView
    from agent.monitoring.observer import DriftObserver
    from agent.serving.handler import RequestHandler

    registry = ModelRegistry(root)
    registry.refresh()
    observer = DriftObserver(
        IncidentManager(InMemoryIncidentStore(), cooldown_s=3600.0),
        settings=MonitorSettingsView(latency_threshold=1e12),
        resolve=registry.resolve,
    )
    handler = RequestHandler(
        registry,
        predictions_topic="predictions",
        dead_letters_topic="dead",
        max_event_bytes=65536,
        observers=[observer],
        alerts_topic="alerts",
        outcomes_topic="outcomes" if outcomes else None,
    )
    return handler, observer


def in_process_record(model: str, topic: str, i: int, body: dict[str, object], *, partitions: int = 1) -> Any:
    """Record ``i`` of ``topic`` for :func:`in_process_serving`'s handler: request id ``r{i}`` of
    ``model``, with ``body`` (a request's ``features``, an outcome's ``label``), on partition
    ``i % partitions``."""
    import json

    from agent.serving.handler import Record

    value = json.dumps({"request_id": f"r{i}", "model": model, **body}).encode()
    return Record(topic, i % partitions, i, None, value)
