"""The key of a ``leukedge watch`` row: what makes two files the same image.

**The key is the image's content**: the sha256 of the bytes that were classified, plus their
size (``sha256:<hex>:<size>``). It does not depend on the path, the mount point, the device
number or the mtime, so the inbox reached through another mount path (``/mnt/scope`` after a
restart, ``\\\\pc\\share`` on Windows), a copy restored from a backup, or a *renamed* image
with the same bytes is the same image: it gets no second row. Changed bytes are a new image:
a new row. (The device + inode alternative breaks on network shares and on restore.) The
hash is taken of the bytes already in memory for decoding, so it costs no second read.

Every row also carries ``real_path``, ``size_bytes``, ``mtime_ns`` and ``sha256`` (CSV too, as
columns), so the journal can always be rebuilt from the output. A file that could not be read
at all (a FIFO, no permission, empty after ``--give-up``) has no hash and is keyed, like every
row of earlier versions, by ``real_path``, ``size_bytes`` and ``mtime_ns``; those keys are still
read and matched, so journals and outputs of earlier versions keep working.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .files import display_path

KEY_FIELDS = ("real_path", "size_bytes", "mtime_ns", "sha256")  # in every row, CSV included


@dataclass(frozen=True)
class FileKey:
    """One version of one image: its content hash and size (the key), where and when it was."""

    path: str
    size: int
    mtime_ns: int
    sha256: Optional[str] = None

    @classmethod
    def of(cls, path: str | os.PathLike) -> "FileKey":
        """Read and hash a file (a convenience; ``watch`` keys the snapshot it classified)."""
        data = Path(path).read_bytes()
        info = os.stat(path)
        return cls(os.path.realpath(path), len(data), info.st_mtime_ns,
                   hashlib.sha256(data).hexdigest())

    @property
    def text(self) -> str:
        """The journal key: content when known, else path, size and mtime."""
        return f"sha256:{self.sha256}:{self.size}" if self.sha256 else self.path_text

    @property
    def path_text(self) -> str:
        """The key of earlier versions (and of files that could not be read)."""
        return f"{display_path(self.path)}\x1f{self.size}\x1f{self.mtime_ns}"

    def fields(self) -> dict:
        return {"real_path": display_path(self.path), "size_bytes": self.size,
                "mtime_ns": self.mtime_ns, "sha256": self.sha256}


def row_key(row: dict) -> Optional[str]:
    """The journal key recorded in a row (JSON or CSV), or None for rows without one."""
    try:
        if row.get("sha256") and row.get("size_bytes") not in (None, ""):
            return f"sha256:{row['sha256']}:{int(row['size_bytes'])}"
        if row.get("real_path") and row.get("size_bytes") not in (None, ""):
            return FileKey(str(row["real_path"]), int(row["size_bytes"]),
                           int(row["mtime_ns"])).path_text
    except (TypeError, ValueError, KeyError):
        return None
    return None
