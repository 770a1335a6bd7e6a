"""The benchmark harness's pure parts, so that ``python -m bench`` does not rot (no timing asserted)."""

from __future__ import annotations

import doctest
import os
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

import bench._harness
import bench.sweep
from agent.models.repository import ModelRepository
from agent.serving.handler import Record
from bench._faust_take import build_handler
from bench._harness import (
    Sample,
    latency_summary,
    machine_busy_ticks,
    percentile,
    phase_of_stack,
    proc_cpu_seconds,
    proc_peak_rss_mb,
    profile_split,
    steady_window,
)
from bench._naive import NaiveHandler
from bench._passthrough import PassThrough
from bench.run import _ratio, _summarize, _targets
from producers.scenarios import generate


def test_harness_examples() -> None:
    # bench/ is not among pytest's doctest paths: its examples run here.
    for module in (bench._harness, bench.sweep):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_percentiles_and_latency() -> None:
    assert percentile([5.0], 99) == 5.0
    assert percentile([1, 2, 3, 4, 5], 50) == 3
    sent = {f"k{i}".encode(): 1000 + i for i in range(100)}
    done = {k: v + (10 if i < 98 else 500) for i, (k, v) in enumerate(sent.items())}
    summary = latency_summary(sent, done, skip_before_ms=1010)
    assert summary["count"] == 90 and summary["missing"] == 0
    assert summary["p50_ms"] == 10 and summary["max_ms"] == 500


def test_steady_window_waits_for_every_worker() -> None:
    readings = [(0.0, 0, False), (1.0, 200, False), (2.0, 400, True), (3.0, 700, True), (4.0, 1000, True)]
    samples = [Sample(t, c, {"w": t / 2}, t, ready) for t, c, ready in readings]
    window = steady_window(samples, 1000)
    assert window is not None
    assert (window.start.t, window.end.t, window.events) == (2.0, 4.0, 600)
    assert window.cpu_share("w") == 0.5
    assert steady_window(samples[:2], 1000) is None


def test_proc_readings_of_this_process() -> None:
    cpu = proc_cpu_seconds(os.getpid())
    assert cpu is not None and cpu >= 0
    rss = proc_peak_rss_mb("self")
    assert rss is not None and rss > 1
    assert proc_cpu_seconds(2**22 + 7) is None  # beyond pid_max: no such process
    assert machine_busy_ticks("cpu  100 0 50 1000 10 0 0 0 0 0\ncpu0 1 2 3 4\n") == pytest.approx(
        150 / 100 * 100 / os.sysconf("SC_CLK_TCK")
    )


def test_profile_phases() -> None:
    root = "/work/x/.venv/lib/python3.11/site-packages/"
    stacks = [
        f"_run (agent/serving/loop.py:1);_publish (agent/serving/loop.py:2);"
        f"handle (agent/serving/handler.py:3);"
        f"model_validate_json ({root}pydantic/main.py:9) 6",
        f"_run (agent/serving/loop.py:1);getmany ({root}aiokafka/consumer/consumer.py:5) 2",
        "run_forever (/usr/lib/python3.11/asyncio/base_events.py:1) 2",
    ]
    shares = profile_split(stacks)
    assert shares == {
        "decode + validate (msgspec; pydantic for the rest)": 0.6,
        "consume (aiokafka fetcher, record parsing)": 0.2,
        "event loop (asyncio, selectors)": 0.2,
    }
    assert phase_of_stack(["main (x.py:1)"]) == "other"


def test_summaries_and_targets() -> None:
    runs = [
        {
            "label": "driftline_on",
            "round": 0,
            "events_per_s": 30_000.0,
            "cpu_us_per_event": 30.0,
            "worker_cores": [0.9],
            "rss_peak_mb": 250.0,
        },
        {
            "label": "naive",
            "round": 0,
            "events_per_s": 2_000.0,
            "cpu_us_per_event": 450.0,
            "worker_cores": [0.9],
            "rss_peak_mb": 250.0,
        },
        {"label": "naive", "round": 1, "error": "timeout"},
    ]
    summary = _summarize(runs, "naive")
    assert summary["runs_ok"] == 1 and summary["runs"] == 2
    assert _ratio(runs, "driftline_on", "naive") == 15.0
    report = {
        "summary": {"driftline_on": _summarize(runs, "driftline_on")},
        "ratios": {"on_vs_naive": 15.0, "on_vs_faust_take": 5.0, "on_vs_passthrough": 0.31},
        "latency": {"phases": {"50%": {"p99_ms": 60.0}}, "rss_peak_mb": 280.0, "requests": 1_000_000},
    }
    met = {name: ok for name, (_, _, ok) in _targets(report).items()}
    assert met == {
        "requests/s per worker, monitoring on": False,
        "x the best Faust agent (take, same run)": False,
        "x the pass-through limit (same run)": True,
        "p99 latency at half the highest rate, ms": False,
        "worker RSS peak after 1,000,000 requests, MB": True,
    }
    # With repeated half-rate runs the target reads their median, not the first run alone.
    report["latency"]["half_rate_p99_median"] = 20.0
    assert _targets(report)["p99 latency at half the highest rate, ms"] == (20.0, "< 25 ms", True)


