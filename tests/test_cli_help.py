"""``odet --help`` is instant and readable: no torch import, ``--version``, ``-h``, values named as
people read them (flags without a type, ``TEXT``/``INTEGER``/``PATH``, ``RECIPE`` in the usage)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import odcli
from odcli.cli.main import app

COMMANDS = ["train", "eval", "infer", "convert-weights", "profile", "visualize-assign", "visualize-data"]


def test_the_cli_imports_without_torch() -> None:
    # A fresh interpreter: importing the CLI (what `odet --help` does) must not import the heavy stack.
    heavy = "('torch', 'cv2', 'numpy')"
    code = f"import sys, odcli.cli.main; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_version_and_short_help() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"odet {odcli.__version__}"
    short, long = CliRunner().invoke(app, ["-h"]), CliRunner().invoke(app, ["--help"])
    assert short.exit_code == long.exit_code == 0 and short.stdout == long.stdout
    assert all(name in short.stdout for name in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_names_values_as_people_read_them(command: str) -> None:
    result = CliRunner().invoke(app, [command, "-h"], terminal_width=200)
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert not re.search(r"<(bool|int|float|str|path|list\[[a-z]+\])>", text), text  # typer's type labels
    assert "{" not in text.split("\n", 3)[1]  # usage line: RECIPE, not {recipe}
    flag_lines = [line for line in text.splitlines() if "--help" in line]
    assert flag_lines and all("BOOLEAN" not in line for line in flag_lines)


def test_train_help_shows_flags_bare_and_values_named() -> None:
    text = CliRunner().invoke(app, ["train", "-h"], terminal_width=200).stdout
    assert "Usage: odet train [OPTIONS] RECIPE" in text
    resume = next(line for line in text.splitlines() if "--resume" in line)
    assert re.search(r"--resume\s+continue", resume), resume  # a flag: no value placeholder
    assert re.search(r"--gpus\s+INTEGER", text) and re.search(r"--run-dir\s+PATH", text)
