"""Render a :class:`~leukedge.export.compare.Comparison`: table, Markdown, JSON, CSV, and a
confusion-matrix PNG per model (matplotlib's Agg backend, imported only here and only then)."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Optional

from leukedge.runtime.files import atomic_write_bytes, atomic_write_text

from .machine import machine_line

FORMATS = ("table", "markdown", "json", "csv")

# key, header, format
COLUMNS = (
    ("model", "model", "{}"),
    ("precision", "precision", "{}"),
    ("provider", "provider", "{}"),
    ("size_mb", "size MB", "{:.1f}"),
    ("accuracy", "accuracy", "{:.2%}"),
    ("total_cost", "total cost", "{:.0f}"),
    ("cost_per_sample", "cost/sample", "{:.3f}"),
    ("cost_sensitive_accuracy", "cost-sens. acc", "{:.2%}"),
    ("macro_f1", "macro F1", "{:.4f}"),
    ("weighted_f1", "weighted F1", "{:.4f}"),
    ("top1_agreement", "top-1 agree", "{:.2%}"),
    ("max_abs_diff", "max |dp|", "{:.2g}"),
    ("mean_abs_diff", "mean |dp|", "{:.2g}"),
    ("latency_p50_ms", "p50 ms (b1)", "{:.1f}"),
    ("latency_p95_ms", "p95 ms (b1)", "{:.1f}"),
    ("throughput_ips", "img/s (b8)", "{:.1f}"),
)


def _cell(row: dict, key: str, fmt: str) -> str:
    value = row.get(key)
    if key == "size_mb":
        value = None if row.get("size_bytes") is None else row["size_bytes"] / 1e6
    return "-" if value is None else fmt.format(value)


def table_rows(comparison) -> list[list[str]]:
    """Header plus one formatted row per model."""
    return [[h for _, h, _ in COLUMNS]] + [[_cell(r, k, f) for k, _, f in COLUMNS]
                                           for r in comparison.rows]


def format_table(comparison) -> str:
    rows = table_rows(comparison)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    return "\n".join(lines) + f"\n{_footer(comparison)}"


def format_markdown_table(comparison) -> str:
    rows = [[c.replace("|", "\\|") for c in r] for r in table_rows(comparison)]
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---" for _ in rows[0]) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(out)


def format_csv(comparison) -> str:
    keys = ["model", "path", "precision", "provider", "size_bytes"] + \
           [k for k, _, _ in COLUMNS if k not in ("model", "precision", "provider", "size_mb")]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(comparison.rows)
    return buf.getvalue()


def format_json(comparison) -> str:
    return json.dumps(comparison.to_dict(), indent=1, default=float) + "\n"


def render(comparison, fmt: str) -> str:
    """The comparison in one of :data:`FORMATS`."""
    if fmt not in FORMATS:
        raise ValueError(f"Unknown format {fmt!r}. Valid: {', '.join(FORMATS)}")
    if fmt == "markdown":
        return markdown_report(comparison)
    return {"table": format_table, "json": format_json, "csv": format_csv}[fmt](comparison)


def _footer(comparison) -> str:
    ref = comparison.rows[0]["model"] if comparison.rows else "-"
    return (f"{comparison.n_images} images: {comparison.source}. Agreement and |dp| against "
            f"{ref}. Timing on {machine_line(comparison.machine)}.")


def png_name(model: str) -> str:
    return "confusion-" + re.sub(r"[^A-Za-z0-9._-]+", "_", model) + ".png"


def markdown_report(comparison, pngs: Optional[dict[str, str]] = None) -> str:
    """A report a person can read: what was compared on what, the table, and per-model detail."""
    ref = comparison.rows[0]["model"] if comparison.rows else "-"
    parts = ["# Model comparison", "",
             f"- Images: {comparison.n_images} from {comparison.source}",
             f"- Reference for agreement and probability differences: `{ref}`",
             f"- Machine: {machine_line(comparison.machine)}",
             "- Cost: the reference study's misclassification cost matrix (Benign, Early, Pre, Pro); "
             "macro F1 is what the reference study called \"weighted F1\"; weighted F1 is support-weighted.",
             "- Latency: one image per run (p50/p95); throughput: batches of 8.", "",
             format_markdown_table(comparison), ""]
    for row in comparison.rows:
        lo, hi = row["accuracy_ci95"]
        parts += [f"## {row['model']}", "",
                  f"Accuracy {row['accuracy']:.2%} (95% CI {lo:.2%} - {hi:.2%}), cost per sample "
                  f"{row['cost_per_sample']:.3f}, top-1 agreement with `{ref}` "
                  f"{row['top1_agreement']:.2%}.", ""]
        if pngs and row["model"] in pngs:
            parts += [f"![confusion matrix of {row['model']}]({pngs[row['model']]})", ""]
    return "\n".join(parts)


def confusion_png(matrix, classes, title: str, path: Path) -> None:
    """Write a labelled confusion-matrix heat map (rows = true class) as PNG, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from matplotlib.figure import Figure

    cm = np.asarray(matrix)
    fig = Figure(figsize=(4.8, 4.2), dpi=100)
    ax = fig.subplots()
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center",
                color="white" if v > cm.max() / 2 else "black")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


def write_report(comparison, out: Path, fmt: str = "markdown") -> list[Path]:
    """``out`` a folder (or no suffix): report.md, comparison.json, comparison.csv and one PNG per
    model. ``out`` a file: the comparison in ``fmt`` (PNGs beside it for Markdown)."""
    out = Path(out)
    folder = out if (out.is_dir() or not out.suffix) else out.parent
    pngs = {}
    if out.is_dir() or not out.suffix or fmt == "markdown":
        for row in comparison.rows:
            pngs[row["model"]] = png_name(row["model"])
            confusion_png(row["confusion_matrix"], comparison.classes, row["model"],
                          folder / pngs[row["model"]])
    if out.is_dir() or not out.suffix:
        files = {"report.md": markdown_report(comparison, pngs),
                 "comparison.json": format_json(comparison), "comparison.csv": format_csv(comparison)}
    else:
        files = {out.name: markdown_report(comparison, pngs) if fmt == "markdown"
                 else render(comparison, fmt)}
    for name, text in files.items():
        atomic_write_text(folder / name, text)
    return [folder / n for n in files] + [folder / p for p in pngs.values()]
