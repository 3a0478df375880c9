"""How ``--help`` names the values of options and arguments: as people read them.

Typer ≥ 0.2x prints a Python-ish type for every parameter (``--resume <bool>``, ``--set <list[str]>``,
``{recipe}``). A flag takes no value, and a repeatable option takes one value per use, so this module
shows ``--resume`` alone, ``--set KEY=VALUE`` (the option's ``metavar``) or ``--gpus INTEGER``, and
``RECIPE`` in the usage line, the way click (and most command-line tools) write them.

Typer has no public hook for this; :func:`install` replaces two of its display methods and leaves
them alone when a Typer version does not have them (help then looks as Typer prints it).
"""

from __future__ import annotations

from typing import Any

# Typer's type labels → the words click uses.
_WORDS = {"int": "INTEGER", "float": "FLOAT", "str": "TEXT", "path": "PATH", "bool": "BOOLEAN"}


def _value_name(param: Any, label: str | None) -> str | None:
    """The value placeholder of one parameter, or None for a flag (it takes no value)."""
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return None
    if getattr(param, "param_type_name", "") == "option" and param.metavar:
        return str(param.metavar)
    if label is None:
        return None
    inner = label.strip("<>")
    if inner.startswith("list[") and inner.endswith("]"):
        inner = inner[len("list[") : -1]  # one value per use of a repeatable option
    return _WORDS.get(inner, inner.upper())


def install() -> None:
    """Make Typer's help show flags without a type and values as upper-case words (idempotent)."""
    try:
        from typer import core
    except ImportError:  # pragma: no cover - typer is a dependency
        return
    for cls in (getattr(core, "TyperOption", None), getattr(core, "TyperArgument", None)):
        original = getattr(cls, "display_type_rich", None)
        if original is None or getattr(original, "_odet", False):
            continue

        def display_type_rich(self: Any, ctx: Any, _original: Any = original) -> str | None:
            return _value_name(self, _original(self, ctx))

        display_type_rich._odet = True  # type: ignore[attr-defined]
        cls.display_type_rich = display_type_rich  # type: ignore[union-attr]

    argument = getattr(core, "TyperArgument", None)
    usage = getattr(argument, "_usage_display_name", None)
    if usage is not None and not getattr(usage, "_odet", False):

        def usage_name(self: Any) -> str:
            name = str(self.metavar or self.name).upper()
            name = name if self.required else f"[{name}]"
            return name + ("..." if self.nargs != 1 else "")

        usage_name._odet = True  # type: ignore[attr-defined]
        argument._usage_display_name = usage_name  # type: ignore[union-attr]
