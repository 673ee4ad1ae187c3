"""The `leukedge` command. Each subcommand lives in its own module and registers itself here.

Command modules import only Typer and the standard library at import time; TensorFlow,
tf2onnx and onnx are imported inside the commands that need them, so `leukedge --help`,
`leukedge info` and `leukedge infer` start fast and work on a runtime-only install.
"""

from __future__ import annotations

import typer

from . import bench, compare, export, infer, info, quantize, train

app = typer.Typer(
    name="leukedge",
    help="Leukemia-subtype blood-smear classifiers: train (Keras), export/quantize (ONNX), "
         "and infer on the microscope PC (ONNX Runtime, no TensorFlow).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _module in (infer, info, train, export, quantize, compare, bench):
    _module.register(app)


def main() -> None:  # pragma: no cover - console-script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
