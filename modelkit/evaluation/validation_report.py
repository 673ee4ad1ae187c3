"""The local-verification report as one self-contained HTML file a lab can file.

Everything is inside the file: the confusion matrix and the reliability diagram as PNG pictures
(drawn with OpenCV, so a ``[cpu]`` install makes them), the unflagged errors as JPEG thumbnails,
all as ``data:`` URIs; no script, no style sheet or font from elsewhere, so it opens offline and
prints. Every text from a file name or a model is escaped.

Example:
    >>> write_html_report(result, Path("validation.html"))
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from leukedge.runtime.decode import ImageError, read_image
from leukedge.runtime.files import atomic_write_text

from .rules import metric_values

THUMBNAIL = 160
MAX_THUMBNAILS = 60
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _png(image: np.ndarray) -> str:
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return "data:image/png;base64," + base64.b64encode(data.tobytes()).decode() if ok else ""


def confusion_picture(matrix: Sequence[Sequence[int]], classes: Sequence[str]) -> np.ndarray:
    """RGB picture of a confusion matrix (rows: true class, columns: predicted)."""
    k, cell, margin = len(classes), 90, 110
    image = np.full((margin + k * cell + 20, margin + k * cell + 20, 3), 255, np.uint8)
    cm = np.asarray(matrix, float)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    for i in range(k):
        cv2.putText(image, classes[i][:9], (5, margin + i * cell + cell // 2 + 5), _FONT, 0.5,
                    (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(image, classes[i][:9], (margin + i * cell + 8, margin - 12), _FONT, 0.5,
                    (0, 0, 0), 1, cv2.LINE_AA)
        for j in range(k):
            shade = int(255 - 190 * share[i, j])
            colour = (shade, shade, 255) if i != j else (shade, 255, shade)
            x, y = margin + j * cell, margin + i * cell
            cv2.rectangle(image, (x, y), (x + cell - 2, y + cell - 2), colour, -1)
            cv2.putText(image, str(int(cm[i, j])), (x + 10, y + cell // 2 + 6), _FONT, 0.7,
                        (0, 0, 0), 2, cv2.LINE_AA)
    cv2.putText(image, "true \\ predicted", (5, 25), _FONT, 0.5, (90, 90, 90), 1, cv2.LINE_AA)
    return image


def reliability_picture(bins: Sequence[dict], size: int = 360) -> np.ndarray:
    """RGB reliability diagram: per confidence bin, accuracy (bar) against the diagonal."""
    pad = 40
    image = np.full((size + 2 * pad, size + 2 * pad, 3), 255, np.uint8)
    to_xy = lambda c, a: (int(pad + c * size), int(pad + (1 - a) * size))  # noqa: E731
    cv2.rectangle(image, to_xy(0, 1), to_xy(1, 0), (0, 0, 0), 1)
    cv2.line(image, to_xy(0, 0), to_xy(1, 1), (150, 150, 150), 1, cv2.LINE_AA)
    for b in bins:
        cv2.rectangle(image, to_xy(b["low"], b["accuracy"]), to_xy(b["high"], 0),
                      (70, 110, 200), -1)
        cv2.rectangle(image, to_xy(b["low"], b["accuracy"]), to_xy(b["high"], 0),
                      (20, 40, 90), 1)
    cv2.putText(image, "confidence", (pad + size // 2 - 40, size + pad + 28), _FONT, 0.5,
                (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(image, "accuracy", (4, pad - 12), _FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return image


def _thumbnail(path: str) -> str:
    try:
        image = read_image(path)
    except ImageError:
        return ""
    scale = THUMBNAIL / max(image.shape[:2])
    small = cv2.resize(image, (max(1, int(image.shape[1] * scale)),
                               max(1, int(image.shape[0] * scale))), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
    return "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode() if ok else ""


def _table(rows: Sequence[Sequence[object]], head: Sequence[str]) -> str:
    e = html.escape
    out = ["<table><tr>" + "".join(f"<th>{e(str(h))}</th>" for h in head) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in rows]
    return "\n".join(out) + "</table>"


def render_html(result) -> str:
    """The report of a :class:`~leukedge.modelkit.evaluation.validation.ValidationResult`."""
    e, d, s = html.escape, result.to_dict(), result.scores
    values = metric_values(s)
    verdict = "PASSED" if result.passed else "FAILED"
    metrics = _table([(k, f"{v:.4g}") for k, v in values.items()], ("metric", "value"))
    per_class = _table([(c, v["support"], f"{v['recall']:.3f}", f"{v['precision']:.3f}")
                        for c, v in s["per_class"].items()],
                       ("class", "images", "recall", "precision"))
    rules = _table([(r, "failed" if any(f.startswith(r + " ") for f in d["failed_rules"])
                     else "holds") for r in d["rules"]], ("rule", "result"))
    errors = "".join(
        f'<figure><img src="{_thumbnail(u["path"])}" alt=""><figcaption>{e(u["path"])}<br>'
        f'true {e(u["true"])}, called {e(u["predicted"])} ({u["confidence"]:.3f})'
        f"</figcaption></figure>" for u in s["unflagged"][:MAX_THUMBNAILS])
    lists = "".join(f"<h3>{e(title)} ({len(items)})</h3><ul>"
                    + "".join(f"<li>{e(str(i))}</li>" for i in items) + "</ul>"
                    for title, items in (
                        ("Files that could not be classified",
                         [f"{u['path']}: {u['error']}" for u in d["unreadable"]]),
                        ("Files outside the class folders (not scored)",
                         d["outside_class_folders"]),
                        ("Files in class folders that are not images (not scored)",
                         d["skipped"])) if items)
    reasons = _table(sorted(s["review_reasons"].items()), ("review code", "images"))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>leukedge validation: {verdict}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:70em}}table{{border-collapse:collapse;
margin:1em 0}}td,th{{border:1px solid #999;padding:.3em .6em;text-align:left}}
.verdict{{font-size:1.6em;font-weight:bold;color:{'#176117' if result.passed else '#a11'}}}
figure{{display:inline-block;margin:.5em;width:{THUMBNAIL + 20}px;font-size:.8em;
vertical-align:top}}</style></head><body>
<h1>leukedge local verification</h1>
<p class="verdict">{verdict}</p>
<p>Model <b>{e(str(d["model"].get("model")))}</b> ({e(str(d["model"].get("precision")))}),
sha256 <code>{e(str(d["model"].get("model_sha256")))}</code>, leukedge
{e(str(d["model"].get("leukedge_version")))}.<br>Images: <code>{e(d["data_dir"])}</code>,
{d["n"]} in class folders, {len(d["unreadable"])} could not be classified. Made {e(d["created"])}.</p>
<h2>Acceptance rules</h2>{rules}
<h2>Measures</h2>{metrics}
<p>Accuracy {s["accuracy"]:.4f} (95% interval {s["accuracy_ci95"][0]:.4f} to
{s["accuracy_ci95"][1]:.4f}); {s["errors"]} errors, {s["errors_caught"]} of them flagged for
review; {s["unflagged_errors"]} errors not flagged.</p>
{per_class}
<h2>Confusion matrix</h2><img src="{_png(confusion_picture(s["confusion_matrix"], d["classes"]))}"
alt="confusion matrix: rows true class, columns predicted">
<h2>Calibration</h2><p>ECE {s["ece"]:.4f}: bars are the accuracy of the images in each
confidence bin; a calibrated model's bars reach the diagonal.</p>
<img src="{_png(reliability_picture(s["reliability"]))}" alt="reliability diagram">
<h2>Why images were flagged</h2>{reasons}
<h2>Errors the review flag let through ({s["unflagged_errors"]})</h2>{errors or "<p>None.</p>"}
{lists}
<p><small>A research tool, not a diagnostic device: its predictions support, and never
replace, a hematologist's review.</small></p>
</body></html>
"""


def write_html_report(result, path: Path) -> Path:
    """Write :func:`render_html` atomically to ``path``."""
    atomic_write_text(path, render_html(result))
    return path
