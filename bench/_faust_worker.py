"""One option of ``faust_options``, run as its own worker process (started by the parent script).

Usage (the parent does this): ``python -m bench._faust_worker '<json config>'``. The process
consumes ``cfg["in_topic"]``, publishes one output per request to ``cfg["out_topic"]``, and, when
the last output is acked by the broker, writes its measurements to ``cfg["result"]`` and stops.

Measured here, in the worker itself: wall time from the first consumed record to the last output
acked, and CPU time (``resource.getrusage(RUSAGE_SELF)``, user + system, all threads) over the same
window.
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import logging
import os
import pstats
import resource
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench._work import build_output, handle

__all__ = ["main"]

TAKE_MAX = 500
TAKE_WITHIN = 0.005
TUNED_BATCH_BYTES = 256 * 1024
TUNED_FETCH_BYTES = 32 * 1024 * 1024
# Options that keep Faust's default settings (and its DEBUG root logger, except *_info).
STOCK_SETTINGS = {
    "agent_stock",
    "agent_stock_take",
    "agent_stock_info",
    "agent_stock_linger",
    "agent_stock_fetch",
}


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class Meter:
    """First-consumed / last-acked timestamps and CPU, shared by every option."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.target: int = cfg["events"]
        self.acked = 0
        self.t_first: float | None = None
        self.cpu_first = 0.0
        self.t_last: float | None = None
        self.cpu_last = 0.0
        self.done = asyncio.Event()
        self.root_level_at_first: str | None = None
        self.profiler: cProfile.Profile | None = (
            cProfile.Profile(time.thread_time) if cfg.get("profile") else None
        )
        self.extra: dict[str, Any] = {}
        # Set once the option has recorded its extra numbers (phase timers) after the window.
        self.extra_ready = asyncio.Event()

    def first(self) -> None:
        if self.t_first is None:
            self.t_first = time.time()
            self.cpu_first = _cpu()
            self.root_level_at_first = logging.getLevelName(logging.root.level)
            if self.profiler is not None:
                self.profiler.enable()

    def add_acked(self, n: int) -> None:
        self.acked += n
        if self.acked >= self.target and self.t_last is None:
            self.t_last = time.time()
            self.cpu_last = _cpu()
            if self.profiler is not None:
                self.profiler.disable()
            self.done.set()

    def batch(self, n: int) -> None:
        self.extra["take_batches"] = self.extra.get("take_batches", 0) + 1
        self.extra["take_events"] = self.extra.get("take_events", 0) + n

    def on_ack(self, _fut: Any) -> None:
        self.add_acked(1)

    def write(self) -> None:
        assert self.t_first is not None and self.t_last is not None
        wall = self.t_last - self.t_first
        cpu = self.cpu_last - self.cpu_first
        res = {
            "option": self.cfg["option"],
            "events": self.target,
            "acked": self.acked,
            "t_first": self.t_first,
            "t_last": self.t_last,
            "wall_s": wall,
            "cpu_s": cpu,
            "cpu_total_s": _cpu(),
            "startup_s": self.t_first - self.cfg["spawn_time"],
            "events_per_s": self.target / wall if wall > 0 else None,
            "cpu_us_per_event": cpu / self.target * 1e6,
            "cpu_util": cpu / wall if wall > 0 else None,
            "root_log_level": self.root_level_at_first,
            **self.extra,
        }
        phases = res.get("phases_us_per_event")
        if phases:
            loop_cpu = sum(v for k, v in phases.items() if "wall" not in k)
            phases["rest: event loop, fetch/send tasks, I/O (CPU)"] = round(
                res["cpu_us_per_event"] - loop_cpu, 3
            )
        if self.profiler is not None:
            res["profile"] = _profile_split(self.profiler, self.target)
        tmp = self.cfg["result"] + ".tmp"
        with open(tmp, "w") as f:
            json.dump(res, f, indent=2)
        os.replace(tmp, self.cfg["result"])


