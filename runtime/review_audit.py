"""The review audit trail: one JSON line per decision, each holding the sha256 of the line before.

A line (UTF-8 JSON, keys in :data:`FIELDS` order, ending with ``\\n``)::

    {"audit": 1, "path": "smears/a.jpg", "file": "/lab/smears/a.jpg", "sha256": "<image>",
     "model": "default", "model_sha256": "<model>", "predicted": "Pre", "confidence": 0.61,
     "label": "Pro", "reviewer": "A. Hematologist", "time": "2025-01-31T09:12:03.123+00:00",
     "replaces": null, "prev_sha256": "<sha256 of the previous line's bytes>"}

``prev_sha256`` is the sha256 of the previous line's bytes without its newline, 64 zeros on
the first line. :func:`check_chain` finds the first line that breaks the chain: an edited
line changes its hash, so the *next* line no longer names it; a removed or inserted line
breaks it the same way. The chain holds no secret: it shows accidental and casual changes,
and a deliberate rewrite of the whole file only against a head hash noted elsewhere (the
decision answer and ``leukedge review verify`` give it).

:class:`AuditTrail` is the one writer of a file: an OS lock beside it (runtime/lock.py) keeps
other processes out and a thread lock orders this one's decisions; each line is written with
one ``write``, then flushed and ``fsync``'d before the decision is answered. A write that
fails (a full disk) is cut back off, so the file never keeps half a line.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .errors import LeukedgeError
from .files import display_path
from .lock import LockHeld, hold_lock

AUDIT_VERSION = 1
ZERO_HASH = "0" * 64
FIELDS = ("audit", "path", "file", "sha256", "model", "model_sha256", "predicted", "confidence",
          "label", "reviewer", "time", "replaces", "prev_sha256")
REQUIRED = ("path", "sha256", "label", "reviewer", "time", "prev_sha256")


class AuditError(LeukedgeError):
    """The audit file cannot be used: broken chain, locked by another process, unwritable."""


@dataclass(frozen=True)
class ChainCheck:
    """What :func:`check_chain` found: ``problem`` (None when whole) names the first bad line."""

    lines: int
    head_sha256: str  # the sha256 of the last good line (zeros when none)
    problem: Optional[str] = None
    bad_line: Optional[int] = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def line_sha256(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def _line_problem(number: int, raw: bytes, prev: str) -> Optional[tuple[int, str]]:
    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return number, f"line {number} is not a JSON line: it was altered or cut"
    if not isinstance(record, dict):
        return number, f"line {number} is not a JSON object: it was altered"
    missing = [f for f in REQUIRED if f not in record]
    if missing:
        return number, f"line {number} lacks {', '.join(missing)}: it was altered"
    if record["prev_sha256"] == prev:
        return None
    if number == 1:
        return 1, ("line 1: prev_sha256 is not 64 zeros: line 1 was altered, or lines before "
                   "it were removed")
    return number - 1, (f"line {number}: prev_sha256 does not match line {number - 1}: line "
                        f"{number - 1} was altered, or a line was removed or inserted between "
                        f"them (or line {number}'s prev_sha256 was edited)")


def check_chain(data: bytes) -> tuple[ChainCheck, list[dict]]:
    """The chain check of an audit file's bytes, and the records up to the first bad line."""
    lines = data.split(b"\n")
    complete, tail = lines[:-1], lines[-1]
    prev, records = ZERO_HASH, []
    for number, raw in enumerate(complete, start=1):
        found = _line_problem(number, raw, prev)
        if found is not None:
            bad, problem = found
            return ChainCheck(number - 1, prev, problem, bad), records[:bad - 1]
        records.append(json.loads(raw))
        prev = line_sha256(raw)
    if tail:
        number = len(complete) + 1
        return ChainCheck(len(complete), prev, f"line {number} is incomplete (no newline at "
                                               "the end): a write was cut short or the file "
                                               "was cut", number), records
    return ChainCheck(len(complete), prev), records


