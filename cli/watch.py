"""`leukedge watch`: classify every image that appears in a folder, exactly once, across crashes.

The folder is scanned on a timer (``--poll``) and, where the ``watchdog`` package sees
filesystem events, woken early by them. Complete files (stable for ``--settle`` seconds, not
cut short) are classified in batches; each batch's rows are appended to the output and only then
recorded in the journal (runtime/journal.py), so a crash at any moment leaves every image with
exactly one row once the command runs again. SIGTERM or Ctrl-C finishes the current batch and
exits 0.
"""

from __future__ import annotations

import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .errors import EXIT_OK, reported
from .options import (ModelOption, Provider, ProviderOption, ReviewBelowOption, ThreadsOption,
                      registry_enum)

RowFormat = registry_enum("RowFormat", ("json", "csv"))  # table is for terminals

HELP = """Classify every image that appears in INBOX, appending one row per image to --output.

Images already there are classified first. A file is taken once its size and time have not
changed for --settle seconds; one still cut short is retried until --give-up seconds, then
gets an error row. Names ending .part/.tmp/.crdownload and hidden files wait until renamed.
Each image gets exactly one row, also across crashes and restarts (a journal beside the output
records what was written). SIGTERM or Ctrl-C: finish the batch, exit 0."""


@dataclass
class WatchOptions:
    inbox: Path
    output: Path
    fmt: str
    recursive: bool
    poll: float
    settle: float
    give_up: float
    batch_size: int
    model: Optional[str]
    provider: str
    threads: Optional[int]
    review_below: Optional[float]
    done_dir: Optional[Path]
    failed_dir: Optional[Path]
    max_pixels: int


@dataclass
class _Counts:
    done: int = 0
    errors: int = 0
    started: float = field(default_factory=time.monotonic)


def _move(path: Path, folder: Optional[Path]) -> None:
    if folder is None or not path.exists():
        return
    target = folder / path.name
    n = 1
    while target.exists():
        n += 1
        target = folder / f"{path.stem}-{n}{path.suffix}"
    try:
        shutil.move(str(path), str(target))
    except OSError as e:
        typer.echo(f"Warning: {path} not moved to {folder} ({e.strerror or e})", err=True)


def _events(inbox: Path, recursive: bool, wake: threading.Event) -> Any:
    """A watchdog observer that wakes the loop, or None (polling only)."""
    try:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer
    except ImportError:
        return None

    class Wake(FileSystemEventHandler):
        def on_any_event(self, event) -> None:
            wake.set()

    observer = Observer()
    observer.schedule(Wake(), str(inbox), recursive=recursive)
    observer.daemon = True
    observer.start()
    return observer


class Watcher:
    """One watch session: the model, the inbox, the journal, the counts."""

    def __init__(self, opts: WatchOptions):
        from leukedge.runtime.inbox import Inbox
        from leukedge.runtime.journal import ResultJournal

        from .infer import open_classifier, provenance
        from .output import RowFormatter

        self.opts = opts
        self.classifier = open_classifier(opts.model, opts.provider, opts.threads,
                                          opts.review_below)
        self.formatter = RowFormatter(opts.fmt, self.classifier.classes, shorten=False)
        with reported(ValueError):
            self.journal = ResultJournal.open(opts.output, opts.fmt, self.formatter.header())
        self.inbox = Inbox(opts.inbox, opts.recursive, opts.settle, opts.give_up)
        self.common = provenance(self.classifier)
        self.counts = _Counts()

    def tick(self) -> None:
        """One scan: classify what is ready (in batches), move what was written."""
        from leukedge.runtime.journal import FileKey

        todo = []
        for path in self.inbox.scan():
            try:
                key = FileKey.of(path)
            except OSError:
                continue
            status = self.journal.status(key)
            if status is None:
                todo.append((path, key))
            else:
                self._move_written(path, status)
        for start in range(0, len(todo), self.opts.batch_size):
            self._batch(todo[start:start + self.opts.batch_size])

    def _move_written(self, path: Path, ok: bool) -> None:
        """After its row is written: to --done or --failed (also after a restart)."""
        self.inbox.mark_done(path)
        if self.opts.done_dir is None and self.opts.failed_dir is None:
            return
        _move(path, self.opts.done_dir if ok else self.opts.failed_dir)
        self.inbox.forget(path)

    def _decode(self, path: Path):
        from leukedge.runtime.decode import ImageError, load_image

        started = time.perf_counter()
        try:
            return load_image(path, self.opts.max_pixels), None, time.perf_counter() - started
        except ImageError as e:
            if e.reason.startswith("truncated") and self.inbox.retry_later(path):
                return None, "retry", 0.0
            return None, str(e), 0.0

    def _batch(self, items: list) -> None:
        from leukedge.runtime.pipeline import FileResult

        from .output import utc_now

        decoded = [(path, key, *self._decode(path)) for path, key in items]
        ready = [d for d in decoded if d[3] != "retry"]
        good = [d for d in ready if d[3] is None]
        started = time.perf_counter()
        predictions = self.classifier.predict_pixels([d[2] for d in good]) if good else []
        share = (time.perf_counter() - started) / max(len(good), 1)
        by_path = dict(zip([d[0] for d in good], predictions))
        rows = []
        for path, key, _, error, seconds in ready:
            result = FileResult(str(path), prediction=by_path.get(path), error=error,
                                seconds=seconds + (share if error is None else 0.0))
            row = {**result.to_dict(), "overlay": None, "timestamp": utc_now(), **self.common,
                   "real_path": key.path, "size_bytes": key.size, "mtime_ns": key.mtime_ns}
            rows.append((key, self.formatter.line(row), error is None))
            self.counts.done += 1
            self.counts.errors += error is not None
        self.journal.append(rows)
        for path, _, _, error, _ in ready:
            self._move_written(path, error is None)

    def status(self) -> str:
        c = self.counts
        rate = c.done / max(time.monotonic() - c.started, 1e-9)
        return (f"{c.done} classified, {self.inbox.pending} pending, {c.errors} errors, "
                f"{rate:.1f} images/s")


