"""Exactly-once result rows across crashes: an append-only output file and a SQLite journal.

``leukedge watch`` classifies images as they arrive and must give every image exactly one row,
even when the PC is switched off mid-write. The output file is the truth about what was written;
the journal (SQLite in WAL mode, beside it) is its index, keyed by the image's real path, size
and modification time:

1. a batch's rows are appended to the output, flushed and fsync'd;
2. then their keys are committed to the journal, with the output's new length.

After a crash, :meth:`ResultJournal.open` repairs the output before anything else: a last line
cut short is dropped (its image is classified again), and complete rows written after the
journal's last recorded length are added to the journal (they were written, so their images
are not classified again). Every image therefore ends up with exactly one row.

Example:
    >>> journal = ResultJournal.open(Path("results.jsonl"), fmt="json", header=None)
    >>> journal.seen(key)
    False
    >>> journal.append([(key, line, True)])
"""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

SCHEMA = """
CREATE TABLE IF NOT EXISTS rows (key TEXT PRIMARY KEY, path TEXT, ok INTEGER, written_at REAL);
CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value TEXT);
"""


@dataclass(frozen=True)
class FileKey:
    """What identifies one version of one image: its real path, size and mtime."""

    path: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str | os.PathLike) -> "FileKey":
        info = os.stat(path)
        return cls(os.path.realpath(path), info.st_size, info.st_mtime_ns)

    @property
    def text(self) -> str:
        return f"{self.path}\x1f{self.size}\x1f{self.mtime_ns}"


def row_key(row: dict) -> Optional[str]:
    """The journal key recorded in a watch row (None for rows without one)."""
    if row.get("real_path") is None or row.get("size_bytes") is None:
        return None
    return FileKey(str(row["real_path"]), int(row["size_bytes"]), int(row["mtime_ns"])).text


def _parse_rows(text: str, fmt: str, header: Optional[str], source: Path) -> list[dict]:
    if fmt == "json":
        try:
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError:
            raise ValueError(f"--output {source} holds rows that are not JSON Lines; choose "
                             "another file or the --format it was written with") from None
    body = text if header is None else header + "\n" + text
    return list(csv.DictReader(io.StringIO(body)))


class ResultJournal:
    """The output file and its journal, repaired on open. Not thread-safe: one writer."""

    def __init__(self, output: Path, db: sqlite3.Connection, fmt: str):
        self.output, self.db, self.fmt = output, db, fmt

    @classmethod
    def open(cls, output: Path, fmt: str, header: Optional[str],
             journal: Optional[Path] = None) -> "ResultJournal":
        """Open (or create) the output and its journal, and reconcile them after a crash.

        Raises:
            ValueError: the output's existing rows are of another format than ``fmt``.
        """
        output = Path(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        path = journal or output.with_name(output.name + ".journal.sqlite")
        db = sqlite3.connect(str(path), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(SCHEMA)
        self = cls(output, db, fmt)
        self._repair(header)
        return self

    # -- state ------------------------------------------------------------------------------
    def _get(self, name: str, default: str) -> str:
        row = self.db.execute("SELECT value FROM state WHERE name = ?", (name,)).fetchone()
        return row[0] if row else default

    def _set(self, name: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO state VALUES (?, ?)", (name, value))

    def status(self, key: FileKey | str) -> Optional[bool]:
        """None: no row yet; True: classified; False: its row is an error."""
        text = key.text if isinstance(key, FileKey) else key
        row = self.db.execute("SELECT ok FROM rows WHERE key = ?", (text,)).fetchone()
        return None if row is None else bool(row[0])

    def seen(self, key: FileKey | str) -> bool:
        return self.status(key) is not None

    @property
    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM rows").fetchone()[0]

    # -- writing ----------------------------------------------------------------------------
    def append(self, rows: Sequence[tuple[FileKey, str, bool]]) -> None:
        """Append (key, line, ok) rows durably, then record their keys (module docstring)."""
        if not rows:
            return
        with open(self.output, "ab") as f:
            for _, line, _ in rows:
                f.write((line + "\n").encode("utf-8", "backslashreplace"))
            f.flush()
            os.fsync(f.fileno())
            length = f.tell()
        self.db.execute("BEGIN IMMEDIATE")
        self.db.executemany("INSERT OR IGNORE INTO rows VALUES (?, ?, ?, strftime('%s','now'))",
                            [(k.text, k.path, int(ok)) for k, _, ok in rows])
        self._set("output_bytes", str(length))
        self.db.execute("COMMIT")

    def write_header(self, header: Optional[str]) -> None:
        if header is not None and (not self.output.exists() or self.output.stat().st_size == 0):
            with open(self.output, "ab") as f:
                f.write((header + "\n").encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())

    # -- crash repair -----------------------------------------------------------------------
    def _repair(self, header: Optional[str]) -> None:
        if not self.output.exists():
            self.write_header(header)
            return
        data = self.output.read_bytes()
        complete = data.rfind(b"\n") + 1
        if complete < len(data):  # a row cut short by a crash: drop it, classify its image again
            with open(self.output, "r+b") as f:
                f.truncate(complete)
                f.flush()
                os.fsync(f.fileno())
            data = data[:complete]
        if not data:
            self.write_header(header)
            return
        first = data.split(b"\n", 1)[0].decode("utf-8", "replace")
        if header is not None and first != header:
            raise ValueError(f"--output {self.output} holds other rows (its first line is not "
                             "this command's CSV header); choose another file")
        start = min(int(self._get("output_bytes", "0")), len(data))
        tail = data[start:].decode("utf-8", "replace")
        if start == 0 and header is not None and tail.startswith(header):
            tail = tail[len(header) + 1:]
        rows = _parse_rows(tail, self.fmt, header, self.output)
        keys = [(k, r.get("real_path"), int(not r.get("error")))
                for r in rows if (k := row_key(r)) is not None]
        self.db.execute("BEGIN IMMEDIATE")
        self.db.executemany("INSERT OR IGNORE INTO rows VALUES (?, ?, ?, strftime('%s','now'))",
                            keys)
        self._set("output_bytes", str(len(data)))
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()
