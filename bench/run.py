"""driftline against the naive agent and the machine's limits, in one run, on the real local Kafka.

Run (from the repo root, with the broker up: ``scripts/kafka up``)::

    .venv/bin/python -m bench            # the full run, ~8 minutes (~10 with --baseline-ref)
    .venv/bin/python -m bench --quick    # ~2 minutes: smaller topics, one run of each

It prints a table and writes ``bench/results/latest.json``. What it measures, all in one run so that
every figure saw the same machine and broker (BENCHMARKS.md has the method and the latest results):

1. **Limits.** Kafka pass-through: driftline's own serving loop (``agent.serving.loop.ServingLoop``)
   with a handler that republishes each record unchanged, as its own process. ONNX Runtime: the
   ``classification-20`` package (built into a temporary model repository with ``driftline package
   --example classification-20``: 20 numeric features, a 100-tree forest), rows/s in batches of 500
   and one row at a time, one thread, in this process.
2. **driftline** (``driftline run`` as a subprocess configured by ``DRIFTLINE_*`` variables, as a user
   runs it), with all monitoring on and with ``DRIFTLINE_MONITORING__ENABLED=false``.
3. **The Faust baselines**: ``bench/_naive.py``, a stock Faust agent serving one event at a time,
   and ``bench/_faust_take.py``, the best Faust-agent design ``bench/faust_options.py`` measured
   (``take()`` batches of 500 and a raw batched producer) running driftline's own request handler.
4. **Scaling**: one and then two driftline workers (one group) on a four-partition topic; here the
   workers start on an empty topic and the bench publishes the requests once they have their
   partitions (see :meth:`Bench.measure_live` for why), so its producer shares the cores too.

Throughput is the drain rate of a pre-filled topic: ``--events`` requests (4 partitions) are
published once, then each worker (a fresh consumer group every time) is started and the
predictions topic's end offsets are read every 0.1 s. The rate is taken between the readings at 10 %
and 90 % of the expected predictions (and, with several workers, only once every worker has its
partitions), so start-up and the tail are left out; CPU over that window comes from
``/proc/<pid>/stat`` (utime + stime, all threads) of each worker, of the broker and of this process.
Each measurement is repeated ``--runs`` times, in a rotated order, and the table shows medians;
ratios (x naive, scaling) are taken within a round and their median shown.

Latency: one more driftline worker (monitoring on) on empty topics; requests are published paced
at 50 % and then 90 % of the highest rate measured above (monitoring on); latency is the
prediction record's LogAppendTime (the predictions topic is created with
``message.timestamp.type=LogAppendTime``) minus the request record's CreateTime (set by the
bench's producer when it adds the record to a batch, so its linger, at most 5 ms, is included).
Both clocks are this machine's. The first second of each phase is left out.

Profile: one more drain with ``py-spy record --nonblocking`` attached to the worker over the same
10-90 % window (py-spy comes with ``scripts/bootstrap``, the ``bench`` extra); samples are split into
the hot path's phases (``bench._harness.PROFILE_PHASES``) and scaled to the measured CPU per event.

Every topic the run creates starts with ``dlb-<run id>-`` and is deleted at the end with its
consumer groups; the workers are stopped whatever happens (they run in their own process groups).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.protocol.admin import DeleteGroupsRequest
from aiokafka.structs import TopicPartition

from bench._harness import (
    Sample,
    cpu_model,
    export_tree,
    free_port,
    jvm_gc_pauses,
    latency_parts,
    latency_summary,
    machine_busy_ticks,
    median,
    package_versions,
    percentile,
    probe_pauses,
    proc_cpu_seconds,
    proc_peak_rss_mb,
    profile_split,
    short_frame,
    stall_runs,
    stalls,
    steady_window,
)

REPO = Path(__file__).resolve().parent.parent
MODEL = "classification-20"
PARTITIONS = 4
RESULTS = REPO / "bench" / "results" / "latest.json"

TARGETS = {
    "rate_monitoring_on": 50_000.0,
    "x_faust_take": 6.0,
    "x_passthrough": 0.3,
    "p99_ms_at_half": 25.0,
    "rss_mb": 300.0,
}

SLOW_MS = TARGETS["p99_ms_at_half"]
"""A slow request, for the stall report and the latency split: over the p99 target."""

FULL = {
    "events": 200_000,
    "runs": 3,
    "naive_events": 30_000,
    "faust_events": 100_000,
    "rss_events": 1_000_000,
    "latency_s": 15.0,
    "profile": True,
}
QUICK = {
    "events": 80_000,
    "runs": 1,
    "naive_events": 6_000,
    "faust_events": 30_000,
    "rss_events": 0,
    "latency_s": 8.0,
    "profile": True,
}


@dataclass
class Proc:
    """A process the bench started (in its own process group, so that it can be ended with its children)."""

    label: str
    popen: subprocess.Popen[bytes]
    log: Path
    started: float
    port: int | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-chars:]
        return ""


@dataclass
class Bench:
    bootstrap: str
    events: int
    runs: int
    naive_events: int
    faust_events: int
    latency_s: float
    profile: bool
    tmp: Path
    rss_events: int = 0
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    procs: list[Proc] = field(default_factory=list)
    groups: set[str] = field(default_factory=set)
    package: Path | None = None
    payloads: list[Any] = field(default_factory=list)
    baseline_tree: Path | None = None
    """Source tree of ``--baseline-ref`` (agent/, schemas/, producers/ at that commit), if asked for."""

    @property
    def prefix(self) -> str:
        return f"dlb-{self.run_id}"

    # --- processes -------------------------------------------------------------------------------

    def spawn(
        self, label: str, argv: list[str], env: dict[str, str], port: int | None = None, cwd: Path = REPO
    ) -> Proc:
        log = self.tmp / f"{label}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        proc = Proc(label, popen, log, time.monotonic(), port)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, timeout: float = 20.0) -> None:
        if proc.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever it left behind in its group
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout=10)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(self.procs):
            self.stop(proc, timeout=10.0)

    def _base_env(self) -> dict[str, str]:
        # No InfluxDB, no webhooks, no DRIFTLINE_* of the caller's shell: the worker is configured here.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DRIFTLINE_", "INFLUXDB_", "KAFKA_BOOTSTRAP"))
        }
        env["KAFKA_BOOTSTRAP_SERVERS"] = self.bootstrap
        return env

    def start_driftline(
        self,
        label: str,
        topics: dict[str, str],
        app_id: str,
        *,
        monitoring: bool,
        tree: Path = REPO,
        settings: dict[str, str] | None = None,
        probe: Path | None = None,
        lean: bool = False,
    ) -> Proc:
        """A ``driftline run`` worker on ``topics``; ``settings`` are more ``DRIFTLINE_*`` variables;
        with ``probe``, its garbage collections are written there, and ``lean``, it runs without the
        optional extras' modules, as ``pip install .`` installs it (``bench/_probe.py``)."""
        port = free_port()
        env = self._base_env()
        if tree != REPO:
            # Another version of agent/, schemas/, producers/ (--baseline-ref): first on the path.
            env["PYTHONPATH"] = str(tree)
        env.update(
            {
                "DRIFTLINE_APP_ID": app_id,
                "DRIFTLINE_DATA_DIR": str(self.tmp / f"data-{label}"),
                "DRIFTLINE_WEB__PORT": str(port),
                "DRIFTLINE_SERVING__MODEL_REPOSITORY": str(self.package_root),
                "DRIFTLINE_TOPICS__REQUESTS": topics["requests"],
                "DRIFTLINE_TOPICS__PREDICTIONS": topics["predictions"],
                "DRIFTLINE_TOPICS__OUTCOMES": topics["outcomes"],
                "DRIFTLINE_TOPICS__ALERTS": topics["alerts"],
                "DRIFTLINE_TOPICS__DEAD_LETTERS": topics["dead"],
                "DRIFTLINE_TOPICS__PARTITIONS": str(PARTITIONS),
                "DRIFTLINE_INCIDENTS__TOPIC": f"{app_id}-incidents",
                "DRIFTLINE_MONITORING__ENABLED": "true" if monitoring else "false",
            }
        )
        env.update(settings or {})
        self.groups.update({app_id, f"{app_id}-serving"})
        argv = [sys.executable, "-m", "agent.cli", "run", "--loglevel", "info"]
        if probe is not None or lean:
            argv[1:3] = [str(REPO / "bench" / "_probe.py")]
            argv[2:2] = ["--gc-log", str(probe)] if probe is not None else []
            argv[2:2] = ["--lean"] if lean else []
        return self.spawn(label, argv, env, port, cwd=tree)

    def start_naive(self, label: str, topics: dict[str, str], app_id: str) -> Proc:
        assert self.package is not None
        port = free_port()
        cfg = {
            "app_id": app_id,
            "bootstrap": self.bootstrap,
            "package": str(self.package),
            "requests": topics["requests"],
            "predictions": topics["predictions"],
            "partitions": PARTITIONS,
            "web_port": port,
            "data_dir": str(self.tmp / f"data-{label}"),
        }
        self.groups.add(app_id)
        return self.spawn(
            label, [sys.executable, "-m", "bench._naive", json.dumps(cfg)], self._base_env(), port
        )

    def start_faust_take(self, label: str, topics: dict[str, str], app_id: str) -> Proc:
        port = free_port()
        cfg = {
            "app_id": app_id,
            "bootstrap": self.bootstrap,
            "model_repository": str(self.package_root),
            "requests": topics["requests"],
            "predictions": topics["predictions"],
            "outcomes": topics["outcomes"],
            "alerts": topics["alerts"],
            "dead": topics["dead"],
            "changelog": topics["changelog"],
            "partitions": PARTITIONS,
            "web_port": port,
            "data_dir": str(self.tmp / f"data-{label}"),
        }
        self.groups.add(app_id)
        return self.spawn(
            label, [sys.executable, "-m", "bench._faust_take", json.dumps(cfg)], self._base_env(), port
        )

    def start_passthrough(self, label: str, topics: dict[str, str], group: str) -> Proc:
        cfg = {
            "bootstrap": self.bootstrap,
            "requests": topics["requests"],
            "predictions": topics["predictions"],
            "group": group,
        }
        self.groups.add(group)
        argv = [sys.executable, "-m", "bench._passthrough", json.dumps(cfg)]
        return self.spawn(label, argv, self._base_env())

    @property
    def package_root(self) -> Path:
        return self.tmp / "models"

    # --- Kafka -----------------------------------------------------------------------------------

    async def admin(self) -> AIOKafkaAdminClient:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=30_000)
        await admin.start()
        return admin

    def topics(self, name: str) -> dict[str, str]:
        base = f"{self.prefix}-{name}"
        return {k: f"{base}-{k}" for k in ("requests", "predictions", "outcomes", "alerts", "dead")}

    async def create_topics(self, topics: dict[str, str], *, skip_requests: bool = False) -> None:
        admin = await self.admin()
        try:
            existing = set(await admin.list_topics())
            new = []
            for kind, name in topics.items():
                if name in existing or (skip_requests and kind == "requests"):
                    continue
                configs = {"message.timestamp.type": "LogAppendTime"} if kind == "predictions" else {}
                new.append(NewTopic(name, PARTITIONS, 1, topic_configs=configs))
            if new:
                await admin.create_topics(new)
        finally:
            await admin.close()

    async def cleanup(self) -> list[str]:
        admin = await self.admin()
        try:
            doomed = [t for t in await admin.list_topics() if t.startswith(self.prefix)]
            if doomed:
                await admin.delete_topics(doomed)
            for group in sorted(self.groups):
                # aiokafka's admin client has no delete_consumer_groups(): ask the coordinator.
                with contextlib.suppress(Exception):
                    node = await admin.find_coordinator(group)
                    await admin._send_request_to_node(node, DeleteGroupsRequest([group]))
            return doomed
        finally:
            await admin.close()

    async def publish(self, topics: dict[str, str], messages: list[Any], rate: float = 0.0) -> Any:
        from producers.config import KafkaConfig, ProducerSettings, TopicConfig
        from producers.publish import publish

        settings = ProducerSettings(
            kafka=KafkaConfig(bootstrap_servers=self.bootstrap),
            topics=TopicConfig(requests=topics["requests"], outcomes=topics["outcomes"]),
        )
        return await publish(messages, settings=settings, rate=rate, linger_ms=5.0)

    # --- drains ----------------------------------------------------------------------------------

    async def drain(
        self, label: str, procs: list[Proc], out_topic: str, target: int, *, health: bool, timeout_s: float
    ) -> dict[str, Any]:
        """Watches ``procs`` drain the pre-filled topic into ``out_topic`` until ``target`` outputs."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap)
        await consumer.start()
        tps = [TopicPartition(out_topic, p) for p in range(PARTITIONS)]
        broker = _broker_pid()
        samples: list[Sample] = []
        ready = not health
        error = None
        deadline = time.monotonic() + timeout_s
        first_output: float | None = None
        last_health = 0.0
        try:
            while True:
                now = time.monotonic()
                count = sum((await consumer.end_offsets(tps)).values())
                if count and first_output is None:
                    first_output = now
                if not ready and now - last_health >= 0.25:
                    last_health = now
                    ready = await _all_assigned(procs)
                cpu = {p.label: proc_cpu_seconds(p.pid) or 0.0 for p in procs}
                cpu["bench"] = proc_cpu_seconds("self") or 0.0
                if broker is not None:
                    cpu["broker"] = proc_cpu_seconds(broker) or 0.0
                samples.append(Sample(now, count, cpu, machine_busy_ticks(), ready))
                if count >= target:
                    break
                if not all(p.alive() for p in procs):
                    error = "a worker exited"
                    break
                if now > deadline:
                    error = f"timeout after {timeout_s:.0f} s at {count} of {target}"
                    break
                await asyncio.sleep(0.1)
        finally:
            await consumer.stop()
        rss = [proc_peak_rss_mb(p.pid) for p in procs]
        result: dict[str, Any] = {"label": label, "workers": len(procs), "target": target}
        window = steady_window(samples, target)
        if error or window is None:
            result["error"] = error or "no steady window"
            result["log_tail"] = "\n".join(p.tail() for p in procs)
            return result
        worker_cpu = sum(window.cpu_seconds(p.label) for p in procs)
        own = sum(window.cpu_share(p.label) for p in procs)
        others = window.cpu_share("broker") + window.cpu_share("bench")
        result.update(
            {
                "events_per_s": window.rate,
                "window_events": window.events,
                "window_s": window.seconds,
                "cpu_us_per_event": worker_cpu / window.events * 1e6,
                "worker_cores": [round(window.cpu_share(p.label), 3) for p in procs],
                "broker_cores": window.cpu_share("broker") if broker is not None else None,
                "bench_cores": window.cpu_share("bench"),
                "machine_cores_busy": window.machine_cores_busy(),
                "other_cores": window.machine_cores_busy() - own - others,
                "rss_peak_mb": max((r for r in rss if r is not None), default=None),
                "startup_s": (first_output - min(p.started for p in procs)) if first_output else None,
            }
        )
        return result

    async def measure(
        self,
        kind: str,
        rnd: int,
        requests: str,
        *,
        settings: dict[str, str] | None = None,
        tag: str = "",
        fleet_check: bool = False,
    ) -> dict[str, Any]:
        """One drain of the pre-filled requests topic by ``kind``, on fresh output topics and group;
        ``settings`` (more ``DRIFTLINE_*`` variables) go to driftline workers; ``fleet_check``: once
        drained, how long the model's monitor took to catch up (:meth:`fleet_stats`)."""
        label = f"{kind}{tag}-r{rnd}"
        topics = self.topics(label)
        topics["requests"] = requests
        app_id = f"{self.prefix}-{label}"
        if kind == "faust_take":
            topics["changelog"] = f"{app_id}-join-changelog"
        await self.create_topics(topics, skip_requests=True)
        target, health = self.events, True
        procs: list[Proc] = []
        if kind == "passthrough":
            procs = [self.start_passthrough(label, topics, app_id)]
            health = False
        elif kind == "driftline_on":
            procs = [self.start_driftline(label, topics, app_id, monitoring=True, settings=settings)]
        elif kind == "baseline_on":
            assert self.baseline_tree is not None
            procs = [self.start_driftline(label, topics, app_id, monitoring=True, tree=self.baseline_tree)]
        elif kind == "driftline_off":
            procs = [self.start_driftline(label, topics, app_id, monitoring=False, settings=settings)]
        elif kind == "naive":
            procs = [self.start_naive(label, topics, app_id)]
            target, health = self.naive_events, False
        elif kind == "faust_take":
            procs = [self.start_faust_take(label, topics, app_id)]
            target, health = self.faust_events, False
        else:
            raise ValueError(kind)
        try:
            timeout = 90 + target / 1000
            result = await self.drain(
                kind, procs, topics["predictions"], target, health=health, timeout_s=timeout
            )
            if fleet_check and "error" not in result:
                result["fleet"] = await self.fleet_stats(app_id)
            return result
        finally:
            for p in procs:
                self.stop(p)

    async def measure_rss(self, *, lean: bool = True, tree: Path = REPO, tag: str = "") -> dict[str, Any]:
        """A fresh worker (every monitor and the outcome join on) drains ``rss_events`` distinct
        requests, published as a stream (the bench does not hold them): its peak RSS once the join
        remembers them all (its default cap is a million). ``lean``: the worker as ``pip install .``
        installs it, without the extras' modules (see ``bench/_probe.py``); ``tree``, another version
        of the agent (``--baseline-ref``)."""
        from producers.scenarios import generate

        label = ("rss-lean" if lean else "rss") + tag
        topics = self.topics(label)
        await self.create_topics(topics)
        stream = generate(
            "calm",
            model=MODEL,
            seed=13,
            count=self.rss_events,
            outcome_share=0.0,
            run_id=f"rss{tag}-{self.run_id}",
        )
        started = time.monotonic()
        await self.publish(topics, stream)
        published_s = time.monotonic() - started
        app_id = f"{self.prefix}-{label}"
        proc = self.start_driftline(label, topics, app_id, monitoring=True, lean=lean, tree=tree)
        try:
            timeout = 120 + self.rss_events / 2000
            result = await self.drain(
                "rss", [proc], topics["predictions"], self.rss_events, health=True, timeout_s=timeout
            )
        finally:
            self.stop(proc)
        result["published_s"] = round(published_s, 1)
        result["requests"] = self.rss_events
        result["lean"] = lean
        return result

    async def measure_live(
        self,
        kind: str,
        rnd: int,
        *,
        settings: dict[str, str] | None = None,
        tag: str = "",
        fleet_check: bool = False,
    ) -> dict[str, Any]:
        """Scaling: ``kind`` is ``live_x1`` or ``live_x2``, one or two driftline workers (monitoring on) in
        one group. The workers start on an empty four-partition topic; once every one of them has its
        partitions, this process publishes the requests as fast as it can while the workers drain them
        (started on a pre-filled topic, the first worker would drain much of it before the second had
        joined). So the bench's producer shares the two cores with the workers and the broker here."""
        label = f"{kind}{tag}-r{rnd}"
        topics = self.topics(label)
        await self.create_topics(topics)
        app_id = f"{self.prefix}-{label}"
        n = 2 if kind == "live_x2" else 1
        procs = [
            self.start_driftline(f"{label}-w{i}", topics, app_id, monitoring=True, settings=settings)
            for i in range(n)
        ]
        try:
            for proc in procs:
                await _wait_ready(proc, 120.0)
            deadline = time.monotonic() + 60
            while not await _all_assigned(procs) and time.monotonic() < deadline:
                await asyncio.sleep(0.3)
            timeout = 90 + self.events / 1000
            drain = asyncio.create_task(
                self.drain(kind, procs, topics["predictions"], self.events, health=False, timeout_s=timeout)
            )
            await self.publish(topics, self.payloads)
            result = await drain
            if fleet_check and "error" not in result:
                result["fleet"] = await self.fleet_stats(app_id)
            return result
        finally:
            for p in procs:
                self.stop(p)

    async def fleet_stats(self, app_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
        """A fleet worker's statistics topic once the predictions are all out: how long the model's
        monitor (the Faust agent, group ``app_id``) took to commit every record of it, and the
        records' count and bytes."""
        topic = f"{app_id}-monitor-stats"
        started = time.monotonic()
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        admin = await self.admin()
        caught_up = None
        try:
            # Created by the workers with DRIFTLINE_TOPICS__PARTITIONS partitions.
            tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            ends = await consumer.end_offsets(tps)
            while time.monotonic() - started < timeout_s:
                offsets = await admin.list_consumer_group_offsets(app_id, partitions=tps)
                committed = {tp: (o.offset if o is not None else -1) for tp, o in offsets.items()}
                if all(committed.get(tp, -1) >= end for tp, end in ends.items() if end > 0):
                    caught_up = time.monotonic() - started
                    break
                await asyncio.sleep(0.2)
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            records = size = 0
            while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
                for batch in (await consumer.getmany(timeout_ms=1000)).values():
                    records += len(batch)
                    size += sum(len(r.value or b"") for r in batch)
        finally:
            await consumer.stop()
            await admin.close()
        return {
            "records": records,
            "bytes": size,
            "partitions_used": sum(1 for end in ends.values() if end > 0),
            "monitor_caught_up_s": caught_up,
        }

    # --- profile ---------------------------------------------------------------------------------

    async def profile_drain(
        self, requests: str, *, settings: dict[str, str] | None = None, tag: str = ""
    ) -> dict[str, Any]:
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(spy).exists():
            return {"error": "py-spy is not installed (scripts/bootstrap installs it: the bench extra)"}
        label = f"profile{tag}"
        topics = self.topics(label)
        topics["requests"] = requests
        await self.create_topics(topics, skip_requests=True)
        app_id = f"{self.prefix}-{label}"
        worker = self.start_driftline(label, topics, app_id, monitoring=True, settings=settings)
        out = self.tmp / f"{label}.txt"
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap)
        await consumer.start()
        tps = [TopicPartition(topics["predictions"], p) for p in range(PARTITIONS)]
        spy_proc: Proc | None = None
        deadline = time.monotonic() + 90 + self.events / 1000
        try:
            while time.monotonic() < deadline and worker.alive():
                count = sum((await consumer.end_offsets(tps)).values())
                if spy_proc is None and count >= 0.1 * self.events:
                    argv = [spy, "record", "-p", str(worker.pid), "-o", str(out), "--format", "raw"]
                    argv += ["-r", "200", "--nonblocking"]
                    spy_proc = self.spawn("py-spy", argv, self._base_env())
                if count >= 0.9 * self.events:
                    break
                await asyncio.sleep(0.1)
        finally:
            await consumer.stop()
            if spy_proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(spy_proc.pid, signal.SIGINT)  # py-spy writes its output on SIGINT
                with contextlib.suppress(subprocess.TimeoutExpired):
                    spy_proc.popen.wait(timeout=20)
                self.stop(spy_proc)
            self.stop(worker)
        if not out.exists():
            tail = spy_proc.tail() if spy_proc is not None else worker.tail()
            return {"error": f"py-spy wrote no profile: {tail[-500:]}"}
        lines = out.read_text().splitlines()
        samples = sum(int(line.rpartition(" ")[2]) for line in lines if line.rpartition(" ")[2].isdigit())
        return {"samples": samples, "shares": profile_split(lines), "fleet_shares": fleet_shares(lines)}

    # --- latency ---------------------------------------------------------------------------------

    async def latency(
        self,
        highest: float,
        tree: Path = REPO,
        name: str = "latency",
        *,
        shares: tuple[float, ...] = (0.5, 0.9),
        settings: dict[str, str] | None = None,
        profile: bool = False,
    ) -> dict[str, Any]:
        """One fresh worker (monitoring on), requests paced at each of ``shares`` of ``highest``;
        ``profile``: py-spy samples the worker while the first phase is paced (its split per request
        in ``phases[...]["profile_us_per_request"]``)."""
        from producers.scenarios import generate

        label = name
        topics = self.topics(label)
        await self.create_topics(topics)
        app_id = f"{self.prefix}-{label}"
        probe = self.tmp / f"{label}.gc"
        worker = self.start_driftline(
            label, topics, app_id, monitoring=True, tree=tree, settings=settings, probe=probe
        )
        broker = _broker_pid()
        phases: dict[str, Any] = {}
        try:
            await _wait_ready(worker, 120.0)
            sent = 0
            for share in shares:
                rate = share * highest
                n = int(rate * self.latency_s)
                run_id = f"{label}{int(share * 100)}-{self.run_id}"
                messages = list(
                    generate("calm", model=MODEL, seed=11, count=n, outcome_share=0.0, run_id=run_id)
                )
                # A full collection in this process while it publishes would hold back records that
                # already have their CreateTime, and count its pause as the worker's latency.
                gc.collect()
                gc.freeze()
                pids = {"worker": worker.pid, "bench": "self", "broker": broker}
                cpu0 = {k: proc_cpu_seconds(pid) or 0.0 for k, pid in pids.items() if pid is not None}
                spy = self._spy(worker, f"{label}-{int(share * 100)}", self.latency_s) if profile else None
                profile = False
                busy0, t0 = machine_busy_ticks(), time.monotonic()
                summary = await self.publish(topics, messages, rate=rate)
                busy1, t1 = machine_busy_ticks(), time.monotonic()
                cores = {k: ((proc_cpu_seconds(pids[k]) or 0.0) - v) / (t1 - t0) for k, v in cpu0.items()}
                sent += n
                await self._wait_count(topics["predictions"], sent, 60.0)
                busy = (busy1 - busy0) / (t1 - t0)
                split = await self._spy_split(spy, cores["worker"] / max(summary.rate, 1.0) * 1e6)
                phases[f"{int(share * 100)}%"] = {
                    **({"profile_us_per_request": split} if split else {}),
                    "run_id": run_id,
                    "target_rate": rate,
                    "achieved_rate": summary.rate,
                    "requests": n,
                    "worker_cores": cores["worker"],
                    "bench_cores": cores["bench"],
                    "broker_cores": cores.get("broker"),
                    "machine_cores_busy": busy,
                    # Other sessions' processes on the same two cores while this phase ran.
                    "other_cores": busy - sum(cores.values()),
                }
            rss = proc_peak_rss_mb(worker.pid)
        finally:
            gc.unfreeze()
            self.stop(worker)
        sent_ms, _ = await self._timestamps(topics["requests"])
        done_ms, handled = await self._timestamps(topics["predictions"], latency_field=True)
        handled_ms = {k: v[1] for k, v in handled.items()}
        pauses = {"worker": [], "broker": []}
        with contextlib.suppress(OSError):
            pauses["worker"] = probe_pauses(probe.read_text().splitlines())
        with contextlib.suppress(OSError):
            pauses["broker"] = jvm_gc_pauses(_broker_gc_log().read_text(errors="replace").splitlines())
        for name, phase in phases.items():
            prefix = f"{phase['run_id']}-".encode()
            mine = {k: v for k, v in sent_ms.items() if k.startswith(prefix)}
            skip = min(mine.values()) + 1000 if mine else None
            phase.update(latency_summary(mine, done_ms, skip_before_ms=skip))
            phase["stalls"] = stalls(mine, done_ms, skip_before_ms=skip, over_ms=SLOW_MS)
            lo, hi = (
                (min(mine.values()) / 1000, max(done_ms.get(k, 0) for k in mine) / 1000) if mine else (0, 0)
            )
            spans = {who: [p for p in ps if lo <= p["end"] <= hi + 1] for who, ps in pauses.items()}
            phase["parts"] = latency_parts(
                mine, done_ms, handled, skip_before_ms=skip, slow_ms=SLOW_MS, pauses=spans
            )
            phase["pauses"] = {
                who: {"count": len(ps), "longest_ms": max((p["ms"] for p in ps), default=0.0)}
                for who, ps in spans.items()
            }
            # The part spent inside the worker's handler: the prediction's own latency_ms (from the
            # start of its batch's handling to the prediction), the rest is Kafka and queueing.
            inside = [handled_ms[k] for k, v in mine.items() if skip is None or v >= skip if k in handled_ms]
            phase["handler_p50_ms"] = percentile(inside, 50)
            phase["handler_p99_ms"] = percentile(inside, 99)
            phases[name] = phase
        return {
            "phases": phases,
            "rss_peak_mb": rss,
            "requests": sent,
            "clock": "request CreateTime -> prediction LogAppendTime",
        }

    def _spy(self, worker: Proc, label: str, seconds: float) -> tuple[Proc, Path] | None:
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(spy).exists():
            return None
        out = self.tmp / f"{label}.spy"
        argv = [spy, "record", "-p", str(worker.pid), "-o", str(out), "--format", "raw", "-r", "200"]
        argv += ["-d", str(max(int(seconds) - 1, 1)), "--nonblocking"]
        return self.spawn(f"py-spy-{label}", argv, self._base_env()), out

    async def _spy_split(self, spy: tuple[Proc, Path] | None, us_per_request: float) -> dict[str, Any]:
        """The sampled worker's phases, scaled to its measured CPU per request, and the frames that
        hold the most samples (the deepest frame of this repository or a library, with its caller)."""
        if spy is None:
            return {}
        proc, out = spy
        deadline = time.monotonic() + 30
        while proc.alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        self.stop(proc)
        try:
            lines = out.read_text().splitlines()
        except OSError:
            return {}
        split: dict[str, Any] = {k: round(v * us_per_request, 2) for k, v in profile_split(lines).items()}
        frames: dict[str, int] = {}
        total = 0
        for line in lines:
            stack, _, n = line.rpartition(" ")
            if not n.isdigit():
                continue
            calls = [short_frame(f) for f in stack.split(";")][-2:]
            key = " <- ".join(reversed(calls))
            frames[key] = frames.get(key, 0) + int(n)
            total += int(n)
        top = sorted(frames.items(), key=lambda kv: -kv[1])[:25]
        split["top_frames_us"] = {k: round(v / total * us_per_request, 2) for k, v in top} if total else {}
        return split

    async def _wait_count(self, topic: str, target: int, timeout_s: float) -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap)
        await consumer.start()
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                count = sum((await consumer.end_offsets(tps)).values())
                if count >= target or time.monotonic() > deadline:
                    return count
                await asyncio.sleep(0.2)
        finally:
            await consumer.stop()

    async def _timestamps(
        self, topic: str, *, latency_field: bool = False
    ) -> tuple[dict[bytes, int], dict[bytes, tuple[float, float]]]:
        """Key -> record timestamp (ms) of every record of ``topic``, and key -> the record's
        ``predicted_at`` (Unix seconds) and ``latency_ms`` fields if ``latency_field`` (predictions)."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=8 << 20
        )
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            out: dict[bytes, int] = {}
            inside: dict[bytes, tuple[float, float]] = {}
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                positions = {tp: await consumer.position(tp) for tp in tps}
                if all(positions[tp] >= ends[tp] for tp in tps):
                    break
                for records in (await consumer.getmany(timeout_ms=500, max_records=10_000)).values():
                    for r in records:
                        if r.key is not None:
                            out[r.key] = r.timestamp
                            if latency_field and r.value:
                                body = orjson.loads(r.value)
                                at = dt.datetime.fromisoformat(body["predicted_at"]).timestamp()
                                inside[r.key] = (at, body["latency_ms"])
            return out, inside
        finally:
            await consumer.stop()

    # --- ONNX Runtime limit ----------------------------------------------------------------------

    def onnx_limit(self, repeats: int) -> dict[str, Any]:
        import numpy as np

        from agent.models.registry import ModelRegistry
        from schemas.events import PredictionRequest

        registry = ModelRegistry(self.package_root)
        registry.refresh()
        served = registry.resolve(MODEL)
        assert served is not None
        rows = [PredictionRequest.model_validate_json(m.value).features for m in self.payloads[:5000]]
        matrix = served.encoder.encode(rows).matrix
        batched, single = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for lo in range(0, len(matrix), 500):
                served.model.predict(matrix[lo : lo + 500])
            batched.append(len(matrix) / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            for i in range(1000):
                served.model.predict(matrix[i : i + 1])
            single.append(1000 / (time.perf_counter() - t0))
        return {
            "batched_rows_per_s": median(batched),
            "single_row_per_s": median(single),
            "batch": 500,
            "threads": 1,
            "dtype": str(np.float32.__name__),
        }


async def _http_get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2.0)
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 5.0)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def _health(proc: Proc) -> dict[str, Any] | None:
    if proc.port is None:
        return None
    try:
        status, body = await _http_get(proc.port, "/health")
        data: dict[str, Any] = json.loads(body)
        data["http_status"] = status
        return data
    except (OSError, ValueError, TimeoutError, IndexError):
        return None


async def _all_assigned(procs: list[Proc]) -> bool:
    for proc in procs:
        health = await _health(proc)
        if health is None or not health.get("assigned_partitions"):
            return False
    return True


async def _wait_ready(proc: Proc, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.label} exited:\n{proc.tail()}")
        health = await _health(proc)
        if health is not None and health["http_status"] == 200 and health.get("assigned_partitions"):
            return
        await asyncio.sleep(0.3)
    raise RuntimeError(f"{proc.label} not ready within {timeout_s:.0f} s:\n{proc.tail()}")


def _broker_gc_log() -> Path:
    state = Path(os.environ.get("DRIFTLINE_STATE") or REPO / ".services")
    return state / "kafka" / "log" / "gc.log"


def _broker_pid() -> int | None:
    # Where scripts/kafka keeps its state: DRIFTLINE_STATE, else this checkout's .services.
    state = Path(os.environ.get("DRIFTLINE_STATE") or REPO / ".services")
    pidfile = state / "kafka" / "kafka.pid"
    with contextlib.suppress(OSError, ValueError):
        pid = int(pidfile.read_text().strip())
        if Path(f"/proc/{pid}").exists():
            return pid
    return None


def machine_info() -> dict[str, Any]:
    packages = package_versions(
        ("faust-streaming", "aiokafka", "onnxruntime", "river", "pydantic", "msgspec", "numpy", "orjson")
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.strip()
    dirty = bool(
        subprocess.run(
            [
                "git",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "agent",
                "bench",
                "producers",
                "schemas",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    )
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit + ("+dirty" if dirty else ""),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "packages": packages,
        "openblas_env": {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS")},
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


# --- the run ---------------------------------------------------------------------------------------


def _summarize(runs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    ok = [r for r in runs if r["label"] == kind and "error" not in r]
    keys = ("events_per_s", "cpu_us_per_event", "broker_cores", "bench_cores", "other_cores", "startup_s")
    out: dict[str, Any] = {"runs_ok": len(ok), "runs": sum(1 for r in runs if r["label"] == kind)}
    for key in keys:
        out[key] = median(r.get(key) for r in ok)
    out["rss_peak_mb"] = max((r["rss_peak_mb"] for r in ok if r.get("rss_peak_mb")), default=None)
    out["worker_cores"] = median(sum(r["worker_cores"]) for r in ok) if ok else None
    out["all_rates"] = [round(r["events_per_s"]) for r in ok]
    return out


def _ratio(runs: list[dict[str, Any]], num: str, den: str) -> float | None:
    by_round: dict[int, dict[str, float]] = {}
    for r in runs:
        if "error" not in r:
            by_round.setdefault(r["round"], {})[r["label"]] = r["events_per_s"]
    return median(v[num] / v[den] for v in by_round.values() if num in v and den in v)


def _fmt(x: Any, spec: str = ",.0f") -> str:
    return "-" if x is None else format(x, spec)


def print_table(report: dict[str, Any]) -> None:
    m, s, lim = report["machine"], report["summary"], report["limits"]
    print()
    print(f"driftline bench {m['date']}, commit {m['commit']}: {m['cpu']}, {m['cores']} cores, ")
    print(
        f"load average {m['loadavg_start']} -> {m.get('loadavg_end')}; "
        f"medians of {report['args']['runs']} run(s)"
    )
    head = (
        f"{'':<38}{'events/s':>10}{'CPU us/ev':>11}{'worker CPU':>11}{'broker':>8}{'bench':>7}{'RSS MB':>8}"
    )
    print(head)
    print("-" * len(head))

    def row(name: str, r: dict[str, Any] | None, extra: str = "") -> None:
        if r is None or not r.get("runs_ok"):
            print(f"{name:<38}{'failed':>10}")
            return
        print(
            f"{name:<38}{_fmt(r['events_per_s']):>10}{_fmt(r['cpu_us_per_event'], '.1f'):>11}"
            f"{_fmt(r['worker_cores'], '.2f'):>11}{_fmt(r['broker_cores'], '.2f'):>8}"
            f"{_fmt(r['bench_cores'], '.2f'):>7}{_fmt(r['rss_peak_mb'], '.0f'):>8}  {extra}"
        )

    row("limit: Kafka pass-through (1 process)", s.get("passthrough"))
    onnx = lim.get("onnx", {})
    for name, key in (("batches of 500", "batched_rows_per_s"), ("one row per call", "single_row_per_s")):
        print(f"{'limit: ONNX Runtime, ' + name:<38}{_fmt(onnx.get(key)):>10}  rows/s, 1 thread")
    row(
        "driftline, monitoring on",
        s.get("driftline_on"),
        f"x naive {_fmt(report['ratios']['on_vs_naive'], '.1f')}",
    )
    if "baseline_on" in s:
        row(
            f"driftline at {report['args'].get('baseline_ref')}, monitoring on"[:37],
            s.get("baseline_on"),
            f"current x {_fmt(report['ratios']['on_vs_baseline_ref'], '.2f')}",
        )
    row(
        "driftline, monitoring off",
        s.get("driftline_off"),
        f"x naive {_fmt(report['ratios']['off_vs_naive'], '.1f')}",
    )
    row(
        "best Faust agent (take + batch producer)",
        s.get("faust_take"),
        f"driftline x {_fmt(report['ratios']['on_vs_faust_take'], '.1f')}",
    )
    row("naive Faust agent (one event at a time)", s.get("naive"))
    row("scaling: 1 worker, bench producing live", s.get("live_x1"))
    row(
        "scaling: 2 workers, bench producing live",
        s.get("live_x2"),
        f"x one worker {_fmt(report['ratios']['x2_vs_one'], '.2f')}",
    )
    latencies = [("", report.get("latency", {}))]
    if "latency_baseline_ref" in report:
        latencies.append((f"at {report['args'].get('baseline_ref')}: ", report["latency_baseline_ref"]))
    for who, lat in latencies:
        for name, p in lat.get("phases", {}).items():
            print(
                f"{who}latency at {name} of the highest rate ({_fmt(p['target_rate'])}/s, achieved "
                f"{_fmt(p['achieved_rate'])}/s): p50 {_fmt(p['p50_ms'], '.0f')} ms, "
                f"p99 {_fmt(p['p99_ms'], '.0f')} ms, "
                f"max {_fmt(p['max_ms'], '.0f')} ms over {p['count']:,} requests ({p['missing']} missing); "
                f"in the handler p50 {_fmt(p.get('handler_p50_ms'), '.1f')} ms, "
                f"p99 {_fmt(p.get('handler_p99_ms'), '.1f')} ms; "
                f"worker {_fmt(p['worker_cores'], '.2f')} cores, "
                f"bench producer {_fmt(p['bench_cores'], '.2f')}, "
                f"broker {_fmt(p.get('broker_cores'), '.2f')}, "
                f"other processes {_fmt(p.get('other_cores'), '.2f')}"
            )
        if lat.get("half_rate_runs"):
            runs = lat["half_rate_runs"]
            worst = max(runs, key=lambda r: r.get("p99_ms") or 0)
            print(
                f"{who}at 50% over {len(runs)} runs: p99 {', '.join(_fmt(r['p99_ms']) for r in runs)} ms "
                f"(median {_fmt(lat['half_rate_p99_median'])}); "
                f"p50 median {_fmt(lat['half_rate_p50_median'])} ms; "
                f"worst run: {worst['stalls']['slow']:,} requests over {SLOW_MS:.0f} ms, "
                f"{_fmt(worst['stalls']['top_share'] * 100)} % of them in its 3 worst 100 ms windows "
                f"{[(w['at_ms'], w['max_ms']) for w in worst['stalls']['top']]}"
            )
            stalled = lat.get("half_rate_stall_runs", {})
            print(
                f"{who}  stalls (one 100 ms window with > 10 % of a run's slow requests): "
                f"{stalled.get('with_stall')} of {stalled.get('runs')} runs; worst window's share per run "
                f"{stalled.get('worst_window_shares')}"
            )
            for i, run in enumerate(runs):
                parts, paused = run.get("parts") or {}, run.get("pauses") or {}
                print(
                    f"{who}  run {i}: p50 / p99 ms before handling {_pair(parts, 'before')}, handling "
                    f"{_pair(parts, 'handling')}, after {_pair(parts, 'after')}; "
                    f"{parts.get('slow', 0):,} slow, mostly {parts.get('slow_by_part')}, "
                    f"in a GC pause {parts.get('slow_in_pause')}; pauses {paused}"
                )
    prof = report.get("profile", {})
    if prof.get("us_per_event"):
        print(f"\nprofile of the hot path (py-spy, {prof['samples']:,} samples), us of worker CPU per event:")
        for phase, us in prof["us_per_event"].items():
            print(f"  {phase:<58}{us:>7.1f}")
    elif prof.get("error"):
        print(f"\nprofile: {prof['error']}")
    print("\ntargets:")
    for name, (value, target, ok) in report["targets"].items():
        spec = ",.2f" if value is not None and value < 100 else ",.1f"
        print(f"  {name:<56} {_fmt(value, spec):>10}  target {target:<12} {'met' if ok else 'NOT met'}")


def _pair(parts: dict[str, Any], name: str) -> str:
    p50, p99 = parts.get("p50_ms", {}).get(name), parts.get("p99_ms", {}).get(name)
    return f"{_fmt(p50, '.1f')} / {_fmt(p99, '.1f')}"


def _targets(report: dict[str, Any]) -> dict[str, tuple[Any, str, bool]]:
    s = report["summary"]
    on = s.get("driftline_on", {}).get("events_per_s")
    x_faust = report["ratios"].get("on_vs_faust_take")
    x_limit = report["ratios"].get("on_vs_passthrough")
    latency = report.get("latency", {})
    half = latency.get("half_rate_p99_median", latency.get("phases", {}).get("50%", {}).get("p99_ms"))
    # A worker that drained a million distinct requests, the outcome join remembering each of them;
    # without that drain (--quick), the latency worker (every phase, ~0.5-1M requests).
    rss_run = report.get("rss") or {}
    rss, served = rss_run.get("rss_peak_mb"), rss_run.get("requests", 0)
    if rss is None:
        rss, served = latency.get("rss_peak_mb"), latency.get("requests", 0)
    return {
        "requests/s per worker, monitoring on": (
            on,
            f">= {TARGETS['rate_monitoring_on']:,.0f}",
            bool(on and on >= TARGETS["rate_monitoring_on"]),
        ),
        "x the best Faust agent (take, same run)": (
            x_faust,
            f">= {TARGETS['x_faust_take']:.0f}x",
            bool(x_faust and x_faust >= TARGETS["x_faust_take"]),
        ),
        "x the pass-through limit (same run)": (
            x_limit,
            f">= {TARGETS['x_passthrough']}x",
            bool(x_limit and x_limit >= TARGETS["x_passthrough"]),
        ),
        "p99 latency at half the highest rate, ms": (
            half,
            f"< {TARGETS['p99_ms_at_half']:.0f} ms",
            bool(half and half < TARGETS["p99_ms_at_half"]),
        ),
        f"worker RSS peak after {served:,} requests, MB": (
            rss,
            f"< {TARGETS['rss_mb']:.0f} MB",
            bool(rss and rss < TARGETS["rss_mb"]),
        ),
    }


def _progress(rnd: int, kind: str, result: dict[str, Any]) -> None:
    if "error" in result:
        print(f"  round {rnd} {kind:<14} FAILED: {result['error']}\n{result.get('log_tail', '')[-1500:]}")
        return
    print(
        f"  round {rnd} {kind:<14} {result['events_per_s']:>9,.0f} events/s "
        f"{result['cpu_us_per_event']:>7.1f} CPU us/event, workers {result['worker_cores']} cores, "
        f"broker {_fmt(result['broker_cores'], '.2f')}, bench {result['bench_cores']:.2f}, "
        f"other {result['other_cores']:.2f}, RSS {_fmt(result['rss_peak_mb'], '.0f')} MB",
        flush=True,
    )


def build_model(bench: Bench) -> float:
    """Builds the bench's model package; returns the seconds it took."""
    from agent.models.repository import ModelRepository
    from agent.packaging.builder import build_package
    from agent.packaging.examples import classification_20

    print(f"run {bench.run_id}: building the {MODEL} package ...", flush=True)
    started = time.perf_counter()
    build_package(
        classification_20(), name=MODEL, version="1", repository=ModelRepository(bench.package_root)
    )
    bench.package = bench.package_root / MODEL / "1"
    return round(time.perf_counter() - started, 1)


