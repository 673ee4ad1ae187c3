"""`leukedge export`: a training run -> the checked one-file ONNX model with its contract.

TensorFlow, Keras and tf2onnx are imported only when the command runs. The model's input checks
are set on the run's training images and its parity is checked on its test images, so the
dataset folder must be reachable (run.json records it; --data points elsewhere).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import EXIT_OK, need, reported

HELD_OUT_CHECKS_WARN = 0.05  # the bundled models' checks flag 0.2% of real smears


def export_command(
    source: Annotated[Path, typer.Argument(
        show_default=False, help="A training run folder (model.keras, run.json, split.json).")],
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", show_default=False,
        help="Output .onnx (default: model.onnx in the run folder).")] = None,
    data: Annotated[Optional[Path], typer.Option(
        show_default=False, help="Dataset folder of the run (default: run.json's).")] = None,
    parity_images: Annotated[int, typer.Option(
        min=1, help="Test images for the Keras/ONNX parity check.")] = 32,
    tolerance: Annotated[float, typer.Option(
        min=0.0, help="Max |probability difference| against Keras.")] = 1e-4,
    review_below: Annotated[Optional[float], typer.Option(
        min=0.0, max=1.0, show_default=False,
        help="Review threshold to store in the contract (default: the one training "
             "calibrated on the validation split).")] = None,
    input_checks: Annotated[bool, typer.Option(
        "--input-checks/--no-input-checks",
        help="Set the blank / no-stain / unlike-training checks on the training images.")
    ] = True,
    calibration: Annotated[Optional[Path], typer.Option(
        show_default=False, help="calibration.json of a cross-validation of the same recipe "
                                 "(leukedge crossval-eval): its temperature, review threshold "
                                 "and metrics go into the contract.")] = None,
    triton: Annotated[Optional[Path], typer.Option(
        show_default=False, help="Also write a Triton model repository here.")] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an existing output file.")] = False,
) -> None:
    """Export a trained classifier to one ONNX file that takes raw RGB pixels.

    The file holds the preprocessing (resize, normalisation, stain mask), the network, the
    calibrated softmax and the input checks; its contract describes them. It is checked
    (onnx.checker, ONNX Runtime, parity with Keras on real test images) before it is written.
    """
    from leukedge.modelkit.run_folder import RunFolder

    with reported(ValueError):
        run = RunFolder.of(source)
    need("onnx", "train", "Exporting")
    from leukedge.export.run_export import ExportRequest, export_run

    request = ExportRequest(out, data, parity_images, tolerance, review_below, input_checks,
                            calibration, overwrite)
    with reported(ValueError):
        request.check(run)
    if run.classical:  # the SVM and XGBoost rows: no TensorFlow
        from leukedge.train.classical import load_network

        load = load_network
    else:
        need("tensorflow", "train", "Exporting")
        need("tf2onnx", "train", "Exporting")
        from .native_logs import quiet_tensorflow

        quiet_tensorflow()
        from leukedge.train import load_model as load
    with reported(ValueError):
        result, record, flags = export_run(run, load(run.model_file), request)
    _print_summary(result, record, run, flags)
    if triton is not None:
        from leukedge.export.triton import write_triton_repository

        with reported(ValueError, OSError):
            folder = write_triton_repository(result.path, triton)
        typer.echo(f"Triton model repository: {folder}")
    raise typer.Exit(EXIT_OK)


def _print_summary(result, record, run, flags: dict) -> None:
    c = result.contract
    typer.echo(f"Wrote {result.path} ({result.size_bytes / 1e6:.1f} MB, "
               f"{result.n_parameters / 1e6:.2f} M parameters, {result.seconds:.1f} s)")
    typer.echo(f"Input: uint8 RGB of any size, resized in the model to "
               f"{c.preprocessing.input_size[0]}x{c.preprocessing.input_size[1]}; outputs: "
               f"{', '.join(c.outputs)}")
    typer.echo(f"Parity vs the source model: {result.parity.describe()}")
    s = c.input_checks
    typer.echo(f"Review: confidence < {c.review_below:g}; input checks: contrast >= "
               f"{s.min_contrast:g}, stain coverage >= {s.min_stain_coverage:g}, ood score <= "
               f"{s.max_ood_score if s.max_ood_score is not None else '-'}")
    not_set = (c.provenance.get("input_checks_fit") or {}).get("ood_not_set")
    if not_set:
        typer.echo(f"Note: {not_set}.", err=True)
    n, by_checks = flags["images"], flags["flagged_by_input_checks"]
    typer.echo(f"Held-out images flagged for review: {flags['flagged']} of {n}, "
               f"{by_checks} by the input checks")
    if n and by_checks / n > HELD_OUT_CHECKS_WARN:
        typer.echo(f"Warning: the input checks flag {by_checks} of {n} held-out images of this "
                   "run's own data: in use they would flag most images. Train on more images "
                   "(docs/models.md, \"Input checks\").", err=True)
    if run.classical:
        typer.echo(f"Quantization does not apply to {record.backbone} models: deploy this file.")
        return
    data_dir = record.data.get("dir", "DATA_DIR")
    typer.echo(f"Next: leukedge quantize {result.path} --data {data_dir} "
               f"--split-manifest {run.split}")


def register(app: typer.Typer) -> None:
    """Adds `leukedge export` to the app."""
    app.command("export", short_help="Run folder -> one-file ONNX model.")(export_command)

