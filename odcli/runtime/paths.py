"""Output locations checked before the work starts: a command that would fail to write its result
says so in one line at once, not after minutes of computing."""

from __future__ import annotations

import os
from pathlib import Path

from odcli.errors import OdetError

__all__ = ["check_output_location", "ensure_output_dir"]


def ensure_output_dir(directory: Path) -> None:
    """Create ``directory`` or fail now with one line, before minutes of work are spent."""
    if directory.exists() and not directory.is_dir():
        raise OdetError(f"--out {directory} exists and is not a directory; choose a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OdetError(
            f"cannot create output directory {directory}: {exc.strerror or exc}; choose another --out"
        ) from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OdetError(f"output directory {directory} is not writable; choose another with --out")


def check_output_location(directory: Path, fix: str) -> None:
    """Fail now, with one line, when ``directory`` cannot be created or written; creates nothing.

    Args:
        directory: where a command will write (it may not exist yet).
        fix: the advice appended to the message, e.g. "choose another --run-dir".
    """
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OdetError(f"cannot create {directory}: {existing} is a file, not a directory; {fix}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OdetError(f"{existing} is not writable, so {directory} cannot be written; {fix}")
