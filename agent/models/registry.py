"""The models a worker serves, loaded from a model repository and swapped in as new versions appear.

:class:`ModelRegistry` serves, for each model name in the repository, its newest version (or the
pinned one). :meth:`ModelRegistry.refresh` rescans the repository: a new version is verified and
loaded *before* it replaces the old one, so the old version keeps serving until the swap, and a
package that fails verification is reported (and remembered, so it is not retried every scan) but
never served. A request may name an older version explicitly; it is loaded on first use.

Example:
    >>> import tempfile
    >>> registry = ModelRegistry(tempfile.mkdtemp())
    >>> registry.refresh().loaded, registry.resolve("nothing") is None
    ([], True)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agent.errors import DriftlineError, PackageError
from agent.metrics import Metrics
from agent.models.encoding import FeatureEncoder
from agent.models.package import LoadedModel
from agent.models.repository import ModelRepository, PackageRef
from schemas.manifest import Manifest

__all__ = ["ModelRegistry", "RefreshReport", "ServedModel"]

log = logging.getLogger(__name__)

_MAX_REMEMBERED = 10_000
"""Absent versions remembered between two scans (each a request's junk); beyond, the set starts over."""


@dataclass(frozen=True, eq=False)
class ServedModel:
    """A loaded model with what serving needs precomputed (its encoder, its class keys)."""

    model: LoadedModel
    encoder: FeatureEncoder
    class_keys: tuple[str, ...] | None
    """``str(label)`` of each probability column: the keys of ``Prediction.probabilities``."""

    @property
    def manifest(self) -> Manifest:
        return self.model.manifest

    @property
    def name(self) -> str:
        return self.model.manifest.name

    @property
    def version(self) -> str:
        return self.model.manifest.version

    @classmethod
    def from_model(cls, model: LoadedModel) -> ServedModel:
        manifest = model.manifest
        labels = manifest.outputs.class_labels
        keys = tuple(str(label) for label in labels) if labels is not None else None
        return cls(model, FeatureEncoder(manifest.features, f"{manifest.name}/{manifest.version}"), keys)


@dataclass
class RefreshReport:
    """What one :meth:`ModelRegistry.refresh` did."""

    loaded: list[str] = field(default_factory=list)
    """``name/version`` of every package loaded and now served."""
    failed: dict[str, str] = field(default_factory=dict)
    """``name/version`` -> why it was refused (new failures only)."""


class ModelRegistry:
    """Serves the newest (or pinned) version of every model in a repository.

    Parameters:
        repository: Folder of ``NAME/VERSION/`` packages.
        pinned: Model name -> version to serve instead of the newest.
        intra_op_num_threads: ONNX Runtime threads per session.
        max_requested_versions: Versions besides the served ones loaded because requests name them.
        metrics: Counts the versions refused beyond that bound.
    """

    def __init__(
        self,
        repository: Path | str,
        pinned: Mapping[str, str] | None = None,
        *,
        intra_op_num_threads: int = 1,
        max_requested_versions: int = 8,
        metrics: Metrics | None = None,
    ) -> None:
        self.repository = ModelRepository(repository)
        self.pinned = dict(pinned or {})
        self.threads = intra_op_num_threads
        self.max_requested_versions = max_requested_versions
        self.metrics = metrics
        self._current: dict[str, ServedModel] = {}
        self._versions: dict[tuple[str, str], ServedModel] = {}
        self._refused: dict[tuple[str, str], str] = {}
        # Versions asked for but absent; forgotten at each refresh so a later copy is found.
        self._absent: set[tuple[str, str]] = set()
        # Versions loaded because a request named them, and those refused beyond the bound.
        self._requested: set[tuple[str, str]] = set()
        self._over_bound: set[tuple[str, str]] = set()

    def resolve(self, name: str, version: str | None = None) -> ServedModel | None:
        """The model that answers requests for ``name`` (and ``version``, if given), if any.

        An explicit version is looked for only among the packages of a served model (a request's
        words are not paths to probe), and loaded only while fewer than ``max_requested_versions``
        have been: each is an ONNX Runtime session kept for the life of the worker.
        """
        if version is None:
            return self._current.get(name)
        key = (name, version)
        served = self._versions.get(key)
        if served is not None or key in self._refused or key in self._absent or key in self._over_bound:
            return served
        if name not in self._current:
            return None
        return self._load_explicit(name, version)

    def why_not(self, name: str, version: str | None = None) -> str:
        """Why :meth:`resolve` found nothing for ``name``/``version``: one line for a dead letter."""
        if version is not None and (name, version) in self._refused:
            return f"model {name!r} version {version!r} failed verification: {self._refused[name, version]}"
        if version is not None and (name, version) in self._over_bound:
            return (
                f"model {name!r} version {version!r} is not loaded: {len(self._requested)} versions named by "
                "requests are loaded already (DRIFTLINE_SERVING__MAX_REQUESTED_VERSIONS)"
            )
        served = sorted(self._current)
        listing = ", ".join(served) if served else "none"
        if name in self._current:
            return f"model {name!r} has no version {version!r} in the repository"
        return f"unknown model {name!r} (served: {listing})"

    def served(self) -> list[ServedModel]:
        """The current version of every model, by name."""
        return [self._current[name] for name in sorted(self._current)]

    def refresh(self) -> RefreshReport:
        """Rescans the repository; loads and swaps in new versions. Never raises for a bad package."""
        report = RefreshReport()
        self._absent.clear()
        try:
            scanned = self.repository.scan()
        except OSError as exc:
            log.error("model repository %s cannot be read: %s", self.repository.root, exc)
            return report
        for name, refs in scanned.items():
            current = self._current.get(name)
            # A refused package falls back to the newest one before it in the same scan: a worker that
            # starts next to a bad new package serves the previous version at once, not after the
            # next scan. A pinned version has nothing to fall back to.
            while (ref := self._choose(name, refs)) is not None:
                if current is not None and current.version == ref.version:
                    break
                served = self._load(ref, report)
                if served is not None:
                    self._current[name] = served
                    if current is not None:
                        log.info("serving %s/%s (was %s)", name, ref.version, current.version)
                    break
                if name in self.pinned:
                    break
        return report

    def _choose(self, name: str, refs: tuple[PackageRef, ...]) -> PackageRef | None:
        pinned = self.pinned.get(name)
        if pinned is not None:
            matches = [r for r in refs if r.version == pinned]
            if not matches:
                log.error("model %s: pinned version %s is not in the repository", name, pinned)
            return matches[0] if matches else None
        # The newest version that has not been refused: a bad new package leaves the old one serving.
        for ref in reversed(refs):
            if (name, ref.version) not in self._refused:
                return ref
        return None

    def _load(self, ref: PackageRef, report: RefreshReport) -> ServedModel | None:
        key = (ref.name, ref.version)
        served = self._versions.get(key)
        if served is not None:
            return served
        try:
            model = LoadedModel(ref.path, intra_op_num_threads=self.threads).load()
            if (model.manifest.name, model.manifest.version) != key:
                raise PackageError(
                    f"{ref.manifest_path}: manifest says {model.manifest.name}/{model.manifest.version} "
                    f"but the package lives at {ref.name}/{ref.version}"
                )
        except DriftlineError as exc:
            self._refused[key] = str(exc)
            report.failed[f"{ref.name}/{ref.version}"] = str(exc)
            log.error("refusing to serve %s/%s: %s", ref.name, ref.version, exc)
            return None
        served = ServedModel.from_model(model)
        self._versions[key] = served
        report.loaded.append(f"{ref.name}/{ref.version}")
        log.info("loaded %s/%s from %s", ref.name, ref.version, ref.path)
        return served

    def _load_explicit(self, name: str, version: str) -> ServedModel | None:
        key = (name, version)
        try:
            ref = self.repository.resolve(name, version)
        except DriftlineError:
            if len(self._absent) >= _MAX_REMEMBERED:
                self._absent.clear()
            self._absent.add(key)
            return None
        if len(self._requested) >= self.max_requested_versions:
            # Only versions that exist get here: bounded by the repository.
            self._over_bound.add(key)
            if self.metrics is not None:
                self.metrics.names_refused.labels(what="version").inc()
            log.warning(
                "not loading %s/%s for the requests that name it: %d requested versions are loaded "
                "already (DRIFTLINE_SERVING__MAX_REQUESTED_VERSIONS)",
                name,
                version,
                len(self._requested),
            )
            return None
        served = self._load(ref, RefreshReport())
        if served is not None:
            self._requested.add(key)
        return served
