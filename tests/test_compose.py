"""The docker compose demo stack, checked without a Docker engine: the file parses, images are pinned to the
versions the local services use, every setting the agent reads is provided and agrees with
``agent/settings.py``, ports stay on 127.0.0.1, start order waits for health, and the Grafana dashboard
queries measurements the code writes (and runs against a real InfluxDB). One opt-in test runs
``docker compose up`` when a Docker engine answers."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.alerting.sinks.influx import ALERT_MEASUREMENT
from agent.cli.package import EXAMPLE_NAMES
from agent.settings import InfluxSettings, KafkaSettings, Settings, TopicSettings, WebSettings
from tests.support.services import INFLUXDB_IMAGE, KAFKA_IMAGE, ROOT, InfluxEndpoint, docker_engine_answers

COMPOSE = ROOT / "docker-compose.yml"
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
SERVICES = {"kafka", "influxdb", "grafana", "package", "agent", "producer"}
_VARIABLE = re.compile(r"(?<!\$)\$\{(\w+)(?::-([^}]*))?\}")
# A variable, or ``$$``: compose's escape for a literal ``$`` (left for the container's shell).
_TOKEN = re.compile(r"\$\$|\$\{(\w+)(?::-([^}]*))?\}")


def env_example() -> dict[str, str]:
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def interpolate(value: Any) -> Any:
    """What docker compose makes of a value without a .env file: ``${X:-default}`` -> default."""
    if isinstance(value, str):
        return _TOKEN.sub(lambda m: "$" if m.group(0) == "$$" else (m.group(2) or ""), value)
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


@pytest.fixture(scope="module")
def services(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = interpolate(raw["services"])
    return result


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def shell_pin(script: str, name: str) -> str:
    match = re.search(rf'^{name}="([^"]+)"', (ROOT / "scripts" / script).read_text(), re.MULTILINE)
    assert match is not None, f"scripts/{script} has no {name}=... line"
    return match.group(1)


# --- the file and its images -------------------------------------------------------------------------


def test_compose_file_has_the_demo_services(raw: dict[str, Any]) -> None:
    assert set(raw["services"]) == SERVICES
    assert raw["name"] == "driftline"


def test_every_image_is_pinned_to_a_version(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest" and re.match(r"^v?\d+\.\d+(\.\d+)?", tag), f"{name}: {image} is not pinned"
    [base] = re.findall(r"^FROM\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert re.match(r"^python:3\.\d+\.\d+-slim", base), f"Dockerfile FROM {base} is not pinned"


def test_kafka_and_influxdb_versions_match_the_local_services(services: dict[str, dict[str, Any]]) -> None:
    assert services["kafka"]["image"] == f"apache/kafka:{shell_pin('kafka', 'KAFKA_VERSION')}"
    influx = shell_pin("influxdb", "INFLUXDB_VERSION").removeprefix("v")
    assert services["influxdb"]["image"] == f"influxdb:{influx}"
    # The images the tests start through testcontainers, when a Docker engine answers, are the same.
    assert services["kafka"]["image"] == KAFKA_IMAGE
    assert services["influxdb"]["image"] == INFLUXDB_IMAGE


def test_driftline_image_is_built_here_and_tagged_with_the_package_version(
    services: dict[str, dict[str, Any]],
) -> None:
    import tomllib

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for name in ("package", "agent", "producer"):
        assert services[name]["image"] == f"driftline:{version}"
        assert services[name]["build"]["context"] == "."
    # The build context keeps only what the image installs (see .dockerignore).
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    for kept in ("!pyproject.toml", "!constraints.txt", "!README.md", "!agent/", "!producers/", "!schemas/"):
        assert kept in ignore


# --- the agent's settings ----------------------------------------------------------------------------


def agent_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in list(os.environ):
        if name.startswith(("DRIFTLINE_", "KAFKA_", "INFLUXDB_")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


def test_every_driftline_variable_names_a_real_setting(services: dict[str, dict[str, Any]]) -> None:
    # Settings ignores unknown variables (extra="ignore"), so a misspelt one would pass silently.
    for name in ("agent", "producer"):
        for var in env_of(services[name]):
            if not var.startswith("DRIFTLINE_"):
                continue
            model: Any = Settings
            for part in var.removeprefix("DRIFTLINE_").lower().split("__"):
                assert part in model.model_fields, f"{name}: {var} is not a driftline setting"
                model = model.model_fields[part].annotation


def test_agent_gets_every_setting_it_needs_and_the_defaults_agree(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = services["agent"]
    s = agent_settings(env_of(agent), monkeypatch)
    # Topics: the agent's defaults, spelled out, and the producer writes to the same ones.
    assert s.topics == TopicSettings()
    producer = env_of(services["producer"])
    for field in ("requests", "outcomes"):
        assert producer[f"DRIFTLINE_TOPICS__{field.upper()}"] == getattr(s.topics, field)
    # Kafka: the listener the broker advertises to the other containers.
    kafka = env_of(services["kafka"])
    assert s.kafka.bootstrap_servers == "kafka:19092"
    assert f"INTERNAL://{s.kafka.bootstrap_servers}" in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert producer["DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS"] == s.kafka.bootstrap_servers
    # InfluxDB: the org, bucket and token the container is set up with.
    influx = env_of(services["influxdb"])
    assert s.influx.url == "http://influxdb:8086"
    assert s.influx.token is not None
    assert s.influx.token.get_secret_value() == influx["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"]
    assert s.influx.org == influx["DOCKER_INFLUXDB_INIT_ORG"] == InfluxSettings().org
    assert s.influx.bucket == influx["DOCKER_INFLUXDB_INIT_BUCKET"] == InfluxSettings().bucket
    # The model repository is the volume the package job writes.
    assert s.serving.model_repository == Path("/models")
    assert "models:/models:ro" in agent["volumes"]
    assert "models:/models" in services["package"]["volumes"]
    assert "--repository /models" in services["package"]["command"][0]
    assert re.search(r"--example (\S+)", services["package"]["command"][0]).group(1) in EXAMPLE_NAMES  # type: ignore[union-attr]
    # State and REST: a volume for the data dir; the default port, reachable through the container.
    assert f"agent-data:{s.data_dir}" in agent["volumes"]
    assert s.web.port == WebSettings().port
    assert s.web.host == "0.0.0.0"


def test_published_ports_are_loopback_only_and_the_defaults(services: dict[str, dict[str, Any]]) -> None:
    published = {}
    for name, service in services.items():
        for port in service.get("ports", []):
            host, host_port, container_port = str(port).split(":")
            assert host == "127.0.0.1", f"{name} publishes {port} beyond loopback"
            published[name] = (int(host_port), int(container_port))
    default_kafka_port = int(KafkaSettings().bootstrap_servers.rsplit(":", 1)[1])
    assert published["kafka"] == (default_kafka_port, default_kafka_port)
    assert "HOST://127.0.0.1:9092" in env_of(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    assert published["influxdb"] == (8086, 8086)
    assert InfluxSettings().url == "http://127.0.0.1:8086"
    assert published["agent"] == (WebSettings().port, WebSettings().port)
    assert published["grafana"] == (3000, 3000)
    assert set(published) == {"kafka", "influxdb", "grafana", "agent"}


def test_start_order_waits_for_health_and_the_package_job(services: dict[str, dict[str, Any]]) -> None:
    for name in ("kafka", "influxdb", "grafana", "agent"):
        assert services[name]["healthcheck"]["test"], f"{name} has no healthcheck"
    assert services["agent"]["depends_on"] == {
        "kafka": {"condition": "service_healthy"},
        "influxdb": {"condition": "service_healthy"},
        "package": {"condition": "service_completed_successfully"},
    }
    assert services["producer"]["depends_on"] == {"agent": {"condition": "service_healthy"}}
    assert services["grafana"]["depends_on"] == {"influxdb": {"condition": "service_healthy"}}
    assert "/health" in " ".join(services["agent"]["healthcheck"]["test"])
    for name in ("package", "producer"):
        assert services[name]["restart"] == "no"


def test_producer_sends_the_demo_scenario_at_the_configured_rate(
    raw: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    command = services["producer"]["command"][0]
    assert "driftline produce scenario demo" in command
    assert '--rate "${DEMO_RATE}"' in command
    assert raw["services"]["producer"]["environment"]["DEMO_RATE"] == "${DEMO_RATE:-100}"


def test_env_example_documents_every_variable_with_the_compose_default() -> None:
    documented = env_example()
    used = {m.group(1): m.group(2) for m in _VARIABLE.finditer(COMPOSE.read_text()) if m.group(2) is not None}
    assert used, "no ${VAR:-default} in docker-compose.yml"
    for name, default in used.items():
        assert documented.get(name) == default, f".env.example: {name} should default to {default!r}"
    assert "demo only" in (ROOT / ".env.example").read_text().lower()


# --- Grafana -----------------------------------------------------------------------------------------


def test_grafana_data_source_is_influxdb_flux_with_the_stack_credentials(
    services: dict[str, dict[str, Any]],
) -> None:
    text = (PROVISIONING / "datasources" / "influxdb.yml").read_text()
    [source] = yaml.safe_load(text)["datasources"]
    assert source["type"] == "influxdb" and source["jsonData"]["version"] == "Flux"
    grafana = env_of(services["grafana"])
    # Grafana expands ${VAR} in provisioning files from its environment: each must be set there.
    for name in re.findall(r"\$\{(\w+)\}", text):
        assert name in grafana, f"grafana's environment lacks {name}, used by the data source"
    influx = env_of(services["influxdb"])
    assert grafana["INFLUXDB_URL"] == "http://influxdb:8086"
    assert grafana["INFLUXDB_TOKEN"] == influx["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"]
    assert grafana["INFLUXDB_ORG"] == influx["DOCKER_INFLUXDB_INIT_ORG"]
    assert grafana["INFLUXDB_BUCKET"] == influx["DOCKER_INFLUXDB_INIT_BUCKET"]


def test_grafana_loads_the_dashboards_from_their_mount(services: dict[str, dict[str, Any]]) -> None:
    [provider] = yaml.safe_load((PROVISIONING / "dashboards" / "driftline.yml").read_text())["providers"]
    mounts = dict(
        v.rsplit(":", 1)[0].split(":", 1) for v in services["grafana"]["volumes"] if v.startswith("./")
    )
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    home = env_of(services["grafana"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (DASHBOARDS / Path(home).relative_to(provider["options"]["path"])).is_file()


def written_measurements() -> set[str]:
    """Every measurement the agent writes: alerts, and each ``MetricPoint("name", ...)`` in its code."""
    names = {ALERT_MEASUREMENT}
    for path in (ROOT / "agent").rglob("*.py"):
        names |= set(re.findall(r'MetricPoint\(\s*"(\w+)"', path.read_text()))
    return names


def dashboard_queries() -> Iterator[tuple[str, str]]:
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                yield f"{path.name}: {panel['title']}", target["query"]
        for annotation in board.get("annotations", {}).get("list", []):
            if "target" in annotation:
                yield f"{path.name}: annotation {annotation['name']}", annotation["target"]["query"]


def test_dashboard_panels_query_what_the_agent_writes() -> None:
    written = written_measurements()
    assert {"driftline_alert", "driftline_feature", "driftline_throughput", "driftline_error"} <= written
    sources = "\n".join(p.read_text() for p in (ROOT / "agent").rglob("*.py"))
    queried = set()
    queries = list(dashboard_queries())
    assert len(queries) >= 8
    for where, query in queries:
        measurements = set(re.findall(r'r\._measurement == "(\w+)"', query))
        assert measurements, f"{where}: no measurement"
        assert measurements <= written, f"{where}: {measurements - written} is not written by the agent"
        queried |= measurements
        for field in re.findall(r'r\._field == "(\w+)"', query):
            # A field name the code never spells is a typo in the dashboard.
            assert f'"{field}"' in sources, f"{where}: field {field!r} is not written by the agent"
    # The panels the issue asks for: alerts, drift per feature, throughput, error rate.
    assert {"driftline_alert", "driftline_feature", "driftline_throughput", "driftline_error"} <= queried


def test_dashboard_uses_the_provisioned_data_source() -> None:
    [source] = yaml.safe_load((PROVISIONING / "datasources" / "influxdb.yml").read_text())["datasources"]
    board = json.loads((DASHBOARDS / "driftline.json").read_text())
    assert board["uid"] == "driftline"
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == source["uid"], panel["title"]


def flux_for_test(query: str, bucket: str) -> str:
    """A dashboard query with Grafana's variables as Grafana would fill them in."""
    return (
        query.replace("${bucket}", bucket)
        .replace("${model:regex}", ".*")
        .replace("v.timeRangeStart", "-1h")
        .replace("v.timeRangeStop", "now()")
        .replace("v.windowPeriod", "10s")
    )


