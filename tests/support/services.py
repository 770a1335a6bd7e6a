"""Where the tests find Kafka and InfluxDB.

In order of preference:

1. endpoints given in the environment (``KAFKA_BOOTSTRAP_SERVERS``, ``INFLUXDB_URL``,
   ``INFLUXDB_TOKEN``, ``INFLUXDB_ORG``, ``INFLUXDB_BUCKET``), as the README's test command exports them;
2. testcontainers, when a Docker engine answers;
3. the project's own local services (``scripts/services up``), stopped again afterwards if the tests
   started them.

An integration test never skips: a service that cannot be had fails the run, saying why.

Run in parallel (``pytest -n 2``, pytest-xdist: the README's test command does), every test process
shares the broker, where each test's topics and groups are its own (the ``unique`` fixture), but writes
to an InfluxDB bucket of its own, ``<INFLUXDB_BUCKET>-<worker>`` (:func:`use_worker_bucket`): tests that
read alerts back by model name and time range would otherwise read the other process's too. The
parallel processes cannot start and stop the services for themselves (each would stop them under the
other), so they need them given in the environment, as the README's test command gives them.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "scripts" / "services"

# Same version as scripts/kafka and docker-compose.yml.
KAFKA_IMAGE = "apache/kafka:4.3.1"
INFLUXDB_IMAGE = "influxdb:2.7.12"


@dataclass(frozen=True)
class InfluxEndpoint:
    url: str
    token: str
    org: str
    bucket: str


Stop = Callable[[], None]


def _nothing() -> None:
    return None


def docker_engine_answers() -> bool:
    try:
        import docker  # testcontainers' own client

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:
        return False


def _services(*args: str) -> str:
    proc = subprocess.run([str(SERVICES), *args], capture_output=True, text=True, timeout=3600, check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            f"scripts/services {' '.join(args)} failed with exit code {proc.returncode}:\n"
            f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc.stdout


def _running(service: str) -> bool:
    proc = subprocess.run(
        [str(ROOT / "scripts" / service), "status"], capture_output=True, text=True, check=False
    )
    return proc.returncode == 0


def _xdist_worker() -> str | None:
    """This process's pytest-xdist worker id (``gw0``, ``gw1``, ...), or None when not run in parallel."""
    return os.environ.get("PYTEST_XDIST_WORKER")


def use_worker_bucket() -> None:
    """Run in parallel, point ``INFLUXDB_BUCKET`` at this worker's own bucket (``conftest.py`` calls it
    before any test): the ``influx`` fixture, and every process a test starts with this environment,
    then write there. Run alone, it changes nothing."""
    worker = _xdist_worker()
    if worker:
        os.environ["INFLUXDB_BUCKET"] = f"{os.environ.get('INFLUXDB_BUCKET', 'driftline')}-{worker}"


def _ensure_bucket(endpoint: InfluxEndpoint) -> None:
    """Creates ``endpoint.bucket`` if it does not exist (a parallel worker's own, on its first run)."""
    from influxdb_client import InfluxDBClient

    with InfluxDBClient(url=endpoint.url, token=endpoint.token, org=endpoint.org) as client:
        buckets = client.buckets_api()
        if buckets.find_bucket_by_name(endpoint.bucket) is None:
            buckets.create_bucket(bucket_name=endpoint.bucket, org=endpoint.org)


def _local_env(service: str) -> tuple[dict[str, str], Stop]:
    if _xdist_worker():
        raise RuntimeError(
            f"tests run in parallel (pytest -n) need {service} given in the environment: run "
            'scripts/test, or `scripts/services up` and `eval "$(scripts/services env)"` first'
        )
    was_running = _running(service)
    _services("up", service)
    env: dict[str, str] = {}
    for line in _services("env", service).splitlines():
        for word in shlex.split(line):
            if "=" in word and word != "export":
                key, _, value = word.partition("=")
                env[key] = value

    def stop() -> None:
        if not was_running:
            _services("down", service)

    return env, stop


def kafka_endpoint() -> tuple[str, Stop]:
    """Bootstrap servers of a running Kafka broker, and how to stop it if we started it."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return os.environ["KAFKA_BOOTSTRAP_SERVERS"], _nothing
    if docker_engine_answers():
        from testcontainers.kafka import KafkaContainer

        container = KafkaContainer(KAFKA_IMAGE).with_kraft()
        container.start()
        return container.get_bootstrap_server(), container.stop
    env, stop = _local_env("kafka")
    return env["KAFKA_BOOTSTRAP_SERVERS"], stop


def influx_endpoint() -> tuple[InfluxEndpoint, Stop]:
    """A running InfluxDB 2.x with an org, a bucket and a token, and how to stop it."""
    if os.environ.get("INFLUXDB_URL") and os.environ.get("INFLUXDB_TOKEN"):
        endpoint = InfluxEndpoint(
            url=os.environ["INFLUXDB_URL"],
            token=os.environ["INFLUXDB_TOKEN"],
            org=os.environ.get("INFLUXDB_ORG", "driftline"),
            bucket=os.environ.get("INFLUXDB_BUCKET", "driftline"),
        )
        if _xdist_worker():
            _ensure_bucket(endpoint)
        return endpoint, _nothing
    if docker_engine_answers():
        # The generic container, because testcontainers' influxdb module imports the 1.x client.
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.waiting_utils import wait_for_logs

        token = os.urandom(16).hex()
        container = (
            DockerContainer(INFLUXDB_IMAGE)
            .with_exposed_ports(8086)
            .with_env("DOCKER_INFLUXDB_INIT_MODE", "setup")
            .with_env("DOCKER_INFLUXDB_INIT_USERNAME", "driftline")
            .with_env("DOCKER_INFLUXDB_INIT_PASSWORD", os.urandom(16).hex())
            .with_env("DOCKER_INFLUXDB_INIT_ORG", "driftline")
            .with_env("DOCKER_INFLUXDB_INIT_BUCKET", "driftline")
            .with_env("DOCKER_INFLUXDB_INIT_ADMIN_TOKEN", token)
        )
        container.start()
        wait_for_logs(container, "Listening", timeout=120)
        url = f"http://{container.get_container_host_ip()}:{container.get_exposed_port(8086)}"
        return InfluxEndpoint(url, token, "driftline", "driftline"), container.stop
    env, stop = _local_env("influxdb")
    return (
        InfluxEndpoint(
            url=env["INFLUXDB_URL"],
            token=env["INFLUXDB_TOKEN"],
            org=env["INFLUXDB_ORG"],
            bucket=env["INFLUXDB_BUCKET"],
        ),
        stop,
    )
