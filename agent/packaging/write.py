"""Step 4: write a package atomically, with the versions it was built with.

Files are written into a hidden staging directory next to the target and renamed into place, so a
scan never sees half a package.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from agent.errors import ConfigurationError, PackageError
from agent.models.repository import MANIFEST_FILE, MODEL_FILE, ModelRepository
from schemas.manifest import (
    BuildVersions,
    Manifest,
)

__all__ = [
    "build_versions",
    "write_package",
]


def build_versions(opsets: Mapping[str, int], frameworks: Mapping[str, str] | None = None) -> BuildVersions:
    """The versions of this process's libraries, with the converted model's opsets and the other
    libraries (``frameworks``) it was trained or converted with."""
    import onnx
    import onnxruntime
    import skl2onnx
    import sklearn

    return BuildVersions(
        python=platform.python_version(),
        numpy=np.__version__,
        scikit_learn=sklearn.__version__,
        skl2onnx=skl2onnx.__version__,
        onnx=onnx.__version__,
        onnxruntime=onnxruntime.__version__,
        opsets=dict(opsets),
        frameworks=dict(frameworks or {}),
    )


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_package(
    repository: ModelRepository,
    manifest: Manifest,
    onnx_bytes: bytes,
    *,
    force: bool = False,
    error_model: bytes | None = None,
) -> Path:
    """Writes ``model.onnx`` and ``manifest.json`` to ``NAME/VERSION/`` atomically, and the error
    model's graph (``error_model``, a regressor's) under the name its manifest entry gives.

    The files are written and synced in a hidden staging directory beside the target, which is then
    renamed into place; with ``force`` an existing package is first renamed aside and deleted after
    the new one is in place. Returns the package directory.
    """
    if hashlib.sha256(onnx_bytes).hexdigest() != manifest.onnx_sha256:
        raise PackageError("manifest.onnx_sha256 does not match the model bytes being written")
    entry = manifest.error_model
    if (entry is None) != (error_model is None):
        raise PackageError("an error model's bytes and its manifest entry go together")
    if entry is not None and hashlib.sha256(error_model or b"").hexdigest() != entry.sha256:
        raise PackageError("manifest.error_model.sha256 does not match the error model bytes being written")
    target = repository.package_dir(manifest.name, manifest.version)
    if target.exists() and not force:
        raise ConfigurationError(f"{target}: package already exists; pass --force to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Hidden (leading ".") so that repository scans skip it; same directory, so rename is atomic.
    staging = Path(tempfile.mkdtemp(prefix=f".{manifest.version}.staging-", dir=target.parent))
    replaced: Path | None = None
    try:
        _write_synced(staging / MODEL_FILE, onnx_bytes)
        if entry is not None and error_model is not None:
            _write_synced(staging / entry.file, error_model)
        _write_synced(staging / MANIFEST_FILE, (manifest.model_dump_json(indent=2) + "\n").encode())
        staging.chmod(0o755)
        _sync_dir(staging)
        if target.exists():
            replaced = target.parent / f".{manifest.version}.replaced-{uuid.uuid4().hex[:8]}"
            os.rename(target, replaced)
        try:
            os.rename(staging, target)
        except OSError as exc:
            if replaced is not None:
                os.rename(replaced, target)
                replaced = None
            raise PackageError(f"{target}: cannot move the package into place: {exc}") from exc
        _sync_dir(target.parent)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        if replaced is not None:
            shutil.rmtree(replaced, ignore_errors=True)
    return target
