"""The drift report as one self-contained HTML page: inline CSS and SVG, no script, nothing fetched.

For each model: the alerts on a timeline (one lane per kind and subject, a mark per alert) and in a
table; per feature and for the output, the reference distribution against the recent one (cumulative
curves for numeric columns, paired bars for categorical ones); per column, the monitored statistic
(the windowed shift in reference sds) and each detector's statistic over time, with the detections
marked; and the joined error over time, with the concept-drift alerts marked.

Elements carry ``data-`` attributes (``data-chart``, ``data-column``, ``data-alert-id``) so that a test
(and a curious reader of the source) finds each chart and row.

Example:
    >>> from agent.report.data import ModelReport, ReportAlert, Series
    >>> report = ModelReport("m", "1", since=0.0, until=3600.0)
    >>> report.alerts = [ReportAlert(1800.0, "data", "warning", "x", "adwin", "x drifted", "a1")]
    >>> report.shift["x"] = Series("shift_sd", ((0.0, 0.1), (1800.0, 1.2), (3600.0, 1.3)))
    >>> page = render([report], generated_at=7200.0)
    >>> page.startswith("<!DOCTYPE html>"), "<script" in page, page.count('data-alert-id="a1"')
    (True, False, 3)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape

from agent.report.data import Distribution, ModelReport, ReportAlert, Series

__all__ = ["render"]

_W, _H, _PAD = 560, 180, 40
_KIND_COLOUR = {
    "data": "#1f77b4",
    "prediction": "#9467bd",
    "performance": "#ff7f0e",
    "concept": "#d62728",
    "technical": "#7f7f7f",
}
_LINE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 32px; border-bottom: 1px solid #ccc; }
h3 { font-size: 15px; margin: 16px 0 4px; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; border: 1px solid #e3e3e3; padding: 6px; }
figcaption { font-size: 12px; color: #555; }
svg text { font: 10px sans-serif; fill: #444; }
table { border-collapse: collapse; font-size: 12px; }
td, th { border: 1px solid #ddd; padding: 3px 6px; text-align: left; vertical-align: top; }
.note { color: #8a6d3b; background: #fcf8e3; padding: 6px; }
.legend span { display: inline-block; margin-right: 12px; }
.swatch { display: inline-block; width: 10px; height: 10px; margin-right: 4px; }
"""


