"""Benchmarks for driftline (scripts, not tests): see each module's docstring for how to run it."""

from __future__ import annotations

__all__: list[str] = []
