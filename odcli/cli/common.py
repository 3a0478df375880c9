"""What every subcommand shares: the console and turning user errors into one line + exit code."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console

from odcli.errors import OdetError

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` on one line to stderr and exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True, markup=True, emoji=False)
    raise typer.Exit(code)


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


def user_errors(func: F) -> F:
    """Decorator: :class:`OdetError` (and a few OS errors users cause) → one line, exit ≠ 0.

    Programming errors still raise with a traceback: hiding those would hide our bugs.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except OdetError as exc:
            fail(str(exc).replace("\n", " "), exc.exit_code)
        except PermissionError as exc:
            fail(f"permission denied: {exc.filename} (choose a writable location)")
        except KeyboardInterrupt:
            err_console.print("interrupted")
            sys.exit(130)

    return wrapper  # type: ignore[return-value]
