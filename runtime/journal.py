"""Exactly-once result rows across crashes: an append-only output file and a SQLite journal.

``leukedge watch`` classifies images as they arrive and must give every image exactly one row,
even when the PC is switched off mid-write. The output file is the truth about what was written;
the journal (SQLite in WAL mode, beside it) is its index:

1. a batch's rows are appended to the output, flushed and fsync'd;
2. then their keys are committed to the journal, with the output's new length and inode.

Rows are keyed by the content of the image they describe (runtime/row_key.py): the same
bytes under another name or mount path are the same image, changed bytes a new one. Every row
carries its key (CSV too), so a lost journal is rebuilt from the output.

After a crash, :meth:`ResultJournal.open` repairs the output before anything else: a last line
cut short is dropped (its image is classified again), and complete rows written after the
journal's last recorded length are added to the journal (they were written, so their images
are not classified again). Every image therefore ends up with exactly one row. A write that
fails (a full disk) leaves no partial row and raises :class:`WriteError`; the same rows can be
appended again later and are written once. An output deleted or replaced while running is
noticed before the next append (its inode and length are compared) and started again, with
the CSV header (:attr:`ResultJournal.notices` says so).

Example:
    >>> journal = ResultJournal.open(Path("results.jsonl"), fmt="json", header=None)
    >>> journal.seen(key) or journal.append([(key, line, True)])
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import sqlite3
import stat
from pathlib import Path
from typing import Optional, Sequence

from .files import display_path
from .row_key import KEY_FIELDS, FileKey, row_key

__all__ = ["FileKey", "JournalError", "KEY_FIELDS", "ResultJournal", "WriteError", "check_output",
           "row_key"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS rows (key TEXT PRIMARY KEY, path TEXT, ok INTEGER, written_at REAL);
CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value TEXT);
"""
DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG)
_O_BINARY = getattr(os, "O_BINARY", 0)


def _parse_rows(text: str, fmt: str, header: Optional[str], source: Path) -> list[dict]:
    if fmt == "json":  # split on "\n" only: a name may hold U+2028, U+0085...
        try:
            rows = [json.loads(line) for line in text.split("\n") if line.strip()]
        except json.JSONDecodeError:
            raise ValueError(f"--output {source} holds rows that are not JSON Lines; choose "
                             "another file or the --format it was written with") from None
        return [r for r in rows if isinstance(r, dict)]
    body = text if header is None else header + "\n" + text
    return list(csv.DictReader(io.StringIO(body, newline="")))


class WriteError(Exception):
    """The output or the journal could not be written (nothing partial was left)."""

    def __init__(self, what: str, path: Path, error: BaseException):
        reason = getattr(error, "strerror", None) or str(error)
        super().__init__(f"cannot write {what} {display_path(path)} ({reason})")
        code = getattr(error, "errno", None)
        self.full = code in DISK_FULL or "full" in str(error).lower()


class JournalError(ValueError):
    """The journal file cannot be used; the message says what to do."""


def _journal_problem(path: Path, output: Path, error: BaseException) -> JournalError:
    name = display_path(path)
    return JournalError(
        f"the journal {name} cannot be used ({error}). It is only an index of --output "
        f"{display_path(output)}: make it a writable file, or delete it (with {name}-wal and "
        f"{name}-shm if present) and start again; it is rebuilt from the output")


def check_output(output: Path) -> None:
    try:
        mode = os.stat(output).st_mode
    except FileNotFoundError:
        return
    except OSError as e:
        raise ValueError(f"--output {display_path(output)} cannot be used ({e.strerror or e})"
                         ) from None
    if not stat.S_ISREG(mode):
        raise ValueError(f"--output {display_path(output)} is not a regular file (a folder, FIFO "
                         "or device such as /dev/null); give a file path")