@pytest.mark.integration
def test_dashboard_queries_run_on_a_real_influxdb(influx: InfluxEndpoint) -> None:
    from influxdb_client import InfluxDBClient

    board = json.loads((DASHBOARDS / "driftline.json").read_text())
    variables = [v["query"] for v in board["templating"]["list"] if v["type"] == "query"]
    queries = [*dashboard_queries(), *(("variable", q) for q in variables)]
    with InfluxDBClient(url=influx.url, token=influx.token, org=influx.org, timeout=30_000) as client:
        api = client.query_api()
        for where, query in queries:
            try:
                api.query(flux_for_test(query, influx.bucket))
            except Exception as exc:  # a Flux syntax or type error comes back as an HTTP 400
                pytest.fail(f"{where}: the query fails on InfluxDB: {exc}")


# --- opt-in: the real stack --------------------------------------------------------------------------


def _compose_available() -> tuple[bool, str]:
    if shutil.which("docker") is None:
        return False, "no docker client on PATH"
    if not docker_engine_answers():
        return False, "no Docker engine answers (the docker client is here, no daemon)"
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return False, "a Docker engine answers, but the docker compose plugin is missing"
    return True, ""


_COMPOSE_OK, _COMPOSE_WHY = _compose_available()


@pytest.mark.skipif(not _COMPOSE_OK, reason=f"docker compose up needs a Docker engine: {_COMPOSE_WHY}")
def test_compose_stack_comes_up_and_alerts(tmp_path: Path) -> None:
    # Runs only where a Docker engine answers (never in this project's CI, which has none). Ports are
    # unpublished so that the stack does not collide with services already on 127.0.0.1.
    override = tmp_path / "no-ports.yml"
    override.write_text(
        "services:\n"
        + "".join(f"  {name}:\n    ports: !reset []\n" for name in ("kafka", "influxdb", "grafana", "agent"))
    )
    project = f"driftline-test-{uuid.uuid4().hex[:8]}"
    base = ["docker", "compose", "-p", project, "-f", str(COMPOSE), "-f", str(override)]
    env = {**os.environ, "DEMO_RATE": "500"}

    def compose(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*base, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )

    try:
        up = compose("up", "--build", "--detach", "--wait", "--wait-timeout", "600", "agent", "grafana")
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        produced = compose("run", "--rm", "producer")
        assert produced.returncode == 0, produced.stdout[-3000:] + produced.stderr[-3000:]
        deadline = time.monotonic() + 120
        kinds: set[str] = set()
        while time.monotonic() < deadline and not {"data", "concept"} <= kinds:
            listed = compose(
                "exec", "-T", "agent", "driftline", "alerts", "--since", "1h", "--json", timeout=60
            )
            if listed.returncode == 0:
                kinds = {row["kind"] for row in json.loads(listed.stdout or "[]")}
            time.sleep(5)
        assert {"data", "concept"} <= kinds, compose("logs", "agent").stdout[-5000:]
    finally:
        compose("down", "--volumes", "--remove-orphans", timeout=300)
