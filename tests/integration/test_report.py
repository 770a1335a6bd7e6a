"""``driftline report`` against a real worker, Kafka and InfluxDB, opened in headless Chromium: the
alerts the worker raised are on the page, each feature's recent distribution is drawn from what was
sent, the detections are marked on the drifted feature's statistic; and ``GET /report`` serves the
same page."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from agent.alerting.query import query_alerts
from agent.models.repository import ModelRepository
from agent.settings import InfluxSettings
from tests.support.browser import ARTIFACTS, open_page
from tests.support.kafka import create_topics, produce
from tests.support.services import ROOT, InfluxEndpoint
from tests.support.worker import Topics, Worker

pytestmark = pytest.mark.integration

DATA = load_breast_cancer()
NAMES = [str(n) for n in DATA.feature_names]


async def test_report_of_a_drifting_model_in_chromium(
    kafka_bootstrap: str,
    influx: InfluxEndpoint,
    repository_copy: ModelRepository,
    tmp_path: Path,
    unique: str,
) -> None:
    started = datetime.now(UTC)
    topics = Topics.unique(unique)
    await create_topics(kafka_bootstrap, topics.all())
    env = {
        "DRIFTLINE_INFLUX__URL": influx.url,
        "DRIFTLINE_INFLUX__TOKEN": influx.token,
        "DRIFTLINE_INFLUX__ORG": influx.org,
        "DRIFTLINE_INFLUX__BUCKET": influx.bucket,
        "DRIFTLINE_INFLUX__METRICS_INTERVAL_S": "1",
    }
    worker = Worker(
        kafka_bootstrap, topics, f"report-{unique}", repository_copy.root, tmp_path, extra_env=env
    )
    worker.start()
    settings = InfluxSettings(url=influx.url, token=influx.token, org=influx.org, bucket=influx.bucket)
    try:
        await asyncio.to_thread(worker.wait_ready)
        rng = np.random.default_rng(11)
        rows = DATA.data[rng.integers(0, len(DATA.data), 4000)].copy()
        rows[1500:, 0] += 3 * DATA.data[:, 0].std()  # "mean radius" shifts after 1,500 requests
        await produce(
            kafka_bootstrap,
            topics.requests,
            [
                (
                    f"r-{i}".encode(),
                    json.dumps(
                        {
                            "request_id": f"r-{i}",
                            "model": "breast-cancer",
                            "features": dict(zip(NAMES, map(float, row), strict=True)),
                        }
                    ).encode(),
                )
                for i, row in enumerate(rows)
            ],
        )
        deadline = time.monotonic() + 90
        while True:
            alerts = await asyncio.to_thread(query_alerts, settings, since=started, model="breast-cancer")
            if any(a.kind == "data" and a.subject == "mean radius" for a in alerts):
                break
            assert time.monotonic() < deadline, f"no data alert in InfluxDB:\n{worker.log()}"
            await asyncio.sleep(1.0)
        await asyncio.sleep(3.0)  # a few more metrics ticks after the alert

        since = started.strftime("%Y-%m-%dT%H:%M:%SZ")
        output = tmp_path / "report.html"
        command = [sys.executable, "-m", "agent.cli", "report", "--model", "breast-cancer"]
        done = await asyncio.to_thread(
            subprocess.run,
            [*command, "--since", since, "-o", str(output)],
            env=worker.env(),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert str(output) in done.stdout and "driftline report:" not in done.stderr  # nothing missing
        status, served = await asyncio.to_thread(worker.get, f"/report?model=breast-cancer&since={since}")
    finally:
        assert worker.stop() == 0, worker.log()
    alerts = await asyncio.to_thread(query_alerts, settings, since=started, model="breast-cancer", limit=1000)
    radius = {a.alert_id for a in alerts if a.kind == "data" and a.subject == "mean radius"}

    seen: dict[str, Any] = {}

    async def check(page: Any) -> None:
        seen["rows"] = await page.eval_on_selector_all(
            "tr.alert-row", "els => els.map(e => e.dataset.alertId)"
        )
        seen["markers"] = await page.eval_on_selector_all("circle.alert-marker", "els => els.length")
        seen["distributions"] = await page.eval_on_selector_all(
            "svg[data-chart=distribution]", "els => els.map(e => e.dataset.column)"
        )
        seen["recent"] = await page.eval_on_selector_all(
            "svg[data-chart=distribution] polyline.recent", "els => els.length"
        )
        seen["detections"] = await page.eval_on_selector_all(
            'svg[data-chart=statistic][data-column="mean radius"] line.detection',
            "els => els.map(e => e.dataset.alertId)",
        )
        seen["shift"] = await page.eval_on_selector_all(
            'svg[data-chart=statistic][data-column="mean radius"] polyline', "els => els.length"
        )
        seen["detectors"] = await page.eval_on_selector_all(
            'svg[data-chart=detectors][data-column="mean radius"] polyline',
            "els => els.map(e => e.dataset.label)",
        )
        seen["notes"] = await page.eval_on_selector_all(".note", "els => els.length")

    opened = await open_page(output.as_uri(), ARTIFACTS / "report-worker.png", check)
    assert opened.console_errors == [] and opened.page_errors == [] and opened.requests == [output.as_uri()]
    assert sorted(seen["rows"]) == sorted(a.alert_id for a in alerts) and seen["markers"] == len(alerts)
    assert seen["distributions"] == [*NAMES, "prediction"]
    assert seen["recent"] == len(NAMES) + 1  # every feature and the output drawn from what was sent
    assert radius and set(seen["detections"]) == radius
    # The feature's detectors: its location's two, and the ADWIN of its spread and of its tails.
    assert seen["shift"] == 1
    assert sorted(seen["detectors"]) == ["adwin", "adwin_spread", "adwin_tails", "page_hinkley"]
    assert seen["notes"] == 0
    # The worker serves the same page.
    assert status == 200
    page = served.decode()
    assert page.startswith("<!DOCTYPE html>") and all(f'data-alert-id="{a}"' in page for a in radius)
    assert page.count('data-chart="distribution"') == len(NAMES) + 1
