"""The review station: the queue of flagged images of a results file, and the decisions on them.

:class:`ReviewStation` joins a live results file (runtime/review_rows.py), the audit trail
(runtime/review_audit.py) and the served :class:`~leukedge.runtime.classifier.Classifier`:

- **The queue**: the latest row of each image that needs review and could be classified,
  not yet decided, by confidence (lowest first). An image is decided when the audit holds a
  decision for its path, and, where the row names the bytes classified (``watch`` rows carry
  their sha256), for those bytes: an image whose bytes changed is a new image.
- **A decision** names a path of the results file, a class of the model and a reviewer. The
  image's bytes are hashed at decision time. A second decision on the same bytes is refused
  (409) unless it says ``"replace": true``; then its line names the line it replaces. An image
  whose bytes differ from the ones ``watch`` classified is refused (409): its prediction is
  not about what is on disk now.
- **Images** are found only through the rows: a client names an id (a hash of the row's
  path), never a file (runtime/review_images.py draws them).
"""

from __future__ import annotations

import json
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .decode import ImageError, read_file_bytes
from .files import display_path
from .review_audit import AuditTrail, line_sha256
from .review_rows import ResultsFile, ReviewRow

MAX_REVIEWER = 100


class ReviewRefused(Exception):
    """A request the station refuses: ``status`` (an HTTP code) and a message."""

    def __init__(self, status: int, message: str, **extra: Any):
        super().__init__(message)
        self.status, self.extra = status, extra


def check_reviewer(value: Any) -> str:
    """The reviewer's name, stripped, or ReviewRefused(400) saying what is wrong."""
    if not isinstance(value, str) or not value.strip():
        raise ReviewRefused(400, "'reviewer' is missing: every decision names who made it")
    name = value.strip()
    if len(name) > MAX_REVIEWER or not name.isprintable():
        raise ReviewRefused(400, f"'reviewer' must be printable text of at most {MAX_REVIEWER} "
                                 "characters")
    return name


def views_of(classifier: Any, row: ReviewRow) -> list[str]:
    """The views of a row's image the server can draw (runtime/review_images.py), the plain
    image first: the model's stain outline when it has a ``stain_mask`` output, and the
    overlay ``infer --overlay-dir`` saved when the row names one."""
    views = ["image"]
    if "stain_mask" in classifier.contract.outputs:
        views.append("overlay")
    if row.overlay:
        views.append("saved")
    return views


@dataclass(frozen=True)
class _Seen:
    size: int
    mtime_ns: int
    sha256: str


