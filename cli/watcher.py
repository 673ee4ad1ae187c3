"""One `leukedge watch` session: read what is ready, classify it, write its rows, move it.

Each ready file is read once (runtime/snapshot.py): its row's key, size and mtime are those of
exactly the bytes classified; a file that changes while read, is empty, or is held open by its
writer waits. Rows are appended through the journal (runtime/journal.py); a full disk waits
and retries without losing or repeating a row. A file is moved to --done/--failed only while
its current size and mtime are those of a written row. Every problem is one warning naming the
path and what to do, and the other files go on.
"""

from __future__ import annotations

import csv
import io
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import typer

from .errors import reported
from .output import display_path

WRITE_RETRY_SECONDS = 2.0


class StoppedWhileWaiting(Exception):
    """SIGTERM/Ctrl-C while rows were waiting for disk space (they were not written)."""


@dataclass
class _Item:
    path: Path
    key: Any  # FileKey
    data: Optional[bytes] = None
    error: Optional[str] = None


@dataclass
class _Counts:
    done: int = 0
    errors: int = 0
    started: float = field(default_factory=time.monotonic)


def _warn(message: str) -> None:
    typer.echo(f"Warning: {message}", err=True)


def _csv(values: list) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue()[:-1]


class KeyedRows:
    """The infer row formatter plus the key columns (JSON fields are in the row already)."""

    def __init__(self, formatter: Any, key_fields: tuple):
        self.formatter, self.key_fields = formatter, key_fields

    def legacy_header(self) -> Optional[str]:
        return self.formatter.header()

    def header(self) -> Optional[str]:
        base = self.formatter.header()
        return None if base is None else base + "," + _csv(list(self.key_fields))

    def line(self, row: dict) -> str:
        base = self.formatter.line(row)
        if self.formatter.fmt != "csv":
            return base
        return base + "," + _csv(["" if row.get(k) is None else row[k] for k in self.key_fields])