# cProfile tottime grouped by where the code lives: a coarse "who spends the CPU" split.
_PROFILE_GROUPS: list[tuple[str, tuple[str, ...]]] = [
    (
        "consume (aiokafka consumer/fetcher/record parsing)",
        ("aiokafka/consumer", "aiokafka/record", "aiokafka/structs", "<string>:__init__"),
    ),
    ("produce (aiokafka producer/accumulator/sender)", ("aiokafka/producer",)),
    (
        "network+protocol (aiokafka conn/client/protocol)",
        ("aiokafka/conn", "aiokafka/client", "aiokafka/protocol"),
    ),
    ("decode (orjson.loads)", ("orjson.loads",)),
    ("work (build output + orjson.dumps)", ("bench/_work", "orjson.dumps", "builtins.sum")),
    ("bench loop (bench/_hotloop)", ("bench/_hotloop",)),
    (
        "faust streams/events/acks (faust/streams, events, channels, topics)",
        ("faust/streams", "faust/events", "faust/channels", "faust/topics", "faust/agents"),
    ),
    ("faust consumer/producer/transport", ("faust/transport",)),
    ("faust other + mode", ("faust/", "mode/")),
    ("asyncio event loop", ("asyncio/", "selectors", "select.epoll", "_asyncio")),
]


def _profile_split(prof: cProfile.Profile, events: int) -> dict[str, float]:
    stats = pstats.Stats(prof)
    totals: dict[str, float] = {}
    total = 0.0
    for (filename, _line, func), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{filename}:{func}" if filename != "~" else func
        total += tottime
        group = "other"
        for name, pats in _PROFILE_GROUPS:
            if any(p in where for p in pats):
                group = name
                break
        totals[group] = totals.get(group, 0.0) + tottime
    out = {k: round(v / events * 1e6, 3) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}
    top = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:25]  # type: ignore[attr-defined]
    out_top = {f"{Path(fn).name}:{ln}:{fu}": round(v[2] / events * 1e6, 3) for (fn, ln, fu), v in top}
    out["total (profiled, inflated by cProfile)"] = round(total / events * 1e6, 3)
    return {"groups": out, "top_functions": out_top}


async def _send_batches(
    producer: Any, topic: str, partition: int, keys: list[Any], values: list[bytes]
) -> list[Any]:
    futs = []
    batch = producer.create_batch()
    for k, v in zip(keys, values, strict=True):
        if batch.append(key=k, value=v, timestamp=None) is None:
            futs.append(await producer.send_batch(batch, topic, partition=partition))
            batch = producer.create_batch()
            batch.append(key=k, value=v, timestamp=None)
    futs.append(await producer.send_batch(batch, topic, partition=partition))
    return futs


# ---------------------------------------------------------------------------------------------
# Faust options


def _faust_app(cfg: dict[str, Any], tuned: bool, knob: str = "") -> Any:
    import faust

    kw: dict[str, Any] = {
        "broker": f"kafka://{cfg['bootstrap']}",
        # Bind the web server to loopback on a port the parent picked (several workers may run).
        "web_host": "127.0.0.1",
        "web_bind": "127.0.0.1",
        "web_port": cfg["web_port"],
        "store": "memory://",
        "topic_partitions": 1,
        "topic_replication_factor": 1,
    }
    if knob == "agent_stock_linger":
        kw.update(producer_linger=0.005, producer_max_batch_size=TUNED_BATCH_BYTES)
    if knob == "agent_stock_fetch":
        kw.update(consumer_max_fetch_size=TUNED_FETCH_BYTES)
    if tuned:
        kw.update(
            # Faust's consumer hard-codes fetch_max_wait_ms=1500. While a fetched 1 MiB chunk
            # (the default max_partition_fetch_bytes) is being processed, aiokafka's next fetch to
            # that broker carries only partitions with nothing buffered -- here the idle
            # `<app>-__assignor-__leader` partition -- so the broker holds it up to 1.5 s and the
            # agent starves: ~2,000 events/s whatever the per-event cost. Bigger chunks make the
            # stall rare.
            consumer_max_fetch_size=TUNED_FETCH_BYTES,
            # aiokafka's linger_ms comes from here; the default 0 sends one request per output.
            producer_linger=0.005,
            producer_max_batch_size=TUNED_BATCH_BYTES,
            # Default 60 s session timeout makes every group (re)join wait long; 1 s heartbeats.
            broker_session_timeout=10.0,
            broker_heartbeat_interval=1.0,
        )
    return faust.App(cfg["app_id"], **kw)


def _raw_topic(app: Any, name: str) -> Any:
    # Raw bytes in and out: the option decodes/encodes itself with orjson, so every option does
    # the same per-event work and Faust's codec layer is not what is being compared.
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