def _time(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _short(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%H:%M")


def _fmt(value: float) -> str:
    return f"{value:.3g}"


class _Frame:
    """Maps data coordinates to an SVG plot area."""

    def __init__(self, x0: float, x1: float, y0: float, y1: float, width: int = _W, height: int = _H) -> None:
        if not x1 > x0:
            x1 = x0 + 1.0
        if not y1 > y0:
            y0, y1 = y0 - 0.5, y1 + 0.5
        self.x0, self.x1, self.y0, self.y1 = x0, x1, y0, y1
        self.width, self.height = width, height

    def x(self, v: float) -> float:
        return _PAD + (v - self.x0) / (self.x1 - self.x0) * (self.width - 2 * _PAD)

    def y(self, v: float) -> float:
        return self.height - _PAD / 2 - (v - self.y0) / (self.y1 - self.y0) * (self.height - _PAD)

    def axes(self, x_label: str, y_label: str, *, times: bool) -> str:
        left, right = _PAD, self.width - _PAD
        top, bottom = _PAD / 2, self.height - _PAD / 2
        lo, hi = (_short(self.x0), _short(self.x1)) if times else (_fmt(self.x0), _fmt(self.x1))
        return (
            f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#999"/>'
            f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="#999"/>'
            f'<text x="{left}" y="{bottom + 12}">{escape(lo)}</text>'
            f'<text x="{right}" y="{bottom + 12}" text-anchor="end">{escape(hi)}</text>'
            f'<text x="{(left + right) / 2}" y="{bottom + 12}" text-anchor="middle">{escape(x_label)}</text>'
            f'<text x="{left - 4}" y="{bottom}" text-anchor="end">{_fmt(self.y0)}</text>'
            f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{_fmt(self.y1)}</text>'
            f'<text x="{left + 4}" y="{top + 8}">{escape(y_label)}</text>'
        )

    def line(self, points: Sequence[tuple[float, float]], colour: str, css: str, label: str) -> str:
        coords = " ".join(f"{self.x(x):.1f},{self.y(y):.1f}" for x, y in points)
        return (
            f'<polyline class="{css}" data-label="{escape(label)}" points="{coords}" fill="none" '
            f'stroke="{colour}" stroke-width="1.5"><title>{escape(label)}</title></polyline>'
        )


def _svg(frame: _Frame, chart: str, body: str, column: str | None = None) -> str:
    data = f' data-column="{escape(column)}"' if column is not None else ""
    return (
        f'<svg class="chart" data-chart="{chart}"{data} width="{frame.width}" height="{frame.height}" '
        f'viewBox="0 0 {frame.width} {frame.height}" role="img" xmlns="http://www.w3.org/2000/svg">{body}</svg>'
    )


def _marks(frame: _Frame, alerts: Sequence[ReportAlert]) -> str:
    out = []
    for a in alerts:
        x = frame.x(a.time)
        colour = _KIND_COLOUR.get(a.kind, "#000")
        out.append(
            f'<line class="detection" data-alert-id="{escape(a.alert_id)}" x1="{x:.1f}" x2="{x:.1f}" '
            f'y1="{_PAD / 2}" y2="{frame.height - _PAD / 2}" stroke="{colour}" stroke-dasharray="4 3">'
            f"<title>{escape(_time(a.time))}: {escape(a.message)}</title></line>"
        )
    return "".join(out)


def _bounds(series: Sequence[Series], extra: Sequence[float] = ()) -> tuple[float, float]:
    values = [v for s in series for _, v in s.points if math.isfinite(v)] + list(extra)
    return (min(values), max(values)) if values else (0.0, 1.0)


def _timeline(report: ModelReport) -> str:
    lanes = sorted({(a.kind, a.subject) for a in report.alerts})
    height = max(60, 24 * len(lanes) + _PAD)
    frame = _Frame(report.since, report.until, 0, max(len(lanes), 1), height=height)
    body = [frame.axes("time", "", times=True)]
    for i, (kind, subject) in enumerate(lanes):
        y = _PAD / 2 + 12 + 24 * i
        body.append(f'<text x="{_PAD + 4}" y="{y - 6}">{escape(kind)}: {escape(subject)}</text>')
        for a in report.alerts:
            if (a.kind, a.subject) != (kind, subject):
                continue
            body.append(
                f'<circle class="alert-marker" data-alert-id="{escape(a.alert_id)}" '
                f'cx="{frame.x(a.time):.1f}" cy="{y + 4}" r="5" fill="{_KIND_COLOUR.get(kind, "#000")}">'
                f"<title>{escape(_time(a.time))} {escape(a.severity)}: {escape(a.message)}</title></circle>"
            )
    if not lanes:
        body.append(f'<text x="{_PAD + 4}" y="{height / 2}">no alerts in this period</text>')
    return _svg(frame, "timeline", "".join(body))


def _alert_table(report: ModelReport) -> str:
    if not report.alerts:
        return "<p>No alerts in this period.</p>"
    rows = "".join(
        f'<tr class="alert-row" data-alert-id="{escape(a.alert_id)}"><td>{escape(_time(a.time))}</td>'
        f"<td>{escape(a.kind)}</td><td>{escape(a.severity)}</td><td>{escape(a.subject)}</td>"
        f"<td>{escape(a.detector)}</td><td>{escape(a.message)}</td><td><code>{escape(a.alert_id)}</code></td></tr>"
        for a in reversed(report.alerts)
    )
    names = ("time", "kind", "severity", "subject", "detector", "message", "alert id")
    head = "<tr>" + "".join(f"<th>{n}</th>" for n in names) + "</tr>"
    return f'<table class="alerts">{head}{rows}</table>'


def _distribution(d: Distribution) -> str:
    if d.kind == "categorical":
        rows = d.categories[:30]
        frame = _Frame(0, max(len(rows), 1), 0, max([max(r, c) for _, r, c in rows] or [1.0]))
        step = (frame.width - 2 * _PAD) / max(len(rows), 1)
        body = [frame.axes("category", "share", times=False)]
        for i, (name, ref, recent) in enumerate(rows):
            x = _PAD + i * step
            body.append(
                f'<text x="{x + 0.5 * step:.1f}" y="{frame.y(0) - 3:.1f}" text-anchor="middle">'
                f"{escape(name[:12])}</text>"
            )
            for offset, value, css, colour in (
                (0.1, ref, "reference", "#bbb"),
                (0.5, recent, "recent", "#1f77b4"),
            ):
                top = frame.y(value)
                body.append(
                    f'<rect class="{css}" x="{x + offset * step:.1f}" y="{top:.1f}" width="{0.4 * step:.1f}" '
                    f'height="{frame.y(0) - top:.1f}" fill="{colour}">'
                    f"<title>{escape(name)}: {value:.3f}</title></rect>"
                )
        return _svg(frame, "distribution", "".join(body), d.column)
    xs = [x for x, _ in d.reference] + [x for x, _ in d.recent]
    frame = _Frame(min(xs, default=0.0), max(xs, default=1.0), 0.0, 1.0)
    body = [frame.axes(d.column, "cumulative share", times=False)]
    if d.reference:
        body.append(frame.line(d.reference, "#999", "reference", "reference (training)"))
    if d.recent:
        body.append(frame.line(d.recent, "#1f77b4", "recent", f"recent ({d.recent_count} values)"))
    return _svg(frame, "distribution", "".join(body), d.column)


def _over_time(
    report: ModelReport,
    chart: str,
    column: str,
    series: Sequence[Series],
    y_label: str,
    alerts: Sequence[ReportAlert],
) -> str:
    lo, hi = _bounds(series, [0.0])
    frame = _Frame(report.since, report.until, lo, hi)
    body = [frame.axes("time", y_label, times=True)]
    for i, s in enumerate(series):
        if s.points:
            colour = _LINE[i % len(_LINE)]
            body.append(frame.line(s.points, colour, "statistic", s.label))
            body.append(
                f'<text x="{frame.width - _PAD}" y="{_PAD / 2 + 10 + 12 * i}" text-anchor="end" '
                f'fill="{colour}">{escape(s.label)}</text>'
            )
    body.append(_marks(frame, alerts))
    return _svg(frame, chart, "".join(body), column)


def _legend(items: Sequence[tuple[str, str]]) -> str:
    spans = "".join(
        f'<span><i class="swatch" style="background:{colour}"></i>{escape(label)}</span>'
        for label, colour in items
    )
    return f'<p class="legend">{spans}</p>'


def _model(report: ModelReport) -> str:
    parts = [f'<section class="model" data-model="{escape(report.model)}">']
    parts.append(f"<h2>{escape(report.model)} (version {escape(report.version)})</h2>")
    parts.append(
        f"<p>{escape(_time(report.since))} to {escape(_time(report.until))}: {len(report.alerts)} alerts.</p>"
    )
    parts += [f'<p class="note">{escape(n)}</p>' for n in report.notes]
    parts.append("<h3>Incidents and alerts</h3>")
    parts.append(_legend([(k, c) for k, c in _KIND_COLOUR.items()]))
    parts.append(f"<figure>{_timeline(report)}</figure>")
    parts.append(_alert_table(report))

    parts.append("<h3>Reference against recent, per feature and for the output</h3>")
    parts.append(_legend([("reference (training)", "#999"), ("recent", "#1f77b4")]))
    parts.append('<div class="grid">')
    for d in report.distributions:
        caption = f"{d.column}: {d.recent_count} recent values" + (
            " (none read)" if not d.recent_count else ""
        )
        parts.append(f"<figure>{_distribution(d)}<figcaption>{escape(caption)}</figcaption></figure>")
    parts.append("</div>")

    parts.append("<h3>Monitored statistics over time, detections marked</h3>")
    parts.append('<div class="grid">')
    columns = [d.column for d in report.distributions] or sorted(report.shift)
    for column in columns:
        alerts = [a for a in report.alerts if a.subject == column and a.kind in ("data", "prediction")]
        shift = report.shift.get(column)
        detectors = report.detectors.get(column, [])
        if shift is None and not detectors and not alerts:
            continue
        parts.append("<figure>")
        parts.append(
            _over_time(report, "statistic", column, [shift] if shift else [], "shift (reference sd)", alerts)
        )
        if detectors:
            parts.append(_over_time(report, "detectors", column, detectors, "detector statistics", alerts))
        parts.append(f"<figcaption>{escape(column)}</figcaption></figure>")
    parts.append("</div>")

    parts.append("<h3>Concept drift: the joined outcomes' error</h3>")
    concept = [a for a in report.alerts if a.kind == "concept"]
    if report.error is not None or concept:
        series = [report.error] if report.error is not None else []
        label = report.error.label if report.error is not None else "error"
        parts.append(f"<figure>{_over_time(report, 'error', 'error', series, label, concept)}</figure>")
    else:
        parts.append("<p>No joined outcomes in this period.</p>")
    parts.append("</section>")
    return "".join(parts)


def render(
    reports: Sequence[ModelReport], *, generated_at: float, title: str = "driftline drift report"
) -> str:
    """The page for ``reports`` (one section per model)."""
    body = "".join(_model(r) for r in reports) or "<p>No model to report on.</p>"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{escape(title)}</h1><p>Generated {escape(_time(generated_at))} by driftline.</p>"
        f"{body}</body></html>\n"
    )
