"""`leukedge export`: a training run (or a .keras file) -> a checked ONNX model with its contract.

TensorFlow, Keras and tf2onnx are imported only when the command runs.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Optional

import typer

from .errors import fail

TRAIN_HINT = "Exporting needs TensorFlow and tf2onnx: pip install 'leukedge[train]'"



def resolve_source(source: Path) -> tuple[Path, Optional[dict], Optional[Path]]:
    """RUN_DIR or MODEL.keras -> (keras path, run.json dict or None, split.json or None)."""
    keras_path = source / "model.keras" if source.is_dir() else source
    if not keras_path.is_file() or keras_path.suffix != ".keras":
        raise ValueError(f"{source}: expected a run folder holding model.keras, or a .keras file")
    run_file, split_file = keras_path.parent / "run.json", keras_path.parent / "split.json"
    run = None
    if run_file.is_file():
        try:
            run = json.loads(run_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{run_file} is not valid JSON: {e}") from e
    return keras_path, run, split_file if split_file.is_file() else None


def parity_sources(run: Optional[dict], split_file: Optional[Path], data: Optional[Path],
                   images: Optional[list[Path]], count: int) -> tuple[list, str]:
    """Images for the parity check: --images, else the run's test split, else none (synthetic)."""
    from leukedge.export.calibration import select_evenly
    from leukedge.export.evaluation import load_labelled
    from leukedge.runtime.preprocess import list_images

    if images:
        found = list_images(images, recursive=True)
        if not found:
            raise ValueError(f"no image found in {[str(i) for i in images]}")
        return select_evenly(found, count or None), "given images"
    data_dir = data or (Path(run["data"]["dir"]) if run and run.get("data", {}).get("dir") else None)
    if count and split_file is not None and data_dir is not None and Path(data_dir).is_dir():
        classes = (run or {}).get("classes") or ("Benign", "Early", "Pre", "Pro")
        test = load_labelled(data_dir, classes, split_file, "test", limit=count)
        return list(test.paths), f"test split ({len(test)} images)"
    return [], "synthetic"


def register(app: typer.Typer) -> None:
    """Adds `leukedge export` to the app."""

    @app.command("export")
    def export_cmd(
        source: Path = typer.Argument(..., help="A training run folder (model.keras, run.json, "
                                      "split.json) or a .keras file."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output .onnx (default: "
                                           "model.onnx beside the .keras file)."),
        opset: int = typer.Option(17, "--opset", help="ONNX opset: 17 or 18 (20 fails in tf2onnx 1.17)."),
        parity_count: int = typer.Option(16, "--parity-images", help="Test-split images for the "
                                         "Keras/ONNX parity check; 0 = 8 synthetic images."),
        data: Optional[Path] = typer.Option(None, "--data", help="Dataset folder holding the "
                                            "split's images (default: run.json's data.dir)."),
        images: Optional[list[Path]] = typer.Option(None, "--images", help="Use these images "
                                                    "(files or folders) for parity instead."),
        tolerance: float = typer.Option(1e-4, "--tolerance", help="Max |probability difference| "
                                        "against Keras."),
        review_below: float = typer.Option(0.0, "--review-below", min=0.0, max=1.0,
                                           help="Recommended confidence under which `leukedge "
                                                "infer` flags a prediction for review (stored in "
                                                "the contract)."),
    ) -> None:
        """Export a Keras hybrid to a checked ONNX model with its contract.

        Embeds the contract, runs onnx.checker, loads the result in ONNX Runtime and checks parity
        against Keras on real test images (max |dp| <= 1e-4, same top-1) before writing atomically.
        Refuses, before converting, a model whose conversion would not fit in memory.
        """
        try:
            keras_path, run, split_file = resolve_source(source)
            sources, where = parity_sources(run, split_file, data, images, parity_count)
        except ValueError as e:
            fail(str(e), 2)
        if review_below:
            if run is None:
                fail("--review-below needs the run folder's run.json beside the model", 2)
            run = {**run, "review_below": review_below}
        if not (importlib.util.find_spec("tensorflow") and importlib.util.find_spec("tf2onnx")):
            fail(TRAIN_HINT, 2)
        _run_export(keras_path, run, out or keras_path.with_suffix(".onnx"), sources, where,
                    opset, tolerance)


def _run_export(keras_path: Path, run, out: Path, sources, where: str, opset: int,
                tolerance: float) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from leukedge.export import ExportError, export_keras
    from leukedge.train import load_model

    if run is None:
        typer.echo(f"Warning: no run.json beside {keras_path}: default classes and "
                   "preprocessing, no provenance or metrics in the contract.", err=True)
    try:
        model = load_model(keras_path)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the no-run.json warning, said above
            result = export_keras(model, out, run, parity_images=sources, parity_source=where,
                                  opset=opset, tolerance=tolerance)
    except (ExportError, ValueError) as e:
        fail(str(e), 1)
    c = result.contract
    typer.echo(f"Wrote {result.path} ({result.size_bytes / 1e6:.1f} MB, opset {opset}, "
               f"{result.n_parameters / 1e6:.2f} M parameters, {result.seconds:.1f} s)")
    typer.echo(f"Contract: classes {list(c.classes)}, inputs {[i.name for i in c.inputs]}, "
               f"output {c.output_name!r}, input size {list(c.preprocessing.input_size)}")
    typer.echo(f"Parity vs Keras: {result.parity.describe()}")
    data_dir = (run or {}).get("data", {}).get("dir")
    split = keras_path.parent / "split.json"
    gate = (f" --data {data_dir} --split-manifest {split}" if data_dir and split.is_file()
            else " --calib CALIB_DIR --data LABELLED_DIR")
    typer.echo(f"Next: leukedge quantize {result.path}{gate}")
