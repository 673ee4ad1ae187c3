"""`leukedge doctor`: what this PC will do and why; exit 1 when something is wrong."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Annotated

import typer

from .errors import EXIT_FAILED, EXIT_OK
from .options import TableOrJson

HELP = """Check this PC: Python, leukedge and ONNX Runtime versions (and conflicting
ONNX Runtime wheels), which providers really start, the CPU's INT8 features and which
file `default` uses here, the bundled models against their recorded sha256, and whether
the output and temp folders are writable."""
EPILOG = "Exit codes: 0 = nothing wrong (warnings allowed); 1 = a check failed."
COLUMNS = 80  # the table's lines wrap their detail to fit


def doctor_command(
    output_dir: Annotated[Path, typer.Option(
        "--output-dir", help="The folder your results go to (checked for writing).")
    ] = Path("."),
    fmt: Annotated[TableOrJson, typer.Option(
        "--format", "-f", help="table, or json (one object: checks, ok).")
    ] = TableOrJson.table,
) -> None:
    """Check this PC (see HELP)."""
    from leukedge.runtime.doctor import run_checks

    checks = run_checks(output_dir)
    ok = not any(c.status == "fail" for c in checks)
    if fmt is TableOrJson.json:
        typer.echo(json.dumps({"checks": [c.to_dict() for c in checks], "ok": ok}))
    else:
        width = max(len(c.name) for c in checks)
        indent = " " * (4 + 2 + width + 2)
        for c in checks:
            mark = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}[c.status]
            lines = textwrap.wrap(c.detail, max(20, COLUMNS - len(indent)),
                                  break_long_words=False, break_on_hyphens=False) or [""]
            typer.echo(f"{mark}  {c.name:<{width}}  {lines[0]}")
            for line in lines[1:]:
                typer.echo(indent + line)
    raise typer.Exit(EXIT_OK if ok else EXIT_FAILED)


def register(app: typer.Typer) -> None:
    """Adds `leukedge doctor` to the app."""
    app.command("doctor", help=HELP, epilog=EPILOG,
                short_help="Check this PC: versions, providers, CPU, models, folders.")(
        doctor_command)
