"""Console output that can never end a run.

``odet train … | tee log`` followed by Ctrl-C kills ``tee`` too; ``odet train … | head`` closes the
pipe after a few lines. From then on every write to stdout fails (``BrokenPipeError``), and a
``print`` deep inside the training loop would end the run before it saved anything. Output is a
courtesy to whoever watches, so :class:`ResilientStream` swallows such failures: the first failed
write marks the stream broken, later writes are dropped, and the file descriptor is pointed at
``/dev/null`` so that Python's own flush at exit stays quiet too. The run directory's ``train.log``
(see :mod:`odcli.engine.console`) still receives every line.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Callable
from typing import TextIO

from rich.console import Console


class ResilientStream(io.TextIOBase):
    """A text stream that forwards to ``target()`` and ignores the failures of a closed reader.

    Args:
        target: returns the stream to write to, looked up at every write (``lambda: sys.stdout``),
            so that tools which swap ``sys.stdout`` (test runners, ``contextlib.redirect_stdout``)
            still receive the output.
    """

    def __init__(self, target: Callable[[], TextIO]) -> None:
        super().__init__()
        self._target = target
        self._broken: set[int] = set()  # ids of the underlying streams that failed

    @property
    def broken(self) -> bool:
        """Whether the current underlying stream has failed (its reader is gone)."""
        return id(self._target()) in self._broken

    def _fail(self, stream: TextIO) -> None:
        self._broken.add(id(stream))
        # Python flushes sys.stdout/sys.stderr at exit; on a broken pipe that prints "Exception
        # ignored … BrokenPipeError" and changes the exit status to 120. Writing to /dev/null instead
        # keeps the run's own exit status (0, or 130/143 after a signal).
        with contextlib.suppress(OSError, ValueError, AttributeError, io.UnsupportedOperation):
            fd = stream.fileno()
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)

    def write(self, text: str) -> int:
        stream = self._target()
        if id(stream) in self._broken:
            return len(text)
        try:
            stream.write(text)
        except (OSError, ValueError):  # EPIPE/EIO from a vanished reader, or a closed file
            self._fail(stream)
        return len(text)

    def flush(self) -> None:
        stream = self._target()
        if id(stream) in self._broken:
            return
        try:
            stream.flush()
        except (OSError, ValueError):
            self._fail(stream)

    def isatty(self) -> bool:
        try:
            return not self.broken and self._target().isatty()
        except (OSError, ValueError, AttributeError):
            return False

    def fileno(self) -> int:
        return self._target().fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._target(), "encoding", None) or "utf-8"


STDOUT = ResilientStream(lambda: sys.stdout)
STDERR = ResilientStream(lambda: sys.stderr)


def make_console(*, stderr: bool = False) -> Console:
    """A rich console on stdout (or stderr) whose writes never raise."""
    return Console(file=STDERR if stderr else STDOUT, highlight=False)