def test_naive_handler_serves_one_event(model_repository: ModelRepository) -> None:
    handler = NaiveHandler(model_repository.root / "classification-20" / "1")
    [message] = list(generate("calm", model="classification-20", seed=3, count=1, outcome_share=0.0))
    prediction = orjson.loads(handler.handle(message.value) or b"")
    assert prediction["request_id"] == message.key.decode()
    assert prediction["model"] == "classification-20"
    assert set(prediction["probabilities"]) == {"0", "1"}
    assert prediction["label"] in (0, 1)
    assert datetime.fromisoformat(prediction["predicted_at"]) <= datetime.now(UTC)
    assert handler.handle(b'{"request_id": "r", "model": "classification-20", "features": {}}') is None
    assert handler.invalid == 1
    assert all(adwin.width == 1 for adwin, _ in handler.detectors)  # one update each


def test_faust_take_handler_is_driftlines_with_every_monitor(
    model_repository: ModelRepository,
) -> None:
    names = ("requests", "predictions", "outcomes", "alerts", "dead", "changelog")
    handler = build_handler(
        {"model_repository": str(model_repository.root), "partitions": 4, **{n: n for n in names}}
    )
    messages = list(generate("calm", model="classification-20", seed=3, count=20, outcome_share=0.0))
    out = handler.handle([Record("requests", i % 4, i, m.key, m.value) for i, m in enumerate(messages)])
    by_topic = {t: [m for m in out if m.topic == t] for t in {m.topic for m in out}}
    assert [m.key for m in by_topic["predictions"]] == [m.key for m in messages]
    # The outcome join is on: the batch's predictions are written to its changelog.
    assert by_topic["changelog"]


def test_passthrough_republishes_as_is() -> None:
    records = [Record("in", 2, 7, b"k", b"v"), Record("in", 0, 8, None, b"w")]
    out = PassThrough("out").handle(records)  # type: ignore[arg-type]
    assert [(m.topic, m.key, m.value, m.partition) for m in out] == [
        ("out", b"k", b"v", 2),
        ("out", None, b"w", 0),
    ]


def test_join_cost_compares_both_layouts_on_the_same_entries() -> None:
    from bench import join_cost

    batches = join_cost._batches(4_000, seed=1)
    base = join_cost.measure(join_cost._fill_baseline, batches, 4_000)
    new = join_cost.measure(join_cost._fill_driftline, batches, 4_000)
    # The point of the compact layout: fewer bytes, and nothing per entry for the GC to walk.
    assert new["bytes_per_entry"] < 0.6 * base["bytes_per_entry"]
    assert base["tracked_objects"] >= 4_000 > new["tracked_objects"] + 3_900
    assert join_cost.main(["--entries", "2000", "--runs", "1"]) == 0


def test_handler_cost_measures_a_tree_in_its_own_process(tmp_path: Path) -> None:
    from bench import handler_cost

    out = tmp_path / "cost.json"
    argv = ["--requests", "1000", "--rounds", "1", "--repeats", "1", "--out", str(out)]
    assert handler_cost.main(argv) == 0
    summary = orjson.loads(out.read_bytes())["summary"]
    assert set(summary) == {"current/on", "current/off"}
    assert all(len(s["passes"]) == 1 and s["median_us"] > 0 for s in summary.values())


def test_probe_runs_driftline_lean_and_logs_collections(tmp_path: Path) -> None:
    import subprocess
    import sys

    log = tmp_path / "gc.log"
    code = (
        "import runpy, sys, gc\n"
        "sys.argv = ['_probe.py', '--lean', '--gc-log', sys.argv[1], 'inspect', '--help']\n"
        "try:\n"
        "    runpy.run_path('bench/_probe.py', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "gc.collect()\n"
        "try:\n"
        "    import sklearn  # noqa: F401\n"
        "except ModuleNotFoundError:\n"
        "    print('lean')\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(log)], capture_output=True, text=True, check=False)
    assert "lean" in done.stdout, done.stderr
    [end, ms, generation] = log.read_text().splitlines()[-1].split()
    assert generation == "2" and float(ms) >= 0 and float(end) > 1e9
