"""Both Grafana dashboards query only what driftline writes: the InfluxDB one its measurements and fields
(tests/test_compose.py checks those, and runs its queries on a real InfluxDB), the Prometheus one the
metrics and labels a worker's ``/metrics`` exposes."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from agent.metrics import Metrics
from tests.support.services import ROOT

PROMETHEUS = ROOT / "deploy" / "grafana" / "prometheus"
BOARD = PROMETHEUS / "driftline-prometheus.json"

# PromQL words that look like label or function names but are not.
_PROMQL = {"by", "without", "sum", "max", "min", "avg", "rate", "increase", "on", "ignoring"}


def exposed() -> dict[str, set[str]]:
    """Every sample name the worker's registry can expose -> its label names."""
    names: dict[str, set[str]] = {}
    for metric in vars(Metrics()).values():
        name, kind, labels = getattr(metric, "_name", None), getattr(metric, "_type", None), None
        if name is None:
            continue
        labels = set(metric._labelnames)
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}[kind]
        for suffix in suffixes:
            names[name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return names


def expressions(board: dict[str, Any]) -> list[tuple[str, str]]:
    out = [(f"panel {p['title']}", t["expr"]) for p in board["panels"] for t in p["targets"]]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            out.append((f"variable {variable['name']}", variable["definition"]))
    return out


def test_the_prometheus_dashboard_queries_metrics_and_labels_the_worker_exposes() -> None:
    names = exposed()
    assert {
        "driftline_drift_shift_sd",
        "driftline_drift_detector_statistic",
        "driftline_incidents_open",
    } <= set(names)
    board = json.loads(BOARD.read_text())
    queried: set[str] = set()
    found = expressions(board)
    assert len(found) >= 10
    for where, expr in found:
        metrics = set(re.findall(r"\bdriftline_\w+", expr))
        assert metrics, f"{where}: no driftline metric in {expr!r}"
        unknown = metrics - set(names)
        assert not unknown, f"{where}: {unknown} is not exposed by the worker"
        labels = set().union(*(names[m] for m in metrics))
        used = set(re.findall(r"(\w+)\s*(?:=~|!=|!~|=)\s*\"", expr))
        for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
            used |= {g.strip() for g in group.split(",") if g.strip()}
        used |= set(re.findall(r"label_values\(\s*\w+\s*,\s*(\w+)\s*\)", expr))
        assert used - _PROMQL <= labels, f"{where}: labels {used - labels} are not the metric's"
        for legend in re.findall(r"\{\{(\w+)\}\}", json.dumps(board)):
            assert legend in set().union(*names.values()), f"legend {{{{{legend}}}}}"
        queried |= metrics
    # The panels: drift per column, detector statistics, open incidents, error, throughput.
    assert {
        "driftline_drift_shift_sd",
        "driftline_drift_detector_statistic",
        "driftline_incidents_open",
        "driftline_model_error",
        "driftline_events_in_total",
    } <= queried


def test_every_panel_uses_the_prometheus_data_source_variable() -> None:
    board = json.loads(BOARD.read_text())
    [datasource] = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert datasource["query"] == "prometheus"
    for panel in board["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert all(t["datasource"] == panel["datasource"] for t in panel["targets"]), panel["title"]
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])


def test_the_provisioning_and_the_scrape_config_fit_together() -> None:
    provisioning = PROMETHEUS / "provisioning"
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["type"] == "prometheus"
    [provider] = yaml.safe_load((provisioning / "dashboards" / "driftline-prometheus.yml").read_text())[
        "providers"
    ]
    assert provider["options"]["path"] == "/etc/driftline/dashboards-prometheus"
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    [job] = scrape["scrape_configs"]
    assert job["metrics_path"] == "/metrics" and job["static_configs"][0]["targets"] == ["127.0.0.1:6066"]
