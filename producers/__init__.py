"""Event producers: publish prediction requests and outcomes to Kafka. Imports `schemas`, never `agent`."""

from __future__ import annotations

__all__: list[str] = []
