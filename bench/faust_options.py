"""How fast can one driftline serving worker go, and which Faust path gets there?

Run (from the repo root, with the local broker up: ``scripts/kafka up``)::

    .venv/bin/python bench/faust_options.py --events 200000 --runs 3
    .venv/bin/python bench/faust_options.py --events 20000 --runs 1 --options agent_tuned,plain_aiokafka
    .venv/bin/python bench/faust_options.py --events 100000 --runs 3 \
        --options agent_stock,agent_stock_info,agent_stock_linger,agent_stock_fetch \
        --profile agent_stock --profile-events 30000 --out bench/results/faust_options_knobs.json

Findings and the recommendation: ``bench/FAUST_OPTIONS.md``.

What it measures: driftline's request path (one ~600-byte JSON request per Kafka record, keyed by
request id -> one small JSON prediction per request, at-least-once) through several Faust and
non-Faust designs, against the real broker on 127.0.0.1. For every option and run it

1. creates a fresh 1-partition input topic and output topic and pre-fills the input with the same
   pre-generated payloads (the envelope option: the same requests, 100 per record);
2. starts the option as its own worker process (``python -m bench._faust_worker``), which
   measures, itself, the wall time from the first consumed record to the last output acked by the
   broker and its own CPU time over that window (``getrusage``, user + system), and then stops;
3. checks the output topic holds one output per request and the worker's group committed the
   whole input (at-least-once: offsets are committed only after the outputs were acked);
4. deletes the topics and the consumer group.

Every option does the same per-request work (``bench._work.handle``: ``orjson.loads``, a tiny
score, ``orjson.dumps`` of a small dict), so the differences are the framework path. The machine
has 2 busy cores, so each run measures every option once (in a rotated order) and ratios are taken
against the stock agent *of the same run*; the table shows medians over runs. CPU us/event is the
steadier number; events/s also depends on what else the machine was doing.

Options:
  agent_stock            stock Faust agent, one event at a time, ``await topic.send()`` per output
  agent_stock_take       the same with ``stream.take_events(500, within=5 ms)``
  agent_tuned            stock agent + the cheap wins (root logger not at DEBUG, producer_linger
                         5 ms, producer_max_batch_size 256 KiB, consumer_max_fetch_size 32 MiB,
                         session timeout 10 s/heartbeat 1 s)
  agent_tuned_take       cheap wins + take_events(500, 5 ms), outputs still via ``topic.send()``
  agent_take_rawproducer cheap wins + take_events, outputs via Faust's own AIOKafkaProducer in
                         ``create_batch``/``send_batch`` batches, acks awaited per batch
  service_getmany        a Faust app whose hot loop is an ``@app.service`` running its own
                         AIOKafkaConsumer.getmany(500, 5 ms) (own group id), batched produce,
                         manual commit after acks, pipelined (``bench._hotloop``)
  plain_aiokafka         the same loop with no Faust at all: the machine's limit
  agent_envelope         (reference, other wire contract) tuned agent over records that each
                         carry 100 requests, one output record of 100 predictions per input
  agent_stock_info       (knob, on request) stock agent run with loglevel INFO (`faust worker -l
                         info`): the spinner is off, so the root logger is not set to DEBUG
  agent_stock_linger     (knob, on request) stock agent with only producer_linger 5 ms and
                         producer_max_batch_size 256 KiB
  agent_stock_fetch      (knob, on request) stock agent with only consumer_max_fetch_size 32 MiB

Results: a table on stdout and ``bench/results/faust_options.json``. ``--profile`` (default
``service_getmany,agent_take_rawproducer``; ``--profile ''`` for none) adds one extra run of each
named option under cProfile (thread CPU clock) and splits its CPU by package; the profiled shares
are also scaled to the option's measured CPU us/event.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(REPO_ROOT))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: E402
from aiokafka.protocol.admin import DeleteGroupsRequest  # noqa: E402

from bench._harness import cpu_model, free_port, package_versions  # noqa: E402
from bench._work import make_envelopes, make_payloads  # noqa: E402

OPTIONS = [
    "agent_stock",
    "agent_stock_take",
    "agent_tuned",
    "agent_tuned_take",
    "agent_take_rawproducer",
    "service_getmany",
    "plain_aiokafka",
    "agent_envelope",
]
# Single-knob variants of the stock agent (not in the default list: run them with --options).
KNOB_OPTIONS = ["agent_stock_info", "agent_stock_linger", "agent_stock_fetch"]
BASELINE = "agent_stock"
ENVELOPE_SIZE = 100
FAUST_OPTIONS = {o for o in OPTIONS + KNOB_OPTIONS if o != "plain_aiokafka"}


async def _admin(bootstrap: str) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    await admin.start()
    return admin


async def _create_topics(bootstrap: str, names: list[str]) -> None:
    admin = await _admin(bootstrap)
    try:
        await admin.create_topics([NewTopic(n, num_partitions=1, replication_factor=1) for n in names])
    finally:
        await admin.close()


async def _cleanup(bootstrap: str, topics: list[str], groups: list[str]) -> None:
    admin = await _admin(bootstrap)
    try:
        existing = set(await admin.list_topics())
        doomed = [t for t in topics if t in existing]
        if doomed:
            await admin.delete_topics(doomed)
        for g in groups:
            # aiokafka 0.14's admin client has no delete_consumer_groups(): send DeleteGroups to
            # the group's coordinator ourselves. A group that never committed does not exist.
            with contextlib.suppress(Exception):
                node = await admin.find_coordinator(g)
                await admin._send_request_to_node(node, DeleteGroupsRequest([g]))
    finally:
        await admin.close()


async def _prefill(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> float:
    t0 = time.perf_counter()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
        max_batch_size=512 * 1024,
        max_request_size=4 << 20,
    )
    await producer.start()
    try:
        futs = []
        batch = producer.create_batch()
        for k, v in records:
            if batch.append(key=k, value=v, timestamp=None) is None:
                futs.append(await producer.send_batch(batch, topic, partition=0))
                batch = producer.create_batch()
                if batch.append(key=k, value=v, timestamp=None) is None:
                    raise ValueError(f"record of {len(v)} bytes does not fit one batch")
            if len(futs) >= 64:  # bound what is queued but not acked
                await asyncio.gather(*futs)
                futs.clear()
        futs.append(await producer.send_batch(batch, topic, partition=0))
        await asyncio.gather(*futs)
    finally:
        await producer.stop()
    return time.perf_counter() - t0


async def _verify(bootstrap: str, in_topic: str, out_topic: str, group: str) -> dict[str, Any]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    admin = await _admin(bootstrap)
    try:
        tin, tout = TopicPartition(in_topic, 0), TopicPartition(out_topic, 0)
        ends = await consumer.end_offsets([tin, tout])
        committed = await admin.list_consumer_group_offsets(group)
        c = committed.get(tin)
        return {"input_end": ends[tin], "output_end": ends[tout], "committed": c.offset if c else None}
    finally:
        await admin.close()
        await consumer.stop()


def _run_worker(cfg: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Start the option's worker process, wait for its result file, make sure it is gone."""
    result = Path(cfg["result"])
    with open(cfg["log"] + ".out", "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench._faust_worker", json.dumps(cfg)],
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, so we can end it and its children
        )
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not result.exists() and proc.poll() is None:
            time.sleep(0.2)
        # Give it a bounded time to shut down on its own (Faust leaves the group, commits).
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    if not result.exists():
        tail = ""
        for suffix in (".out", ""):
            with contextlib.suppress(OSError):
                tail += Path(cfg["log"] + suffix).read_text(errors="replace")[-3000:]
        return {"option": cfg["option"], "error": f"no result (rc={proc.returncode})", "log_tail": tail}
    res: dict[str, Any] = json.loads(result.read_text())
    res["returncode"] = proc.returncode
    return res


