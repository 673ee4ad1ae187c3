"""`leukedge info` (being written)."""

import typer


def register(app: typer.Typer) -> None:
    """Adds the command to the app (placeholder until the command lands)."""
