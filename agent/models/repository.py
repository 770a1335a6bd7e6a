"""A model repository: a folder of ``NAME/VERSION/`` package directories.

Each package directory holds ``model.onnx`` and ``manifest.json``. Scanning is cheap (directory
listings only); nothing is verified until a package is loaded with :func:`agent.models.package.load_package`.
A version directory counts once it holds ``manifest.json``, and directories whose names start with
``.`` are ignored: ``driftline package`` stages packages in such a directory and renames them into
place, so a scan never sees a half-written package.

Versions are ordered numerically where they are numbers (``1.10`` > ``1.9`` > ``1``), and a
pre-release tag sorts before its release (``2.0rc1`` < ``2.0``).

Example:
    >>> sorted(["1.10", "1.9", "2.0rc1", "2.0", "1"], key=version_key)
    ['1', '1.9', '1.10', '2.0rc1', '2.0']
    >>> next_version("1.9"), next_version(None)
    ('1.10', '1')
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agent.errors import ConfigurationError, PackageError
from schemas.manifest import MODEL_NAME_PATTERN, MODEL_VERSION_PATTERN

__all__ = [
    "MANIFEST_FILE",
    "MODEL_FILE",
    "ModelRepository",
    "PackageRef",
    "next_version",
    "version_key",
]

MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"

_TOKEN = re.compile(r"\d+|[A-Za-z]+")
_NAME = re.compile(MODEL_NAME_PATTERN)
_VERSION = re.compile(MODEL_VERSION_PATTERN)

# Ranks inside a version key: a text token (pre-release tag) < the end of the version < a number,
# so "2.0rc1" < "2.0" < "2.0.1".
_TEXT, _END, _NUMBER = 0, 1, 2

VersionKey = tuple[tuple[tuple[int, int, str], ...], str]


def version_key(version: str) -> VersionKey:
    """Sort key that orders versions numerically and puts pre-releases before their release.

    Ties between spellings of one version (``1.0`` and ``1.00``) are broken by the text, so the
    order is total and the same on every machine.
    """
    tokens = tuple(
        (_NUMBER, int(t), "") if t.isdigit() else (_TEXT, 0, t.lower()) for t in _TOKEN.findall(version)
    )
    return (*tokens, (_END, 0, "")), version


def next_version(newest: str | None) -> str:
    """The version after ``newest``: its last number plus one; ``"1"`` when there is none yet."""
    if newest is None:
        return "1"
    numbers = list(re.finditer(r"\d+", newest))
    if not numbers:
        raise ConfigurationError(
            f"cannot derive the version after {newest!r} (it has no number); pass --version"
        )
    last = numbers[-1]
    return f"{newest[: last.start()]}{int(last.group()) + 1}{newest[last.end() :]}"


@dataclass(frozen=True)
class PackageRef:
    """Where one package of the repository lives.

    Parameters:
        name: Model name (the parent directory's name).
        version: Model version (the package directory's name).
        path: The package directory.
    """

    name: str
    version: str
    path: Path

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST_FILE

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE


class ModelRepository:
    """A folder of model packages, several names with several versions each.

    Parameters:
        root: The repository folder; it need not exist yet (then it is empty).

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> for version in ("1", "1.9", "1.10"):
        ...     (root / "churn" / version).mkdir(parents=True)
        ...     (root / "churn" / version / MANIFEST_FILE).write_text("{}")
        2
        2
        2
        >>> (root / "churn" / ".staging-3").mkdir()
        >>> repo = ModelRepository(root)
        >>> repo.names(), repo.versions("churn")
        (['churn'], ['1', '1.9', '1.10'])
        >>> repo.resolve("churn").version, repo.resolve("churn", pinned="1.9").version
        ('1.10', '1.9')
        >>> repo.next_version("churn"), repo.next_version("fraud")
        ('1.11', '1')
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"ModelRepository({str(self.root)!r})"

    def scan(self) -> dict[str, tuple[PackageRef, ...]]:
        """Every model name (sorted) with its packages, oldest version first."""
        if not self.root.is_dir():
            return {}
        found: dict[str, tuple[PackageRef, ...]] = {}
        for name_dir in sorted(self.root.iterdir()):
            packages = self._packages(name_dir.name)
            if packages:
                found[name_dir.name] = packages
        return found

    def names(self) -> list[str]:
        """Model names with at least one package, sorted."""
        return list(self.scan())

    def versions(self, name: str) -> list[str]:
        """Versions of ``name``, oldest first; empty if there are none."""
        return [ref.version for ref in self._packages(name)]

    def newest(self, name: str) -> PackageRef | None:
        """The newest package of ``name``, or ``None``."""
        packages = self._packages(name)
        return packages[-1] if packages else None

    def resolve(self, name: str, pinned: str | None = None) -> PackageRef:
        """The package of ``name`` to serve: version ``pinned`` if given, else the newest."""
        packages = self._packages(name)
        if not packages:
            raise PackageError(f"{self.root / name}: no packages of model {name!r} in {self.root}")
        if pinned is None:
            return packages[-1]
        for ref in packages:
            if ref.version == pinned:
                return ref
        available = ", ".join(ref.version for ref in packages)
        raise PackageError(
            f"{self.root / name / pinned}: model {name!r} has no version {pinned!r} (available: {available})"
        )

    def select(self, pinned: Mapping[str, str] | None = None) -> dict[str, PackageRef]:
        """One package per model name: the pinned version where given, else the newest.

        ``pinned`` is ``Settings().serving.pinned_versions``; pinning a model that is not in the
        repository is an error rather than silently serving nothing.
        """
        pinned = pinned or {}
        scanned = self.scan()
        for name in pinned:
            if name not in scanned:
                raise PackageError(f"{self.root / name}: pinned model {name!r} is not in {self.root}")
        return {name: self.resolve(name, pinned.get(name)) for name in scanned}

    def next_version(self, name: str) -> str:
        """The version after the newest of ``name``, or ``"1"`` for a new model."""
        newest = self.newest(name)
        return next_version(newest.version if newest else None)

    def package_dir(self, name: str, version: str) -> Path:
        """Where the package ``name``/``version`` lives (whether or not it exists)."""
        if not _NAME.match(name):
            raise ConfigurationError(f"invalid model name {name!r}: must match {MODEL_NAME_PATTERN}")
        if not _VERSION.match(version):
            raise ConfigurationError(f"invalid model version {version!r}: must match {MODEL_VERSION_PATTERN}")
        return self.root / name / version

    def _packages(self, name: str) -> tuple[PackageRef, ...]:
        name_dir = self.root / name
        if not (_NAME.match(name) and name_dir.is_dir()):
            return ()
        refs = [
            PackageRef(name, d.name, d)
            for d in name_dir.iterdir()
            if _VERSION.match(d.name) and (d / MANIFEST_FILE).is_file()
        ]
        return tuple(sorted(refs, key=lambda r: version_key(r.version)))
