"""One demo session: the worker, the webhook receiver, the publisher and the live alert table, wired.

:class:`Demo` is what ``driftline demo`` (:mod:`agent.cli.demo`) runs; see that command's help for what
it does. The verdict, the summary and the plot are :mod:`agent.demo.evaluation`'s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from agent.errors import ConfigurationError, DriftlineError, ServiceUnavailableError

if TYPE_CHECKING:
    from agent.demo.evaluation import AlertTable, DemoRun, EventLog, WebhookDelivery, WebhookReceiver
    from agent.settings import Settings
    from producers.schedule import Scenario
    from producers.stream import EventStream
    from schemas.alert import Alert
    from schemas.manifest import Manifest

__all__ = ["Demo"]

# Demo runs kept under DIR/runs (worker log and state); older ones are removed.
_KEEP_RUNS = 5


class _Milestones:
    """Turns the publisher's progress into lines: each scripted drift as the stream reaches it, and
    the count every 10 % of the run."""

    def __init__(self, scenario: Scenario, count: int, say: Callable[[str], None]) -> None:
        self.say = say
        self.count = count
        self.step = max(count // 10, 1)
        self.next_report = self.step
        marks: list[tuple[int, str]] = []
        for d in scenario.drifts:
            size = d.describe_size()
            what = f"{d.kind} {size}" + (f" on {d.feature!r}" if d.feature else "")
            marks.append((d.start, f"{what} begins"))
            if d.end is not None and d.end < count:
                marks.append((d.end, f"{what} ends"))
        self.marks = sorted(m for m in marks if m[0] < count)

    def update(self, events: int) -> None:
        while self.marks and self.marks[0][0] <= events:
            at, text = self.marks.pop(0)
            self.say(f"  -- event {at:,}: {text}")
        if events >= self.next_report:
            self.say(f"  .. {events:,} of {self.count:,} events sent")
            while self.next_report <= events:
                self.next_report += self.step


def _progress(milestones: _Milestones) -> Any:
    from producers.publish import Progress

    class MilestoneProgress(Progress):
        # publish() reports through a Progress; this one prints milestones instead of a status line,
        # which would fight with the alert rows for the terminal.
        def __init__(self) -> None:
            super().__init__(open(os.devnull, "w"), interval_s=0.0)  # noqa: SIM115 (closed in close())

        def update(self, events: int, outcomes: int, bad: int, *, force: bool = False) -> None:
            milestones.update(events)

        def close(self) -> None:
            self.stream.close()

    return MilestoneProgress()


@dataclass(frozen=True)
class _Plan:
    """What one demo run was set up with: where things go, what is sent, how fast."""

    settings: Settings
    names: DemoRun
    root: Path
    run_dir: Path
    scenario: Scenario
    count: int
    rate: float
    started: float
    """``time.monotonic()`` at the start, for the duration in the summary."""


class Demo:
    """One run of the demo (see the module docstring); :meth:`run` returns the exit status."""

    def __init__(self, args: argparse.Namespace, out: TextIO) -> None:
        self.args = args
        self.out = out
        self.worker: subprocess.Popen[bytes] | None = None
        self.alerts: dict[str, Alert] = {}
        self.table: AlertTable | None = None
        self._given: Manifest | None = None

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    async def run(self) -> int:
        from agent.demo.evaluation import DemoRun
        from agent.settings import Settings

        started = time.monotonic()
        settings = Settings()
        root = self.args.dir.resolve()
        root.mkdir(parents=True, exist_ok=True)
        # Keeps the demo's files out of `git status` without touching the project's .gitignore.
        (root / ".gitignore").write_text("*\n")
        demo_run = DemoRun.new()
        run_dir = root / "runs" / demo_run.run_id
        run_dir.mkdir(parents=True)
        _prune_runs(root / "runs", _KEEP_RUNS)
        scenario, count = self._scenario()
        rate = self.args.rate if self.args.rate is not None else scenario.rate
        plan = _Plan(settings, demo_run, root, run_dir, scenario, count, rate, started)

        self.say(f"driftline demo: run {demo_run.run_id}")
        self.say(f"  Kafka     {settings.kafka.bootstrap_servers}")
        token = settings.influx.token.get_secret_value() if settings.influx.token else ""
        influx = f"{settings.influx.url} (org {settings.influx.org!r}, bucket {settings.influx.bucket!r})"
        self.say(f"  InfluxDB  {influx if token else 'not used: no token (INFLUXDB_TOKEN)'}")
        await self._check_kafka(settings)

        self.say("\n== 1/4 model package")
        manifest = await asyncio.to_thread(self._package, root / "models")

        self.say("\n== 2/4 worker")
        from agent.alerting.sinks.webhook import new_secret
        from agent.demo.evaluation import WebhookReceiver

        secret = new_secret()
        receiver = await WebhookReceiver(secret, self._on_delivery).start()
        self.say(f"  webhook receiver {receiver.url} (Standard Webhooks secret generated for this run)")
        try:
            return await self._with_receiver(plan, manifest, receiver, secret)
        finally:
            await receiver.stop()

    async def _with_receiver(
        self, plan: _Plan, manifest: Manifest, receiver: WebhookReceiver, secret: str
    ) -> int:
        from agent.demo.evaluation import AlertTable

        port = _free_port()
        env = self._worker_env(plan, port, receiver.url, secret)
        log_path = plan.run_dir / "worker.log"
        self.worker = _start_worker(env, log_path)
        self.say(f"  driftline run: pid {self.worker.pid}, REST http://127.0.0.1:{port}, log {log_path}")
        consumer: asyncio.Task[None] | None = None
        try:
            ready_in = await self._wait_ready(port, log_path)
            self.say(f"  ready in {ready_in:.1f} s, serving {manifest.name}/{manifest.version}")

            self.say("\n== 3/4 stream")
            stream = self._stream(plan)
            self.say(_indent(stream.table()))
            self.say(
                f"  sending {plan.count:,} events at {plan.rate:g}/s (~{_duration(plan.count / plan.rate)}) "
                f"to {plan.names.topics['requests']}"
            )
            self.table = AlertTable(width=shutil.get_terminal_size((120, 24)).columns)
            self.say("")
            self.say(self.table.header())
            consumer = asyncio.create_task(self._consume_alerts(plan))
            sent_from = datetime.now(UTC)
            summary = await self._publish(plan, stream)
            self.say(f"  sent: {summary.format().splitlines()[0]}")
            self.say("  waiting for the worker to finish the stream...")
            drained = await self._drain(plan, timeout_s=max(60.0, plan.count / 100))
            if not drained:
                self.say("  the worker did not catch up within the wait; summarising what it did")
            await self._settle(receiver)
        finally:
            if consumer is not None:
                consumer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await consumer
            code = await asyncio.to_thread(self._stop_worker)
            if code is not None:
                self.say(f"  worker stopped (SIGTERM), exit status {code}")

        self.say("\n== 4/4 summary")
        return await self._summarise(plan, stream, manifest, receiver, sent_from)

    # --- set-up -------------------------------------------------------------------------------

    def _scenario(self) -> tuple[Scenario, int]:
        from agent.demo.evaluation import compress
        from producers.scenarios import builtin_scenario
        from producers.schedule import ScheduledDrift

        given = self._given_manifest()
        if given is None:
            scenario = builtin_scenario(self.args.scenario, self.args.model)
        else:
            scenario = builtin_scenario(self.args.scenario, feature=self._focus_feature())
            if self.args.label_column is None:
                # No labels in the CSV, so no outcomes: nothing for a concept change to act on.
                kept = tuple(d for d in scenario.drifts if d.kind != "concept")
                scenario = scenario.model_copy(update={"drifts": kept})
        count = self.args.count or scenario.count
        if count < scenario.count:
            scale = count / scenario.count
            drifts = [ScheduledDrift(**d) for d in compress(scenario.drifts, scale)]
            scenario = scenario.model_copy(update={"drifts": tuple(drifts), "count": count})
        return scenario, count

    async def _check_kafka(self, settings: Settings) -> None:
        from aiokafka.admin import AIOKafkaAdminClient

        from agent.kafka import aiokafka_options

        admin = AIOKafkaAdminClient(**aiokafka_options(settings.kafka), request_timeout_ms=10_000)
        try:
            async with asyncio.timeout(15):
                await admin.start()
                await admin.list_topics()
        except Exception as exc:
            raise ServiceUnavailableError(
                f"Kafka at {settings.kafka.bootstrap_servers} does not answer ({type(exc).__name__}); "
                "start it with `scripts/services up kafka` (scripts/demo does)"
            ) from None
        finally:
            await admin.close()

    def _given_manifest(self) -> Manifest | None:
        """The manifest of ``--package``, read once; ``None`` for an example ``--model``."""
        if self.args.package is None:
            return None
        if self._given is None:
            from producers.errors import ProducerError
            from producers.replay import read_manifest

            try:
                self._given = read_manifest(self.args.package)
            except ProducerError as exc:
                raise ConfigurationError(f"--package: {exc}") from exc
        return self._given

    def _focus_feature(self) -> str:
        """The feature the covariate drifts shift and the plot follows."""
        from producers.scenarios import FOCUS_FEATURES

        given = self._given_manifest()
        if given is None:
            return FOCUS_FEATURES[self.args.model][0]
        if self.args.feature is not None:
            if self.args.feature not in given.feature_names:
                raise ConfigurationError(
                    f"--feature {self.args.feature!r} is not a feature of {given.name}/{given.version}: "
                    f"{', '.join(given.feature_names)}"
                )
            return str(self.args.feature)
        numeric = [f.name for f in given.features if f.type == "numeric"]
        if not numeric:
            raise ConfigurationError(f"{given.name}/{given.version} has no numeric feature to shift")
        return numeric[0]

    @property
    def model_name(self) -> str:
        given = self._given_manifest()
        return str(self.args.model) if given is None else given.name

    def _copy_given(self, models: Path) -> Manifest:
        from agent.models.package import LoadedModel
        from agent.models.repository import ModelRepository

        model = LoadedModel(self.args.package)
        with model:  # verifies it as the worker will, before anything is copied
            manifest = model.manifest
            source = model.path
        target = ModelRepository(models).package_dir(manifest.name, manifest.version)
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source if source.is_dir() else source.parent, target)
        self.say(f"  serving {manifest.name}/{manifest.version} from {self.args.package} (verified)")
        return manifest

    def _package(self, models: Path) -> Manifest:
        from agent.models.package import LoadedModel
        from agent.models.repository import ModelRepository
        from agent.packaging.builder import build_package
        from agent.packaging.examples import EXAMPLES

        if self.args.package is not None:
            return self._copy_given(models)
        name = self.args.model
        repository = ModelRepository(models)
        newest = repository.newest(name)
        if newest is not None:
            model = LoadedModel(newest.path)
            try:
                model.load()
                if not model.findings:
                    self.say(f"  reusing {newest.path} (verified)")
                    return model.manifest
                why = "built with other library versions: " + ", ".join(str(f) for f in model.findings)
            except DriftlineError as exc:
                why = str(exc)
            finally:
                model.close()
            self.say(f"  rebuilding {newest.path}: {why}")
        started = time.monotonic()
        self.say(f"  training and packaging the {name} example (scikit-learn -> ONNX, verified)...")
        built = build_package(
            EXAMPLES[name](), name=name, version="1", repository=repository, force=newest is not None
        )
        self.say(f"  built {built.path} in {time.monotonic() - started:.1f} s")
        return built.manifest

    def _worker_env(self, plan: _Plan, port: int, webhook_url: str, secret: str) -> dict[str, str]:
        settings, names = plan.settings, plan.names
        env = dict(os.environ)
        env.update(
            {
                "DRIFTLINE_APP_ID": names.app_id,
                "DRIFTLINE_DATA_DIR": str(plan.run_dir / "data"),
                "DRIFTLINE_WEB__HOST": "127.0.0.1",
                "DRIFTLINE_WEB__PORT": str(port),
                "DRIFTLINE_SERVING__MODEL_REPOSITORY": str(plan.root / "models"),
                "DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
                "DRIFTLINE_WEBHOOKS__URLS": json.dumps([webhook_url]),
                "DRIFTLINE_WEBHOOKS__SECRET": secret,
                "DRIFTLINE_WEBHOOKS__LEGACY_HEADERS": "false",
                # The demo is short: metrics every 2 s give the dashboards something to draw.
                "DRIFTLINE_INFLUX__METRICS_INTERVAL_S": "2",
                "DRIFTLINE_INFLUX__URL": settings.influx.url,
                "DRIFTLINE_INFLUX__ORG": settings.influx.org,
                "DRIFTLINE_INFLUX__BUCKET": settings.influx.bucket,
            }
        )
        if settings.influx.token is not None:
            env["DRIFTLINE_INFLUX__TOKEN"] = settings.influx.token.get_secret_value()
        for name, topic in names.topics.items():
            env[f"DRIFTLINE_TOPICS__{name.upper()}"] = topic
        return env

    async def _wait_ready(self, port: int, log_path: Path) -> float:
        import aiohttp

        started = time.monotonic()
        deadline = started + self.args.ready_timeout
        url = f"http://127.0.0.1:{port}/health"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session:
            while time.monotonic() < deadline:
                assert self.worker is not None
                if self.worker.poll() is not None:
                    raise ServiceUnavailableError(
                        f"the worker exited with status {self.worker.returncode} before it was ready; "
                        f"its log ({log_path}) ends with:\n{_tail(log_path)}"
                    )
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(url) as response:
                        if response.status == 200:
                            return time.monotonic() - started
                await asyncio.sleep(0.5)
        raise ServiceUnavailableError(
            f"the worker was not ready within {self.args.ready_timeout:g} s; its log ({log_path}) ends "
            f"with:\n{_tail(log_path)}"
        )

    def _stream(self, plan: _Plan) -> EventStream:
        from producers.scenarios import generate

        given = self._given_manifest()
        if given is not None:
            from producers.errors import ProducerError
            from producers.replay import replay

            try:
                return replay(
                    self.args.data,
                    given,
                    label_column=self.args.label_column,
                    scenario=plan.scenario,
                    seed=self.args.seed,
                    count=plan.count,
                    run_id=plan.names.request_prefix,
                    start_time=datetime.now(UTC),
                    shuffle=self.args.shuffle,
                )
            except ProducerError as exc:
                raise ConfigurationError(f"--data: {exc}") from exc
        return generate(
            plan.scenario,
            model=self.args.model,
            seed=self.args.seed,
            count=plan.count,
            run_id=plan.names.request_prefix,
            start_time=datetime.now(UTC),
        )

    # --- the run ------------------------------------------------------------------------------

    def _on_delivery(self, delivery: WebhookDelivery) -> None:
        state = "signature verified" if delivery.verified else "SIGNATURE REJECTED"
        if delivery.kind == "incident":
            self.say(f"{'':8}  -> webhook: {state} (incident {delivery.incident[:12]} {delivery.detail})")
            return
        what = f"{delivery.kind} {delivery.subject!r}" if delivery.kind else "?"
        self.say(f"{'':8}  -> webhook: {state} ({what}, alert {delivery.alert_id[:12]})")

    async def _consume_alerts(self, plan: _Plan) -> None:
        from aiokafka import AIOKafkaConsumer

        from agent.kafka import aiokafka_options
        from schemas.alert import decode_alert

        consumer = AIOKafkaConsumer(
            plan.names.topics["alerts"],
            **aiokafka_options(plan.settings.kafka),
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            async for record in consumer:
                if record.value is None:
                    continue
                try:
                    alert = decode_alert(record.value)
                except ValueError:
                    continue
                if alert.alert_id in self.alerts:
                    continue  # at-least-once: the same alert again
                self.alerts[alert.alert_id] = alert
                assert self.table is not None
                self.say(self.table.row(alert))
        finally:
            await consumer.stop()

    async def _publish(self, plan: _Plan, stream: EventStream) -> Any:
        from producers.config import KafkaConfig, ProducerSettings, TopicConfig
        from producers.errors import PublishError
        from producers.publish import publish

        k, topics = plan.settings.kafka, plan.names.topics
        producer_settings = ProducerSettings(
            kafka=KafkaConfig(
                bootstrap_servers=k.bootstrap_servers,
                security_protocol=k.security_protocol,
                sasl_mechanism=k.sasl_mechanism,
                sasl_username=k.sasl_username,
                sasl_password=k.sasl_password,
                ssl_cafile=k.ssl_cafile,
            ),
            topics=TopicConfig(requests=topics["requests"], outcomes=topics["outcomes"]),
        )
        milestones = _Milestones(stream.scenario, stream.count, self.say)
        try:
            return await publish(
                stream, settings=producer_settings, rate=plan.rate, progress=_progress(milestones)
            )
        except PublishError as exc:
            raise ServiceUnavailableError(str(exc)) from exc

    async def _drain(self, plan: _Plan, timeout_s: float) -> bool:
        """Waits until the worker's group has committed every request and outcome."""
        from aiokafka import AIOKafkaConsumer
        from aiokafka.admin import AIOKafkaAdminClient

        from agent.kafka import aiokafka_options

        settings, names = plan.settings, plan.names
        options = aiokafka_options(settings.kafka)
        tps = await _partitions(settings, [names.topics["requests"], names.topics["outcomes"]])
        admin = AIOKafkaAdminClient(**options)
        consumer = AIOKafkaConsumer(**options, enable_auto_commit=False)
        await admin.start()
        await consumer.start()
        try:
            end = await consumer.end_offsets(tps)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                assert self.worker is not None
                if self.worker.poll() is not None:
                    return False
                committed = await admin.list_consumer_group_offsets(f"{names.app_id}-serving", partitions=tps)
                if all(tp in committed and committed[tp].offset >= end[tp] for tp in tps):
                    return True
                await asyncio.sleep(0.5)
            return False
        finally:
            await consumer.stop()
            await admin.close()

    async def _settle(self, receiver: WebhookReceiver) -> None:
        """Gives the alerts the worker raised last the time to reach the topic reader and the webhook:
        until every alert read from the topic is in a delivery (its own, or the timeline of its
        incident's notification), for at most 20 s."""
        from agent.demo.evaluation import delivered_alerts

        await asyncio.sleep(2.0)
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline:
            if set(self.alerts) <= delivered_alerts(receiver.deliveries):
                return
            await asyncio.sleep(0.5)

    def _stop_worker(self) -> int | None:
        worker = self.worker
        if worker is None:
            return None
        if worker.poll() is not None:
            return worker.returncode
        worker.send_signal(signal.SIGTERM)
        try:
            return worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            return worker.wait(timeout=10)

    # --- the summary --------------------------------------------------------------------------

    async def _summarise(
        self,
        plan: _Plan,
        stream: EventStream,
        manifest: Manifest,
        receiver: WebhookReceiver,
        sent_from: datetime,
    ) -> int:
        from agent.demo.evaluation import DemoSummary, EventLog, evaluate, expectations, plot_demo
        from producers.stream import MessageKind

        settings, scenario, names = plan.settings, plan.scenario, plan.names
        feature = next((d.feature for d in scenario.drifts if d.kind == "covariate"), None)
        feature = feature or self._focus_feature()
        log = EventLog(plan.count, names.request_prefix, feature)
        await self._read_back(plan, log)
        placed = [log.place(a) for a in sorted(self.alerts.values(), key=lambda a: a.detected_at)]
        bad = [
            i for i, m in enumerate(_requests_only(stream)) if m in (MessageKind.BROKEN, MessageKind.GARBAGE)
        ]
        detections = evaluate(
            expectations(scenario.drifts, rate_margin=settings.monitoring.rate_margin),
            placed,
            log,
            bad_events=bad,
        )
        influx_count, influx_note = await asyncio.to_thread(self._influx_alerts, settings, sent_from)
        stats = stream.stats
        plot = plot_demo(
            plan.root / "demo.png",
            log,
            scenario.drifts,
            placed,
            title=(
                f"driftline demo {names.run_id}: {manifest.name}/{manifest.version}, "
                f"scenario {scenario.name}, {plan.count:,} events"
            ),
            rate=plan.rate,
            references={**_references(manifest, feature), "dead": settings.monitoring.rate_margin},
            estimated=_estimated_errors(manifest, log.output),
        )
        report = await self._report(plan, manifest, since=sent_from.timestamp())
        summary = DemoSummary(
            run_id=names.run_id,
            events=stats.events,
            requests=stats.requests,
            outcomes=stats.outcomes,
            broken=stats.broken,
            garbage=stats.garbage,
            predictions=log.predictions_seen,
            dead_letters=log.dead_letters_seen,
            alerts=placed,
            detections=detections,
            webhook=list(receiver.deliveries),
            influx_alerts=influx_count,
            influx_note=influx_note,
            duration_s=time.monotonic() - plan.started,
            rate=plan.rate,
            plot=_relative(plot),
            report=_relative(report),
            file_rows=len(getattr(stream.source, "rows", ())),  # an example's dataset has none
            shuffled=self.args.shuffle,
        )
        self.say(summary.format())
        if not self.args.keep_topics:
            await self._delete_topics(plan)
        self.say(
            "\nKafka and InfluxDB are still running: `scripts/services down` stops the local ones; "
            "`driftline alerts --since 1h` lists the alerts again."
        )
        return summary.exit_code

    async def _report(self, plan: _Plan, manifest: Manifest, *, since: float) -> Path:
        """The run's drift report (``driftline report``'s page), read before the run's topics go."""
        from agent.report.data import gather
        from agent.report.html import render

        topics = plan.names.topics
        settings = plan.settings.model_copy(
            update={
                "topics": plan.settings.topics.model_copy(
                    update={"requests": topics["requests"], "predictions": topics["predictions"]}
                )
            }
        )
        until = time.time()
        report = await gather(settings, manifest, since=since - 60, until=until)
        path = plan.root / "report.html"
        path.write_text(render([report], generated_at=until), encoding="utf-8")
        return path

    async def _read_back(self, plan: _Plan, log: EventLog) -> None:
        settings, t = plan.settings, plan.names.topics
        for record in await _read_topic(settings, t["requests"]):
            log.add_request(
                record.topic, record.partition, record.offset, record.key, record.value, record.timestamp
            )
        for record in await _read_topic(settings, t["predictions"]):
            log.add_prediction(record.key, record.value)
        for record in await _read_topic(settings, t["outcomes"]):
            log.add_outcome(record.topic, record.partition, record.offset, record.key, record.value)
        for record in await _read_topic(settings, t["dead_letters"]):
            log.add_dead_letter(record.key)

    def _influx_alerts(self, settings: Settings, since: datetime) -> tuple[int | None, str]:
        from agent.alerting.query import query_alerts

        if settings.influx.token is None or not settings.influx.token.get_secret_value():
            return None, "not used (no token)"
        # Alert ids are deterministic per incident, so an earlier run may have written the same id:
        # this run's points are the ones at this run's detection times.
        wanted = {(a.alert_id, a.detected_at.timestamp()) for a in self.alerts.values()}
        found: set[tuple[str, float]] = set()
        deadline = time.monotonic() + 15.0
        try:
            # The sink writes each alert as it arrives; the last ones may still be on their way.
            while True:
                rows = query_alerts(
                    settings.influx, since=since - timedelta(minutes=1), model=self.model_name, limit=10_000
                )
                found = {(r.alert_id, r.time.timestamp()) for r in rows} & wanted
                if found == wanted or time.monotonic() > deadline:
                    break
                time.sleep(1.0)
        except DriftlineError as exc:
            return None, f"not read back: {exc}"
        return len(found), f"(bucket {settings.influx.bucket!r}, measurement driftline_alert)"

    async def _delete_topics(self, plan: _Plan) -> None:
        from aiokafka.admin import AIOKafkaAdminClient

        from agent.kafka import aiokafka_options

        admin = AIOKafkaAdminClient(**aiokafka_options(plan.settings.kafka))
        try:
            await admin.start()
            # The worker's own topics (incidents, join changelog, Faust's) share the app id prefix.
            mine = [t for t in await admin.list_topics() if t.startswith(plan.names.app_id)]
            if mine:
                await admin.delete_topics(mine)
        except Exception as exc:  # cleanup only: never turn a finished demo into a failure
            self.say(f"  (could not delete the run's topics: {type(exc).__name__}: {exc})")
        finally:
            await admin.close()


