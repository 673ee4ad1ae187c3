"""The `leukedge` command. Each subcommand lives in its own module and registers itself here.

Command modules import only Typer and the standard library at import time; TensorFlow,
tf2onnx and onnx are imported inside the commands that need them, so `leukedge --help`,
`leukedge info` and `leukedge infer` start fast and work on a runtime-only install.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from . import (adapt, bench, compare, crossval, doctor, ensemble, ensemble_folds, evaluate_folds,
               export, infer, info, models, quantize, review, serve, train, validate, watch)

app = typer.Typer(
    name="leukedge",
    help="Leukemia-subtype blood-smear classifiers: train (Keras), export and quantize (one-file "
         "ONNX models that take raw pixels), and infer on the microscope PC (ONNX Runtime, no "
         "TensorFlow).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        from leukedge.runtime.contract import leukedge_version

        typer.echo(f"leukedge {leukedge_version()}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option(
        "--version", callback=_version, is_eager=True, help="Show the version and exit.")] = None,
) -> None:
    """Leukemia-subtype blood-smear classifiers (see `leukedge COMMAND --help`)."""


for _module in (infer, watch, serve, validate, adapt, doctor, info, models, train, crossval,
                evaluate_folds, ensemble_folds, export, quantize, ensemble, compare, bench, review):
    _module.register(app)


def main() -> None:  # pragma: no cover - console-script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
