"""Result rows as table, JSON Lines or CSV text (used by `leukedge infer` and `leukedge watch`).

A row is the dict of :meth:`leukedge.runtime.pipeline.FileResult.to_dict` plus provenance:
path, label, confidence, probabilities (class -> p), needs_review, review_reasons, error, and
the model's name, sha256 and precision, leukedge's version, a UTC timestamp, the image's time
and its overlay. Standard library only.

Paths are shown as text whatever their bytes: a name that is not valid UTF-8 keeps its bad bytes
as ``\\xNN`` escapes, and the table escapes control characters, so a crafted file name cannot
break a row or fake one.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone
from typing import Optional, Sequence

from leukedge.runtime.files import display_path

FORMATS = ("table", "json", "csv")
TABLE_MAX_PATH = 60
PROVENANCE = ("model", "model_sha256", "precision", "leukedge_version")


def escape_controls(text: str) -> str:
    """Control characters (newline, carriage return, escape...) shown as escapes."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
                   for ch in text)


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def truncated_confidence(value: float) -> str:
    """Three decimals, cut (not rounded) so the table never shows a flagged 0.7996 as 0.800."""
    return f"{int(value * 1000) / 1000:.3f}"


def _messages(row: dict) -> list[str]:
    """The review reasons' messages (a row holds {"code", "message"} objects)."""
    return [r["message"] if isinstance(r, dict) else str(r)
            for r in row.get("review_reasons") or []]


def _short_path(path: str, width: int) -> str:
    return path if len(path) <= width else "..." + path[-(width - 3):]


class RowFormatter:
    """Turns result rows into lines of one output format.

    Args:
        fmt: "table", "json" (JSON Lines) or "csv".
        classes: class names, for the CSV ``prob_<class>`` columns.
        paths: all input paths, to size the table's path column before the first row.
        shorten: shorten long paths in the table (for a terminal; never in a file).
    """

    def __init__(self, fmt: str, classes: Sequence[str], paths: Sequence[str] = (),
                 shorten: bool = True):
        if fmt not in FORMATS:
            raise ValueError(f"Unknown --format {fmt!r}. Valid: {', '.join(FORMATS)}")
        self.fmt, self.classes, self.shorten = fmt, list(classes), shorten
        longest = max((len(escape_controls(display_path(p))) for p in paths), default=4)
        self.path_width = max(4, min(longest, TABLE_MAX_PATH) if shorten else longest)
        self.label_width = max([5] + [len(c) for c in self.classes])

    def header(self) -> Optional[str]:
        """The header line (without newline), or None for JSON Lines."""
        if self.fmt == "csv":
            return self._csv(["path", "label", "confidence", "needs_review", "review_reasons"]
                             + [f"prob_{c}" for c in self.classes]
                             + ["error", "seconds", "overlay", "timestamp", *PROVENANCE])
        if self.fmt == "table":
            return (f"{'PATH':<{self.path_width}}  {'LABEL':<{self.label_width}}  "
                    f"{'CONF':>6}  REVIEW")
        return None

    def line(self, row: dict) -> str:
        """One row as a line (without newline)."""
        row = {**row, "path": display_path(row["path"])}
        if row.get("error"):
            row["error"] = display_path(row["error"])
        if self.fmt == "json":
            return json.dumps(row, ensure_ascii=False)
        if self.fmt == "csv":
            return self._csv_row(row)
        return self._table_row(row)

    @staticmethod
    def _csv(values: list) -> str:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(values)  # quotes embedded newlines
        return buf.getvalue()[:-1]

    def _csv_row(self, row: dict) -> str:
        probs = row.get("probabilities") or {}
        review = row.get("needs_review")
        return self._csv([row["path"], row.get("label") or "",
                          "" if row.get("confidence") is None else row["confidence"],
                          "" if review is None else str(review).lower(),
                          "; ".join(_messages(row))]
                         + [probs.get(c, "") for c in self.classes]
                         + [row.get("error") or "", row.get("seconds", ""),
                            row.get("overlay") or "", row.get("timestamp", "")]
                         + [row.get(k, "") for k in PROVENANCE])

    def _table_row(self, row: dict) -> str:
        path = escape_controls(row["path"])
        path = _short_path(path, self.path_width) if self.shorten else path
        path = f"{path:<{self.path_width}}"
        if row.get("error") is not None:
            return f"{path}  {'ERROR':<{self.label_width}}  {escape_controls(row['error'])}"
        review = "; ".join(_messages(row)) if row.get("needs_review") else ""
        return (f"{path}  {row['label']:<{self.label_width}}  "
                f"{truncated_confidence(row['confidence']):>6}  {escape_controls(review)}").rstrip()
