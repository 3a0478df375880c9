"""``odet``: the Typer application that dispatches to one module per subcommand.

Importing this module must stay cheap (``odet --help`` in well under a second): the subcommand
modules import torch, OpenCV and the models only inside the command functions.
"""

from __future__ import annotations

import typer

from odcli import __version__
from odcli.cli import (
    convert_weights,
    export,
    help_format,
    infer,
    plot,
    profile,
    train,
    visualize_assign,
    visualize_data,
)
from odcli.cli import eval as eval_command

help_format.install()

app = typer.Typer(
    name="odet",
    help="Train, evaluate, run and convert dense one-stage detectors (RTMDet, RetinaNet, PP-YOLOE).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"odet {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", "-V", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Train, evaluate, run and convert dense one-stage detectors (RTMDet, RetinaNet, PP-YOLOE)."""


app.command("train")(train.train)
app.command("eval")(eval_command.evaluate)
app.command("infer")(infer.infer)
app.command("convert-weights")(convert_weights.convert_weights)
app.command("export")(export.export)
app.command("profile")(profile.profile)
app.command("visualize-assign")(visualize_assign.visualize_assign)
app.command("visualize-data")(visualize_data.visualize_data)
app.command("plot")(plot.plot)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
