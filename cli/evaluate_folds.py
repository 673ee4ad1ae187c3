"""`leukedge crossval-eval`: a cross-validation's folds evaluated as the product runs them.

Parses the options and calls :func:`leukedge.export.fold_evaluation.evaluate_crossval` with
:func:`leukedge.train.crossval.load_fold` as the loader of the folds' models; TensorFlow is
imported only when a Keras fold is evaluated.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from .errors import EXIT_OK, fail, need, reported

HELP = """Evaluate the folds of `leukedge crossval` as the product runs them: each fold
exported to ONNX (FP32; a CNN also to INT8, full range and for AVX2), scored on its held-out
images clean, under colour jitter and with test-time augmentation, and its input checks
tried on images that are not smears.

Writes CV_DIR/fold<k>/eval.json (a rerun skips the folds that have one), then
CV_DIR/summary.json, summary.md (mean +- sd over folds) and calibration.json: the
temperature and review threshold fitted on the out-of-fold predictions, for
`leukedge export --calibration` of the final model of the same recipe."""


def evaluate_folds_command(
    cv_dir: Annotated[Path, typer.Argument(
        show_default=False, metavar="CV_DIR",
        help="A cross-validation folder (OUT/<recipe> of leukedge crossval).")],
    data: Annotated[Path, typer.Option(
        "--data", show_default=False,
        help="The labelled images the folds were trained on: DIR/<class>/*.jpg or the "
             "ALL layout.")],
) -> None:
    """Evaluate a cross-validation's folds (see HELP)."""
    if not cv_dir.is_dir():
        fail(f"CV_DIR {cv_dir}: not a folder")
    if not data.is_dir():
        fail(f"--data {data}: not a folder")
    need("onnx", "train", "Evaluating the folds")
    from leukedge.export.fold_evaluation import evaluate_crossval
    from leukedge.train.crossval import load_fold

    from .native_logs import quiet_tensorflow

    quiet_tensorflow()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    with reported(ValueError, OSError):
        result = evaluate_crossval(cv_dir, data, load_fold)
    typer.echo(result.markdown)
    pooled = result.summary["pooled_oof"]
    typer.echo(f"Temperature {pooled['temperature']:.3f}, review below "
               f"{pooled['review_threshold']['threshold']:.3f}; wrote "
               + ", ".join(str(f) for f in result.files))
    raise typer.Exit(EXIT_OK)


def register(app: typer.Typer) -> None:
    """Adds `leukedge crossval-eval` to the app."""
    app.command("crossval-eval", help=HELP,
                short_help="Evaluate the folds of a cross-validation (ONNX, INT8).")(
        evaluate_folds_command)
