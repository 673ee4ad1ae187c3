"""An inbox folder that a microscope writes images into: which files are complete and new.

A file is *ready* once its size and modification time have not changed for ``settle`` seconds.
Names a writer uses while still writing (``.part``, ``.tmp``, ``.crdownload``, hidden files) are
ignored until renamed. A ready file that still decodes as cut short is retried (each time it
changes, or after ``retry_after``) until ``give_up`` seconds after it was first seen; then it is
handed over anyway and reported as broken.

Scanning is the truth, events only a hint: on network shares filesystem events may never arrive,
so the caller scans on a timer and lets events wake it early.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .files import find_images

IGNORED_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial", ".download", ".filepart")
DEFAULT_SETTLE = 1.0
DEFAULT_GIVE_UP = 30.0
DEFAULT_RETRY = 1.0


def ignored(path: Path) -> bool:
    """Hidden files, and names of files still being written."""
    name = path.name.lower()
    return name.startswith(".") or name.endswith(IGNORED_SUFFIXES)


@dataclass
class _Tracked:
    size: int
    mtime_ns: int
    changed_at: float
    first_seen: float
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
    problems: list = field(default_factory=list)
    _files: dict = field(default_factory=dict)

    def scan(self, now: Optional[float] = None) -> list[Path]:
        """The files that are ready now (stable for ``settle`` seconds, not waiting to retry)."""
        now = time.monotonic() if now is None else now
        listing = find_images([self.root], recursive=self.recursive)
        self.problems = listing.problems
        present = set()
        ready = []
        for path in listing.paths:
            if ignored(path):
                continue
            try:
                info = os.stat(path)
            except OSError:
                continue  # gone between listing and stat
            present.add(path)
            state = self._files.get(path)
            if state is None or (state.size, state.mtime_ns) != (info.st_size, info.st_mtime_ns):
                first = state.first_seen if state else now
                self._files[path] = _Tracked(info.st_size, info.st_mtime_ns, now, first)
                continue
            if (not state.done and now - state.changed_at >= self.settle
                    and now >= state.retry_at):
                ready.append(path)
        for gone in set(self._files) - present:
            del self._files[gone]
        return ready

    def retry_later(self, path: Path, now: Optional[float] = None) -> bool:
        """Put back a file that is still cut short; False when it is past ``give_up``."""
        now = time.monotonic() if now is None else now
        state = self._files.get(path)
        if state is None or now - state.first_seen >= self.give_up:
            return False
        state.retry_at = now + self.retry_after
        return True

    def mark_done(self, path: Path) -> None:
        """Its row is written: leave it alone until it changes (a new version is new work)."""
        if path in self._files:
            self._files[path].done = True

    def forget(self, path: Path) -> None:
        self._files.pop(path, None)

    @property
    def pending(self) -> int:
        """Files seen whose row is not written yet."""
        return sum(not state.done for state in self._files.values())
