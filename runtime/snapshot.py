"""One consistent read of a file that may still be being written.

The key of a ``leukedge watch`` row must describe the bytes that were classified, not the file
as it was a moment before or after. :func:`read_snapshot` opens the file once, takes ``fstat``
before and after reading on the same handle, and ``stat`` of the path afterwards (to notice a
file replaced by rename); any difference means the writer is still at work: :class:`NotReady`,
try again later, no row. A file the writer still holds open on Windows (a sharing violation)
is not ready either, never an error.

Example:
    >>> snap = read_snapshot("inbox/scan_001.jpg")
    >>> snap.size, snap.mtime_ns, snap.sha256
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from .decode import MAX_FILE_BYTES, OPEN_FLAGS, ImageError, regular_file_info

WINDOWS_SHARING_ERRORS = (32, 33)  # ERROR_SHARING_VIOLATION, ERROR_LOCK_VIOLATION


class NotReady(Exception):
    """The file cannot be read consistently yet. ``why``: "gone", "changed" or "busy"."""

    def __init__(self, path: str, why: str):
        super().__init__(f"{path}: {why}")
        self.why = why


@dataclass(frozen=True)
class Snapshot:
    """The bytes read and the size/mtime of exactly those bytes."""

    data: bytes
    size: int
    mtime_ns: int

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def _open(path: str | os.PathLike) -> int:
    name = os.fsdecode(path)
    try:
        return os.open(path, OPEN_FLAGS)
    except FileNotFoundError:
        raise NotReady(name, "gone") from None
    except PermissionError as e:
        if getattr(e, "winerror", None) in WINDOWS_SHARING_ERRORS:
            raise NotReady(name, "busy") from None  # the writer still has it open
        raise ImageError(name, "permission denied (make it readable by this user)") from None
    except IsADirectoryError:
        raise ImageError(name, "is a directory, not an image file") from None
    except OSError as e:
        raise ImageError(name, f"cannot open file ({e.strerror or e})") from None


def read_snapshot(path: str | os.PathLike, max_bytes: int = MAX_FILE_BYTES) -> Snapshot:
    """The file's bytes with the size and mtime they had while read.

    Raises:
        NotReady: the file vanished, changed while being read, or is held open (Windows).
        ImageError: it can never be read as an image file (a FIFO, too large, unreadable).
    """
    name = os.fsdecode(path)
    fd = _open(path)
    try:
        before = regular_file_info(fd, name, max_bytes)
        chunks, total = [], 0
        while total <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        after = os.fstat(fd)
    except OSError as e:
        raise ImageError(name, f"cannot read file ({e.strerror or e})") from None
    finally:
        os.close(fd)
    try:
        now = os.stat(path)
    except FileNotFoundError:
        raise NotReady(name, "gone") from None
    except OSError as e:
        raise ImageError(name, f"cannot read file ({e.strerror or e})") from None
    data = b"".join(chunks)
    seen = {(s.st_size, s.st_mtime_ns) for s in (before, after, now)}
    replaced = bool(now.st_ino and after.st_ino) and \
        (now.st_dev, now.st_ino) != (after.st_dev, after.st_ino)  # 0: no inode (some shares)
    if len(seen) > 1 or len(data) != after.st_size or replaced:
        raise NotReady(name, "changed")
    return Snapshot(data, after.st_size, after.st_mtime_ns)
