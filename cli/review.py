"""`leukedge review verify` and `leukedge review export`: the review station's audit file,
checked and turned into a labelled folder (runtime/review_audit.py, runtime/review_export.py).
The station itself is `leukedge serve --review` (cli/serve.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .errors import EXIT_FAILED, EXIT_OK, fail, reported
from .output import display_path

app = typer.Typer(name="review", no_args_is_help=True, rich_markup_mode=None,
                  help="The review station's audit file: verify its hash chain, export the "
                       "decided images as a labelled folder. The page itself: leukedge "
                       "serve --review RESULTS_FILE.")

AuditArgument = Annotated[Path, typer.Argument(
    metavar="AUDIT_FILE", show_default=False,
    help="The audit file `leukedge serve --review` writes (default name: "
         "<results file>.audit.jsonl).")]

VERIFY_HELP = """Check the audit file's hash chain: each line names the sha256 of the line
before it. Prints the number of decisions and the head hash (note it elsewhere: a
chain holds no secret, so only a noted head shows a rewrite of the whole file).

Exit codes: 0 = the chain is whole; 1 = broken (the first altered, missing or cut
line is named); 2 = usage error (no such file)."""

EXPORT_HELP = """Copy the decided images into OUT/<label>/, the folder `leukedge validate`
reads. The last decision on an image wins. Images are copied, never moved; an
existing file is never overwritten: a different file with the same name makes the
copy <name>-2.<suffix> (reported), the same bytes already there are left as they
are. An image that is gone or changed since it was decided is reported and the rest
goes on.

Exit codes: 0 = every decided image is in OUT; 1 = some were not exported (named on
stderr); 2 = usage error, or the audit file's chain is broken."""


def _existing(path: Path) -> None:
    if not path.is_file():
        fail(f"AUDIT_FILE {display_path(path)} is not a file")


@app.command("verify", help=VERIFY_HELP, short_help="Check an audit file's hash chain.")
def verify(audit: AuditArgument) -> None:
    from leukedge.runtime.review_audit import verify_audit

    _existing(audit)
    with reported():
        check = verify_audit(audit)
    if not check.ok:
        intact = check.bad_line - 1
        before = ("" if intact < 1 else " (line 1 is intact)" if intact == 1
                  else f" (lines 1 to {intact} are intact)")
        typer.echo(f"Error: {display_path(audit)}: {check.problem}{before}", err=True)
        raise typer.Exit(EXIT_FAILED)
    typer.echo(f"{display_path(audit)}: chain intact, {check.lines} decision"
               f"{'s' if check.lines != 1 else ''}; head sha256 {check.head_sha256}")
    raise typer.Exit(EXIT_OK)


@app.command("export", help=EXPORT_HELP,
             short_help="Copy decided images into OUT/<label>/ (for validate).")
def export(
    audit: AuditArgument,
    out: Annotated[Path, typer.Option(
        "--out", "-o", show_default=False,
        help="The labelled folder to fill (created when missing).")],
) -> None:
    from leukedge.runtime.review_export import export_decisions

    _existing(audit)
    with reported():
        report = export_decisions(audit, out)
    for path, target in report.renamed:
        typer.echo(f"Note: {path}: another file has its name in {display_path(target.parent)};"
                   f" copied as {target.name}", err=True)
    for path, stale in report.elsewhere:
        typer.echo(f"Warning: {path} is also in {display_path(stale)} from an earlier export "
                   "(its decision changed since); remove that copy", err=True)
    for path, problem in report.problems:
        typer.echo(f"Error: {path}: {problem}", err=True)
    copied = len(report.copied) + len(report.renamed)
    typer.echo(f"{copied} image{'s' if copied != 1 else ''} copied into {display_path(out)}, "
               f"{len(report.already)} already there, {len(report.problems)} not exported")
    raise typer.Exit(EXIT_FAILED if report.problems else EXIT_OK)


def register(main: typer.Typer) -> None:
    """Adds `leukedge review` to the app."""
    main.add_typer(app, name="review")
