"""Result rows as table, JSON Lines or CSV text (used by `leukedge infer`); standard library only.

A row is the dict of :meth:`leukedge.runtime.pipeline.FileResult.to_dict`: path, label,
confidence, probabilities (class -> p), needs_review, error. Numbers are rounded to 6 decimals.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Optional, Sequence

FORMATS = ("table", "json", "csv")
DECIMALS = 6
TABLE_MAX_PATH = 60


def rounded(row: dict) -> dict:
    """The row with confidence and probabilities rounded for output."""
    out = dict(row)
    if out.get("confidence") is not None:
        out["confidence"] = round(float(out["confidence"]), DECIMALS)
    if out.get("probabilities"):
        out["probabilities"] = {k: round(float(v), DECIMALS) for k, v in out["probabilities"].items()}
    return out


def _short_path(path: str, width: int) -> str:
    return path if len(path) <= width else "..." + path[-(width - 3):]


class RowFormatter:
    """Turns result rows into lines of one output format.

    Args:
        fmt: "table", "json" (JSON Lines) or "csv".
        classes: class names, for the CSV ``prob_<class>`` columns.
        paths: all input paths, to size the table's path column before the first row.
    """

    def __init__(self, fmt: str, classes: Sequence[str], paths: Sequence[str] = ()):
        if fmt not in FORMATS:
            raise ValueError(f"Unknown format {fmt!r}. Valid: {', '.join(FORMATS)}")
        self.fmt = fmt
        self.classes = list(classes)
        longest = max((len(p) for p in paths), default=4)
        self.path_width = max(4, min(longest, TABLE_MAX_PATH))
        self.label_width = max([5] + [len(c) for c in self.classes])

    def header(self) -> Optional[str]:
        """The header line (without newline), or None for JSON Lines."""
        if self.fmt == "csv":
            return self._csv(["path", "label", "confidence", "needs_review"]
                             + [f"prob_{c}" for c in self.classes] + ["error"])
        if self.fmt == "table":
            return (f"{'PATH':<{self.path_width}}  {'LABEL':<{self.label_width}}  "
                    f"{'CONF':>6}  REVIEW")
        return None

    def line(self, row: dict) -> str:
        """One row as a line (without newline)."""
        row = rounded(row)
        if self.fmt == "json":
            return json.dumps(row, ensure_ascii=False)
        if self.fmt == "csv":
            return self._csv_row(row)
        return self._table_row(row)

    def _csv(self, values: list) -> str:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="").writerow(values)
        return buf.getvalue()

    def _csv_row(self, row: dict) -> str:
        probs = row["probabilities"] or {}
        review = row["needs_review"]
        return self._csv([row["path"], row["label"] or "",
                          "" if row["confidence"] is None else row["confidence"],
                          "" if review is None else str(review).lower()]
                         + [probs.get(c, "") for c in self.classes] + [row["error"] or ""])

    def _table_row(self, row: dict) -> str:
        path = f"{_short_path(row['path'], self.path_width):<{self.path_width}}"
        if row["error"] is not None:
            return f"{path}  {'ERROR':<{self.label_width}}  {row['error']}"
        review = "yes" if row["needs_review"] else ""
        return (f"{path}  {row['label']:<{self.label_width}}  {row['confidence']:>6.3f}  "
                f"{review}").rstrip()
