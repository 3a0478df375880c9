"""What every subcommand shares: the console and turning user errors into one line + exit code."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.markup import escape

from odcli.errors import OdetError
from odcli.runtime.console import make_console

# Writes never raise: a closed pipe (``odet … | head``) must not turn finished work into a traceback.
console = make_console()
err_console = make_console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` on one line to stderr and exit with ``code``."""
    # Escaped: messages quote user text and say things like "[x, y, width, height]", not markup.
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, markup=True, emoji=False)
    raise typer.Exit(code)


def warn(message: str) -> None:
    """Print ``warning: message`` on one line to stderr; the command goes on."""
    # Escaped like fail(): messages quote file names, which may contain "[...]".
    err_console.print(f"[bold yellow]warning:[/] {escape(message)}", soft_wrap=True, markup=True, emoji=False)


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


def user_errors(func: F) -> F:
    """Decorator: :class:`OdetError` (and a few OS errors users cause) → one line, exit ≠ 0.

    Programming errors still raise with a traceback: hiding those would hide our bugs.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except OdetError as exc:
            message = str(exc).replace("\n", " ")
            rank = os.environ.get("RANK", "0")
            if int(os.environ.get("WORLD_SIZE", "1")) > 1 and rank != "0":
                message = f"[rank {rank}] {message}"  # under torchrun: which process said it
            fail(message, exc.exit_code)
        except PermissionError as exc:
            fail(f"permission denied: {exc.filename} (choose a writable location)")
        except KeyboardInterrupt:
            err_console.print("interrupted")
            sys.exit(130)

    return wrapper  # type: ignore[return-value]
