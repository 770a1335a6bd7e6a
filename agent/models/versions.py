"""Technical drift of a package's dependencies: the versions it was built with against those installed.

May import: :mod:`schemas`.
"""

from __future__ import annotations

import importlib.metadata
import platform
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "BUILD_ONLY",
    "DependencyFinding",
    "FindingLevel",
    "dependency_findings",
    "installed_versions",
    "version_difference",
]

FindingLevel = Literal["major", "minor", "patch", "missing"]

BUILD_ONLY = frozenset({"scikit-learn", "skl2onnx", "onnx"})
"""Libraries that build a package but play no part in serving it (the ``build`` extra): a worker
installed without them is no technical drift, though one that has them at another version still is."""


@dataclass(frozen=True)
class DependencyFinding:
    """A library whose installed version differs from the one a package was built with.

    Parameters:
        package: Distribution name (``python`` for the interpreter).
        built: Version recorded in the manifest.
        installed: Version installed now; ``None`` if it is not installed.
        level: The most significant part that differs, or ``missing``.

    Example:
        >>> dependency_findings({"numpy": "1.26.4", "python": "3.11.7"}, {"numpy": "2.0.1", "python": None})
        (DependencyFinding(package='numpy', built='1.26.4', installed='2.0.1', level='major'), \
DependencyFinding(package='python', built='3.11.7', installed=None, level='missing'))
        >>> dependency_findings({"onnx": "1.16.0"}, {"onnx": None})  # build-only: not a serving problem
        ()
        >>> print(DependencyFinding("numpy", "1.26.4", "1.26.5", "patch"))
        numpy: built with 1.26.4, installed 1.26.5 (patch)
    """

    package: str
    built: str
    installed: str | None
    level: FindingLevel

    def __str__(self) -> str:
        now = "not installed" if self.installed is None else f"installed {self.installed}"
        return f"{self.package}: built with {self.built}, {now} ({self.level})"


_RELEASE = re.compile(r"^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(.*)$")


def version_difference(built: str, installed: str) -> Literal["major", "minor", "patch"] | None:
    """The most significant part in which two versions differ, ``None`` if they are the same.

    Missing parts count as zero (``2.0`` equals ``2.0.0``); anything beyond major.minor.patch
    (pre-release, post-release, local build tags) counts as a patch difference.

    Example:
        >>> version_difference("1.4.2", "1.5.0"), version_difference("3.11", "3.11.0")
        ('minor', None)
        >>> version_difference("1.18.0", "1.18.0+cpu")
        'patch'
    """
    a, b = _RELEASE.match(built.strip()), _RELEASE.match(installed.strip())
    if a is None or b is None:
        return None if built.strip() == installed.strip() else "patch"
    ra = tuple(int(x or 0) for x in a.groups()[:3])
    rb = tuple(int(x or 0) for x in b.groups()[:3])
    if ra[0] != rb[0]:
        return "major"
    if ra[1] != rb[1]:
        return "minor"
    if ra[2] != rb[2] or a.group(4) != b.group(4):
        return "patch"
    return None


def installed_versions() -> dict[str, str | None]:
    """Installed versions of the libraries a manifest records (``None``: not installed)."""
    import onnxruntime

    found: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("numpy", "scikit-learn", "skl2onnx", "onnx"):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[dist] = None
    # Read from the module: onnxruntime ships under several distribution names (-gpu, -openvino).
    found["onnxruntime"] = str(onnxruntime.__version__)
    return found


def dependency_findings(
    built: Mapping[str, str], installed: Mapping[str, str | None] | None = None
) -> tuple[DependencyFinding, ...]:
    """One finding per package in ``built`` whose installed version differs or is missing.

    ``installed`` defaults to :func:`installed_versions`; a package it does not mention counts as
    missing, except the :data:`BUILD_ONLY` ones.
    """
    now = installed_versions() if installed is None else installed
    findings = []
    for package, built_version in built.items():
        current = now.get(package)
        if current is None:
            if package in BUILD_ONLY:
                continue
            findings.append(DependencyFinding(package, built_version, None, "missing"))
            continue
        level = version_difference(built_version, current)
        if level is not None:
            findings.append(DependencyFinding(package, built_version, current, level))
    return tuple(findings)


# --- loading ----------------------------------------------------------------------------------