async def prepare(bench: Bench, report: dict[str, Any], *, onnx_limit: bool = True) -> dict[str, str]:
    """Builds the model package and the payloads, and pre-fills a requests topic (returned)."""
    from producers.scenarios import generate

    report["package_build_s"] = build_model(bench)

    bench.payloads = list(generate("calm", model=MODEL, seed=7, count=bench.events, outcome_share=0.0))
    report["payload_bytes"] = sum(len(m.value) for m in bench.payloads) / len(bench.payloads)
    gc.collect()
    gc.freeze()  # the payloads live as long as the run: no full collection needs to walk them
    if onnx_limit:
        report["limits"] = {"onnx": bench.onnx_limit(repeats=5 if bench.runs > 1 else 3)}
        print(f"  ONNX Runtime: {report['limits']['onnx']}", flush=True)

    topics = bench.topics("src")
    await bench.create_topics(topics)
    summary = await bench.publish(topics, bench.payloads)
    report["prefill"] = {"events": summary.events, "seconds": summary.sending_s, "events_per_s": summary.rate}
    print(f"  pre-filled {summary.events:,} requests in {summary.sending_s:.1f} s", flush=True)
    return topics


_HALF_RATE_KEYS = ("p50_ms", "p99_ms", "max_ms", "worker_cores", "broker_cores", "stalls", "parts", "pauses")


