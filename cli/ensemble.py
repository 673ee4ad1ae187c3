"""`leukedge ensemble`: exported models -> one file that averages them (export/ensemble.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import EXIT_OK, need, reported
from .options import parse_weights

PARITY_IMAGES = 16


def ensemble_command(
    members: Annotated[list[Path], typer.Argument(
        show_default=False, metavar="MODEL...",
        help="Two or more exported models (.onnx); the first one's input checks and stain "
             "mask are kept, so put the CNN first.")],
    out: Annotated[Path, typer.Option(
        "--out", "-o", show_default=False, help="Output .onnx.")],
    weights: Annotated[Optional[str], typer.Option(
        show_default=False, help="One weight per member, e.g. 2,1,1 (default: equal).")] = None,
    calibration: Annotated[Optional[Path], typer.Option(
        show_default=False, help="calibration.json of a cross-validation of this ensemble "
                                 "(leukedge crossval-ensemble --out): its review "
                                 "threshold and metrics go into the contract.")] = None,
    images: Annotated[Optional[Path], typer.Option(
        show_default=False, help="Images to check the joined file against the members run one "
                                 "by one (default: the bundled samples).")] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an existing output file.")] = False,
) -> None:
    """Join exported models into one ONNX file whose probabilities are their weighted mean.

    Each member keeps its own preprocessing, so a 224 px CNN and 128 px feature models can be
    joined. The file is checked against the members before it is written.
    """
    need("onnx", "train", "Joining models")
    from leukedge.export.ensemble import make_ensemble
    from leukedge.runtime.decode import load_image
    from leukedge.runtime.files import list_images
    from leukedge.runtime.models import SAMPLES_DIR

    with reported(ValueError, OSError):
        parsed = parse_weights(weights)
        cv = None
        if calibration is not None:
            from leukedge.export.cv_calibration import read_cv_calibration

            cv = read_cv_calibration(calibration)
        folder = images or SAMPLES_DIR
        files = list_images([folder], recursive=True)[:PARITY_IMAGES] if folder.exists() else []
        if images is not None and not files:
            raise ValueError(f"--images {images}: no images there")
        result = make_ensemble(members, out, weights=parsed, calibration=cv,
                               parity_images=[load_image(f) for f in files],
                               overwrite=overwrite)
    c = result.contract
    typer.echo(f"Wrote {result.path} ({result.size_bytes / 1e6:.1f} MB, {c.precision})")
    for m in c.model_info["members"]:
        typer.echo(f"  {m['weight']:.3f} x {m['file']} ({m['backbone']}, {m['precision']}, "
                   f"{m['input_size'][0]}x{m['input_size'][1]})")
    typer.echo("Parity: " + (result.parity.describe() if result.parity
                             else "not checked (no images)"))
    typer.echo(f"Review: confidence < {c.review_below:g}; metrics: "
               + (c.provenance.get("metrics_source") or "none"))
    raise typer.Exit(EXIT_OK)


def register(app: typer.Typer) -> None:
    """Adds `leukedge ensemble` to the app."""
    app.command("ensemble", short_help="Exported models -> one file averaging them.")(
        ensemble_command)
