"""The rows of a results file that `leukedge infer` or `leukedge watch` wrote, read for review.

Both formats are read: JSON Lines (one object per line) and CSV (a header, ``prob_<class>``
columns, the review reasons' messages joined by ``"; "``; cli/output.py). A file that ``watch``
is still appending to is read *live*: :meth:`ResultsFile.refresh` looks at its size and mtime
and reads only what was added since the last call. A row counts once its line ending is
written (a CSV row's once its quotes are closed), so a half-written last line is left for the
next call; a file that shrank or was replaced (``infer`` writes atomically) is read again.
A line that is not a row (not JSON, a CSV row of the wrong width) is named in ``problems``
and skipped. For each path the latest row wins: ``watch`` writes a new row when an image's
bytes change.

CSV rows have no input-check measures (that format has no columns for them) and their
reasons have no codes; JSON Lines rows have both.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

MAX_PROBLEMS = 20  # problems kept to show; the count goes on


@dataclass(frozen=True, eq=False)  # one object per row read: hashed by identity
class ReviewRow:
    """One image's result as the review station needs it."""

    line: int
    path: str
    label: Optional[str]
    confidence: Optional[float]
    probabilities: dict[str, float]
    needs_review: bool
    reasons: list[dict]
    input_checks: Optional[dict[str, float]]
    error: Optional[str] = None
    overlay: Optional[str] = None
    real_path: Optional[str] = None
    sha256: Optional[str] = None  # of the bytes classified (watch rows)
    model: Optional[str] = None
    model_sha256: Optional[str] = None
    timestamp: Optional[str] = None

    @property
    def id(self) -> str:
        """The image's id in URLs: a hash of its path as named in the results file."""
        return row_id(self.path)


def row_id(path: str) -> str:
    return hashlib.sha256(path.encode("utf-8", "surrogatepass")).hexdigest()[:20]


def _number(value: Any) -> Optional[float]:
    if value in (None, ""):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None  # NaN: not a number to sort by


def _flag(value: Any) -> bool:
    return value is True or str(value).strip().lower() == "true"


def _text(value: Any) -> Optional[str]:
    return None if value in (None, "") else str(value)


def row_from_json(line: int, obj: dict) -> ReviewRow:
    """A JSON Lines row (cli/output.py's JSON object)."""
    reasons = [r if isinstance(r, dict) else {"code": None, "message": str(r)}
               for r in obj.get("review_reasons") or []]
    probs = obj.get("probabilities") or {}
    checks = obj.get("input_checks")
    return ReviewRow(
        line, str(obj["path"]), _text(obj.get("label")), _number(obj.get("confidence")),
        {str(k): float(v) for k, v in probs.items() if _number(v) is not None},
        _flag(obj.get("needs_review")), reasons,
        {str(k): float(v) for k, v in checks.items() if _number(v) is not None}
        if isinstance(checks, dict) else None,
        _text(obj.get("error")), _text(obj.get("overlay")), _text(obj.get("real_path")),
        _text(obj.get("sha256")), _text(obj.get("model")), _text(obj.get("model_sha256")),
        _text(obj.get("timestamp")))


def row_from_csv(line: int, values: dict) -> ReviewRow:
    """A CSV row (header names -> values)."""
    probs = {k[len("prob_"):]: _number(v) for k, v in values.items()
             if k.startswith("prob_") and _number(v) is not None}
    messages = [m for m in (values.get("review_reasons") or "").split("; ") if m]
    return ReviewRow(
        line, values["path"], _text(values.get("label")), _number(values.get("confidence")),
        probs, _flag(values.get("needs_review")),
        [{"code": None, "message": m} for m in messages], None,
        _text(values.get("error")), _text(values.get("overlay")),
        _text(values.get("real_path")), _text(values.get("sha256")), _text(values.get("model")),
        _text(values.get("model_sha256")), _text(values.get("timestamp")))


def split_records(data: bytes, quoted: bool) -> tuple[list[bytes], int]:
    """Complete records of ``data`` (each without its line ending) and the bytes they use.

    A record ends at a newline; with ``quoted`` (CSV) only at one outside double quotes, so a
    quoted field holding a newline stays in its record.
    """
    records, start, quotes, pos = [], 0, 0, 0
    while True:
        end = data.find(b"\n", pos)
        if end < 0:
            return records, start
        if quoted:
            quotes += data.count(b'"', pos, end)
            if quotes % 2:  # inside a quoted field: the newline is part of it
                pos = end + 1
                continue
        records.append(data[start:end].rstrip(b"\r"))
        start = pos = end + 1
        quotes = 0


@dataclass
class ResultsFile:
    """A results file read live (see the module docstring).

    Example:
        >>> results = ResultsFile(Path("results.jsonl"))
        >>> results.refresh()
        >>> [r.path for r in results.latest.values() if r.needs_review]
        ['smears/a.jpg']
    """

    path: Path
    latest: dict[str, ReviewRow] = field(default_factory=dict)  # path -> its latest row
    rows_read: int = 0
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0
    fmt: Optional[str] = None  # "json" or "csv", from the first byte
    _offset: int = 0
    _lines: int = 0
    _header: Optional[list[str]] = None
    _seen: Optional[tuple] = None

    @property
    def version(self) -> Optional[tuple]:
        """Changes whenever the rows may have: the file's identity, size and mtime as read."""
        return self._seen

    def refresh(self) -> bool:
        """Read what was appended since the last call; True when the rows changed."""
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            changed = bool(self.latest)
            self._reset()
            return changed
        identity = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        if self._seen is not None and identity == self._seen:
            return False
        replaced = self._seen is not None and (identity[:2] != self._seen[:2]
                                               or info.st_size < self._offset)
        if replaced:
            self._reset()
        self._seen = identity
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read(max(0, info.st_size - self._offset))
        if self.fmt is None:
            head = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
            if not head:
                return replaced
            self.fmt = "json" if head == b"{" else "csv"
        records, used = split_records(data, quoted=self.fmt == "csv")
        self._offset += used
        for record in records:
            self._lines += 1 + record.count(b"\n")
            self._take(record.decode("utf-8", "replace"))
        return bool(records) or replaced

    def _reset(self) -> None:
        self.latest, self.problems, self.problem_count, self.rows_read = {}, [], 0, 0
        self.fmt, self._offset, self._lines, self._header, self._seen = None, 0, 0, None, None

    def _problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(f"{self.path.name} line {self._lines}: {text}")

    def _take(self, text: str) -> None:
        if not text.strip():
            return
        try:
            row = self._json(text) if self.fmt == "json" else self._csv(text)
        except (ValueError, KeyError, TypeError) as e:
            self._problem(f"not a result row ({e}); skipped")
            return
        if row is not None:
            self.rows_read += 1
            self.latest.pop(row.path, None)  # the latest row goes to the end
            self.latest[row.path] = row

    def _json(self, text: str) -> ReviewRow:
        obj = json.loads(text)
        if not isinstance(obj, dict) or "path" not in obj:
            raise ValueError("a JSON object with a 'path' is expected")
        return row_from_json(self._lines, obj)

    def _csv(self, text: str) -> Optional[ReviewRow]:
        values = next(csv.reader([text]), [])
        if self._header is None:
            if "path" not in values:
                raise ValueError("the first line is not a header with a 'path' column (a "
                                 "table? write results with --format json or csv)")
            self._header = values
            return None
        if len(values) != len(self._header):
            raise ValueError(f"{len(values)} columns, the header has {len(self._header)}")
        return row_from_csv(self._lines, dict(zip(self._header, values)))
