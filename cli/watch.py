"""`leukedge watch`: classify every image that appears in a folder, exactly once, across crashes.

The folder is scanned on a timer (``--poll``) and, where the ``watchdog`` package sees
filesystem events, woken early by them. Complete files (stable for ``--settle`` seconds, read
without changing, not cut short) are classified in batches (cli/watcher.py); each batch's rows
are appended to the output and only then recorded in the journal (runtime/journal.py), so a
crash at any moment leaves every image with exactly one row once the command runs again.

An image is known by its content (sha256 of the bytes classified, plus their size;
runtime/row_key.py): renamed, or seen through another mount path, it is the same image and gets
no second row; changed bytes are a new image and get a new row. One process per output: a lock
file beside it (runtime/lock.py). SIGTERM or Ctrl-C finishes the current batch and exits 0.
"""

from __future__ import annotations

import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .errors import EXIT_FAILED, EXIT_OK, fail, reported
from .options import (ModelOption, Provider, ProviderOption, ReviewBelowOption, ThreadsOption,
                      registry_enum)
from .output import display_path

RowFormat = registry_enum("RowFormat", ("json", "csv"))  # table is for terminals

HELP = """Classify every image that appears in INBOX, one row per image in --output.

Images already there are classified first. A file is read once its size and time
have not changed for --settle seconds; one that changes while read, is empty or
is still cut short waits, and gets an error row only after --give-up seconds
without a change. Names ending .part/.tmp/.crdownload and hidden files wait until
renamed.

Each image gets exactly one row, also across crashes and restarts (a journal
beside the output records what was written). An image is known by its content
(sha256 of its bytes, and its size): renamed, or seen through another mount path,
it gets no second row; changed bytes get a new row. Every row carries real_path,
size_bytes, mtime_ns and sha256 (CSV columns too): a lost journal is rebuilt from
the output. One watch per output (a lock file beside it). --done/--failed may be
inside the inbox (never scanned), not the inbox itself. A full disk waits and
retries. SIGTERM or Ctrl-C: finish the batch, exit 0."""


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
    overlay_dir: Optional[Path] = None


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


def check_layout(opts: WatchOptions) -> None:
    """Refuse folders and outputs that would make rows repeat or destroy something.

    Raises:
        ValueError: naming the flag and what to give instead.
    """
    from leukedge.runtime.files import IMAGE_SUFFIXES
    from leukedge.runtime.files import same_name
    from leukedge.runtime.inbox import is_inside
    from leukedge.runtime.journal import check_output

    from .destination import model_file, refuse_inputs

    if not opts.inbox.is_dir():
        raise ValueError(f"INBOX {display_path(opts.inbox)} is not a folder")
    for flag, folder in (("--done", opts.done_dir), ("--failed", opts.failed_dir),
                         ("--overlay-dir", opts.overlay_dir)):
        if folder is not None and same_name(folder) == same_name(opts.inbox):
            raise ValueError(f"{flag} {display_path(folder)} is the inbox itself: its images "
                             "would be classified again and again; give another folder (one "
                             "inside the inbox is fine: it is not scanned)")
    if is_inside(opts.output, opts.inbox) and opts.output.name.lower().endswith(IMAGE_SUFFIXES):
        raise ValueError(f"--output {display_path(opts.output)} is inside the inbox with an "
                         "image name, so it would be read as an image; name it .jsonl or .csv")
    refuse_inputs(opts.output, "--output", model_file(opts.model))  # rows appended to a model
    check_output(opts.output)


def _lock(output: Path) -> Any:
    from leukedge.runtime.lock import LockHeld, hold_lock

    path = output.with_name(output.name + ".lock")
    try:
        return hold_lock(path)
    except LockHeld as e:
        who = f"pid {e.pid}" if e.pid else "its pid is unknown"
        fail(f"--output {display_path(output)} is already written by another `leukedge watch` "
             f"({who}); stop that one first, or give this one another --output (lock file "
             f"{display_path(path)})")
    except OSError as e:
        fail(f"cannot create the lock file {display_path(path)} beside --output "
             f"({e.strerror or e}); make that folder writable")


def run(opts: WatchOptions) -> int:
    from .watcher import StoppedWhileWaiting, Watcher

    stop, wake = threading.Event(), threading.Event()
    with reported(ValueError, OSError):
        check_layout(opts)
        for folder in (opts.done_dir, opts.failed_dir, opts.overlay_dir, opts.output.parent):
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
    lock = _lock(opts.output)
    watcher = Watcher(opts, stop)

    def ask_to_stop(signum, frame) -> None:
        stop.set()
        wake.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, ask_to_stop)
    observer = None if opts.poll > 0 else _events(opts.inbox, opts.recursive, wake)
    interval = opts.poll if opts.poll > 0 else (2.0 if observer is None else 0.5)
    show = sys.stderr.isatty()
    typer.echo(f"Watching {display_path(opts.inbox)} ({'events + ' if observer else ''}scans "
               f"every {interval:g} s); rows to {display_path(opts.output)}", err=True)
    code = EXIT_OK
    try:
        while not stop.is_set():
            watcher.tick()
            if show:
                typer.echo("\r" + watcher.status() + " " * 8, err=True, nl=False)
            wake.wait(timeout=interval)
            wake.clear()
    except StoppedWhileWaiting as e:
        typer.echo(f"\nStopped with {e.args[0]} rows not written (the disk was full); their "
                   "images are classified again when watch starts again.", err=True)
        code = EXIT_FAILED
    finally:
        if observer is not None:
            observer.stop()
        watcher.journal.close()
        lock.release()
    typer.echo(("\n" if show else "") + "Stopped: " + watcher.status(), err=True)
    return code


def watch(
    inbox: Annotated[Path, typer.Argument(show_default=False, help="The folder to watch.")],
    output: Annotated[Path, typer.Option(
        "--output", "-o", show_default=False, help="Rows are appended here (created if "
                                                   "missing; a journal and a lock file sit "
                                                   "beside it).")],
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
        min=0.0, help="Seconds without a change after which a file still cut short (or "
                      "empty) gets an error row.")] = 30.0,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per model run.")] = 16,
    model: ModelOption = None,
    provider: ProviderOption = Provider.auto,
    threads: ThreadsOption = None,
    review_below: ReviewBelowOption = None,
    done: Annotated[Optional[Path], typer.Option(
        "--done", show_default=False, help="Move classified images here (not the inbox "
                                           "itself; inside it, it is not scanned).")] = None,
    failed: Annotated[Optional[Path], typer.Option(
        "--failed", show_default=False, help="Move images that could not be used here.")
    ] = None,
    max_pixels: Annotated[int, typer.Option(min=1, help="Refuse larger images.")] = 50_000_000,
    overlay_dir: Annotated[Optional[Path], typer.Option(
        show_default=False,
        help="Write a PNG per classified image: the heatmap (where the model has one), the "
             "stain outline, the label, the top-2 probabilities and the review reasons "
             "(not the inbox itself; inside it, it is not scanned).")] = None,
) -> None:
    """Classify images as they arrive in a folder (see HELP)."""
    raise typer.Exit(run(WatchOptions(inbox, output, fmt.value, recursive, poll, settle, give_up,
                                      batch_size, model, provider.value, threads, review_below,
                                      done, failed, max_pixels, overlay_dir)))


def register(app: typer.Typer) -> None:
    """Adds `leukedge watch` to the app."""
    app.command("watch", help=HELP, short_help="Classify images as they arrive in a folder.")(
        watch)
