"""Drift schedules: what changes in a generated stream, from which event to which, and by how much.

A schedule is data: a :class:`Scenario` holds a tuple of :class:`ScheduledDrift` items, and
:meth:`Scenario.load` reads one from a small TOML or JSON file, so users can script their own::

    name = "my-shift"
    count = 20000
    rate = 500

    [[drifts]]
    kind = "covariate"     # covariate | concept | schema | garbage
    start = 5000           # first event affected (0-based)
    end = 15000            # first event no longer affected; leave out for "until the end"
    feature = "worst radius"
    size = 1.5             # covariate: reference standard deviations; others: share of events
    ramp = 2000            # optional: grow linearly to full size over this many events (gradual)
    # period = 1000        # optional: on for the first half of every period events (recurring)

The same file as JSON is ``{"name": ..., "drifts": [{"kind": "covariate", ...}]}``.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Annotated, Literal, Self

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from producers.errors import ScheduleError

__all__ = ["DriftKind", "Scenario", "ScheduledDrift"]

DriftKind = Literal["covariate", "concept", "schema", "garbage"]

_SHARE_KINDS = ("concept", "schema", "garbage")


class ScheduledDrift(BaseModel):
    """One scripted change of a stream, active on the events ``start <= i < end``.

    Parameters:
        kind: ``covariate`` adds ``size`` reference standard deviations to ``feature``;
            ``concept`` alters the label of a share ``size`` of the outcomes (the next class, a flip
            for a binary model; a regressor's value mirrored around the target's mean) while the
            features stay as they were, so only the model's error rises; ``schema`` breaks a share
            ``size`` of the requests (a renamed or missing feature, a wrong type, a missing field);
            ``garbage`` replaces a share ``size`` of the requests with random bytes or truncated JSON.
        start: First event index affected (0-based; an event is one message on the requests topic).
        end: First event index no longer affected; ``None`` for "until the end of the stream".
        feature: The shifted feature (``covariate``, required) or the broken one (``schema``;
            a random feature per message when ``None``).
        size: ``covariate``: the shift in reference standard deviations, either sign; the other
            kinds: the share of the window's events affected, in ``[0, 1]``.
        ramp: Gradual drift: the size grows linearly to full over this many events (event
            ``start`` gets ``1/ramp`` of it). 0 (the default) is an abrupt change.
        period: Recurring drift: on for the first half of every ``period`` events, off for the
            second half.

    Example:
        >>> d = ScheduledDrift(kind="covariate", start=100, feature="x00", size=2.0, ramp=100)
        >>> d.shape, d.intensities(98, 103).tolist()
        ('gradual', [0.0, 0.0, 0.01, 0.02, 0.03])
        >>> r = ScheduledDrift(kind="concept", start=10, end=20, size=1.0, period=4)
        >>> r.shape, r.intensities(8, 22).astype(int).tolist()
        ('recurring', [0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0])
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    kind: DriftKind
    start: Annotated[int, Field(ge=0)]
    end: Annotated[int, Field(ge=1)] | None = None
    feature: str | None = None
    size: float
    ramp: Annotated[int, Field(ge=0)] = 0
    period: Annotated[int, Field(ge=2)] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.end is not None and self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be after start ({self.start})")
        if self.kind == "covariate" and self.feature is None:
            raise ValueError("a covariate drift needs the feature it shifts")
        if self.kind in ("concept", "garbage") and self.feature is not None:
            raise ValueError(f"a {self.kind} drift takes no feature")
        if self.kind in _SHARE_KINDS and not 0.0 <= self.size <= 1.0:
            raise ValueError(f"the size of a {self.kind} drift is a share of events, in [0, 1]")
        if self.ramp and self.period is not None:
            raise ValueError("a drift is gradual (ramp) or recurring (period), not both")
        return self

    @property
    def shape(self) -> Literal["abrupt", "gradual", "recurring"]:
        """``gradual`` with a ramp, ``recurring`` with a period, else ``abrupt``."""
        if self.ramp:
            return "gradual"
        if self.period is not None:
            return "recurring"
        return "abrupt"

    def intensities(self, lo: int, hi: int) -> npt.NDArray[np.float64]:
        """How much of ``size`` applies to each event ``lo <= i < hi``, in ``[0, 1]``."""
        i = np.arange(lo, hi, dtype=np.int64)
        end = np.iinfo(np.int64).max if self.end is None else self.end
        inside = (i >= self.start) & (i < end)
        if self.ramp:
            level = np.clip((i - self.start + 1) / self.ramp, 0.0, 1.0)
        elif self.period is not None:
            level = (((i - self.start) % self.period) < self.period // 2).astype(np.float64)
        else:
            level = np.ones(i.shape, dtype=np.float64)
        return np.where(inside, level, 0.0)

    def describe_size(self) -> str:
        """The size as the schedule table shows it: ``+1.5 sd`` or ``10%``."""
        if self.kind == "covariate":
            return f"{self.size:+g} sd"
        return f"{self.size * 100:g}%"


class Scenario(BaseModel):
    """A named drift schedule with the stream length and pace it was sized for.

    Parameters:
        name: Shown in the schedule table and the default request-id prefix.
        description: One line for ``--help`` and the table.
        count: Events to generate unless told otherwise.
        rate: Events per second to send unless told otherwise (0: as fast as possible).
        drifts: The scheduled changes; empty for a stationary stream.

    Example:
        >>> s = Scenario(name="shift", count=1000, drifts=[
        ...     ScheduledDrift(kind="covariate", start=500, feature="x00", size=1.0)])
        >>> print(s.table())
        shift: 1000 events
         from   to  kind       shape   feature  size
          500  end  covariate  abrupt  x00      +1 sd
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: Annotated[str, Field(min_length=1, max_length=64)] = "custom"
    description: str = ""
    count: Annotated[int, Field(ge=1)] = 10_000
    rate: Annotated[float, Field(ge=0)] = 1000.0
    drifts: tuple[ScheduledDrift, ...] = ()

    @classmethod
    def load(cls, path: Path) -> Scenario:
        """Reads a scenario from a ``.toml`` or ``.json`` file; :class:`ScheduleError` if invalid."""
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise ScheduleError(f"cannot read schedule {path}: {exc.strerror or exc}") from exc
        try:
            if path.suffix.lower() == ".toml":
                data = tomllib.loads(text.decode("utf-8"))
            elif path.suffix.lower() == ".json":
                data = json.loads(text)
            else:
                raise ScheduleError(f"schedule {path}: expected a .toml or .json file")
        except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ScheduleError(f"schedule {path} is not valid {path.suffix[1:].upper()}: {exc}") from exc
        if isinstance(data, dict):
            data.setdefault("name", path.stem[:64] or "custom")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}"
                for e in exc.errors(include_url=False)[:5]
            )
            raise ScheduleError(f"schedule {path} is invalid: {problems}") from None

    def check(self, features: Sequence[str], *, shiftable: Collection[str], has_labels: bool) -> None:
        """Raises :class:`ScheduleError` unless every drift fits a source with these features.

        ``shiftable`` are the numeric features with a known reference standard deviation;
        ``has_labels`` says whether the source has outcomes for a concept drift to alter.
        """
        for number, drift in enumerate(self.drifts, start=1):
            where = f"drift {number} ({drift.kind} from event {drift.start})"
            if drift.feature is not None and drift.feature not in features:
                raise ScheduleError(
                    f"{where}: unknown feature {drift.feature!r}; the model's features are "
                    + ", ".join(repr(f) for f in features)
                )
            if drift.kind == "covariate" and drift.feature not in shiftable:
                raise ScheduleError(
                    f"{where}: feature {drift.feature!r} is not numeric with a known standard deviation"
                )
            if drift.kind == "concept" and not has_labels:
                raise ScheduleError(f"{where}: the source has no labels (outcomes) to alter")

    def table(self, count: int | None = None) -> str:
        """The schedule as a text table, for a run of ``count`` events (default: ``self.count``)."""
        count = self.count if count is None else count
        head = f"{self.name}: {count} events" + (f" ({self.description})" if self.description else "")
        if not self.drifts:
            return f"{head}\n  no drift scheduled"
        rows = [("from", "to", "kind", "shape", "feature", "size")]
        late = []
        for number, d in enumerate(self.drifts, start=1):
            shape = {"abrupt": "abrupt", "gradual": f"gradual (ramp {d.ramp})"}.get(
                d.shape, f"recurring (period {d.period})"
            )
            end = "end" if d.end is None else str(d.end)
            rows.append((str(d.start), end, d.kind, shape, d.feature or "-", d.describe_size()))
            if d.start >= count:
                late.append(number)
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        lines = [head]
        for r in rows:
            cells = [r[0].rjust(widths[0]), r[1].rjust(widths[1])]
            cells += [r[c].ljust(widths[c]) for c in range(2, len(r))]
            lines.append(" " + "  ".join(cells).rstrip())
        if late:
            lines.append(f"  (drift {', '.join(map(str, late))} starts after the last event)")
        return "\n".join(lines)
