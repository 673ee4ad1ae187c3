"""`leukedge bench`: latency and throughput of one model on this machine (runtime-only install)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .errors import fail



def parse_batch_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, e.g. 1,8,32; got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise typer.BadParameter(f"batch sizes must be >= 1, got {text!r}")
    return sizes


def register(app: typer.Typer) -> None:
    """Adds `leukedge bench` to the app."""

    @app.command("bench")
    def bench_cmd(
        model: Path = typer.Argument(..., help="A leukedge ONNX model."),
        provider: str = typer.Option("auto", "--provider", help="auto, cuda or cpu."),
        batch_sizes: str = typer.Option("1,8,32", "--batch-sizes", help="Comma-separated."),
        threads: Optional[int] = typer.Option(None, "--threads", help="Intra-op threads "
                                              "(default: the CPUs this process may use, max 8)."),
        iterations: int = typer.Option(30, "--iterations", help="Timed runs per batch size."),
        warmup: int = typer.Option(3, "--warmup", help="Untimed runs first."),
        images: Optional[list[Path]] = typer.Option(None, "--images", help="Real images (files or "
                                                    "folders) for timing; default: bundled samples."),
        fmt: str = typer.Option("table", "--format", "-f", help="table or json."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write the JSON record here."),
    ) -> None:
        """Benchmark a model's latency and throughput on this machine.

        Warm-up, latency p50/p90/p99 and throughput per batch size, preprocessing timed
        separately, the provider actually used, threads, and the machine (CPU model, cores,
        AVX-512/VNNI/AMX flags, onnxruntime version).
        """
        from leukedge.export.bench import bench_model, format_bench_table
        from leukedge.runtime.contract import ContractError
        from leukedge.runtime.files import atomic_write_text
        from leukedge.runtime.preprocess import ImageError
        from leukedge.runtime.session import RuntimeSetupError

        if fmt not in ("table", "json"):
            fail(f"Unknown format {fmt!r}. Valid: table, json", 2)
        try:
            result = bench_model(model, provider=provider, batch_sizes=parse_batch_sizes(batch_sizes),
                                 threads=threads, iterations=iterations, warmup=warmup,
                                 images=images)
        except (ContractError, RuntimeSetupError, ImageError, ValueError, FileNotFoundError) as e:
            fail(str(e), 1)
        text = json.dumps(result, indent=1)
        if out is not None:
            atomic_write_text(out, text + "\n")
        typer.echo(text if fmt == "json" else format_bench_table(result))