def _run_faust(cfg: dict[str, Any]) -> None:
    import faust

    opt = cfg["option"]
    tuned = opt not in STOCK_SETTINGS
    app = _faust_app(cfg, tuned, knob=opt)
    meter = Meter(cfg)
    in_t = _raw_topic(app, cfg["in_topic"])
    out_t = _raw_topic(app, cfg["out_topic"])
    out_name = cfg["out_topic"]
    n_input = cfg["input_records"]

    if opt in ("agent_stock", "agent_tuned", "agent_stock_info", "agent_stock_linger", "agent_stock_fetch"):

        @app.agent(in_t)
        async def per_event(stream: Any) -> None:
            async for key, value in stream.items():
                meter.first()
                await out_t.send(key=key, value=handle(value), callback=meter.on_ack)

    elif opt in ("agent_stock_take", "agent_tuned_take"):

        @app.agent(in_t)
        async def take_send(stream: Any) -> None:
            async for events in stream.take_events(TAKE_MAX, within=TAKE_WITHIN):
                meter.first()
                meter.batch(len(events))
                for ev in events:
                    await out_t.send(key=ev.key, value=handle(ev.value), callback=meter.on_ack)

    elif opt == "agent_take_rawproducer":

        @app.agent(in_t)
        async def take_raw(stream: Any) -> None:
            async for events in stream.take_events(TAKE_MAX, within=TAKE_WITHIN):
                meter.first()
                meter.batch(len(events))
                producer = app.producer._ensure_producer()  # faust's AIOKafkaProducer
                keys = [ev.key for ev in events]
                outs = [handle(ev.value) for ev in events]
                futs = await _send_batches(producer, out_name, 0, keys, outs)
                # Awaiting the acks here, inside the body, is what keeps at-least-once: take()
                # acks the events to Faust (and so lets it commit them) only after the body ran.
                await asyncio.gather(*futs)
                meter.add_acked(len(events))

    elif opt == "agent_envelope":

        @app.agent(in_t)
        async def envelope(stream: Any) -> None:
            async for key, value in stream.items():
                meter.first()
                reqs = orjson.loads(value)
                out = b"[" + b",".join([build_output(r) for r in reqs]) + b"]"
                n = len(reqs)
                await out_t.send(key=key, value=out, callback=lambda _f, n=n: meter.add_acked(n))

    elif opt == "service_getmany":
        _register_service(app, cfg, meter)
    else:
        raise SystemExit(f"unknown faust option {opt!r}")

    async def finish() -> None:
        await meter.done.wait()
        if opt == "service_getmany":
            await meter.extra_ready.wait()
        else:
            # Let Faust commit what it has acked before we stop (it flushes the producer first).
            tp = next((t for t in app.consumer.assignment() if t.topic == cfg["in_topic"]), None)
            for _ in range(100):
                await app.consumer.commit()
                if tp is not None and app.consumer._committed_offset.get(tp, -1) >= n_input:
                    break
                await asyncio.sleep(0.1)
        meter.write()
        os.kill(os.getpid(), signal.SIGTERM)

    @app.task
    async def _watchdog() -> None:
        try:
            await asyncio.wait_for(finish(), timeout=cfg["timeout_s"])
        except TimeoutError:
            meter.extra["error"] = f"timeout after {cfg['timeout_s']} s, acked {meter.acked}"
            os.kill(os.getpid(), signal.SIGTERM)

    # agent_stock_info: the public switch, `faust worker -l info` (a level below WARN disables the
    # spinner, so the root logger stays at INFO).
    loglevel = "INFO" if opt == "agent_stock_info" else "WARN"
    worker = faust.Worker(app, loglevel=loglevel, logfile=cfg["log"])
    if tuned:
        # faust.Worker always creates a terminal spinner (whether or not stdout is a tty) and,
        # unless loglevel < WARN, its on_setup_root_logger() sets the *root* logger to DEBUG so
        # every debug() call in faust/aiokafka builds a LogRecord just to tick the spinner.
        # No spinner -> root logger stays at the requested level. (`faust worker -l info` has the
        # same effect, because a level below WARN disables the spinner.)
        worker.spinner = None
    worker.execute_from_commandline()


