"""`leukedge quantize`: FP32 ONNX -> INT8 (static QDQ / dynamic) or FP16, behind an accuracy gate."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional

import typer

from .errors import fail

HINT = "Quantization needs onnx: pip install 'leukedge[train]' (or `pip install onnx`)"
SUFFIX = {"static": "int8", "dynamic": "int8-dynamic", "fp16": "fp16"}



def calibration_paths(method: str, calib: Optional[Path], calib_size: int, data: Optional[Path],
                      split_manifest: Optional[Path], classes) -> tuple[list[Path], str]:
    """--calib DIR, else the manifest's train split under --data (never the test split)."""
    from leukedge.export.calibration import calibration_files
    from leukedge.export.evaluation import load_labelled

    if method != "static":
        return [], "-"
    if calib is not None:
        return calibration_files(calib, calib_size), str(calib)
    if data is not None and split_manifest is not None:
        train = load_labelled(data, classes, split_manifest, "train", limit=calib_size)
        return list(train.paths), train.source
    raise ValueError("--method static needs calibration images: --calib DIR, or --data with "
                     "--split-manifest (the manifest's train split is used)")


def _print_offenders(error) -> None:
    if not error.offenders:
        return
    typer.echo("\nPer-activation sensitivity (worst first; SQNR in dB, higher is better):", err=True)
    typer.echo(f"  {'worst ch':>8} {'tensor':>8} {'accum':>8}  node (op) -> consumers", err=True)
    for o in error.offenders:
        typer.echo(f"  {o.worst_channel_sqnr_db:8.1f} {o.local_sqnr_db:8.1f} "
                   f"{o.accumulated_sqnr_db:8.1f}  {o.producer} ({o.op_type}) -> "
                   f"{', '.join(o.consumers) or '-'}", err=True)


def _summary(result, method: str) -> None:
    c = result.contract
    typer.echo(f"Wrote {result.path} ({c.precision}, {result.size_bytes / 1e6:.2f} MB vs "
               f"{result.parent_size_bytes / 1e6:.2f} MB FP32, {result.seconds:.1f} s)")
    typer.echo(f"Agreement with FP32: {result.agreement.describe()}")
    if result.gate is not None:
        g = result.gate
        typer.echo(f"Gate passed on {g.reference['n']} images ({g.source}): accuracy "
                   f"{g.reference['accuracy']:.2%} -> {g.candidate['accuracy']:.2%}, cost/sample "
                   f"{g.reference['cost_per_sample']:.3f} -> {g.candidate['cost_per_sample']:.3f}")
    else:
        typer.echo("No accuracy gate (give --data LABELLED_DIR to measure accuracy before writing).")
    for note in result.notes:
        typer.echo(f"Note: {note}")
    if method == "dynamic":
        typer.echo("Note: dynamic INT8 measured 4x SLOWER than FP32 for these convnets; "
                   "prefer --method static.")


def register(app: typer.Typer) -> None:
    """Adds `leukedge quantize` to the app."""

    @app.command("quantize")
    def quantize_cmd(
        model: Path = typer.Argument(..., help="FP32 leukedge ONNX model (from `leukedge export`)."),
        method: str = typer.Option("static", "--method", "-m", help="static: INT8 QDQ, calibrated "
                                   "(fastest on CPU). dynamic: INT8 weights only; measured 4x SLOWER "
                                   "than FP32 for these convnets. fp16: half-size file, no CPU gain."),
        calib: Optional[Path] = typer.Option(None, "--calib", help="Calibration image folder "
                                             "(static); default: the manifest's train split."),
        calib_size: int = typer.Option(100, "--calib-size", help="Calibration images, spread "
                                       "evenly over the sorted list."),
        calib_method: str = typer.Option("minmax", "--calib-method", help="minmax, entropy or "
                                         "percentile (the last two: ~14 GB and ~60 s on DenseNet)."),
        per_channel: bool = typer.Option(True, "--per-channel/--no-per-channel",
                                         help="Per-channel weight scales."),
        reduce_range: bool = typer.Option(True, "--reduce-range/--no-reduce-range", help="7-bit "
                                          "weights. Keep it on unless every target CPU has VNNI: "
                                          "without it, INT8 kernels of AVX2 CPUs saturate (measured: "
                                          "89.9% -> 37.5% accuracy)."),
        weight_type: str = typer.Option("int8", "--weight-type", help="int8 or uint8. uint8 "
                                        "weights (u8u8 kernels) do not saturate on AVX2 CPUs "
                                        "without VNNI: on the default model, uint8 per-channel "
                                        "kept 99.5% top-1 agreement with FP32 where int8 with "
                                        "--reduce-range kept 95-96%."),
        exclude_nodes: str = typer.Option("", "--exclude-nodes", help="Comma-separated node names "
                                          "to keep in float (the gate's report suggests them)."),
        data: Optional[Path] = typer.Option(None, "--data", help="Labelled folder "
                                            "(<class>/*.jpg) for the accuracy gate."),
        split_manifest: Optional[Path] = typer.Option(None, "--split-manifest", help="split.json: "
                                                      "gate on its test split, calibrate on its train split."),
        max_drop: float = typer.Option(1.0, "--max-drop", help="Max accuracy drop, percentage points."),
        max_cost_rise: float = typer.Option(0.25, "--max-cost-rise", help="Max rise of the seed's "
                                            "misclassification cost per image."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output (default: "
                                           "MODEL-int8.onnx / -int8-dynamic / -fp16)."),
    ) -> None:
        """Quantize an FP32 model to INT8 (static/dynamic) or FP16, behind an accuracy gate.

        With --data, refuse (exit 1, no file written) when accuracy drops more than --max-drop
        points or the cost per image rises more than --max-cost-rise, and name the nodes to keep
        in float. Dynamic INT8 was measured 4x SLOWER than FP32 for these convnets: use static.
        """
        if not importlib.util.find_spec("onnx"):
            fail(HINT, 2)
        _run(model, method, calib, calib_size, calib_method, per_channel, reduce_range,
             exclude_nodes, data, split_manifest, max_drop, max_cost_rise, out, weight_type)


def _run(model, method, calib, calib_size, calib_method, per_channel, reduce_range, exclude_nodes,
         data, split_manifest, max_drop, max_cost_rise, out, weight_type="int8") -> None:
    from leukedge.export import AccuracyGateError, QuantizationError, QuantizeOptions, quantize_model
    from leukedge.export.evaluation import load_labelled
    from leukedge.runtime.contract import ContractError, read_contract

    try:
        classes = read_contract(model).classes
        paths, _ = calibration_paths(method, calib, calib_size, data, split_manifest, classes)
        options = QuantizeOptions(method, tuple(paths), calib_method, per_channel, reduce_range,
                                  tuple(n.strip() for n in exclude_nodes.split(",") if n.strip()),
                                  weight_type)
        options.validate()
        gate = load_labelled(data, classes, split_manifest, "test") if data else None
    except (ContractError, ValueError) as e:
        fail(str(e), 2)
    target = out or model.with_name(f"{model.stem}-{SUFFIX.get(method, method)}.onnx")
    try:
        result = quantize_model(model, target, options, gate_data=gate, max_drop_pp=max_drop,
                                max_cost_rise=max_cost_rise)
    except AccuracyGateError as e:
        typer.echo(f"Error: {e}", err=True)
        _print_offenders(e)
        raise typer.Exit(1)
    except (QuantizationError, ValueError) as e:
        fail(str(e), 1)
    _summary(result, method)
