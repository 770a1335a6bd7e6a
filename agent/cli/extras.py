"""Optional extras a command needs: a clear error naming the extra instead of an ImportError.

A worker installs without the ``build`` extra (scikit-learn, skl2onnx, onnx) and the ``demo`` extra
(matplotlib); the commands that need them check first.

Example:
    >>> require("build", "driftline package", modules=("json",))  # present: nothing happens
    >>> try:
    ...     require("build", "driftline package", modules=("not_here",))
    ... except MissingExtraError as exc:
    ...     print(exc)
    driftline package needs the 'build' extra (not_here is not installed): pip install 'driftline[build]'
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from agent.errors import ConfigurationError

__all__ = ["EXTRAS", "MissingExtraError", "require"]

EXTRAS: dict[str, tuple[str, ...]] = {
    "build": ("sklearn", "skl2onnx", "onnx"),
    "demo": ("sklearn", "skl2onnx", "onnx", "matplotlib"),
}
"""Each optional extra -> the modules it installs (see pyproject.toml)."""


class MissingExtraError(ConfigurationError):
    """A command needs an optional extra that is not installed."""


def require(extra: str, command: str, *, modules: Sequence[str] | None = None) -> None:
    """Raises :class:`MissingExtraError` naming ``extra`` if one of its modules is not importable."""
    for module in modules if modules is not None else EXTRAS[extra]:
        try:
            # Imported, not only looked up: the command imports it next anyway, and a broken
            # install fails here with the same clear message.
            importlib.import_module(module)
        except ImportError:
            raise MissingExtraError(
                f"{command} needs the {extra!r} extra ({module} is not installed): "
                f"pip install 'driftline[{extra}]'"
            ) from None
