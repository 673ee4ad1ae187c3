"""Moving a classified image out of the inbox without ever leaving half a file behind.

``leukedge watch --done/--failed`` moves each image after its row is written. On the same
filesystem a move is one ``os.rename`` (atomic). Across filesystems (a share, another disk) the
image is copied to a hidden temp name in the target folder, fsync'd, renamed to its final name,
and only then removed from the inbox; when anything fails (a full disk, a permission) the temp
copy is deleted and the image stays where it was, so the target never holds a partial copy.

A name already taken in the target gets ``-2``, ``-3``... before its suffix, shortened so the
name stays within the 255 bytes filesystems allow.
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from pathlib import Path

NAME_MAX = 255  # bytes on Linux/macOS filesystems; Windows allows 255 UTF-16 units


def _fits(name: str) -> bool:
    return len(os.fsencode(name)) <= NAME_MAX


def _exists(path: Path) -> bool:
    return os.path.lexists(path)


def unique_target(folder: Path, name: str) -> Path:
    """``folder/name``, or ``folder/stem-N.suffix`` (stem cut to fit) when that is taken."""
    if not _exists(folder / name):
        return folder / name
    stem, suffix = os.path.splitext(name)
    n = 2
    while True:
        tail = f"-{n}{suffix}"
        cut = stem
        while cut and not _fits(cut + tail):
            cut = cut[:-1]  # whole characters, so a UTF-8 name stays valid UTF-8
        target = folder / (cut + tail)
        if not _exists(target):
            return target
        n += 1


def _copy_then_rename(path: Path, folder: Path) -> Path:
    tmp = folder / f".leukedge-move-{uuid.uuid4().hex}.tmp"  # hidden: never scanned
    try:
        shutil.copyfile(path, tmp)
        shutil.copystat(path, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        target = unique_target(folder, path.name)
        os.rename(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    os.unlink(path)
    return target


def move_into(path: Path, folder: Path) -> Path:
    """Move ``path`` into ``folder``; returns where it went.

    Raises:
        OSError: nothing was moved (no partial copy is left in ``folder``), or, rarely, the
            copy is complete in ``folder`` but the original could not be removed.
    """
    target = unique_target(folder, path.name)
    try:
        os.rename(path, target)
        return target
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
    return _copy_then_rename(path, folder)
