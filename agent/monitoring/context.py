"""What changed around an incident: the model's serving context since its reference.

Technical drift is most useful when it is tied to a moment. :class:`ServingContext` records, per model,
what a worker saw change in how it is served: the worker starting to serve a version (which driftline,
which libraries, which image), a new version replacing the one before, and the libraries a version was
built with that differ from the ones the worker runs. For an incident (:mod:`agent.monitoring.grouping`)
it says, nearest first, what changed before the incident's first alert, counted in events of the
version that raised it: *"drift began 1,200 events after breast-cancer/3 replaced /2"*.

Events are counted by the worker's monitor of that version (its ``opened_at_event``): a version's
monitor starts at its first request on this worker, so a restart starts the count again, and says so
("after this worker started serving ..."). What a worker did not see (a swap on another worker, a
change before its start) it does not report.

May import: :mod:`agent.monitoring` (its other modules), :mod:`agent.models`, :mod:`schemas`.

Example:
    >>> now = [1_767_225_600.0]
    >>> context = ServingContext("driftline 1.0", clock=lambda: now[0])
    >>> context.served("m", "2", packaged_at=None, findings=())
    >>> now[0] += 600
    >>> context.served("m", "3", packaged_at=None, findings=())
    >>> from datetime import datetime, UTC
    >>> first = TimelineEntry(at=datetime.fromtimestamp(now[0] + 60, UTC), change="opened", alert_id="a",
    ...                       kind="data", subject="x", severity="warning", model_version="3", event=1400,
    ...                       began=1200)
    >>> for line in context.lines("m", [first]):
    ...     print(line)
    drift began 1,200 events after m/3 replaced /2
    before it, m/2 from 2026-01-01 00:00 UTC (driftline 1.0)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from agent.models.versions import DependencyFinding
from schemas.incident import TimelineEntry

__all__ = ["ServingChange", "ServingContext"]


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True, slots=True)
class ServingChange:
    """A version of a model that this worker started serving, and what came with it."""

    model: str
    version: str
    at: float
    """Wall-clock seconds when this worker served its first request."""
    replaced: str | None
    """The version it replaced on this worker; ``None``: the first this worker served."""
    packaged_at: datetime | None = None
    findings: tuple[DependencyFinding, ...] = ()


@dataclass
class ServingContext:
    """The serving context of each model, as this worker saw it change.

    Parameters:
        worker: What runs the models: the driftline version, the libraries that score them, the image.
        clock: Wall-clock seconds.
        keep: Changes kept per model (the oldest go first).
    """

    worker: str = "this worker"
    clock: Callable[[], float] = time.time
    keep: int = 20
    started_at: float = field(init=False)
    _changes: dict[str, list[ServingChange]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.started_at = self.clock()

    def served(
        self,
        model: str,
        version: str,
        *,
        packaged_at: datetime | None,
        findings: Sequence[DependencyFinding],
    ) -> None:
        """Records that this worker started serving ``model``/``version`` now (its first request)."""
        changes = self._changes.setdefault(model, [])
        replaced = changes[-1].version if changes else None
        if replaced == version:
            return
        changes.append(ServingChange(model, version, self.clock(), replaced, packaged_at, tuple(findings)))
        del changes[: -self.keep]

    def changes(self, model: str) -> list[ServingChange]:
        """The versions of ``model`` this worker served, oldest first."""
        return list(self._changes.get(model, ()))

    def lines(self, model: str, timeline: Sequence[TimelineEntry]) -> tuple[str, ...]:
        """What changed around an incident of ``model`` whose timeline is ``timeline``, nearest first."""
        changes = self._changes.get(model)
        opened = [e for e in timeline if e.change == "opened"]
        if not changes or not opened:
            return ()
        first = min(opened, key=lambda e: e.at)
        began = first.at.timestamp()
        out: list[str] = []
        current = next((c for c in reversed(changes) if c.version == first.model_version), None)
        if current is not None:
            start = first.began if first.began is not None else first.event
            events = f"{start:,} events" if start is not None else "some time"
            if current.replaced is not None:
                swap = f"{model}/{current.version} replaced /{current.replaced}"
                out.append(f"drift began {events} after {swap}")
            else:
                out.append(
                    f"drift began {events} after this worker ({self.worker}) started serving "
                    f"{model}/{current.version}"
                )
            for f in current.findings:
                installed = f.installed or "nothing"
                out.append(
                    f"{model}/{current.version} was built with {f.package} {f.built}; the worker runs "
                    f"{installed} ({f.level} change)"
                )
            if current.packaged_at is not None:
                packaged = _when(current.packaged_at.timestamp())
                out.append(f"{model}/{current.version} was packaged (its reference) {packaged}")
        # Versions swapped in after the incident began, and the ones served before.
        for c in changes:
            if c.at > began and c is not current:
                during = f"{model}/{c.version} replaced /{c.replaced} during the incident ({_when(c.at)})"
                out.insert(0, during)
        for c in reversed(changes):
            if c.at <= began and c is not current:
                out.append(f"before it, {model}/{c.version} from {_when(c.at)} ({self.worker})")
                break
        return tuple(out)