async def _partitions(settings: Settings, topics: list[str]) -> list[Any]:
    """The ``TopicPartition`` list of ``topics`` (a consumer's cached metadata may not know them yet)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.structs import TopicPartition

    from agent.kafka import aiokafka_options

    admin = AIOKafkaAdminClient(**aiokafka_options(settings.kafka))
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    return [TopicPartition(d["topic"], p["partition"]) for d in described for p in d["partitions"]]


async def _read_topic(settings: Settings, topic: str, timeout_s: float = 60.0) -> list[Any]:
    """Every record of ``topic`` from the beginning to its current end (with offsets and timestamps)."""
    from agent.kafka import aiokafka_options, read_records

    partitions = [tp.partition for tp in await _partitions(settings, [topic])]
    by_partition = await read_records(aiokafka_options(settings.kafka), topic, partitions, timeout_s)
    return [record for records in by_partition.values() for record in records]


def _requests_only(stream: EventStream) -> list[Any]:
    from producers.stream import MessageKind

    # The stream is deterministic: iterating it again yields the same messages, so the kinds of the
    # events sent are known without having kept them.
    return [m.kind for m in stream if m.kind is not MessageKind.OUTCOME]


def _estimated_errors(manifest: Manifest, output: Any) -> Any:
    """Each event's estimated error from the model's output as logged (P(second class) for a binary
    classifier, the top probability for a multiclass one), through the package's calibration; None for
    a regressor or a package without one."""
    import numpy as np

    if manifest.calibration is None or manifest.task == "regression":
        return None
    confidence = np.asarray(output, dtype=np.float64)
    predicted = None  # a multiclass model's class is not logged: its pooled curve
    if manifest.task == "binary_classification":
        predicted = (confidence > 0.5).astype(np.int64)  # the arg-max of (1 - p, p)
        confidence = np.maximum(confidence, 1.0 - confidence)
    estimated = manifest.calibration.expected_error(confidence, predicted)
    return np.where(np.isnan(confidence), np.nan, estimated)


def _references(manifest: Manifest, feature: str) -> dict[str, float]:
    from schemas.manifest import NumericStatistics

    refs: dict[str, float] = {}
    stats = manifest.reference.features.get(feature)
    if isinstance(stats, NumericStatistics) and stats.mean is not None:
        refs["feature"] = stats.mean
    output = manifest.reference.output.statistics
    if output.mean is not None:
        refs["output"] = output.mean
    if manifest.training.accuracy is not None:
        refs["error"] = 1.0 - manifest.training.accuracy
    elif manifest.training.mae is not None:
        refs["error"] = manifest.training.mae
    return refs


def _start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "--loglevel", "info"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def _free_port() -> int:
    from agent.demo.evaluation import free_port

    return free_port()


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{math.ceil(seconds)} s"
    return f"{seconds / 60:.1f} min"


def _relative(path: Path) -> Path:
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def _prune_runs(runs: Path, keep: int) -> None:
    old = sorted(p for p in runs.iterdir() if p.is_dir())[:-keep]
    for path in old:
        shutil.rmtree(path, ignore_errors=True)
