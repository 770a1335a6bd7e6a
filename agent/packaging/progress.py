"""Progress of a slow build on stderr: each step with its elapsed time, and warnings."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import TextIO

__all__ = [
    "Progress",
]


class Progress:
    """Reports slow steps with their elapsed time on a stream (stderr by default).

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> progress = Progress(out, clock=iter([0.0, 0.25, 1.0, 1.5]).__next__)
        >>> with progress.step("train"):
        ...     pass
        >>> with progress.step("convert"):
        ...     pass
        >>> print(out.getvalue(), end="")
        train ... 0.25 s
        convert ... 0.50 s
        >>> progress.timings
        {'train': 0.25, 'convert': 0.5}

    A warning is a line of its own, kept in :attr:`warnings` too (a quiet build has no stream):

        >>> progress.warn("no holdout")
        >>> out.getvalue().splitlines()[-1], progress.warnings
        ('warning: no holdout', ['no holdout'])
    """

    def __init__(
        self, stream: TextIO | None = None, *, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.stream = stream
        self.clock = clock
        self.timings: dict[str, float] = {}
        self.warnings: list[str] = []

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Times the ``with`` block under ``name``."""
        self._write(f"{name} ... ")
        started = self.clock()
        try:
            yield
        except BaseException:
            self._write(f"failed after {self.clock() - started:.2f} s\n")
            raise
        elapsed = self.clock() - started
        self.timings[name] = elapsed
        self._write(f"{elapsed:.2f} s\n")

    def warn(self, text: str) -> None:
        """Reports something the user should know about the build (between steps, not inside one)."""
        self.warnings.append(text)
        self._write(f"warning: {text}\n")

    def _write(self, text: str) -> None:
        if self.stream is not None:
            self.stream.write(text)
            self.stream.flush()
