"""`leukedge adapt`: the model adapted to a site from a few labelled images.

Parses the options and calls :func:`leukedge.modelkit.adaptation.adapt.adapt_to_site`; prints
the parent and adapted model's held-out scores side by side. Needs ``onnx`` (the
``[adapt]`` extra) beside ``[cpu]``; no TensorFlow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import EXIT_OK, need, reported
from .options import ThreadsOption

HELP = """Adapt a model to your microscope from a few labelled images of your own.

DATA_DIR holds one folder per class (Benign/, Early/, Pre/, Pro/; at least 10
images each, 20 recommended). Adapt fits a small correction on the features the
model already computes, re-fits its temperature, review threshold (never lower
than the model's) and input-check limits (never tighter), and writes to RUN_DIR:
model.onnx, a one-file model like any other, with its INT8 files where the model
has them (model-int8.onnx, model-int8-avx2.onnx: for CPUs with and without VNNI;
`leukedge infer -m RUN_DIR` takes the one this CPU runs exactly), and
report.json / report.html: the model and the adapted one on your images held out
by k-fold, side by side (docs/adapt.md)."""


def summary_lines(result) -> list[str]:
    """The side-by-side summary printed at the end."""
    r = result.report
    p, a = r["parent"]["scores"], r["adapted"]["scores"]
    lines = [f"{r['site']['site_images']} site images, {r['folds']}-fold held out "
             f"({r['seconds']:.0f} s)", f"{'':<22}{'parent':>10}{'adapted':>10}"]
    for label, key in (("accuracy", "accuracy"), ("flagged", "flagged_rate")):
        lines.append(f"{label:<22}{p[key]:>10.4f}{a[key]:>10.4f}")
    for label, key in (("errors", "errors"), ("errors not flagged", "unflagged_errors")):
        lines.append(f"{label:<22}{p[key]:>10d}{a[key]:>10d}")
    review = r["fit"]["review_below"]
    lines.append(f"review threshold {review['kept']:g} (parent {review['parent']:g})")
    lines += [f"wrote {path}" for path in result.files.values()]
    return lines


def adapt_command(
    data_dir: Annotated[Path, typer.Argument(
        show_default=False, help="Your labelled images: DATA_DIR/<class>/...")],
    out: Annotated[Path, typer.Option(
        "--out", "-o", metavar="RUN_DIR", show_default=False,
        help="Folder to write model.onnx and the reports to (new, or --overwrite).")],
    parent: Annotated[Optional[str], typer.Option(
        "--from", metavar="MODEL", show_default=False,
        help="Bundled model name or ONNX file to adapt (default: the default model).")] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace the model and report files in an existing RUN_DIR.")
    ] = False,
    folds: Annotated[int, typer.Option(
        min=2, max=10, help="k of the k-fold fits and held-out report.")] = 5,
    threads: ThreadsOption = None,
) -> None:
    """Adapt a model to your microscope (see HELP)."""
    need("onnx", "adapt", "leukedge adapt")
    from leukedge.modelkit.adaptation.adapt import adapt_to_site

    with reported(ValueError):
        result = adapt_to_site(data_dir, out, parent, overwrite=overwrite, folds=folds,
                               threads=threads, progress=lambda m: typer.echo(m, err=True))
    typer.echo("\n".join(summary_lines(result)))
    raise typer.Exit(EXIT_OK)


def register(app: typer.Typer) -> None:
    """Adds `leukedge adapt` to the app."""
    app.command("adapt", help=HELP, short_help="Adapt a model to your microscope's images."
                )(adapt_command)
