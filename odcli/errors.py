"""User-facing errors: one line that names the problem and the fix.

Every failure a user can cause (bad path, bad recipe key, wrong checkpoint, corrupt image) is raised
as :class:`OdetError`; the CLI prints its message on one line and exits with a non-zero status
instead of showing a traceback.
"""

from __future__ import annotations


class OdetError(Exception):
    """An error caused by the user's input, with a message fit to print as-is."""

    exit_code: int = 2