def run_option(
    option: str,
    run: int,
    run_id: str,
    bootstrap: str,
    payloads: list[tuple[bytes, bytes]],
    args: Any,
    tmp: Path,
) -> dict[str, Any]:
    tag = f"bench-fo-{run_id}-r{run}-{option.replace('_', '-')}"
    in_topic, out_topic = f"{tag}-in", f"{tag}-out"
    app_id = f"{tag}-app"
    group = app_id if option in FAUST_OPTIONS and option != "service_getmany" else f"{tag}-group"
    records = make_envelopes(payloads, ENVELOPE_SIZE) if option == "agent_envelope" else payloads
    topics = [in_topic, out_topic, f"{app_id}-__assignor-__leader"]
    try:
        asyncio.run(_create_topics(bootstrap, [in_topic, out_topic]))
        prefill_s = asyncio.run(_prefill(bootstrap, in_topic, records))
        timeout_s = args.timeout or 60 + len(payloads) / 500
        cfg = {
            "option": option,
            "bootstrap": bootstrap,
            "in_topic": in_topic,
            "out_topic": out_topic,
            "app_id": app_id,
            "group": group,
            "events": len(payloads),
            "input_records": len(records),
            "web_port": free_port(),
            "result": str(tmp / f"{tag}.json"),
            "log": str(tmp / f"{tag}.log"),
            "timeout_s": timeout_s,
            "spawn_time": time.time(),
            "profile": bool(args._profile_this),
            "max_inflight": args.max_inflight,
        }
        res = _run_worker(cfg, timeout_s + 30)
        res["run"] = run
        res["prefill_s"] = round(prefill_s, 3)
        res["check"] = asyncio.run(_verify(bootstrap, in_topic, out_topic, group))
        chk = res["check"]
        res["ok"] = (
            "error" not in res
            and chk["output_end"] >= len(records)
            and chk["committed"] is not None
            and chk["committed"] >= len(records)
        )
        return res
    finally:
        with contextlib.suppress(Exception):
            asyncio.run(_cleanup(bootstrap, topics, sorted({group, app_id})))


