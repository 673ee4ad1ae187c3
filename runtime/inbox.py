"""An inbox folder that a microscope writes images into: which files are complete and new.

A file is *ready* once its size and modification time have not changed for ``settle`` seconds.
Names a writer uses while still writing (``.part``, ``.tmp``, ``.crdownload``, hidden files) are
ignored until renamed. Being ready is only a hint: the caller reads the file with
:func:`leukedge.runtime.snapshot.read_snapshot`, and a file that changes while read, is empty,
is still held open by its writer (Windows) or still decodes as cut short goes back to waiting
(:meth:`Inbox.changed`, :meth:`Inbox.retry_later`). ``give_up`` counts from the file's *last
change*, so a slow copy with pauses is never given up while it still grows; only a file that
stayed cut short for ``give_up`` seconds is handed over and reported as broken.

Folders that are excluded (``--done``/``--failed`` inside the inbox) are never scanned. A
missing inbox (deleted, unmounted share) or a subfolder that cannot be read is a *problem*:
:meth:`Inbox.new_problems` returns each once, while it lasts, and the scan goes on.

Names are compared as the operating system compares them (``os.path.normcase``: case-blind
on Windows). Scanning is the truth, events only a hint: on network shares filesystem events may
never arrive, so the caller scans on a timer and lets events wake it early.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from .files import find_images, same_name

IGNORED_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial", ".download", ".filepart")
DEFAULT_SETTLE = 1.0
DEFAULT_GIVE_UP = 30.0
DEFAULT_RETRY = 1.0


def ignored(path: Path) -> bool:
    """Hidden files, and names of files still being written."""
    name = path.name.lower()
    return name.startswith(".") or name.endswith(IGNORED_SUFFIXES)


def is_inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """``path`` is ``folder`` or somewhere below it (as the OS compares names)."""
    inner, outer = same_name(path), same_name(folder)
    return inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep)


@dataclass
class _Tracked:
    size: int
    mtime_ns: int
    changed_at: float
    retry_at: float = 0.0
    done: bool = False


@dataclass
class Inbox:
    """Tracks the files of a folder from scan to scan (one instance per watched folder)."""

    root: Path
    recursive: bool = False
    settle: float = DEFAULT_SETTLE
    give_up: float = DEFAULT_GIVE_UP
    retry_after: float = DEFAULT_RETRY
    exclude: Sequence[Path] = ()
    problems: list = field(default_factory=list)
    _files: dict = field(default_factory=dict)
    _reported: set = field(default_factory=set)

    def _listing(self) -> list[Path]:
        if not os.path.isdir(self.root):
            self.problems = [(str(self.root), "the inbox folder is missing (deleted, moved or "
                                              "its share unmounted); waiting for it to return")]
            return []
        listing = find_images([self.root], recursive=self.recursive)
        self.problems = listing.problems
        if not self.exclude:
            return listing.paths
        verdicts: dict = {}  # per folder, not per file: realpath costs system calls

        def kept(path: Path) -> bool:
            folder = os.path.dirname(path)
            if folder not in verdicts:
                verdicts[folder] = not any(is_inside(folder, f) for f in self.exclude)
            return verdicts[folder]

        return [p for p in listing.paths if kept(p)]

    def scan(self, now: Optional[float] = None) -> list[Path]:
        """The files that are ready now (stable for ``settle`` seconds, not waiting to retry)."""
        now = time.monotonic() if now is None else now
        present = set()
        ready = []
        for path in self._listing():
            if ignored(path):
                continue
            try:
                info = os.stat(path)
            except OSError:
                continue  # gone between listing and stat
            name = os.path.normcase(path)
            present.add(name)
            state = self._files.get(name)
            if state is None or (state.size, state.mtime_ns) != (info.st_size, info.st_mtime_ns):
                self._files[name] = _Tracked(info.st_size, info.st_mtime_ns, now)
                continue
            if (not state.done and now - state.changed_at >= self.settle
                    and now >= state.retry_at):
                ready.append(path)
        for gone in set(self._files) - present:
            del self._files[gone]
        return ready

    def new_problems(self) -> list[tuple[str, str]]:
        """Problems of the last scan not reported yet (each once while it lasts)."""
        current = set(self.problems)
        new = [p for p in self.problems if p not in self._reported]
        self._reported = current
        return new

    def changed(self, path: Path, now: Optional[float] = None) -> None:
        """It changed after the scan saw it (while read, or before a move): settle again."""
        now = time.monotonic() if now is None else now
        state = self._files.get(os.path.normcase(path))
        if state is not None:
            state.changed_at, state.retry_at, state.done = now, 0.0, False
            state.size = -1  # the next scan records its new size and time

    def retry_later(self, path: Path, now: Optional[float] = None) -> bool:
        """Put back a file still cut short (or empty); False once it has not changed for
        ``give_up`` seconds (then it gets its error row)."""
        now = time.monotonic() if now is None else now
        state = self._files.get(os.path.normcase(path))
        if state is None or now - state.changed_at >= self.give_up:
            return False
        state.retry_at = now + self.retry_after
        return True

    def wait(self, path: Path, now: Optional[float] = None) -> None:
        """Try again later, never give up (a file its writer still holds open)."""
        now = time.monotonic() if now is None else now
        state = self._files.get(os.path.normcase(path))
        if state is not None:
            state.retry_at = now + self.retry_after

    def mark_done(self, path: Path, size: int, mtime_ns: int) -> None:
        """Its row (for these size and mtime) is written: leave it alone until it changes."""
        state = self._files.get(os.path.normcase(path))
        if state is not None:
            state.size, state.mtime_ns, state.done = size, mtime_ns, True

    def forget(self, path: Path) -> None:
        self._files.pop(os.path.normcase(path), None)

    @property
    def pending(self) -> int:
        """Files seen whose row is not written yet."""
        return sum(not state.done for state in self._files.values())