def verify_audit(path: str | os.PathLike) -> ChainCheck:
    """The chain check of the audit file ``path``.

    Raises:
        AuditError: the file cannot be read.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise AuditError(f"audit file {display_path(path)}: cannot read it "
                         f"({e.strerror or e})") from e
    return check_chain(data)[0]


def read_records(path: str | os.PathLike) -> list[dict]:
    """The records of an audit file whose chain is whole.

    Raises:
        AuditError: unreadable, or the chain is broken (the message names the line).
    """
    data = _read_or_empty(Path(path))
    check, records = check_chain(data)
    if not check.ok:
        raise AuditError(f"audit file {display_path(path)}: {check.problem} (leukedge review "
                         "verify shows it)")
    return records


def _read_or_empty(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""
    except OSError as e:
        raise AuditError(f"audit file {display_path(path)}: cannot read it "
                         f"({e.strerror or e})") from e


def encode_record(fields: dict, prev_sha256: str) -> bytes:
    """One audit line (without newline): ``fields`` in :data:`FIELDS` order, then the chain."""
    record = {"audit": AUDIT_VERSION, **{k: fields.get(k) for k in FIELDS[1:-1]},
              "prev_sha256": prev_sha256}
    return json.dumps(record, ensure_ascii=False, separators=(", ", ": ")).encode("utf-8")


@dataclass
class AuditTrail:
    """The open audit file of one review station (see the module docstring).

    Example:
        >>> trail = AuditTrail.open(Path("results.jsonl.audit.jsonl"))
        >>> trail.append({"path": "a.jpg", "sha256": "...", "label": "Pro", ...})["prev_sha256"]
        '0000000000000000000000000000000000000000000000000000000000000000'
    """

    path: Path
    records: list[dict]
    head_sha256: str
    _fd: int
    _lock_file: object
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, path: str | os.PathLike) -> "AuditTrail":
        """Lock, read and check the file (created when missing).

        Raises:
            AuditError: another process writes it, its chain is broken, or it cannot be
                opened for appending.
        """
        path = Path(path)
        shown = display_path(path)
        try:
            lock = hold_lock(path.with_name(path.name + ".lock"))
        except LockHeld as e:
            raise AuditError(f"audit file {shown} is written by another process (pid "
                             f"{e.pid or 'unknown'}); one review station per audit file") from e
        except OSError as e:
            raise AuditError(f"audit file {shown}: cannot create its lock file beside it "
                             f"({e.strerror or e})") from e
        try:
            check, records = check_chain(_read_or_empty(path))
            if not check.ok:
                raise AuditError(f"audit file {shown}: {check.problem}; no decision is added "
                                 "to a broken chain (leukedge review verify shows it; give "
                                 "serve another --audit file)")
            fd = cls._open_append(path)
        except BaseException:
            lock.release()
            raise
        return cls(path, records, check.head_sha256, fd, lock)

    @staticmethod
    def _open_append(path: Path) -> int:
        new = not path.exists()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0),
                         0o644)
        except OSError as e:
            raise AuditError(f"audit file {display_path(path)}: cannot open it for appending "
                             f"({e.strerror or e})") from e
        if new and hasattr(os, "O_DIRECTORY"):  # the new name itself must survive a power cut
            folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        return fd

    def append(self, fields: dict) -> dict:
        """Write one decision durably; returns the record written, with ``line`` (1-based)
        and ``line_sha256`` (the new head) added for the caller.

        Raises:
            AuditError: the line could not be written (nothing of it is left in the file).
        """
        with self._lock:
            raw = encode_record(fields, self.head_sha256)
            size = os.fstat(self._fd).st_size
            try:
                written = os.write(self._fd, raw + b"\n")
                if written != len(raw) + 1:
                    raise OSError(f"only {written} of {len(raw) + 1} bytes written")
                os.fsync(self._fd)
            except OSError as e:
                self._cut_back(size)
                raise AuditError(f"audit file {display_path(self.path)}: the decision was not "
                                 f"recorded ({getattr(e, 'strerror', None) or e})") from e
            record = json.loads(raw)
            self.records.append(record)
            self.head_sha256 = line_sha256(raw)
            return {**record, "line": len(self.records), "line_sha256": self.head_sha256}

    def _cut_back(self, size: int) -> None:
        try:
            os.ftruncate(self._fd, size)
            os.fsync(self._fd)
        except OSError:
            pass  # the next open's chain check names the cut line

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._lock_file.release()