async def latency_runs(bench: Bench, highest: float, tree: Path, name: str) -> dict[str, Any]:
    """The latency phases (50 % and 90 %) with one worker, then the 50 % phase again with a fresh
    worker until it ran ``bench.runs`` times: one 15 s run's p99 moves with whatever else the two
    cores did in it, so the target is read from the median of the runs (all are kept)."""
    report = await bench.latency(highest, tree=tree, name=name)
    half = [report["phases"]["50%"]]
    for i in range(1, bench.runs):
        half.append(
            (await bench.latency(highest, tree=tree, name=f"{name}-{i}", shares=(0.5,)))["phases"]["50%"]
        )
    report["half_rate_runs"] = [
        {
            k: run.get(k)
            for k in (
                "p50_ms",
                "p99_ms",
                "max_ms",
                "worker_cores",
                "broker_cores",
                "stalls",
                "parts",
                "pauses",
            )
        }
        for run in half
    ]
    report["half_rate_stall_runs"] = stall_runs(half)
    report["half_rate_p99_median"] = median(run.get("p99_ms") for run in half)
    report["half_rate_p50_median"] = median(run.get("p50_ms") for run in half)
    return report


async def run_bench(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {"args": vars(args), "machine": machine_info(), "run_id": bench.run_id}
    t_start = time.monotonic()
    topics = await prepare(bench, report)

    kinds = ["passthrough", "driftline_on", "driftline_off", "faust_take", "naive"]
    if bench.baseline_tree is not None:
        kinds.insert(2, "baseline_on")
    runs: list[dict[str, Any]] = []
    for rnd in range(bench.runs):
        order = kinds[rnd % len(kinds) :] + kinds[: rnd % len(kinds)]
        for kind in order:
            result = await bench.measure(kind, rnd, topics["requests"])
            result["round"] = rnd
            runs.append(result)
            _progress(rnd, kind, result)
    for rnd in range(bench.runs):
        for kind in ["live_x1", "live_x2"] if rnd % 2 == 0 else ["live_x2", "live_x1"]:
            result = await bench.measure_live(kind, rnd)
            result["round"] = rnd
            runs.append(result)
            _progress(rnd, kind, result)
    kinds += ["live_x1", "live_x2"]
    report["runs"] = runs
    report["summary"] = {k: _summarize(runs, k) for k in kinds}
    report["ratios"] = {
        "on_vs_naive": _ratio(runs, "driftline_on", "naive"),
        "on_vs_faust_take": _ratio(runs, "driftline_on", "faust_take"),
        "off_vs_naive": _ratio(runs, "driftline_off", "naive"),
        "x2_vs_one": _ratio(runs, "live_x2", "live_x1"),
        "on_vs_passthrough": _ratio(runs, "driftline_on", "passthrough"),
        "on_vs_baseline_ref": _ratio(runs, "driftline_on", "baseline_on"),
    }

    if bench.profile:
        print("  profiling one more drain with py-spy ...", flush=True)
        prof = await bench.profile_drain(topics["requests"])
        per_event = report["summary"]["driftline_on"]["cpu_us_per_event"]
        if "shares" in prof and per_event:
            prof["us_per_event"] = {k: round(v * per_event, 2) for k, v in prof["shares"].items()}
        report["profile"] = prof

    if bench.rss_events:
        print(f"  RSS: a worker drains {bench.rss_events:,} distinct requests ...", flush=True)
        report["rss"] = await bench.measure_rss()
        _progress(0, "rss", report["rss"])

    highest = report["summary"]["driftline_on"]["events_per_s"]
    if highest:
        print(f"  latency at 50% and 90% of {highest:,.0f} events/s, then 50% again ...", flush=True)
        report["latency"] = await latency_runs(bench, highest, REPO, "latency")
        if bench.baseline_tree is not None:
            # At the same paced rates as the current tree, so that the two are comparable.
            print(f"  latency of {args.baseline_ref} at the same rates ...", flush=True)
            report["latency_baseline_ref"] = await latency_runs(
                bench, highest, bench.baseline_tree, "latency-ref"
            )
    report["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report["duration_s"] = round(time.monotonic() - t_start, 1)
    report["targets"] = _targets(report)
    return report


FLEET_FRAMES: dict[str, tuple[str, ...]] = {
    "the model's monitor (FleetMonitor.handle: decode_stats + observe_stats)": (
        "handle (agent/alerting/fleet_monitor.py",
    ),
    "  of which the detectors (ColumnSet._detect)": ("_detect (agent/monitoring/columns.py",),
    "Faust's consumer thread (mode's WorkerThread: fetches, hands records to the event loop)": (
        "WorkerThread.run (mode/threads.py",
    ),
    "Faust's agents (Agent._execute_actor: the monitor, the alert fan-out)": (
        "_execute_actor (faust/agents/agent.py",
    ),
    "socket writes (asyncio transport write: produce, fetch, commit requests)": (
        "_SelectorSocketTransport.write (asyncio/selector_events.py",
    ),
    "the worker's statistics records (DriftObserver._ship: take_blocks, encode_stats)": (
        "_ship (agent/monitoring/observer.py",
    ),
    "the detectors in the serving loop (ColumnSet._detect under RequestHandler.handle)": (),
    "DriftObserver.observe (the serving loop's monitoring)": ("observe (agent/monitoring/observer.py",),
}
"""Shares of a worker's py-spy samples whose stack holds one of the markers (``--fleet-compare``)."""


def fleet_shares(raw_lines: Iterable[str]) -> dict[str, float]:
    """Shares (0-1) of py-spy samples whose stack holds a frame of each :data:`FLEET_FRAMES` entry
    (a sample may count under several).

    Example:
        >>> fleet_shares(["a (x/mode/a.py:1);handle (agent/alerting/fleet_monitor.py:9) 1", "b (y.py:1) 3"])[
        ...     "the model's monitor (FleetMonitor.handle: decode_stats + observe_stats)"]
        0.25
    """
    counts = dict.fromkeys(FLEET_FRAMES, 0)
    total = 0
    for line in raw_lines:
        stack, _, n = line.strip().rpartition(" ")
        if not n.isdigit():
            continue
        total += int(n)
        frames = [short_frame(f) for f in stack.split(";")]
        serving = any("handle (agent/serving/handler.py" in f for f in frames)
        for name, markers in FLEET_FRAMES.items():
            if not markers:  # the detectors under the request handler
                hit = serving and any("_detect (agent/monitoring/columns.py" in f for f in frames)
            else:
                hit = any(m in f for f in frames for m in markers)
            counts[name] += int(n) if hit else 0
    return {k: v / total for k, v in counts.items()} if total else {}


FLEET_KINDS = ("single", "fleet", "off")
"""``--fleet-compare``'s drains: one worker with its detectors in-process
(``DRIFTLINE_MONITORING__FLEET=false``), one that ships blocks to its model's monitor, which it hosts
itself (``true``, the default), and monitoring off."""


def _fleet_settings(kind: str, batch_size: int | None = None) -> dict[str, str]:
    settings = {"DRIFTLINE_MONITORING__FLEET": "true" if kind.endswith("fleet") else "false"}
    if batch_size:
        settings["DRIFTLINE_SERVING__BATCH_SIZE"] = str(batch_size)
    return settings


async def run_rss(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    """``--rss-only``: the lean worker's RSS peak after ``--rss-events`` distinct requests, in turns with
    the ``--baseline-ref`` worker (``--runs`` rounds), each on its own topics."""
    report: dict[str, Any] = {"runs": [], "machine": machine_info(), "run_id": bench.run_id}
    build_model(bench)
    for rnd in range(args.runs):
        trees = [("current", REPO, "")]
        if bench.baseline_tree is not None:
            trees.append(("baseline", bench.baseline_tree, f"-ref{rnd}"))
        for name, tree, tag in trees if rnd % 2 == 0 else trees[::-1]:
            print(f"  rss: {name}, round {rnd + 1} ...", flush=True)
            result = await bench.measure_rss(tree=tree, tag=tag or f"-{rnd}")
            result.update(kind=name, round=rnd)
            print(
                f"    {name}: peak RSS {_fmt(result.get('rss_peak_mb'), '.0f')} MB, "
                f"{_fmt(result.get('events_per_s'), ',.0f')} requests/s",
                flush=True,
            )
            report["runs"].append(result)
    for name in ("current", "baseline"):
        peaks = [r["rss_peak_mb"] for r in report["runs"] if r["kind"] == name and r.get("rss_peak_mb")]
        if peaks:
            report[f"{name}_median_mb"] = statistics.median(peaks)
    return report


async def run_fleet_compare(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    """``--fleet-compare``: the fleet design against the single-process one, in turns in one run.

    Drains of the pre-filled topic by one worker (``FLEET_KINDS``, rotated order each round), then
    two workers in one group with the bench producing (``live_x2``), fleet and single in turns. After
    each fleet drain, :meth:`Bench.fleet_stats` reads how long the model's monitor took to commit its
    last statistics record and how many records and bytes went through."""
    report: dict[str, Any] = {"args": vars(args), "machine": machine_info(), "run_id": bench.run_id}
    t_start = time.monotonic()
    topics = await prepare(bench, report, onnx_limit=False)
    runs: list[dict[str, Any]] = []
    kinds = list(FLEET_KINDS)
    batch = args.serving_batch_size
    report["serving_batch_size"] = batch
    for rnd in range(bench.runs):
        order = kinds[rnd % len(kinds) :] + kinds[: rnd % len(kinds)]
        for kind in order:
            if kind == "off":
                result = await bench.measure(
                    "driftline_off",
                    rnd,
                    topics["requests"],
                    tag="-off",
                    settings=_fleet_settings("off", batch),
                )
            else:
                result = await bench.measure(
                    "driftline_on",
                    rnd,
                    topics["requests"],
                    settings=_fleet_settings(kind, batch),
                    tag=f"-{kind}",
                    fleet_check=kind == "fleet",
                )
            result["label"], result["round"] = kind, rnd
            runs.append(result)
            _progress(rnd, kind, result)
            if "fleet" in result:
                print(f"             {result['fleet']}", flush=True)
    if args.live_runs:
        for rnd in range(args.live_runs):
            for kind in ["x2_single", "x2_fleet"] if rnd % 2 == 0 else ["x2_fleet", "x2_single"]:
                result = await bench.measure_live(
                    "live_x2",
                    rnd,
                    settings=_fleet_settings(kind, batch),
                    tag=f"-{kind}",
                    fleet_check=kind == "x2_fleet",
                )
                result["label"], result["round"] = kind, rnd
                runs.append(result)
                _progress(rnd, kind, result)
                if "fleet" in result:
                    print(f"             {result['fleet']}", flush=True)
        kinds += ["x2_single", "x2_fleet"]
    if args.fleet_profile:
        report["profiles"] = {}
        for kind in ("single", "fleet"):
            print(f"  profiling one more {kind} drain with py-spy ...", flush=True)
            prof = await bench.profile_drain(
                topics["requests"], settings=_fleet_settings(kind, batch), tag=f"-{kind}"
            )
            per_event = _summarize(runs, kind)["cpu_us_per_event"]
            if "shares" in prof and per_event:
                prof["us_per_event"] = {k: round(v * per_event, 2) for k, v in prof["shares"].items()}
                prof["fleet_us_per_event"] = {
                    k: round(v * per_event, 2) for k, v in prof["fleet_shares"].items()
                }
            report["profiles"][kind] = prof
    report["runs"] = runs
    report["summary"] = {k: _summarize(runs, k) for k in kinds}
    report["ratios"] = {
        "fleet_vs_single": _ratio(runs, "fleet", "single"),
        "single_vs_off": _ratio(runs, "single", "off"),
        "fleet_vs_off": _ratio(runs, "fleet", "off"),
        "x2_fleet_vs_x2_single": _ratio(runs, "x2_fleet", "x2_single"),
    }
    report["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report["duration_s"] = round(time.monotonic() - t_start, 1)
    return report


def print_fleet_table(report: dict[str, Any]) -> None:
    m, s = report["machine"], report["summary"]
    if report.get("serving_batch_size"):
        print(f"\nevery worker with DRIFTLINE_SERVING__BATCH_SIZE={report['serving_batch_size']}")
    print(
        f"\ndriftline --fleet-compare {m['date']}, commit {m['commit']}: {m['cores']} cores, load "
        f"{m.get('loadavg_start')} -> {m.get('loadavg_end')}; {report['duration_s']:.0f} s; medians of "
        f"{report['args']['runs']} drains of {report['args']['events']:,} requests"
    )
    print(f"{'':<44}{'events/s':>10}{'CPU us/event':>14}{'worker cores':>14}  all rates")
    names = {
        "single": "1 worker, FLEET=false (detectors in-process)",
        "fleet": "1 worker, FLEET=true (ships + hosts monitor)",
        "off": "1 worker, monitoring off",
        "x2_single": "2 workers, FLEET=false, bench producing",
        "x2_fleet": "2 workers, FLEET=true, bench producing",
    }
    for kind, row in s.items():
        print(
            f"{names.get(kind, kind):<44}{_fmt(row['events_per_s']):>10}"
            f"{_fmt(row['cpu_us_per_event'], '.1f'):>14}"
            f"{_fmt(row['worker_cores'], '.2f'):>14}  {row['all_rates']}"
        )
    print(
        "ratios (median of per-round ratios): "
        + ", ".join(f"{k} {_fmt(v, '.3f')}" for k, v in report["ratios"].items())
    )
    for kind, prof in report.get("profiles", {}).items():
        if "fleet_us_per_event" not in prof:
            print(f"profile of {kind}: {prof.get('error')}")
            continue
        print(
            f"profile of one more {kind} drain (py-spy, {prof['samples']:,} samples), "
            "us of worker CPU per event:"
        )
        for name, us in prof["us_per_event"].items():
            print(f"  {name:<72}{us:>7.2f}")
        for name, us in prof["fleet_us_per_event"].items():
            print(f"  [stacks holding] {name:<90}{us:>7.2f}")
    fleets = [r["fleet"] for r in report["runs"] if isinstance(r.get("fleet"), dict)]
    for f in fleets:
        if "records" in f:
            print(
                f"  statistics topic: {f['records']:,} records, {f['bytes']:,} bytes, "
                f"{f['partitions_used']} partition(s); monitor caught up "
                f"{_fmt(f['monitor_caught_up_s'], '.1f')} s "
                f"after the last prediction"
            )


def execute(
    args: argparse.Namespace,
    runner: Callable[[Bench, argparse.Namespace], Awaitable[dict[str, Any]]],
    *,
    profile: bool = False,
) -> dict[str, Any]:
    """Runs ``runner`` with a :class:`Bench` in a temporary directory; whatever happens, stops every
    process it started and deletes the run's topics and consumer groups."""
    with tempfile.TemporaryDirectory(prefix="driftline-bench-") as tmp:
        bench = Bench(
            bootstrap=args.bootstrap,
            events=args.events,
            runs=args.runs,
            naive_events=getattr(args, "naive_events", 0),
            faust_events=getattr(args, "faust_events", 0),
            rss_events=getattr(args, "rss_events", 0),
            latency_s=args.latency_s,
            profile=profile,
            tmp=Path(tmp),
        )
        if getattr(args, "baseline_ref", None):
            bench.baseline_tree = export_tree(args.baseline_ref, Path(tmp) / "baseline")

        def _terminate(signum: int, _frame: Any) -> None:
            raise KeyboardInterrupt(f"signal {signum}")

        signal.signal(signal.SIGTERM, _terminate)
        try:
            return asyncio.run(runner(bench, args))
        finally:
            bench.stop_all()
            with contextlib.suppress(Exception):
                deleted = asyncio.run(bench.cleanup())
                print(f"deleted {len(deleted)} topics of run {bench.run_id}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller topics, one run of each (~2 min)")
    parser.add_argument("--events", type=int, help=f"pre-filled requests (default {FULL['events']:,})")
    parser.add_argument("--runs", type=int, help=f"repetitions of each drain (default {FULL['runs']})")
    parser.add_argument("--naive-events", type=int, help="requests the naive agent drains")
    parser.add_argument("--faust-events", type=int, help="requests the take() Faust agent drains")
    parser.add_argument(
        "--rss-events", type=int, help="distinct requests a worker drains for its RSS peak (0: skip)"
    )
    parser.add_argument("--latency-s", type=float, help="seconds of paced requests per latency phase")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy run")
    parser.add_argument(
        "--baseline-ref",
        help="also measure driftline (monitoring on: drains and latency) at this git commit, in the same run",
    )
    parser.add_argument(
        "--fleet-compare",
        action="store_true",
        help="only DRIFTLINE_MONITORING__FLEET=false vs true vs monitoring off (drains, then 2 workers); "
        "with --quick ~2 minutes; writes bench/results/fleet_compare.json",
    )
    parser.add_argument(
        "--rss-only",
        action="store_true",
        help="only the lean worker's RSS peak after --rss-events requests (and --baseline-ref's, in turns); "
        "writes bench/results/rss.json",
    )
    parser.add_argument("--live-runs", type=int, help="--fleet-compare: rounds of the 2-worker pair")
    parser.add_argument(
        "--serving-batch-size",
        type=int,
        help="--fleet-compare: DRIFTLINE_SERVING__BATCH_SIZE of every worker (default: the worker's, 500)",
    )
    parser.add_argument(
        "--fleet-profile", action="store_true", help="--fleet-compare: one more drain of each design, py-spy"
    )
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for key in ("events", "runs", "naive_events", "faust_events", "rss_events", "latency_s"):
        if getattr(args, key) is None:
            setattr(args, key, preset[key])
    profile = bool(preset["profile"]) and not args.no_profile
    if args.fleet_compare:
        if args.live_runs is None:
            args.live_runs = 1 if args.quick else 2
        if args.out == RESULTS:
            args.out = RESULTS.with_name("fleet_compare.json")
        report = execute(args, run_fleet_compare)
        args.out = str(args.out)
        report["args"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        print_fleet_table(report)
        Path(args.out).write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"\nwrote {args.out}")
        return 0 if all("error" not in r for r in report["runs"]) else 1

    if args.rss_only:
        if args.out == RESULTS:
            args.out = RESULTS.with_name("rss.json")
        if not args.rss_events:
            args.rss_events = FULL["rss_events"]
        report = execute(args, run_rss)
        report["args"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        Path(args.out).write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"current {report.get('current_median_mb')} MB, baseline {report.get('baseline_median_mb')} MB")
        print(f"wrote {args.out}")
        return 0 if all("error" not in r for r in report["runs"]) else 1

    report = execute(args, run_bench, profile=profile)
    args.out = str(args.out)
    report["args"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    print_table(report)
    args_out = Path(args.out)
    args_out.parent.mkdir(parents=True, exist_ok=True)
    args_out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwrote {args_out}")
    return 0 if all("error" not in r for r in report["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
