"""The report page from hand-built data, opened in headless Chromium: it renders with no console
error, fetches nothing, and has the charts and alert rows it should."""

from __future__ import annotations

import math
from pathlib import Path

from agent.report.data import Distribution, ModelReport, ReportAlert, Series
from agent.report.html import render
from tests.support.browser import ARTIFACTS, open_page

HOUR = 3600.0
T0 = 1_767_225_600.0  # 2026-01-01


def sample_report() -> ModelReport:
    report = ModelReport("churn <&>", "3", since=T0, until=T0 + 6 * HOUR)
    report.alerts = [
        ReportAlert(T0 + 2 * HOUR, "data", "warning", "tenure", "adwin", "tenure drifted up by 1.2 sd", "a1"),
        ReportAlert(
            T0 + 3 * HOUR, "concept", "critical", "error", "page_hinkley_up", "error rose to 0.3", "a2"
        ),
        ReportAlert(T0 + 4 * HOUR, "data", "warning", "tenure", "adwin", "<script>alert(1)</script>", "a3"),
    ]
    cdf = tuple((float(q), q / 100) for q in range(101))
    report.distributions = [
        Distribution(
            "tenure", "numeric", reference=cdf, recent=tuple((x + 30, p) for x, p in cdf), recent_count=500
        ),
        Distribution(
            "plan",
            "categorical",
            categories=(("basic", 0.7, 0.4), ("pro", 0.3, 0.5), ("new", 0.0, 0.1)),
            recent_count=500,
        ),
        Distribution(
            "prediction",
            "numeric",
            reference=tuple((q / 100, q / 100) for q in range(101)),
            recent=(),
            recent_count=0,
        ),
    ]
    times = [T0 + i * 600 for i in range(37)]
    report.shift["tenure"] = Series("shift_sd", tuple((t, 0.1 if t < T0 + 2 * HOUR else 1.2) for t in times))
    report.detectors["tenure"] = [
        Series("adwin", tuple((t, math.sin(i / 5)) for i, t in enumerate(times))),
        Series("page_hinkley", tuple((t, float(i)) for i, t in enumerate(times))),
    ]
    report.error = Series("error_rate", tuple((t, 0.05 if t < T0 + 3 * HOUR else 0.3) for t in times))
    report.notes.append("Kafka could not be read (TimeoutError): no recent distributions")
    return report


def test_the_page_is_self_contained_and_escapes_what_it_shows() -> None:
    page = render([sample_report()], generated_at=T0 + 7 * HOUR)
    assert (
        "<script" not in page
        and "src=" not in page
        and "http" not in page.replace("http://www.w3.org/2000/svg", "")
    )
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "churn &lt;&amp;&gt;" in page
    assert page.count('class="alert-row"') == 3 and page.count('class="alert-marker"') == 3


async def test_the_report_renders_in_chromium_with_its_charts_and_alerts(tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    path.write_text(render([sample_report()], generated_at=T0 + 7 * HOUR), encoding="utf-8")
    seen: dict[str, object] = {}

    async def check(page) -> None:  # type: ignore[no-untyped-def]
        seen["title"] = await page.title()
        seen["charts"] = await page.eval_on_selector_all(
            "svg[data-chart]", "els => els.map(e => [e.dataset.chart, e.dataset.column || ''])"
        )
        seen["rows"] = await page.eval_on_selector_all(
            "tr.alert-row", "els => els.map(e => e.dataset.alertId)"
        )
        seen["detections"] = await page.eval_on_selector_all(
            "svg[data-chart=statistic] line.detection", "els => els.map(e => e.dataset.alertId)"
        )
        seen["lines"] = await page.eval_on_selector_all(
            "svg[data-column=tenure][data-chart=distribution] polyline",
            "els => els.map(e => e.getAttribute('class'))",
        )
        seen["note"] = await page.inner_text(".note")
        box = await page.locator("svg[data-chart=timeline]").bounding_box()
        seen["timeline_width"] = box["width"] if box else 0

    opened = await open_page(path.as_uri(), ARTIFACTS / "report-unit.png", check)
    assert opened.console_errors == [] and opened.page_errors == [] and opened.failed_requests == []
    assert opened.requests == [path.as_uri()]  # nothing fetched besides the file itself
    assert seen["title"] == "driftline drift report"
    assert sorted(seen["charts"]) == sorted(  # type: ignore[arg-type]
        [
            ["timeline", ""],
            ["distribution", "tenure"],
            ["distribution", "plan"],
            ["distribution", "prediction"],
            ["statistic", "tenure"],
            ["detectors", "tenure"],
            ["error", "error"],
        ]
    )
    assert seen["rows"] == ["a3", "a2", "a1"]  # newest first
    assert seen["detections"] == ["a1", "a3"]  # the data alerts on tenure, marked on its statistic
    assert seen["lines"] == ["reference", "recent"]
    assert "Kafka could not be read" in str(seen["note"])
    assert seen["timeline_width"] == 560
    assert (ARTIFACTS / "report-unit.png").stat().st_size > 10_000