def _register_service(app: Any, cfg: dict[str, Any], meter: Meter) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from mode import Service

    from bench._hotloop import CommitOnRevoke

    @app.service
    class HotLoop(Service):  # type: ignore[misc]
        """The request loop, owned by the Faust app but on its own consumer group."""

        async def on_start(self) -> None:
            self.listener = CommitOnRevoke()
            # Its own group id: Faust's consumer uses Faust's assignor protocol, which a plain
            # aiokafka member of the same group would clash with.
            self.consumer = _make_consumer(AIOKafkaConsumer, cfg, cfg["group"])
            self.consumer.subscribe([cfg["in_topic"]], listener=self.listener)
            self.producer = _make_producer(AIOKafkaProducer, cfg)
            await self.consumer.start()
            await self.producer.start()

        @Service.task
        async def _serve(self) -> None:
            loop = _make_loop(self.consumer, self.producer, cfg, meter)
            self.listener.loop = loop
            await loop.run(cfg["timeout_s"])
            _record_timers(loop, meter)

        async def on_stop(self) -> None:
            await self.consumer.stop()
            await self.producer.stop()


# ---------------------------------------------------------------------------------------------
# aiokafka (options 4 and 5)


def _make_consumer(cls: Any, cfg: dict[str, Any], group: str) -> Any:
    return cls(
        bootstrap_servers=cfg["bootstrap"],
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=10_000,
        heartbeat_interval_ms=1_000,
    )


def _make_producer(cls: Any, cfg: dict[str, Any]) -> Any:
    # acks="all" like Faust's default (producer_acks=-1), so every option waits for the same ack.
    return cls(bootstrap_servers=cfg["bootstrap"], acks="all", linger_ms=5, max_batch_size=TUNED_BATCH_BYTES)


def _make_loop(consumer: Any, producer: Any, cfg: dict[str, Any], meter: Meter) -> Any:
    from bench._hotloop import BatchLoop

    return BatchLoop(
        consumer,
        producer,
        cfg["out_topic"],
        cfg["events"],
        max_records=TAKE_MAX,
        timeout_ms=5,
        max_inflight=cfg.get("max_inflight", 4),
        on_first=meter.first,
        on_done=lambda: meter.add_acked(cfg["events"]),
    )


def _record_timers(loop: Any, meter: Meter) -> None:
    t = loop.timers
    n = meter.target
    meter.extra["phases_us_per_event"] = {
        "getmany (CPU in call)": round(t.getmany / n * 1e6, 3),
        "decode (orjson.loads)": round(t.decode / n * 1e6, 3),
        "work (build + orjson.dumps)": round(t.work / n * 1e6, 3),
        "produce (create_batch/append/send_batch)": round(t.produce / n * 1e6, 3),
        "commit (wall in call, overlapped)": round(t.commit / n * 1e6, 3),
        "ack wait (wall, overlapped)": round(t.ack_wait / n * 1e6, 3),
        "getmany (wall in call)": round(t.getmany_wall / n * 1e6, 3),
        "in-flight slot wait (wall)": round(t.slot_wait_wall / n * 1e6, 3),
    }
    meter.extra["batches"] = t.batches
    meter.extra["commits"] = t.commits
    meter.extra["committed"] = {f"{tp.topic}:{tp.partition}": off for tp, off in loop.committed.items()}
    meter.extra_ready.set()


def _run_plain(cfg: dict[str, Any]) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from bench._hotloop import CommitOnRevoke

    async def main() -> None:
        meter = Meter(cfg)
        listener = CommitOnRevoke()
        consumer = _make_consumer(AIOKafkaConsumer, cfg, cfg["group"])
        consumer.subscribe([cfg["in_topic"]], listener=listener)
        producer = _make_producer(AIOKafkaProducer, cfg)
        await consumer.start()
        await producer.start()
        try:
            loop = _make_loop(consumer, producer, cfg, meter)
            listener.loop = loop
            await loop.run(cfg["timeout_s"])
            _record_timers(loop, meter)
            meter.write()
        finally:
            await consumer.stop()
            await producer.stop()

    logging.basicConfig(level=logging.WARNING, filename=cfg["log"])
    asyncio.run(main())


RUNNERS: dict[str, Callable[[dict[str, Any]], None]] = {
    "agent_stock": _run_faust,
    "agent_stock_take": _run_faust,
    "agent_stock_info": _run_faust,
    "agent_stock_linger": _run_faust,
    "agent_stock_fetch": _run_faust,
    "agent_tuned": _run_faust,
    "agent_tuned_take": _run_faust,
    "agent_take_rawproducer": _run_faust,
    "agent_envelope": _run_faust,
    "service_getmany": _run_faust,
    "plain_aiokafka": _run_plain,
}


def main(argv: list[str]) -> None:
    cfg = json.loads(argv[1])
    RUNNERS[cfg["option"]](cfg)


if __name__ == "__main__":
    main(sys.argv)
