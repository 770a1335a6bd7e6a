"""``driftline run`` as a real worker process, configured through its environment like a user would."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.services import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Topics:
    requests: str
    predictions: str
    outcomes: str
    alerts: str
    dead_letters: str

    @classmethod
    def unique(cls, suffix: str) -> Topics:
        return cls(
            *(f"{name}-{suffix}" for name in ("requests", "predictions", "outcomes", "alerts", "dead"))
        )

    def all(self) -> list[str]:
        return [self.requests, self.predictions, self.outcomes, self.alerts, self.dead_letters]


@dataclass
class Worker:
    """One ``driftline run`` subprocess; ``url`` is its REST base."""

    bootstrap: str
    topics: Topics
    app_id: str
    models: Path
    workdir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    loglevel: str = "info"
    program: tuple[str, ...] = ("-m", "agent.cli")
    """What the interpreter runs before ``run``'s arguments (``("-c", LEAN)`` for a lean install)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"worker-{self.port}.log"

    def env(self) -> dict[str, str]:
        t = self.topics
        return {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "DRIFTLINE_APP_ID": self.app_id,
            "DRIFTLINE_DATA_DIR": str(self.workdir / f"data-{self.port}"),
            "DRIFTLINE_WEB__PORT": str(self.port),
            "DRIFTLINE_SERVING__MODEL_REPOSITORY": str(self.models),
            "DRIFTLINE_TOPICS__REQUESTS": t.requests,
            "DRIFTLINE_TOPICS__PREDICTIONS": t.predictions,
            "DRIFTLINE_TOPICS__OUTCOMES": t.outcomes,
            "DRIFTLINE_TOPICS__ALERTS": t.alerts,
            "DRIFTLINE_TOPICS__DEAD_LETTERS": t.dead_letters,
            **self.extra_env,
        }

    def start(self) -> Worker:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, *self.program, "run", "--loglevel", self.loglevel],
            cwd=ROOT,
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except FileNotFoundError:
            return ""

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as r:
                return int(r.status), r.read()
        except urllib.error.HTTPError as e:
            return int(e.code), e.read()

    def post(self, path: str, body: bytes) -> tuple[int, Any]:
        req = urllib.request.Request(
            self.url + path, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return int(r.status), json.loads(r.read())
        except urllib.error.HTTPError as e:
            return int(e.code), json.loads(e.read())

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """``GET /metrics`` parsed: (sample name, its labels) -> value."""
        from prometheus_client.parser import text_string_to_metric_families

        status, body = self.get("/metrics")
        assert status == 200, body
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(body.decode())
            for sample in family.samples
        }

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples called ``name`` whose labels include ``labels`` (0 if none)."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.metrics().items() if n == name and wanted <= ls)

    def health(self) -> dict[str, Any] | None:
        try:
            status, body = self.get("/health")
        except OSError:
            return None
        data: dict[str, Any] = json.loads(body)
        data["http_status"] = status
        return data

    def wait_ready(self, timeout: float = 90.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.log()}")
            health = self.health()
            if health is not None and health["http_status"] == 200:
                return health
            time.sleep(0.3)
        raise AssertionError(f"worker not ready within {timeout:g} s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=10)
