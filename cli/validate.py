"""`leukedge validate`: local verification on a lab's own labelled images.

Parses the options and calls :func:`leukedge.modelkit.evaluation.validation.validate_folder`;
prints the table or the JSON object, writes the HTML report, and exits 0 when the acceptance
rules hold, 1 when one fails, 2 on a usage error. No TensorFlow: a ``[cpu]`` install runs it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import EXIT_FAILED, EXIT_OK, reported
from .options import (ModelOption, Provider, ProviderOption, ReviewBelowOption, TableOrJson,
                      ThreadsOption)

HELP = """Check the model on your own labelled images before trusting it on your microscope.

DATA_DIR holds one folder per class (Benign/, Early/, Pre/, Pro/; subfolders are read). Every
image is classified as `leukedge infer` would; the report gives accuracy with its 95%
interval, per-class recall and precision, the confusion matrix, the cost per image, how many
were flagged for review, the errors the flag caught and those it missed (by file), and
calibration. Then the verdict against --accept (default
"accuracy>=0.98,flagged<=0.10,unflagged_errors<=0.005"; docs/validate.md)."""
EPILOG = "Exit codes: 0 = the rules hold; 1 = a rule fails; 2 = usage error or unusable model."


def summary_table(result) -> str:
    """The human-readable summary of a validation."""
    s, d = result.scores, result.to_dict()
    lines = [f"{d['n']} images in {d['data_dir']}, model {d['model']['model']} "
             f"({d['model']['precision']})",
             f"accuracy   {s['accuracy']:.4f}  (95% interval {s['accuracy_ci95'][0]:.4f}-"
             f"{s['accuracy_ci95'][1]:.4f})",
             f"flagged    {s['flagged_rate']:.4f}  ({s['errors_caught']} of {s['errors']} errors "
             f"caught; {s['unflagged_errors']} not flagged)",
             f"cost/image {s['cost_per_sample']:.4f}   ECE {s['ece']:.4f}", "",
             f"{'class':<8} {'images':>6} {'recall':>7} {'precision':>9}"]
    lines += [f"{c:<8} {v['support']:>6} {v['recall']:>7.3f} {v['precision']:>9.3f}"
              for c, v in s["per_class"].items()]
    for u in s["unflagged"]:
        lines.append(f"not flagged: {u['path']}: true {u['true']}, called {u['predicted']} "
                     f"({u['confidence']:.3f})")
    for u in d["unreadable"]:
        lines.append(f"not classified: {u['error']}")
    if d["outside_class_folders"]:
        lines.append(f"outside the class folders (not scored): "
                     f"{', '.join(d['outside_class_folders'][:5])}"
                     + (f" and {len(d['outside_class_folders']) - 5} more"
                        if len(d["outside_class_folders"]) > 5 else ""))
    verdict = "PASSED" if result.passed else "FAILED: " + "; ".join(result.failed_rules)
    lines += ["", f"Rules {', '.join(d['rules'])}: {verdict}"]
    return "\n".join(lines)


def validate_command(
    data_dir: Annotated[Path, typer.Argument(
        show_default=False, help="Your labelled images: DATA_DIR/<class>/...")],
    model: ModelOption = None,
    provider: ProviderOption = Provider.auto,
    threads: ThreadsOption = None,
    review_below: ReviewBelowOption = None,
    fmt: Annotated[TableOrJson, typer.Option(
        "--format", "-f", help="table, or json (one object; docs/validate.md names its keys)")
    ] = TableOrJson.table,
    report: Annotated[Optional[Path], typer.Option(
        "--report", show_default=False,
        help="Also write a self-contained HTML report here (opens offline).")] = None,
    accept: Annotated[Optional[str], typer.Option(
        "--accept", metavar="RULES", show_default=False,
        help="Acceptance rules, e.g. \"accuracy>=0.98,flagged<=0.10\"; metrics: accuracy, "
             "accuracy_low, flagged, unflagged_errors, cost, ece, min_recall.")] = None,
) -> None:
    """Check the model on your own labelled images (see HELP)."""
    from leukedge.modelkit.evaluation.rules import parse_rules
    from leukedge.modelkit.evaluation.validation import validate_folder
    from leukedge.modelkit.evaluation.validation_report import write_html_report

    from leukedge.runtime.files import find_images

    from .classifier import open_classifier
    from .destination import model_file, refuse_inputs

    with reported(ValueError):
        rules = parse_rules(accept)
        if report is not None:
            if report.is_dir():
                raise ValueError(f"--report {report} is a folder; give a file name")
            images = find_images([data_dir], recursive=True).paths if data_dir.is_dir() else []
            refuse_inputs(report, "--report", [*images, *model_file(model)])
    classifier = open_classifier(model, provider.value, threads, review_below)
    with reported(ValueError):
        result = validate_folder(classifier, data_dir, rules)
    if report is not None:
        with reported(OSError):
            write_html_report(result, report)
    typer.echo(json.dumps(result.to_dict(), ensure_ascii=False) if fmt is TableOrJson.json
               else summary_table(result))
    if report is not None:
        typer.echo(f"Report: {report}", err=True)
    raise typer.Exit(EXIT_OK if result.passed else EXIT_FAILED)


def register(app: typer.Typer) -> None:
    """Adds `leukedge validate` to the app."""
    app.command("validate", help=HELP, epilog=EPILOG,
                short_help="Check the model on your own labelled images.")(validate_command)
