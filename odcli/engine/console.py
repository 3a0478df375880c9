"""What a training run says, on the screen and in the run directory's ``train.log``.

Every line the trainer prints also goes to ``<run dir>/train.log`` (plain text, no colours), so a run
whose stdout went away (``odet train … | head``, a closed terminal, ``tee`` killed by Ctrl-C) still
leaves its whole report beside its checkpoints. The screen side never raises
(:mod:`odcli.runtime.console`): losing the screen never ends the run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from rich.console import Console

from odcli.runtime.console import make_console

LOG_FILE = "train.log"


class TrainConsole:
    """The trainer's output: ``screen`` (a rich console; progress bars go there) plus ``train.log``.

    Lines printed before :meth:`open_log` (while the trainer is being built) are kept and written to
    the log when it opens. Only the main process prints (``enabled``).

    Args:
        screen: where the live view goes (default: a stdout console that never raises).
        enabled: False on the other ranks of a distributed run: nothing is printed or logged.
    """

    def __init__(self, screen: Console | None = None, *, enabled: bool = True) -> None:
        self.screen = screen or make_console()
        self.errors = make_console(stderr=True)
        self.enabled = enabled
        self._file: IO[str] | None = None
        self._log: Console | None = None
        self._pending: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def open_log(self, run_dir: Path) -> None:
        """Start appending to ``run_dir/train.log`` (a resumed run continues the same file)."""
        if not self.enabled or self._file is not None:
            return
        self._file = open(run_dir / LOG_FILE, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._log = Console(
            file=self._file, width=120, no_color=True, highlight=False, emoji=False, soft_wrap=True
        )
        for objects, kwargs in self._pending:
            self._log.print(*objects, **kwargs)
        self._pending.clear()
        self._file.flush()

    def _to_log(self, objects: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self._log is None:
            self._pending.append((objects, kwargs))
            return
        try:
            self._log.print(*objects, **kwargs)
            self._file.flush()  # type: ignore[union-attr]
        except OSError:  # a full disk must not end the run either; the checkpoints say what matters
            pass

    def print(self, *objects: Any, **kwargs: Any) -> None:
        """Print on the screen and in the log."""
        if not self.enabled:
            return
        self.screen.print(*objects, **kwargs)
        self._to_log(objects, kwargs)

    def render(self, draw: Callable[[Console], None]) -> None:
        """Let ``draw(console)`` print on the screen and then in the log (tables sized to each)."""
        if not self.enabled:
            return
        draw(self.screen)
        if self._log is not None:
            try:
                draw(self._log)
                self._file.flush()  # type: ignore[union-attr]
            except OSError:
                pass

    def log_line(self, text: str) -> None:
        """A progress line: always in the log; on the screen only when it has no live progress bar
        (pipes, CI), where the bar cannot redraw itself."""
        if not self.enabled:
            return
        if not self.screen.is_terminal:
            self.screen.print(text, soft_wrap=True, markup=False, highlight=False)
        self._to_log((text,), {"markup": False})

    def warn(self, text: str) -> None:
        """A message for stderr (and the log): stop requests and what to run next."""
        if not self.enabled:
            return
        self.errors.print(text, soft_wrap=True, markup=False, highlight=False)
        self._to_log((text,), {"markup": False})

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            self._log = None
