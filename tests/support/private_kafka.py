"""A Kafka broker of a test's own, through ``scripts/kafka`` with its own state folder and ports, that the
test may stop and start: the shared broker serves every other test and must never go down."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.services import ROOT
from tests.support.worker import free_port

KAFKA = ROOT / "scripts" / "kafka"


@dataclass
class PrivateKafka:
    """``scripts/kafka up|down`` with ``DRIFTLINE_STATE``, ``KAFKA_PORT`` and ``KAFKA_CONTROLLER_PORT`` set.

    ``down`` is a clean shutdown (SIGTERM, then SIGKILL after ``KAFKA_STOP_TIMEOUT``); the data stays,
    so ``up`` again restarts the same single-node cluster with its topics and committed offsets.
    """

    state: Path
    port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _run(self, *args: str, timeout: float = 180.0) -> str:
        env = {
            **os.environ,
            "DRIFTLINE_STATE": str(self.state),
            "KAFKA_PORT": str(self.port),
            "KAFKA_CONTROLLER_PORT": str(self.controller_port),
            # A small heap: this broker carries one test's few thousand records.
            "KAFKA_HEAP_OPTS": "-Xms128m -Xmx256m",
        }
        proc = subprocess.run(
            [str(KAFKA), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if proc.returncode != 0:
            raise AssertionError(
                f"scripts/kafka {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        return proc.stdout + proc.stderr

    def up(self) -> PrivateKafka:
        self._run("up")
        return self

    def down(self) -> None:
        self._run("down")

    def remove(self) -> None:
        """Stops the broker if it runs and deletes its state."""
        try:
            self._run("down", "--wipe")
        finally:
            shutil.rmtree(self.state, ignore_errors=True)
