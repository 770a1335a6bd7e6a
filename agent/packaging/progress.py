"""Progress of a slow build on stderr: each step with its elapsed time."""

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
    """

    def __init__(
        self, stream: TextIO | None = None, *, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.stream = stream
        self.clock = clock
        self.timings: dict[str, float] = {}

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

    def _write(self, text: str) -> None:
        if self.stream is not None:
            self.stream.write(text)
            self.stream.flush()
