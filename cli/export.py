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


def resolve_run(source: Path) -> tuple[Path, Path]:
    """RUN_DIR, RUN_DIR/model.keras or RUN_DIR/network.onnx (SVM, XGBoost) -> (model path,
    run.json path)."""
    model_path = source
    if source.is_dir():
        model_path = next((source / f for f in ("model.keras", "network.onnx")
                           if (source / f).is_file()), source / "model.keras")
    if not model_path.is_file() or model_path.name not in ("model.keras", "network.onnx"):
        raise ValueError(f"{source}: expected a run folder holding model.keras or network.onnx "
                         "(made by `leukedge train`), or that file")
    run_file = model_path.parent / "run.json"
    if not run_file.is_file():
        raise ValueError(f"{run_file} is missing: export needs the run record (the "
                         "preprocessing the model was trained behind, its classes and "
                         "calibration)")
    return model_path, run_file


def load_run_images(record, run_dir: Path, data: Optional[Path], parity_count: int):
    """(parity pixels, where, training pixels) from the run's split manifest."""
    from leukedge.modelkit.evaluation.labelled import load_labelled
    from leukedge.modelkit.splits import held_out_split

    data_dir = data or Path(record.data.get("dir", ""))
    split_file = run_dir / "split.json"
    if not data_dir.is_dir():
        raise ValueError(f"the run's dataset {str(data_dir)!r} is not here; pass --data DIR "
                         "(export checks parity on the test images and sets the input checks "
                         "on the training images)")
    if not split_file.is_file():
        raise ValueError(f"{split_file} is missing")
    split = held_out_split(split_file)
    held = load_labelled(data_dir, record.classes, split_file, split, limit=parity_count)
    train = load_labelled(data_dir, record.classes, split_file, "train")
    return held.decode(), f"{split} split ({len(held)} images)", train.decode()


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
                                 "(bench/crossval_eval.py): its temperature, review threshold "
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
    with reported(ValueError):
        from leukedge.modelkit.run_record import RunRecord

        model_path, run_file = resolve_run(source)
        record = RunRecord.read(run_file)
        extra = None
        if calibration is not None:
            from leukedge.export.cv_calibration import (apply_cv_calibration, cv_provenance,
                                                        read_cv_calibration)

            cv = read_cv_calibration(calibration)
            record, extra = apply_cv_calibration(record, cv), cv_provenance(cv)
        target = out or model_path.with_name("model.onnx")
        if target.exists() and not overwrite:
            raise ValueError(f"{target} exists; choose another --out or pass --overwrite")
        parity, where, train_pixels = load_run_images(record, model_path.parent, data,
                                                      parity_images)
    if model_path.name == "network.onnx":  # the SVM and XGBoost rows: no TensorFlow
        need("onnx", "train", "Exporting")
        from leukedge.export.onnx_export import export_classical
        from leukedge.train.classical import load_network

        with reported(ValueError):
            result = export_classical(load_network(model_path), target, record,
                                      parity_images=parity, parity_source=where,
                                      train_images=train_pixels if input_checks else (),
                                      review_below=review_below, tolerance=tolerance,
                                      extra_provenance=extra)
    else:
        need("tensorflow", "train", "Exporting")
        need("tf2onnx", "train", "Exporting")
        from .native_logs import quiet_tensorflow

        quiet_tensorflow()
        from leukedge.export.onnx_export import export_keras
        from leukedge.train import load_model

        with reported(ValueError):
            result = export_keras(load_model(model_path), target, record, parity_images=parity,
                                  parity_source=where,
                                  train_images=train_pixels if input_checks else (),
                                  review_below=review_below, tolerance=tolerance,
                                  extra_provenance=extra)
    _print_summary(result, record, model_path.parent)
    if triton is not None:
        from leukedge.export.triton import write_triton_repository

        with reported(ValueError, OSError):
            folder = write_triton_repository(result.path, triton)
        typer.echo(f"Triton model repository: {folder}")
    raise typer.Exit(EXIT_OK)


def _print_summary(result, record, run_dir: Path) -> None:
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
    if record.backbone in ("svm", "xgboost"):
        typer.echo(f"Quantization does not apply to {record.backbone} models: deploy this file.")
        return
    data_dir = record.data.get("dir", "DATA_DIR")
    typer.echo(f"Next: leukedge quantize {result.path} --data {data_dir} "
               f"--split-manifest {run_dir / 'split.json'}")


def register(app: typer.Typer) -> None:
    """Adds `leukedge export` to the app."""
    app.command("export", short_help="Run folder -> one-file ONNX model.")(export_command)

