"""`leukedge compare`: several models side by side on labelled images (metrics, agreement, speed)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Optional

import typer

from .errors import fail

FORMATS = ("table", "markdown", "json", "csv")



def default_models() -> list[Path]:
    """The bundled default model's variants that this installation ships (fp32 first)."""
    from leukedge.runtime.models import ModelNotFoundError, default_model_path

    found = []
    for precision in ("fp32", "fp16", "int8"):
        try:
            found.append(default_model_path(precision))
        except ModelNotFoundError:
            pass
    if not found:
        raise ValueError("no MODEL given and this installation bundles no default model; "
                         "pass the .onnx files to compare")
    return found


def keras_reference(path: Path):
    """(predict callable, size in bytes) of a .keras model, loaded through leukedge.train."""
    if not importlib.util.find_spec("tensorflow"):
        fail("--keras needs TensorFlow: pip install 'leukedge[train]'", 2)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from leukedge.export import keras_predictor
    from leukedge.train import load_model

    return keras_predictor(load_model(path)), path.stat().st_size


def register(app: typer.Typer) -> None:
    """Adds `leukedge compare` to the app."""

    @app.command("compare")
    def compare_cmd(
        models: Optional[list[Path]] = typer.Argument(None, help="ONNX models; the first is the "
                                                      "reference. None: the bundled default's variants."),
        data: Path = typer.Option(..., "--data", help="Labelled folder (<class>/*.jpg or the ALL layout)."),
        split_manifest: Optional[Path] = typer.Option(None, "--split-manifest",
                                                      help="Use only its test split."),
        keras: Optional[Path] = typer.Option(None, "--keras", help="Add the Keras model as the "
                                             "reference row (needs leukedge[train])."),
        fmt: str = typer.Option("table", "--format", "-f", help="table, markdown, json or csv."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="A folder (report.md, "
                                           "comparison.json/.csv, confusion PNGs) or one file."),
        provider: str = typer.Option("auto", "--provider", help="auto, cuda or cpu."),
        threads: Optional[int] = typer.Option(None, "--threads", help="ONNX Runtime intra-op threads."),
        iterations: int = typer.Option(20, "--iterations", help="Timed runs for latency."),
        limit: Optional[int] = typer.Option(None, "--limit", help="At most N images, spread evenly."),
    ) -> None:
        """Compare models side by side on labelled images (metrics, agreement, speed).

        One row per model: accuracy, misclassification cost, cost-sensitive accuracy, macro and
        weighted F1, top-1 agreement and probability differences with the first model, size,
        precision, provider, latency p50/p95 (batch 1) and throughput (batch 8).
        """
        if fmt not in FORMATS:
            fail(f"Unknown format {fmt!r}. Valid: {', '.join(FORMATS)}", 2)
        _run(models, data, split_manifest, keras, fmt, out, provider, threads, iterations, limit)


def _run(models, data, split_manifest, keras, fmt, out, provider, threads, iterations, limit) -> None:
    from leukedge.export import compare_models, load_labelled, render, write_report
    from leukedge.runtime.contract import ContractError, read_contract
    from leukedge.runtime.session import RuntimeSetupError

    try:
        paths = list(models) if models else default_models()
        classes = read_contract(paths[0]).classes
        labelled = load_labelled(data, classes, split_manifest, "test", limit=limit)
    except (ContractError, ValueError) as e:
        fail(str(e), 2)
    predict, size = keras_reference(keras) if keras else (None, None)
    try:
        comparison = compare_models(paths, labelled, keras_predict=predict,
                                    keras_name=keras.name if keras else "keras",
                                    keras_size_bytes=size, provider=provider, threads=threads,
                                    iterations=iterations)
    except (ContractError, RuntimeSetupError, ValueError, FileNotFoundError) as e:
        fail(str(e), 1)
    if out is None:
        typer.echo(render(comparison, fmt))
        return
    for path in write_report(comparison, out, fmt):
        typer.echo(f"Wrote {path}")
