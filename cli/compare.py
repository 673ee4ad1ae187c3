"""`leukedge compare`: several models side by side on labelled images (metrics, agreement, speed)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from .errors import EXIT_OK, need, reported
from .options import Provider, ProviderOption, ReportFormat

REPORT_FILES = ("report.md", "comparison.json", "comparison.csv")  # as write_report names them


def default_models() -> list[Path]:
    """Every bundled model (fp32 variants first, so the reference is a float model)."""
    from leukedge.runtime.models import bundled_models

    found = sorted(bundled_models().items(), key=lambda kv: (not kv[0].endswith("fp32"), kv[0]))
    if not found:
        raise ValueError("no MODEL given and this installation bundles no model; pass the "
                         ".onnx files to compare")
    return [p for _, p in found]


def keras_reference(path: Path):
    """(pixels -> probabilities, size) of a run's Keras model behind its preprocessing graph."""
    need("tensorflow", "train", "--keras")
    from .native_logs import quiet_tensorflow

    quiet_tensorflow()
    from leukedge.modelkit.confidence import softmax
    from leukedge.modelkit.graph.runner import PreprocessRunner, network_logits
    from leukedge.modelkit.run_folder import RunFolder
    from leukedge.train import load_model

    record = RunFolder.of(path).read_record()
    model, runner = load_model(path), PreprocessRunner(record.preprocessing)
    t = record.calibration.temperature

    def predict(pixels):
        return softmax(network_logits(model, list(pixels), runner), t)
    return predict, path.stat().st_size


def compare_command(
    models: Annotated[Optional[List[str]], typer.Argument(
        show_default=False, help="ONNX files or bundled model names; the first is the "
                                 "reference. Default: every bundled model.")] = None,
    data: Annotated[Path, typer.Option(
        help="Labelled folder (<class>/*.jpg or the ALL layout).", show_default=False)] = ...,
    split_manifest: Annotated[Optional[Path], typer.Option(
        show_default=False, help="Use only its test split.")] = None,
    keras: Annotated[Optional[Path], typer.Option(
        show_default=False, help="Add a run's model.keras as the reference row (needs "
                                 "leukedge[train] and run.json beside it).")] = None,
    fmt: Annotated[ReportFormat, typer.Option(
        "--format", "-f", help="table, markdown, json or csv.")] = ReportFormat.table,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", show_default=False, help="A folder (report.md, comparison.json/.csv, "
                                                "confusion PNGs) or one file.")] = None,
    provider: ProviderOption = Provider.auto,
    threads: Annotated[Optional[int], typer.Option(
        show_default=False, help="ONNX Runtime intra-op threads.")] = None,
    iterations: Annotated[int, typer.Option(min=1, help="Timed runs for latency.")] = 20,
    limit: Annotated[Optional[int], typer.Option(
        min=1, show_default=False, help="At most N images, spread evenly.")] = None,
) -> None:
    """Compare models side by side on labelled images (metrics, agreement, speed).

    One row per model: accuracy, misclassification cost, cost-sensitive accuracy, macro and
    weighted F1, top-1 agreement and probability differences with the first model, size,
    precision, provider, latency p50/p95 (batch 1) and throughput (batch 8). Times include the
    preprocessing inside each model.
    """
    from leukedge.runtime.contract import read_contract
    from leukedge.modelkit.evaluation.comparison import compare_models
    from leukedge.modelkit.evaluation.comparison_report import render, write_report
    from leukedge.modelkit.evaluation.labelled import load_labelled, run_split_of
    from leukedge.modelkit.splits import held_out_split
    from leukedge.runtime.models import resolve_model

    from .destination import refuse_inputs

    with reported(ValueError):
        paths = [resolve_model(m) for m in models] if models else default_models()
        protect = [*paths, *(p for p in (keras, split_manifest) if p is not None)]
        for target in _report_files(out):
            refuse_inputs(target, "--out", protect)
        contract = read_contract(paths[0])
        manifest = split_manifest or run_split_of(paths[0], contract)
        labelled = load_labelled(data, contract.classes, manifest, held_out_split(manifest),
                                 limit=limit)
    note = "" if manifest is not None else (
        " (the models may have been trained on some of them: pass --split-manifest with the "
        "run's split.json to score its held-out images only)")
    typer.echo(f"Scoring {len(labelled)} images: {labelled.source}{note}", err=True)
    predict, size = keras_reference(keras) if keras else (None, None)
    with reported(ValueError):
        comparison = compare_models(paths, labelled, keras_predict=predict,
                                    keras_name=keras.name if keras else "keras",
                                    keras_size_bytes=size, provider=provider.value,
                                    threads=threads, iterations=iterations)
    if out is None:
        typer.echo(render(comparison, fmt.value))
    else:
        with reported(OSError):
            written = write_report(comparison, out, fmt.value) if _have_matplotlib() \
                else _write_without_plots(comparison, out, fmt.value)
            for path in written:
                typer.echo(f"Wrote {path}")
    raise typer.Exit(EXIT_OK)


def _report_files(out: Optional[Path]) -> list[Path]:
    """The files ``--out`` names: itself, or the report files in the folder it names."""
    if out is None:
        return []
    if out.is_dir() or not out.suffix:
        return [out / n for n in REPORT_FILES]
    return [out]


def _have_matplotlib() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):
        return False


def _write_without_plots(comparison, out: Path, fmt: str) -> list[Path]:
    """The report of ``write_report`` without the confusion-matrix PNGs (they need matplotlib,
    which a ``[cpu]`` install lacks); says so on stderr."""
    from leukedge.modelkit.evaluation.comparison_report import (format_csv, format_json,
                                                               markdown_report, render)
    from leukedge.runtime.files import atomic_write_text

    folder_report = out.is_dir() or not out.suffix
    if folder_report or fmt == "markdown":
        typer.echo("Note: confusion-matrix plots not written: they need matplotlib "
                   "(pip install 'leukedge[train]' or pip install matplotlib)", err=True)
    if folder_report:
        texts = dict(zip(REPORT_FILES, (markdown_report(comparison), format_json(comparison),
                                        format_csv(comparison))))
        folder = out
    else:
        texts = {out.name: markdown_report(comparison) if fmt == "markdown"
                 else render(comparison, fmt)}
        folder = out.parent
    for name, text in texts.items():
        atomic_write_text(folder / name, text)
    return [folder / name for name in texts]


def register(app: typer.Typer) -> None:
    """Adds `leukedge compare` to the app."""
    app.command("compare", short_help="Models side by side on labelled images.")(compare_command)
