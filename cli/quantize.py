"""`leukedge quantize`: FP32 model -> INT8 (static QDQ / dynamic) or FP16, behind checks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, fail, need, reported
from .options import registry_enum

Method = registry_enum("QuantMethod", ("static", "dynamic", "fp16"))
CalibMethod = registry_enum("CalibMethod", ("minmax", "entropy", "percentile"))
WeightType = registry_enum("WeightType", ("int8", "uint8"))
SUFFIX = {"static": "int8", "dynamic": "int8-dynamic", "fp16": "fp16"}


def calibration_paths(method: str, calib: Optional[Path], calib_size: int, data: Optional[Path],
                      split_manifest: Optional[Path], classes) -> list[Path]:
    """--calib DIR, else the manifest's train split under --data (never the test split).

    For fp16 and dynamic they are only the images the child is checked on."""
    from leukedge.export.calibration_images import calibration_files
    from leukedge.modelkit.evaluation.labelled import load_labelled

    if calib is not None:
        return calibration_files(calib, calib_size)
    if method != "static":
        return []
    if data is not None and split_manifest is not None:
        return list(load_labelled(data, classes, split_manifest, "train", limit=calib_size).paths)
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
    a = result.agreement
    typer.echo(f"Agreement with FP32 on {a.n_images} {a.source}: top-1 "
               f"{a.argmax_agreement:.2%}, mean |dp| {a.mean_abs_diff:.4f}, max |dp| "
               f"{a.max_abs_diff:.3f}")
    if result.gate is not None:
        g = result.gate
        typer.echo(f"Accuracy gate on {g.reference['n']} images ({g.source}): accuracy "
                   f"{g.reference['accuracy']:.2%} -> {g.candidate['accuracy']:.2%}, cost/image "
                   f"{g.reference['cost_per_sample']:.3f} -> {g.candidate['cost_per_sample']:.3f}")
    else:
        typer.echo("No accuracy gate (give --data to measure accuracy before writing).")
    for note in result.notes:
        typer.echo(f"Note: {note}")
    if method == "dynamic":
        typer.echo("Note: dynamic INT8 is much slower than FP32 for these convnets; prefer "
                   "--method static.")
    if not result.passed:
        typer.echo(f"Warning: written because of --force although a check failed: "
                   f"{c.quantization.get('failure')}", err=True)


def quantize_command(
    model: Annotated[Path, typer.Argument(
        show_default=False, help="FP32 leukedge ONNX model (from `leukedge export`).")],
    method: Annotated[Method, typer.Option(  # type: ignore[valid-type]
        "--method", "-m", help="static: INT8 QDQ, calibrated (fastest on CPU); dynamic: INT8 "
                               "weights only (slow for convnets); fp16: half-size file.")
    ] = Method("static"),
    calib: Annotated[Optional[Path], typer.Option(
        show_default=False, help="Calibration image folder (static; for fp16 and dynamic the "
                                 "images the result is checked on); default: the manifest's "
                                 "train split.")] = None,
    calib_size: Annotated[int, typer.Option(min=1, help="Calibration images, spread evenly.")
                          ] = 200,
    calib_method: Annotated[CalibMethod, typer.Option(  # type: ignore[valid-type]
        help="minmax, entropy or percentile.")] = CalibMethod("minmax"),
    per_channel: Annotated[bool, typer.Option(
        "--per-channel/--no-per-channel", help="Per-channel weight scales.")] = True,
    reduce_range: Annotated[Optional[bool], typer.Option(
        "--reduce-range/--no-reduce-range", show_default=False,
        help="7-bit weights, for CPUs without VNNI (AVX2 only), where full 8-bit weights can "
             "saturate; cost up to 0.6 points of accuracy on a VNNI CPU. Default: full range "
             "when this CPU has VNNI, else 7-bit.")
    ] = None,
    depthwise_8bit: Annotated[bool, typer.Option(
        "--depthwise-8bit",
        help="With --reduce-range: depthwise convolutions keep 8-bit weights (ONNX Runtime's "
             "depthwise kernels cannot saturate on any x86 CPU); only the weights run as "
             "matrix products get 7 bits. Exact on AVX2 CPUs and closer to FP32 than "
             "--reduce-range alone.")] = False,
    weight_type: Annotated[WeightType, typer.Option(  # type: ignore[valid-type]
        help="int8, or uint8 (no saturation either, but 10-20x slower for depthwise "
             "convolutions on the VNNI CPU measured).")] = WeightType("int8"),
    exclude_nodes: Annotated[str, typer.Option(
        help="Comma-separated network nodes to keep in float (the gate suggests some).")] = "",
    data: Annotated[Optional[Path], typer.Option(
        show_default=False, help="Labelled folder (<class>/*.jpg) for the accuracy gate.")] = None,
    split_manifest: Annotated[Optional[Path], typer.Option(
        show_default=False, help="split.json: gate on its test split (val when the run has "
                                 "no test split), calibrate on its train split.")] = None,
    max_drop: Annotated[float, typer.Option(
        min=0.0, help="Max accuracy drop, percentage points.")] = 0.5,
    max_cost_rise: Annotated[float, typer.Option(
        min=0.0, help="Max rise of the misclassification cost per image.")] = 0.1,
    min_agreement: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Min top-1 agreement with the FP32 model.")] = 0.98,
    force: Annotated[bool, typer.Option(
        "--force", help="Write the model even when a check fails (marked failed in its "
                        "contract).")] = False,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", show_default=False,
        help="Output (default: MODEL-int8.onnx / -int8-dynamic / -fp16).")] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an existing output file.")] = False,
) -> None:
    """Quantize an FP32 model to INT8 (static/dynamic) or FP16; only the network is quantized.

    The child must agree with its parent (--min-agreement) and, with --data, lose at most
    --max-drop points of accuracy; otherwise nothing is written (exit 1), unless --force.
    """
    need("onnx", "train", "Quantization")
    from leukedge.export.errors import AccuracyGateError
    from leukedge.export.quantize import QuantizeOptions, quantize_model
    from leukedge.runtime.contract import read_contract
    from leukedge.modelkit.evaluation.labelled import load_labelled
    from leukedge.modelkit.splits import held_out_split

    with reported(ValueError):
        classes = read_contract(model).classes
        paths = calibration_paths(method.value, calib, calib_size, data, split_manifest, classes)
        options = QuantizeOptions(method.value, tuple(paths), calib_method.value, per_channel,
                                  reduce_range,
                                  tuple(n.strip() for n in exclude_nodes.split(",") if n.strip()),
                                  weight_type.value, min_agreement, depthwise_8bit)
        options.validate()
        if not paths and data is None:
            raise ValueError(f"--method {method.value} needs real images to check the result "
                             "against the FP32 model: give --data or --calib")
        gate = (load_labelled(data, classes, split_manifest, held_out_split(split_manifest))
                if data else None)
    target = out or model.with_name(f"{model.stem}-{SUFFIX[method.value]}.onnx")
    if target.exists() and not overwrite:
        fail(f"{target} exists; choose another --out or pass --overwrite", EXIT_USAGE)
    try:
        result = quantize_model(model, target, options, gate_data=gate, max_drop_pp=max_drop,
                                max_cost_rise=max_cost_rise, force=force)
    except AccuracyGateError as e:
        typer.echo(f"Error: {e}", err=True)
        _print_offenders(e)
        raise typer.Exit(EXIT_FAILED)
    except Exception as e:
        from leukedge.runtime.errors import LeukedgeError

        if isinstance(e, (LeukedgeError, ValueError)):
            fail(str(e), EXIT_FAILED)
        raise
    _summary(result, method.value)
    raise typer.Exit(EXIT_OK if result.passed else EXIT_FAILED)


def register(app: typer.Typer) -> None:
    """Adds `leukedge quantize` to the app."""
    app.command("quantize", short_help="FP32 model -> INT8 or FP16, checked.")(quantize_command)
