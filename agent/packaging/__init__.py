"""Model packages: ``driftline package`` builds them from scikit-learn, ``driftline inspect`` checks them.

The builder logic lives in :mod:`agent.packaging.builder` as plain functions; the bundled example
models in :mod:`agent.packaging.examples`; the two command modules only parse arguments and report.
"""

from __future__ import annotations

__all__: list[str] = []