def _median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(results: list[dict[str, Any]], options: list[str]) -> list[dict[str, Any]]:
    by_run: dict[int, dict[str, dict[str, Any]]] = {}
    for r in results:
        if r.get("ok"):
            by_run.setdefault(r["run"], {})[r["option"]] = r
    rows = []
    for opt in options:
        ok = [r for r in results if r["option"] == opt and r.get("ok")]
        ratios, cpu_ratios = [], []
        for per in by_run.values():
            if opt in per and BASELINE in per:
                ratios.append(per[opt]["events_per_s"] / per[BASELINE]["events_per_s"])
                cpu_ratios.append(per[BASELINE]["cpu_us_per_event"] / per[opt]["cpu_us_per_event"])
        rows.append(
            {
                "option": opt,
                "runs_ok": len(ok),
                "runs_failed": sum(1 for r in results if r["option"] == opt and not r.get("ok")),
                "events_per_s": _median([r["events_per_s"] for r in ok]),
                "events_per_s_min": min((r["events_per_s"] for r in ok), default=None),
                "events_per_s_max": max((r["events_per_s"] for r in ok), default=None),
                "cpu_us_per_event": _median([r["cpu_us_per_event"] for r in ok]),
                "cpu_util": _median([r["cpu_util"] for r in ok]),
                "startup_s": _median([r["startup_s"] for r in ok]),
                "speedup_vs_stock": _median(ratios),
                "cpu_gain_vs_stock": _median(cpu_ratios),
                "root_log_level": ok[0]["root_log_level"] if ok else None,
                # CPU-bound ceiling for one core: what the option would do with a core to itself.
                "cpu_bound_events_per_s": (1e6 / m)
                if (m := _median([r["cpu_us_per_event"] for r in ok]))
                else None,
            }
        )
    return rows


