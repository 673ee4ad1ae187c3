"""One writer per output: an OS file lock held for a process's lifetime.

``leukedge watch`` appends rows to one output; two processes on the same output (a technician
starting it twice) would classify every image twice. :func:`hold_lock` takes an exclusive,
non-blocking lock on a small file beside the output (``results.jsonl.lock``) and keeps it until
the process ends. The lock belongs to the operating system, not to the file: a process that is
killed (SIGKILL, power cut) releases it with its file handles, so a stale lock file never blocks
a restart, and the file itself is left in place (deleting it would race a starting process).

POSIX uses ``fcntl.flock``; Windows uses ``msvcrt.locking`` on one byte far past the pid text
(a locked range cannot be read by others on Windows, the pid must stay readable). No /proc.

Example:
    >>> lock = hold_lock(Path("results.jsonl.lock"))   # LockHeld if another process has it
    >>> lock.release()
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

LOCK_OFFSET = 1 << 20  # the byte locked on Windows: past the pid text, which others read
_BUSY = (errno.EACCES, errno.EAGAIN, errno.EWOULDBLOCK, errno.EDEADLK)


class LockHeld(OSError):
    """Another process holds the lock; ``pid`` is its process id when it wrote one."""

    def __init__(self, path: Path, pid: Optional[int]):
        who = f"pid {pid}" if pid else "pid unknown"
        super().__init__(f"{path} is locked by another process ({who})")
        self.path, self.pid = path, pid


@dataclass
class OutputLock:
    path: Path
    fd: int

    def release(self) -> None:
        """Closing the handle releases the OS lock (also what happens when the process dies)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _try_lock(fd: int) -> None:
    """Exclusive, non-blocking; raises OSError with a busy errno when another process has it."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        os.lseek(fd, LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _read_pid(fd: int) -> Optional[int]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 32).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except (OSError, ValueError):
        return None


def hold_lock(path: str | os.PathLike) -> OutputLock:
    """Take the lock file ``path`` (created if missing) and write this process's pid into it.

    Raises:
        LockHeld: another living process holds it.
        OSError: the lock file cannot be created or opened (a read-only folder...).
    """
    path = Path(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o644)
    try:
        _try_lock(fd)
    except OSError as e:
        pid = _read_pid(fd)
        os.close(fd)
        if isinstance(e, BlockingIOError) or e.errno in _BUSY:
            raise LockHeld(path, pid) from None
        raise
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, f"{os.getpid():<20}\n".encode("ascii"))  # fixed width: no truncate needed
    return OutputLock(path, fd)
