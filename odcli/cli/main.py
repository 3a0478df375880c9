"""``odet``: the Typer application that dispatches to one module per subcommand."""

from __future__ import annotations

import typer

from odcli.cli import assign, convert, evaluate, infer, profile, train, visualize_data

app = typer.Typer(
    name="odet",
    help="Train, evaluate, run and convert dense one-stage detectors (RTMDet, RetinaNet, PP-YOLOE).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("train")(train.train)
app.command("eval")(evaluate.evaluate)
app.command("infer")(infer.infer)
app.command("convert-weights")(convert.convert_weights)
app.command("profile")(profile.profile)
app.command("visualize-assign")(assign.visualize_assign)
app.command("visualize-data")(visualize_data.visualize_data)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
