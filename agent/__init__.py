"""driftline's agent: loads model packages, serves them on Kafka and REST, and watches them for drift.

Each module has one job; the Faust app only wires the plain classes together.
"""

from __future__ import annotations

__all__: list[str] = []
