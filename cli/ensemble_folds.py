"""`leukedge crossval-ensemble`: an ensemble of several recipes scored on their folds.

Parses the options and calls :func:`leukedge.export.ensemble_folds.score_ensemble`; needs
no TensorFlow and no ONNX Runtime (it reads the folds' eval.json files).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import EXIT_OK, fail, reported
from .options import parse_weights

HELP = """Score an ensemble of cross-validated recipes on their common folds: each
member's out-of-fold probabilities at its own calibration.json's temperature, averaged
per image with the weights, scored per fold (FP32, INT8, colour jitter).

Run `leukedge crossval-eval` on each member first. Writes OUT, the calibration.json that
`leukedge ensemble --calibration` puts into the joined file: its review threshold (on
the pooled out-of-fold means) and the metrics per precision."""


def ensemble_folds_command(
    cv_dirs: Annotated[list[Path], typer.Argument(
        show_default=False, metavar="CV_DIR...",
        help="Two or more evaluated cross-validation folders of the same folds, the CNN "
             "first.")],
    out: Annotated[Path, typer.Option(
        "--out", "-o", show_default=False, help="Where the ensemble's calibration.json goes.")],
    weights: Annotated[Optional[str], typer.Option(
        show_default=False, help="One weight per member, e.g. 2,1 (default: equal).")] = None,
    json_out: Annotated[Optional[Path], typer.Option(
        "--json", show_default=False,
        help="Also write the whole result (rows per fold, confusion matrices) here.")] = None,
) -> None:
    """Score an ensemble of cross-validated recipes (see HELP)."""
    with reported(ValueError):
        parsed = parse_weights(weights)
    if len(cv_dirs) < 2:
        fail(f"CV_DIR: an ensemble needs two or more members, got {len(cv_dirs)}")
    for d in cv_dirs:
        if not d.is_dir():
            fail(f"CV_DIR {d}: not a folder")
    from leukedge.export.ensemble_folds import ensemble_calibration_file, score_ensemble
    from leukedge.runtime.files import atomic_write_text

    with reported(ValueError, OSError):
        result = score_ensemble(cv_dirs, parsed)
        if json_out is not None:
            atomic_write_text(json_out, json.dumps(result, indent=1) + "\n")
        atomic_write_text(out, json.dumps(ensemble_calibration_file(result), indent=1) + "\n")
    for name, row in result["rows"].items():
        acc = row["accuracy"]
        typer.echo(f"{name:12s} accuracy {acc['mean']:.2%} +- {acc['sd']:.2%}")
    typer.echo(f"Review below {result['review_threshold']['threshold']:.3f}; wrote {out}"
               + (f" and {json_out}" if json_out else ""))
    raise typer.Exit(EXIT_OK)


def register(app: typer.Typer) -> None:
    """Adds `leukedge crossval-ensemble` to the app."""
    app.command("crossval-ensemble", help=HELP,
                short_help="Score an ensemble of cross-validated recipes.")(
        ensemble_folds_command)