def run(opts: WatchOptions) -> int:
    stop, wake = threading.Event(), threading.Event()
    with reported(ValueError, OSError):
        for folder in (opts.done_dir, opts.failed_dir):
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
        if not opts.inbox.is_dir():
            raise ValueError(f"INBOX {opts.inbox} is not a folder")
    watcher = Watcher(opts)

    def ask_to_stop(signum, frame) -> None:
        stop.set()
        wake.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, ask_to_stop)
    observer = None if opts.poll > 0 else _events(opts.inbox, opts.recursive, wake)
    interval = opts.poll if opts.poll > 0 else (2.0 if observer is None else 0.5)
    show = sys.stderr.isatty()
    typer.echo(f"Watching {opts.inbox} ({'events + ' if observer else ''}scans every "
               f"{interval:g} s); rows to {opts.output}", err=True)
    try:
        while not stop.is_set():
            watcher.tick()
            if show:
                typer.echo("\r" + watcher.status() + " " * 8, err=True, nl=False)
            wake.wait(timeout=interval)
            wake.clear()
    finally:
        if observer is not None:
            observer.stop()
        watcher.journal.close()
    typer.echo(("\n" if show else "") + "Stopped: " + watcher.status(), err=True)
    return EXIT_OK


def watch(
    inbox: Annotated[Path, typer.Argument(show_default=False, help="The folder to watch.")],
    output: Annotated[Path, typer.Option(
        "--output", "-o", show_default=False, help="Rows are appended here (created if "
                                                   "missing; a journal sits beside it).")],
    fmt: Annotated[RowFormat, typer.Option(  # type: ignore[valid-type]
        "--format", "-f", help="json (JSON Lines) or csv.")] = RowFormat("json"),
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Watch subfolders.")
                         ] = False,
    poll: Annotated[float, typer.Option(
        min=0.0, help="Scan every this many seconds and ignore filesystem events (for "
                      "network shares); 0 = events with a scan every 0.5 s.")] = 0.0,
    settle: Annotated[float, typer.Option(
        min=0.0, help="Seconds a file must stay unchanged before it is read.")] = 1.0,
    give_up: Annotated[float, typer.Option(
        min=0.0, help="Seconds after which a file still cut short gets an error row.")] = 30.0,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per model run.")] = 16,
    model: ModelOption = None,
    provider: ProviderOption = Provider.auto,
    threads: ThreadsOption = None,
    review_below: ReviewBelowOption = None,
    done: Annotated[Optional[Path], typer.Option(
        "--done", show_default=False, help="Move classified images here.")] = None,
    failed: Annotated[Optional[Path], typer.Option(
        "--failed", show_default=False, help="Move images that could not be used here.")
    ] = None,
    max_pixels: Annotated[int, typer.Option(min=1, help="Refuse larger images.")] = 50_000_000,
) -> None:
    """Classify images as they arrive in a folder (see HELP)."""
    raise typer.Exit(run(WatchOptions(inbox, output, fmt.value, recursive, poll, settle, give_up,
                                      batch_size, model, provider.value, threads, review_below,
                                      done, failed, max_pixels)))


def register(app: typer.Typer) -> None:
    """Adds `leukedge watch` to the app."""
    app.command("watch", help=HELP, short_help="Classify images as they arrive in a folder.")(
        watch)
