"""The drift report: one self-contained HTML page per model that people look at.

Owns: what a report holds and how it is gathered (``data``: alerts and time series from InfluxDB,
the recent inputs and outputs from Kafka, the reference from the package's manifest) and how it is
drawn (``html``: inline SVG and CSS, no script and nothing fetched, so the file opens anywhere).
``driftline report`` writes it; a worker serves it at ``GET /report``.

May import: :mod:`agent.alerting` (reading alerts back), :mod:`agent.models` (manifests),
:mod:`agent.errors`, :mod:`agent.settings`, :mod:`agent.kafka`, :mod:`schemas`.
"""

from __future__ import annotations

__all__: list[str] = []
