"""How every `leukedge` command reports a failure: one line on stderr, then its exit code."""

from __future__ import annotations

from typing import NoReturn

import typer


def fail(message: str, code: int) -> NoReturn:
    """Print ``Error: message`` to stderr and exit with ``code`` (no traceback)."""
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code)
