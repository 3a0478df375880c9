"""What every subcommand shares: the console and turning user errors into one line + exit code."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.markup import escape

from odcli.errors import OdetError
from odcli.runtime.console import make_console
from odcli.runtime.paths import check_output_location, ensure_output_dir

__all__ = [
    "check_output_location",
    "console",
    "ensure_output_dir",
    "err_console",
    "fail",
    "user_errors",
    "warn",
]

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
