"""The wire and file contracts that every other driftline package shares (pydantic v2 models)."""

from __future__ import annotations

__all__: list[str] = []