def _fmt(x: Any, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (
        f"{'option':<24} {'ok':>4} {'events/s':>9} {'(min-max)':>15} {'CPU us/ev':>9} {'1e6/CPU':>8} "
        f"{'x stock':>7} {'CPU x':>6} {'util':>5} {'start s':>7} {'root log':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        rng = (
            f"{_fmt(r['events_per_s_min'], '.0f')}-{_fmt(r['events_per_s_max'], '.0f')}"
            if r["events_per_s_min"] is not None
            else "-"
        )
        print(
            f"{r['option']:<24} {r['runs_ok']:>2}/{r['runs_ok'] + r['runs_failed']:<1} "
            f"{_fmt(r['events_per_s'], '9.0f')} {rng:>15} {_fmt(r['cpu_us_per_event'], '9.1f')} "
            f"{_fmt(r['cpu_bound_events_per_s'], '8.0f')} {_fmt(r['speedup_vs_stock'], '7.1f')} "
            f"{_fmt(r['cpu_gain_vs_stock'], '6.1f')} {_fmt(r['cpu_util'], '5.2f')} "
            f"{_fmt(r['startup_s'], '7.1f')} {r['root_log_level'] or '-':>8}"
        )


def machine_info() -> dict[str, Any]:
    versions = package_versions(("faust-streaming", "mode-streaming", "aiokafka", "orjson"))
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "loadavg_start": os.getloadavg(),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000, help="requests per option and run")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--options", default=",".join(OPTIONS), help="comma-separated subset, in order")
    ap.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    ap.add_argument(
        "--timeout", type=float, default=0, help="per-worker timeout, s (default 60 + events/500)"
    )
    ap.add_argument("--max-inflight", type=int, default=4, help="batches in flight in the service loop")
    ap.add_argument(
        "--profile",
        default="service_getmany,agent_take_rawproducer",
        help="comma-separated options to run once more under cProfile ('' for none)",
    )
    ap.add_argument("--profile-events", type=int, default=50_000, help="requests in each profiled run")
    ap.add_argument("--out", default=str(REPO_ROOT / "bench" / "results" / "faust_options.json"))
    args = ap.parse_args()
    options = [o.strip() for o in args.options.split(",") if o.strip()]
    unknown = set(options) - set(OPTIONS) - set(KNOB_OPTIONS)
    if unknown:
        ap.error(f"unknown options: {sorted(unknown)}")
    if args.events % ENVELOPE_SIZE:
        ap.error(f"--events must be a multiple of {ENVELOPE_SIZE}")

    info = machine_info()
    print(f"machine: {info['cpu']}, {info['cores']} cores, python {info['python']}, {info['packages']}")
    payloads = make_payloads(args.events)
    avg = sum(len(v) for _, v in payloads) / len(payloads)
    print(f"{len(payloads)} requests, {avg:.0f} bytes each on average; broker {args.bootstrap}")
    run_id = uuid.uuid4().hex[:8]
    results: list[dict[str, Any]] = []
    args._profile_this = False
    with tempfile.TemporaryDirectory(prefix="faust-options-") as tmpdir:
        tmp = Path(tmpdir)
        for run in range(args.runs):
            order = options[run % len(options) :] + options[: run % len(options)]
            for opt in order:
                res = run_option(opt, run, run_id, args.bootstrap, payloads, args, tmp)
                results.append(res)
                eps, cpu = res.get("events_per_s"), res.get("cpu_us_per_event")
                status = "ok" if res.get("ok") else f"FAILED {res.get('error', '')} {res.get('check', '')}"
                print(
                    f"run {run} {opt:<24} {_fmt(eps, '9.0f')} ev/s {_fmt(cpu, '7.1f')} CPU us/ev "
                    f"startup {_fmt(res.get('startup_s'), '.1f')} s  {status}",
                    flush=True,
                )
                if not res.get("ok") and "log_tail" in res:
                    print(res["log_tail"], file=sys.stderr)
        profiles: dict[str, Any] = {}
        prof_payloads = payloads[: min(args.profile_events, len(payloads))]
        for opt in [o.strip() for o in args.profile.split(",") if o.strip()]:
            args._profile_this = True
            profiles[opt] = run_option(opt, args.runs, run_id, args.bootstrap, prof_payloads, args, tmp)
            args._profile_this = False

    rows = summarize(results, options)
    print()
    print_table(rows)
    phases = [r["phases_us_per_event"] for r in results if r.get("ok") and r["option"] == "service_getmany"]
    phase_median = {k: _median([p[k] for p in phases]) for k in phases[0]} if phases else None
    plain = [r["phases_us_per_event"] for r in results if r.get("ok") and r["option"] == "plain_aiokafka"]
    plain_median = {k: _median([p[k] for p in plain]) for k in plain[0]} if plain else None
    if phase_median:
        print("\nservice_getmany, manual timers (median us/event):")
        for k, v in phase_median.items():
            print(f"  {k:<45} {v:8.2f}")
    medians = {r["option"]: r["cpu_us_per_event"] for r in rows}
    for opt, prof in profiles.items():
        if not prof.get("profile"):
            print(f"\n{opt}: profiled run failed: {prof.get('error')}")
            continue
        groups = prof["profile"]["groups"]
        total = groups["total (profiled, inflated by cProfile)"]
        real = medians.get(opt)
        # cProfile inflates every call; scaling the shares to the measured CPU gives a usable split.
        prof["profile"]["scaled_to_measured_us_per_event"] = (
            {k: round(v / total * real, 2) for k, v in groups.items() if not k.startswith("total")}
            if real
            else None
        )
        print(
            f"\n{opt} under cProfile: tottime us/event (inflated by the profiler) -> scaled to measured CPU"
        )
        for k, v in groups.items():
            scaled = v / total * real if real else None
            print(f"  {k:<55} {v:8.2f} {_fmt(scaled, '8.2f')}")
        print("  top functions (tottime us/event, profiled):")
        for k, v in list(prof["profile"]["top_functions"].items())[:15]:
            print(f"    {k:<70} {v:8.2f}")
    info["loadavg_end"] = os.getloadavg()
    out = {
        "bench": "faust_options",
        "args": {k: v for k, v in vars(args).items() if not k.startswith("_")},
        "machine": info,
        "avg_payload_bytes": avg,
        "summary": rows,
        "service_getmany_phases_us_per_event_median": phase_median,
        "plain_aiokafka_phases_us_per_event_median": plain_median,
        "profiles": profiles,
        "runs": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0 if all(r.get("ok") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