class Watcher:
    """The model, the inbox, the journal and the counts of one watch process."""

    def __init__(self, opts: Any, stop: threading.Event):
        from leukedge.runtime.inbox import Inbox, is_inside
        from leukedge.runtime.journal import KEY_FIELDS, ResultJournal

        from .classifier import open_classifier
        from .output import RowFormatter

        self.opts, self.stop = opts, stop
        self.classifier = open_classifier(opts.model, opts.provider, opts.threads,
                                          opts.review_below)
        self.rows = KeyedRows(RowFormatter(opts.fmt, self.classifier.classes, shorten=False),
                              KEY_FIELDS)
        with reported(ValueError):
            self.journal = ResultJournal.open(opts.output, opts.fmt, self.rows.header(),
                                              legacy_header=self.rows.legacy_header())
        self._say_notices()
        inside = [d for d in (opts.done_dir, opts.failed_dir, opts.overlay_dir)
                  if d is not None and is_inside(d, opts.inbox)]
        self.inbox = Inbox(opts.inbox, opts.recursive, opts.settle, opts.give_up, exclude=inside)
        self.common = self.classifier.provenance
        self.counts = _Counts()

    def _say_notices(self) -> None:
        for notice in self.journal.notices:
            _warn(notice)
        self.journal.notices.clear()

    def tick(self) -> None:
        """One scan: classify what is ready (in batches), move what was written."""
        todo = []
        ready = self.inbox.scan()
        for folder, reason in self.inbox.new_problems():
            _warn(f"{display_path(folder)}: {reason}. Watch goes on with the other files "
                  "(said once while it lasts).")
        from leukedge.runtime.batching import PIXEL_BUDGET, declared_pixels

        pixels = 0
        for path in ready:
            item = self._take(path)
            if item is None:
                continue
            status = self.journal.status(item.key)
            if status is not None:
                self._after_row(item, status)
                continue
            if item.data is not None:
                held = declared_pixels(item.data, self.opts.max_pixels)
                if todo and pixels + held > PIXEL_BUDGET:  # decoded, it would pass the budget
                    self._batch(todo)
                    todo, pixels = [], 0
                    if self.stop.is_set():
                        return
                pixels += held
            todo.append(item)  # bytes in memory: at most one batch of files at a time
            if len(todo) == self.opts.batch_size:
                self._batch(todo)
                todo, pixels = [], 0
                if self.stop.is_set():
                    return
        if todo:
            self._batch(todo)

    def _take(self, path: Path) -> Optional[_Item]:
        """Read a ready file once; None when it is not ready after all."""
        from leukedge.runtime.decode import ImageError
        from leukedge.runtime.journal import FileKey
        from leukedge.runtime.snapshot import NotReady, read_snapshot

        try:
            snap = read_snapshot(path)
        except NotReady as e:
            {"gone": self.inbox.forget, "changed": self.inbox.changed,
             "busy": self.inbox.wait}[e.why](path)
            return None
        except ImageError as e:
            return self._unreadable(path, str(e))
        real = os.path.realpath(path)
        if snap.size == 0:  # created empty, filled later: wait like a file cut short
            if self.inbox.retry_later(path):
                return None
            return _Item(path, FileKey(real, 0, snap.mtime_ns),
                         error=f"{os.fsdecode(path)}: empty file (0 bytes)")
        return _Item(path, FileKey(real, snap.size, snap.mtime_ns, snap.sha256), data=snap.data)

    def _unreadable(self, path: Path, error: str) -> Optional[_Item]:
        from leukedge.runtime.journal import FileKey

        try:
            info = os.stat(path)
        except OSError:
            return None
        return _Item(path, FileKey(os.path.realpath(path), info.st_size, info.st_mtime_ns),
                     error=error)

    def _decode(self, item: _Item) -> tuple[Any, Optional[str], float]:
        """(pixels, error, seconds); error "retry" for a file still cut short."""
        from leukedge.runtime.decode import ImageError, decode_image

        if item.error is not None:
            return None, item.error, 0.0
        started = time.perf_counter()
        try:
            pixels = decode_image(item.data, os.fsdecode(item.path), self.opts.max_pixels)
            return pixels, None, time.perf_counter() - started
        except ImageError as e:
            if e.reason.startswith("truncated") and self.inbox.retry_later(item.path):
                return None, "retry", 0.0
            return None, str(e), 0.0
        except Exception as e:  # an odd file must not stop the service
            return None, f"{os.fsdecode(item.path)}: could not be decoded ({e})", 0.0
        finally:
            item.data = None

    def _batch(self, items: list) -> None:
        from leukedge.runtime.pipeline import FileResult

        from .output import utc_now

        decoded = [(item, *self._decode(item)) for item in items]
        ready = [d for d in decoded if d[2] != "retry"]
        good = [d for d in ready if d[2] is None]
        started = time.perf_counter()
        drawing = self.opts.overlay_dir is not None
        results = self.classifier.predict_pixels_and_masks([d[1] for d in good], drawing) \
            if good else []
        share = (time.perf_counter() - started) / max(len(good), 1)
        by_item = {id(d[0]): p for d, (p, _) in zip(good, results)}
        overlays = {id(d[0]): self._overlay(d[0], d[1], p, mask)
                    for d, (p, mask) in zip(good, results)} if drawing else {}
        rows = []
        for item, _, error, seconds in ready:
            result = FileResult(str(item.path), prediction=by_item.get(id(item)), error=error,
                                seconds=seconds + (share if error is None else 0.0))
            row = {**result.to_dict(), "overlay": overlays.get(id(item)), "timestamp": utc_now(),
                   **self.common, **item.key.fields()}
            rows.append((item.key, self.rows.line(row), error is None))
        self._append(rows)
        for item, _, error, _ in ready:
            self.counts.done += 1
            self.counts.errors += error is not None
            self._after_row(item, error is None)

    def _overlay(self, item: _Item, pixels: Any, prediction: Any, mask: Any) -> Optional[str]:
        """Draw ``--overlay-dir``/<stem>-<sha256 prefix>.overlay.png (named by the bytes, so a
        restart redraws the same file); None, with a warning, when it cannot be written."""
        from leukedge.runtime.overlay import OVERLAY_SUFFIX, MAX_STEM, write_overlay

        name = f"{item.path.stem[:MAX_STEM] or 'image'}-{item.key.sha256[:12]}{OVERLAY_SUFFIX}"
        try:
            if mask is None:
                raise ValueError("the model has no stain_mask output")
            return str(write_overlay(self.opts.overlay_dir / name, pixels, mask, prediction))
        except Exception as e:  # an overlay must not stop the service
            _warn(f"overlay of {os.fsdecode(item.path)} not written ({e})")
            return None

    def _append(self, rows: list) -> None:
        """Write the rows; on a full disk (or a failing write) wait and retry, saying so once."""
        from leukedge.runtime.journal import WriteError

        told = False
        while True:
            try:
                self.journal.append(rows)
                break
            except WriteError as e:
                if not told:
                    kind = "disk full" if e.full else "write failed"
                    _warn(f"{e}: {kind}, waiting and retrying every {WRITE_RETRY_SECONDS:g} s; "
                          "free some space (or fix the folder): no row is lost or repeated")
                    told = True
                if self.stop.wait(WRITE_RETRY_SECONDS):
                    raise StoppedWhileWaiting(len(rows)) from None
        self._say_notices()
        if told:
            typer.echo(f"Rows written to {display_path(self.opts.output)} again; going on.",
                       err=True)

    def _after_row(self, item: _Item, ok: bool) -> None:
        """Its row is written: to --done or --failed, only if the file still holds those bytes."""
        from leukedge.runtime.moves import move_into

        self.inbox.mark_done(item.path, item.key.size, item.key.mtime_ns)
        flag, folder = ("--done", self.opts.done_dir) if ok else \
            ("--failed", self.opts.failed_dir)
        if folder is None:
            return
        try:
            now = os.stat(item.path)
        except OSError:
            self.inbox.forget(item.path)
            return
        if (now.st_size, now.st_mtime_ns) != (item.key.size, item.key.mtime_ns):
            self.inbox.changed(item.path)  # new bytes since: they get their own row first
            return
        try:
            move_into(item.path, folder)
        except OSError as e:
            _warn(f"{display_path(item.path)} stays in the inbox: not moved to {flag} "
                  f"{display_path(folder)} ({e.strerror or e}). Its row is written; free space "
                  "or fix the folder's permissions, then restart watch to move it.")
        else:
            self.inbox.forget(item.path)

    def status(self) -> str:
        c = self.counts
        rate = c.done / max(time.monotonic() - c.started, 1e-9)
        return (f"{c.done} classified, {self.inbox.pending} pending, {c.errors} errors, "
                f"{rate:.1f} images/s")
