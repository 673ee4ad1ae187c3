"""`leukedge models`: the bundled models, with size, precision and the metrics of their contracts."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from .options import TableOrJson


def register(app: typer.Typer) -> None:
    """Adds `leukedge models` to the app."""
    app.command("models", short_help="List the bundled models.")(models)


def model_rows() -> list[dict]:
    """One dict per bundled model (name, file, size, contract summary)."""
    from leukedge.runtime.contract import ContractError, read_contract
    from leukedge.runtime.models import ModelNotFoundError, bundled_models, default_model_path

    try:
        default = default_model_path()
    except ModelNotFoundError:
        default = None
    rows = []
    for name, path in bundled_models().items():
        row = {"name": name, "default": path == default, "file": str(path),
               "size_bytes": path.stat().st_size}
        try:
            c = read_contract(path)
        except ContractError as e:
            rows.append({**row, "problem": str(e)})
            continue
        m = c.metrics or {}
        rows.append({**row, "precision": c.precision, "backbone": c.backbone,
                     "input_size": list(c.preprocessing.input_size),
                     "accuracy": m.get("accuracy"), "cost_per_sample": m.get("cost_per_sample"),
                     "metrics_on": c.provenance.get("metrics_source") or "test split",
                     "review_below": c.review_below})
    return rows


def _cell(value, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def models(
    fmt: Annotated[TableOrJson, typer.Option("--format", "-f", help="table or json.")
                   ] = TableOrJson.table,
) -> None:
    """List the bundled models (select one with `leukedge infer --model NAME`)."""
    rows = model_rows()
    if fmt is TableOrJson.json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("No bundled models in this installation.")
        return
    typer.echo(f"{'NAME':<19} {'PREC':<4} {'SIZE':>7} {'INPUT':>5} {'BACKBONE':<18} "
               f"{'ACCURACY':>8} {'COST':>5} {'REVIEW<':>7}")
    for r in rows:
        if "problem" in r:
            typer.echo(f"{r['name']:<19} unusable: {r['problem']}")
            continue
        name = r["name"] + (" *" if r["default"] else "")
        typer.echo(f"{name:<19} {r['precision']:<4} {r['size_bytes'] / 1e6:>6.1f}M "
                   f"{r['input_size'][0]:>5} {r['backbone']:<18} "
                   f"{_cell(r['accuracy'], '{:.2%}'):>8} {_cell(r['cost_per_sample'], '{:.3f}'):>5} "
                   f"{r['review_below']:>7g}")
    typer.echo("* what `default` means on this CPU: INT8 with VNNI; on other x86 CPUs an\n"
               "INT8 file made for AVX2 (-int8-avx2) where one is bundled; else FP32.\n"
               "Accuracy and cost per image from the contract; `leukedge info NAME` says\n"
               "where they were measured (docs/RESULTS.md).")
