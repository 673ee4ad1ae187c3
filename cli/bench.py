"""`leukedge bench`: latency and throughput of one model on this machine (runtime-only install)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from .errors import EXIT_OK, reported
from .options import Provider, ProviderOption, TableOrJson


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    from leukedge.runtime.batching import MAX_RUN_IMAGES

    try:
        sizes = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, e.g. 1,8,32; got {text!r}",
                                 param_hint="'--batch-sizes'") from None
    if not sizes or min(sizes) < 1:
        raise typer.BadParameter(f"batch sizes must be >= 1, got {text!r}",
                                 param_hint="'--batch-sizes'")
    if max(sizes) > MAX_RUN_IMAGES:
        raise typer.BadParameter(f"at most {MAX_RUN_IMAGES} images per batch, got {max(sizes)}",
                                 param_hint="'--batch-sizes'")
    return sizes


def bench_command(
    model: Annotated[Optional[str], typer.Argument(
        show_default=False, help="An ONNX file or a bundled model's name (default: "
                                 "'default').")] = None,
    provider: ProviderOption = Provider.auto,
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,8,32",
    threads: Annotated[Optional[int], typer.Option(
        show_default=False, help="Intra-op threads (default: the CPUs this process may use, "
                                 "at most 8).")] = None,
    iterations: Annotated[int, typer.Option(min=1, help="Timed runs per batch size.")] = 30,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed runs first.")] = 3,
    images: Annotated[Optional[List[Path]], typer.Option(
        show_default=False, help="Real images (files or folders) to time; default: the bundled "
                                 "samples.")] = None,
    fmt: Annotated[TableOrJson, typer.Option("--format", "-f", help="table or json.")
                   ] = TableOrJson.table,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", show_default=False, help="Also write the JSON record here.")] = None,
) -> None:
    """Benchmark a model's latency and throughput on this machine.

    Warm-up, latency p50/p90/p99 and throughput per batch size (each run includes the
    model's in-graph preprocessing), decoding timed separately, the provider actually used,
    threads, and the machine (CPU model, cores, AVX-512/VNNI/AMX flags, onnxruntime version).
    """
    from leukedge.modelkit.evaluation.benchmark import bench_model, format_bench_table
    from leukedge.runtime.files import atomic_write_text

    from .destination import model_file, refuse_inputs

    sizes = parse_batch_sizes(batch_sizes)
    with reported(ValueError):
        refuse_inputs(out, "--out", model_file(model))
        result = bench_model(model, provider=provider.value,
                             batch_sizes=sizes, threads=threads,
                             iterations=iterations, warmup=warmup, images=images)
    text = json.dumps(result, indent=1)
    if out is not None:
        with reported(OSError):
            atomic_write_text(out, text + "\n")
    typer.echo(text if fmt is TableOrJson.json else format_bench_table(result))
    raise typer.Exit(EXIT_OK)


def register(app: typer.Typer) -> None:
    """Adds `leukedge bench` to the app."""
    app.command("bench", short_help="Latency and throughput on this machine.")(bench_command)
