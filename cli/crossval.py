"""`leukedge crossval`: grouped k-fold cross-validation of a training recipe.

Parses the options and calls :func:`leukedge.train.crossval.run_crossval`; TensorFlow is
imported only when the command runs.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from leukedge.train.recipes import CV_FOLDS, CV_SEED, DEFAULT_RECIPE, recipe_names

from .errors import EXIT_OK, need, reported
from .options import registry_enum

Grouping = registry_enum("Grouping", ("duplicates", "similar"))

HELP = """Cross-validate a training recipe: grouped, stratified k folds (duplicates never
straddle two folds); in each, train on the rest and predict the held-out fold.

Writes OUT/<recipe>/folds.json and OUT/<recipe>/fold<k>/ (oof.json with the held-out
logits, and the fold's model). A rerun skips the folds that are done. Evaluate the folds
with `leukedge crossval-eval OUT/<recipe> --data DATA_DIR`."""


def parse_folds(text: Optional[str]) -> Optional[list[int]]:
    """'0,1,2' -> [0, 1, 2]; None -> None (all folds)."""
    if text is None:
        return None
    try:
        return [int(f) for f in text.split(",") if f.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected fold numbers like 0,1,2; got {text!r}") from None


def crossval_command(
    data_dir: Annotated[Path, typer.Argument(
        show_default=False, help="Labelled images: DIR/<class>/*.jpg or the ALL layout.")],
    recipe: Annotated[str, typer.Option(
        "--recipe", metavar="NAME",
        help="The recipe: " + ", ".join(recipe_names()) + ".")] = DEFAULT_RECIPE,
    out: Annotated[Path, typer.Option("--out", "-o", help="Parent folder of the run.")
                   ] = Path("runs/cv"),
    folds: Annotated[int, typer.Option(min=2, help="Number of folds.")] = CV_FOLDS,
    only_folds: Annotated[Optional[str], typer.Option(
        metavar="K,K,...", show_default=False, help="Run only these folds (e.g. 0,1).")
    ] = None,
    seed: Annotated[int, typer.Option(
        help="Seed of the fold assignment (fold k trains with seed + k).")] = CV_SEED,
    grouping: Annotated[Grouping, typer.Option(  # type: ignore[valid-type]
        help="What a fold keeps together: duplicates (exact and near), or similar (also "
             "fields that share a slide's stain and light; results go to <recipe>-similar).")
    ] = Grouping("duplicates"),
) -> None:
    """Cross-validate a training recipe (see HELP)."""
    from leukedge.train.crossval import run_crossval

    wanted = parse_folds(only_folds)
    need("tensorflow", "train", "Cross-validation")
    from .native_logs import quiet_tensorflow

    quiet_tensorflow()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    with reported(ValueError):
        folder = run_crossval(data_dir, recipe, out, folds, seed, wanted, grouping.value)
    typer.echo(f"Folds in {folder}; next: leukedge crossval-eval {folder} --data {data_dir}")
    raise typer.Exit(EXIT_OK)


def register(app: typer.Typer) -> None:
    """Adds `leukedge crossval` to the app."""
    app.command("crossval", help=HELP,
                short_help="Cross-validate a training recipe (grouped k folds).")(
        crossval_command)