class ResultJournal:
    """The output file and its journal, repaired on open. Not thread-safe: one writer."""

    def __init__(self, output: Path, db: sqlite3.Connection, fmt: str, path: Path):
        self.output, self.db, self.fmt, self.path = output, db, fmt, path
        self.header: Optional[str] = None
        self.legacy_header: Optional[str] = None
        self.notices: list[str] = []
        self._unrecorded: dict = {}  # written to the output, not yet committed
        self._bytes, self._ino, self._cut_to = 0, 0, None

    @classmethod
    def open(cls, output: Path, fmt: str, header: Optional[str],
             journal: Optional[Path] = None, legacy_header: Optional[str] = None
             ) -> "ResultJournal":
        """Open (or create) the output and its journal, and reconcile them after a crash.

        ``legacy_header``: a CSV header of an earlier version (without the key columns); an
        output that starts with it is rewritten with ``header`` (old rows get empty keys).

        Raises:
            ValueError: the output is not a regular file or holds rows of another format;
                :class:`JournalError` (a ValueError) when the journal is unusable.
        """
        output = Path(output)
        check_output(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        path = Path(journal or output.with_name(output.name + ".journal.sqlite"))
        if path.is_dir():
            raise _journal_problem(path, output, "it is a folder")
        try:
            db = sqlite3.connect(str(path), isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(SCHEMA)
            self = cls(output, db, fmt, path)
            self.header, self.legacy_header = header, legacy_header
            self._repair()
        except sqlite3.Error as e:
            raise _journal_problem(path, output, e) from None
        return self

    # -- state ------------------------------------------------------------------------------
    def _get(self, name: str, default: str) -> str:
        row = self.db.execute("SELECT value FROM state WHERE name = ?", (name,)).fetchone()
        return row[0] if row else default

    def _has(self, text: str) -> Optional[bool]:
        if text in self._unrecorded:
            return self._unrecorded[text][1]
        row = self.db.execute("SELECT ok FROM rows WHERE key = ?", (text,)).fetchone()
        return None if row is None else bool(row[0])

    def status(self, key: FileKey | str) -> Optional[bool]:
        """None: no row yet; True: classified; False: its row is an error."""
        if isinstance(key, str):
            return self._has(key)
        found = self._has(key.text)
        if found is None and key.sha256:
            found = self._has(key.path_text)  # a row written by an earlier version
        return found

    def seen(self, key: FileKey | str) -> bool:
        return self.status(key) is not None

    @property
    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM rows").fetchone()[0] + len(self._unrecorded)

    # -- writing ----------------------------------------------------------------------------
    def append(self, rows: Sequence[tuple[FileKey, str, bool]]) -> None:
        """Append (key, line, ok) rows durably, then record their keys (module docstring).

        Rows whose key is already written are skipped, so after a :class:`WriteError` the same
        batch can simply be appended again.
        """
        self._commit()
        rows = [r for r in rows if self._has(r[0].text) is None]
        if not rows:
            return
        payload = b"".join((line + "\n").encode("utf-8", "backslashreplace")
                           for _, line, _ in rows)
        fd = self._open_output()
        try:
            start = os.fstat(fd).st_size
            try:
                view = memoryview(payload)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError as e:
                self._undo(fd, start)
                raise WriteError("--output", self.output, e) from e
            self._bytes, self._ino = start + len(payload), os.fstat(fd).st_ino
        finally:
            os.close(fd)
        self._unrecorded.update({k.text: (k, ok) for k, _, ok in rows})
        self._commit()

    def _undo(self, fd: int, length: int) -> None:
        """Take back a partly written batch, now or before the next write."""
        try:
            os.ftruncate(fd, length)
            os.fsync(fd)
            self._cut_to = None
        except OSError:
            self._cut_to = length

    def _open_output(self) -> int:
        flags = os.O_WRONLY | os.O_APPEND | _O_BINARY
        try:
            if self._cut_to is not None:
                os.truncate(self.output, self._cut_to)
                self._cut_to = None
            fd = os.open(self.output, flags)
        except FileNotFoundError:
            fd = -1
        except OSError as e:
            raise WriteError("--output", self.output, e) from e
        if fd >= 0:
            info = os.fstat(fd)
            if (not self._ino or info.st_ino == self._ino) and info.st_size >= self._bytes:
                return fd
            os.close(fd)
        self.notices.append(
            f"--output {display_path(self.output)} was deleted, replaced or cut shorter while "
            f"watch ran; it is started again{' with its CSV header' if self.header else ''} (rows it "
            f"lost are not written again; to classify the inbox again, stop watch and delete "
            f"{display_path(self.path)})")
        self._cut_to = None
        try:
            self._repair(from_start=True)
            return os.open(self.output, flags)
        except OSError as e:
            raise WriteError("--output", self.output, e) from e
        except sqlite3.Error as e:
            raise WriteError("journal", self.path, e) from e

    def _commit(self) -> None:
        if not self._unrecorded:
            return
        try:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany(
                "INSERT OR IGNORE INTO rows VALUES (?, ?, ?, strftime('%s','now'))",
                [(text, display_path(k.path), int(ok))
                 for text, (k, ok) in self._unrecorded.items()])
            self._record_output()
            self.db.execute("COMMIT")
        except sqlite3.Error as e:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise WriteError("journal", self.path, e) from e
        self._unrecorded.clear()

    def _record_output(self) -> None:
        self.db.executemany("INSERT OR REPLACE INTO state VALUES (?, ?)",
                            [("output_bytes", str(self._bytes)), ("output_ino", str(self._ino))])

    def write_header(self, header: Optional[str]) -> None:
        """Create the output (empty, or with the CSV header) unless it has content."""
        if not self.output.exists() or self.output.stat().st_size == 0:
            with open(self.output, "ab") as f:
                f.write(b"" if header is None else (header + "\n").encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())

    # -- crash repair -----------------------------------------------------------------------
    def _repair(self, from_start: bool = False) -> None:
        header = self.header
        if self.output.exists():
            data = self._cut_partial_row(self.output.read_bytes())
        else:
            data = b""
        if not data:
            self.write_header(header)
        elif header is not None and not data.startswith(header.encode("utf-8") + b"\n"):
            data = self._migrate(data)
        info = os.stat(self.output)
        recorded_ino = int(self._get("output_ino", "0"))
        recorded = int(self._get("output_bytes", "0"))
        if from_start or (recorded_ino and info.st_ino != recorded_ino) or len(data) < recorded:
            recorded = 0  # another file than the one recorded: read all its rows
        tail = data[recorded:].decode("utf-8", "replace")
        if recorded == 0 and header is not None and tail.startswith(header + "\n"):
            tail = tail[len(header) + 1:]
        rows = _parse_rows(tail, self.fmt, header, self.output)
        keys = [(k, display_path(r.get("real_path") or ""), int(not r.get("error")))
                for r in rows if (k := row_key(r)) is not None]
        self._bytes, self._ino = info.st_size, info.st_ino
        self.db.execute("BEGIN IMMEDIATE")
        self.db.executemany("INSERT OR IGNORE INTO rows VALUES (?, ?, ?, strftime('%s','now'))",
                            keys)
        self._record_output()
        self.db.execute("COMMIT")

    def _cut_partial_row(self, data: bytes) -> bytes:
        complete = data.rfind(b"\n") + 1
        if complete < len(data):  # a row cut short by a crash: drop it, classify its image again
            with open(self.output, "r+b") as f:
                f.truncate(complete)
                f.flush()
                os.fsync(f.fileno())
        return data[:complete]

    def _migrate(self, data: bytes) -> bytes:
        """An output of an earlier version (CSV without key columns): add them, empty."""
        first = data.split(b"\n", 1)[0].decode("utf-8", "replace")
        if self.legacy_header is None or first != self.legacy_header:
            raise ValueError(f"--output {display_path(self.output)} holds other rows (its first "
                             "line is not this command's CSV header); choose another file")
        records = list(csv.reader(io.StringIO(data.decode("utf-8", "replace"), newline="")))
        extra = len(next(csv.reader([self.header]))) - len(records[0])
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(next(csv.reader([self.header])))
        writer.writerows(r + [""] * extra for r in records[1:])
        new = buf.getvalue().encode("utf-8")
        from .files import atomic_write_bytes

        atomic_write_bytes(self.output, new)
        self.notices.append(f"--output {display_path(self.output)} was written by an earlier "
                            f"leukedge: its header now ends with {', '.join(KEY_FIELDS)} "
                            "(empty for its old rows)")
        return new

    def close(self) -> None:
        self.db.close()