class ReviewStation:
    """A results file under review, with its audit trail.

    Args:
        classifier: the served model (its classes are the labels a reviewer may pick; its
            provenance stands in for rows that do not name their model).
        results: the results file (it may not exist yet: the queue is empty until it does).
        audit: the audit file (locked while the station is open; see :meth:`close`).

    Example:
        >>> station = ReviewStation(clf, Path("results.jsonl"), Path("results.jsonl.audit.jsonl"))
        >>> station.decide({"path": "a.jpg", "label": "Pro", "reviewer": "A. H."})["line"]
        1
    """

    def __init__(self, classifier: Any, results: Path, audit: Path):
        self.classifier, self.results_path = classifier, Path(results)
        self.results = ResultsFile(self.results_path)
        self.audit = AuditTrail.open(audit)
        self._lock = threading.Lock()  # the results file's reader and the hash cache
        self._hashes: dict[str, _Seen] = {}
        self._by_id: Optional[dict[str, ReviewRow]] = None
        self._by_path: dict[str, ReviewRow] = {}
        self._items: dict[ReviewRow, dict] = {}
        self._queue_cache: Optional[tuple[tuple, bytes]] = None
        self._deciding = threading.Lock()  # a decision's check and its append are one step
        self._decided: dict[str, dict] = {}  # path -> its latest decision, with its "line"
        for line, record in enumerate(self.audit.records, start=1):
            self._decided[record["path"]] = {**record, "line": line}

    def close(self) -> None:
        self.audit.close()

    # -- the rows ----------------------------------------------------------------------------
    def refresh(self) -> None:
        """Read what the results file gained; the rows are then read from a snapshot, so a
        request never sees the reader half-way (requests run in several threads)."""
        with self._lock:
            if self.results.refresh() or self._by_id is None:
                self._by_path = dict(self.results.latest)
                self._by_id = {r.id: r for r in self._by_path.values()}

    def row(self, item_id: str) -> ReviewRow:
        """The latest row whose id is ``item_id``; ReviewRefused(404) when none is."""
        self.refresh()
        row = (self._by_id or {}).get(item_id)
        if row is None:
            raise ReviewRefused(404, f"no image with id {item_id!r} in {self.results_path.name}")
        return row

    def file_of(self, name: Optional[str]) -> Optional[Path]:
        """Where a path named in the results file is now: as written (a relative one from this
        process's folder, then from the results file's folder); None when it is not a file."""
        if not name:
            return None
        path = Path(name)
        bases = [Path()] if path.is_absolute() else [Path(), self.results_path.parent]
        for base in bases:
            candidate = base / path
            if candidate.is_file():
                return candidate.absolute()
        return None

    def image_file(self, row: ReviewRow) -> Optional[Path]:
        return self.file_of(row.path) or self.file_of(row.real_path)

    def _sha256(self, path: Path) -> Optional[str]:
        """The file's sha256, hashed again only when its size or mtime changed."""
        try:
            info = os.stat(path)
        except OSError:
            return None
        key = str(path)
        with self._lock:
            seen = self._hashes.get(key)
        if seen is not None and (seen.size, seen.mtime_ns) == (info.st_size, info.st_mtime_ns):
            return seen.sha256
        try:
            digest = line_sha256(read_file_bytes(path))
        except ImageError:
            return None
        with self._lock:
            self._hashes[key] = _Seen(info.st_size, info.st_mtime_ns, digest)
        return digest

    def decision_of(self, row: ReviewRow) -> Optional[dict]:
        """The audit record deciding this row's image, or None."""
        record = self._decided.get(row.path)
        if record is None or (row.sha256 and record.get("sha256") != row.sha256):
            return None
        return record

    # -- the queue ---------------------------------------------------------------------------
    def queue_json(self) -> bytes:
        """:meth:`queue` as UTF-8 JSON, encoded again only when the results file or the audit
        changed (the page asks every few seconds; a 1,000-row queue is ~0.6 MB)."""
        self.refresh()
        version = (self.results.version, len(self.audit.records))
        with self._lock:
            if self._queue_cache is not None and self._queue_cache[0] == version:
                return self._queue_cache[1]
        data = json.dumps(self.queue(), ensure_ascii=False, separators=(",", ":")).encode()
        with self._lock:
            self._queue_cache = (version, data)
        return data

    def queue(self) -> dict:
        """The queue as the page reads it (``items`` by confidence, lowest first)."""
        self.refresh()
        rows = list(self._by_path.values())
        flagged = [r for r in rows if r.needs_review and r.error is None]
        waiting = [r for r in flagged if self.decision_of(r) is None]
        waiting.sort(key=lambda r: (r.confidence if r.confidence is not None else -math.inf,
                                    r.path))
        return {"results": display_path(self.results_path), "format": self.results.fmt,
                "classes": list(self.classifier.classes), "model": self.model_info(),
                "limits": self.classifier.contract.input_checks.to_dict(),
                "rows": len(rows), "flagged": len(flagged),
                "decided": len(flagged) - len(waiting),
                "unreadable": sum(1 for r in rows if r.error is not None),
                "problems": list(self.results.problems),
                "problem_count": self.results.problem_count,
                "audit": {"file": display_path(self.audit.path),
                          "lines": len(self.audit.records), "head_sha256": self.audit.head_sha256},
                "items": self._items_of(waiting)}

    def _items_of(self, rows: list[ReviewRow]) -> list[dict]:
        """The queue entries of ``rows``, each built once per row read."""
        with self._lock:
            known = self._items
        items = {row: known.get(row) or self.item(row) for row in rows}
        with self._lock:
            self._items = items
        return list(items.values())

    def model_info(self) -> dict:
        p = self.classifier.provenance
        return {"model": p["model"], "model_sha256": p["model_sha256"],
                "review_below": self.classifier.review_below}

    def item(self, row: ReviewRow) -> dict:
        ranked = sorted(row.probabilities.items(), key=lambda kv: -kv[1])
        name = row.path.replace("\\", "/").rsplit("/", 1)[-1]
        return {"id": row.id, "path": row.path, "name": name, "label": row.label,
                "confidence": row.confidence, "probabilities": row.probabilities,
                "top2": [{"label": k, "p": v} for k, v in ranked[:2]],
                "reasons": row.reasons, "input_checks": row.input_checks,
                "model": row.model, "timestamp": row.timestamp, "line": row.line,
                "views": views_of(self.classifier, row)}

    # -- decisions ---------------------------------------------------------------------------
    def decide(self, body: Any) -> dict:
        """Record one decision (see the module docstring); returns the audit record written.

        Raises:
            ReviewRefused: 400 for a bad body, label or reviewer, 404 for a path not in the
                results file, 409 for a repeat or a changed image, 410 for a missing file,
                507 when the audit file cannot be written.
        """
        if not isinstance(body, dict):
            raise ReviewRefused(400, "send a JSON object: {\"path\", \"label\", \"reviewer\"}")
        path, label = body.get("path"), body.get("label")
        reviewer = check_reviewer(body.get("reviewer"))
        replace = body.get("replace", False)
        if not isinstance(replace, bool):
            raise ReviewRefused(400, "'replace' must be true or false")
        self.refresh()
        row = self._by_path.get(path) if isinstance(path, str) else None
        if row is None:
            raise ReviewRefused(404, f"unknown path {path!r}: not a row of "
                                     f"{self.results_path.name}")
        if label not in self.classifier.classes:
            raise ReviewRefused(400, f"unknown label {label!r}. Valid: "
                                     f"{', '.join(self.classifier.classes)}")
        if row.error is not None:
            raise ReviewRefused(409, f"{path} could not be classified ({row.error}); there is "
                                     "no prediction to decide on")
        file = self.image_file(row)
        digest = self._sha256(file) if file is not None else None
        if digest is None:
            raise ReviewRefused(410, f"{path}: the image file is no longer there (moved or "
                                     "deleted); the decision was not recorded")
        if row.sha256 and digest != row.sha256:
            raise ReviewRefused(409, f"{path}: the file changed since it was classified; its "
                                     "prediction is not about these bytes")
        return self._record(row, file, digest, label, reviewer, replace)

    def _record(self, row: ReviewRow, file: Path, digest: str, label: str, reviewer: str,
                replace: bool) -> dict:
        from datetime import datetime, timezone

        with self._deciding:
            earlier = self._decided.get(row.path)
            same = earlier is not None and earlier.get("sha256") == digest
            if same and not replace:
                raise ReviewRefused(409, f"{row.path} was already decided ({earlier['label']}, "
                                         f"by {earlier['reviewer']} at {earlier['time']}); send "
                                         "\"replace\": true to replace that decision",
                                    decided=earlier)
            model = row.model or self.model_info()["model"]
            model_sha = row.model_sha256 or self.model_info()["model_sha256"]
            fields = {"path": row.path, "file": display_path(file), "sha256": digest,
                      "model": model, "model_sha256": model_sha, "predicted": row.label,
                      "confidence": row.confidence, "label": label, "reviewer": reviewer,
                      "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                      "replaces": earlier["line"] if same else None}
            record = self.audit.append(fields)
            self._decided[row.path] = record
        return record
