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
    "free_port",
    "latency_summary",
    "machine_busy_ticks",
    "median",
    "package_versions",
    "percentile",
    "phase_of_stack",
    "proc_cpu_seconds",
    "proc_peak_rss_mb",
    "profile_split",
    "short_frame",
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
