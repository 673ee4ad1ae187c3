"""``leukedge adapt``'s report: the parent and the adapted model on the site's held-out images,
side by side, scored and written by ``leukedge validate``'s code.

Each side is a :class:`~leukedge.modelkit.evaluation.validation.ValidationResult` (the same
scores, the same acceptance rules, the same JSON keys); ``report.json`` holds both, the fit and
the provenance; ``report.html`` is validate's self-contained page for the adapted model's
held-out predictions, with the side-by-side table at its top.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Optional, Sequence

from leukedge.runtime.files import atomic_write_text, display_path

from ..evaluation.review_scores import review_scores
from ..evaluation.rules import check_rules, parse_rules
from ..evaluation.validation import ValidationResult
from ..evaluation.validation_report import render_html

ROWS = (("accuracy", "accuracy", "{:.4f}"), ("95% interval", "accuracy_ci95", "{}"),
        ("flagged for review", "flagged_rate", "{:.4f}"), ("errors", "errors", "{}"),
        ("errors caught by the flag", "errors_caught", "{}"),
        ("errors not flagged", "unflagged_errors", "{}"),
        ("cost per image", "cost_per_sample", "{:.4f}"), ("ECE", "ece", "{:.4f}"))


def site_result(site, predictions: Sequence, model: dict,
                rules: Optional[str] = None) -> ValidationResult:
    """The scores of predictions on every site image, as ``leukedge validate`` reports them."""
    names = [display_path(p) for p in site.paths]
    scores = review_scores(site.labels, predictions, site.folder.classes, names)
    scores["unreadable_rate"] = 0.0
    parsed = parse_rules(rules)
    return ValidationResult(site.folder, dict(model), scores, [], parsed,
                            check_rules(parsed, scores))


def held_out_metrics(scores: dict) -> dict:
    """What the adapted model's contract carries of its held-out scores."""
    return {k: scores[k] for k in ("n", "accuracy", "accuracy_ci95", "cost_per_sample",
                                   "flagged_rate", "unflagged_errors", "confusion_matrix")}


def _cell(scores: dict, key: str, fmt: str) -> str:
    value = scores[key]
    if key == "accuracy_ci95":
        return f"{value[0]:.4f}-{value[1]:.4f}"
    return fmt.format(value)


def side_by_side(parent: ValidationResult, adapted: ValidationResult, report: dict) -> str:
    """The HTML table and notes that head the report."""
    e = html.escape
    rows = "".join(f"<tr><td>{e(label)}</td><td>{e(_cell(parent.scores, key, fmt))}</td>"
                   f"<td>{e(_cell(adapted.scores, key, fmt))}</td></tr>"
                   for label, key, fmt in ROWS)
    fit, site = report["fit"], report["site"]
    return (f"<h2>Adapted to this site</h2><p>{site['site_images']} labelled images "
            f"({e(json.dumps(site['site_per_class']))}), {report['folds']}-fold: every image was "
            "predicted by a model fitted without its fold. The parent never saw any of them.</p>"
            f"<table><tr><th></th><th>parent {e(str(parent.model.get('model')))}</th>"
            f"<th>adapted (held out)</th></tr>{rows}</table>"
            f"<p>Review threshold {fit['review_below']['kept']:g} (parent "
            f"{fit['review_below']['parent']:g}; adapt never lowers it). Site temperature "
            f"{fit['temperature']:.3f}, L2 {fit['l2']:g}. Site files sha256 "
            f"<code>{e(site['site_files_sha256'])}</code>.</p><p>Method: {e(report['method'])}"
            "</p><h2>The adapted model, held out</h2>")


def write_reports(json_path: Path, html_path: Path, report: dict, parent: ValidationResult,
                  adapted: ValidationResult) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.html`` atomically."""
    atomic_write_text(json_path, json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    page = render_html(adapted).replace("<h1>leukedge local verification</h1>",
                                        "<h1>leukedge adapt: parent and adapted model</h1>"
                                        + side_by_side(parent, adapted, report), 1)
    atomic_write_text(html_path, page)
    return json_path, html_path
