"""Files: atomic writes, hashes, and finding the images a user means.

Nothing a user had is lost to a half-written file: artifacts go to a temp file in the same folder,
then ``os.replace``; an existing file keeps its permission bits (results are patient data).

:func:`find_images` expands files, folders and glob patterns the way a user expects on a
microscope PC's shares: every image once (by real path, however many links lead to it), folder
symlink loops walked once, every folder it could not read reported instead of skipped, and the
files of a folder it left out because of their suffix (a ``.gif``, a ``.heic``; not a README
or other text file) listed in ``skipped`` so the caller can say so.
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

# What runtime/decode.py decodes, by name (it recognises the format by content)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
# Files that sit beside images and are plainly not images (a README, notes, results): left out
# of a folder without a word; anything else that is not an image is named in ``skipped``
TEXT_SUFFIXES = (".md", ".txt", ".rst", ".csv", ".tsv", ".json", ".jsonl", ".log", ".html",
                 ".xml", ".yaml", ".yml", ".ini", ".sqlite", ".sqlite-wal", ".sqlite-shm", ".lock")
IMAGE_KINDS = "JPEG/PNG/TIFF/BMP/WebP"
_MAGIC = set("*?[")


def display_path(path: str | os.PathLike) -> str:
    """A path as printable text: bytes that are not UTF-8 become ``\\xNN`` (never an encoding
    error), so a crafted or foreign file name cannot break a row."""
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


def same_name(path: str | os.PathLike) -> str:
    """A path as the OS compares it: real (links resolved) and, on Windows, case-folded; a
    name that cannot be resolved (a NUL byte) is compared as its absolute path."""
    try:
        return os.path.normcase(os.path.realpath(path))
    except (OSError, ValueError):
        return os.path.normcase(os.path.abspath(path))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_json_object(path: str | os.PathLike, what: str) -> dict:
    """A JSON file holding an object; ValueError names the file, ``what`` it should be, and
    what was wrong (unreadable, not JSON, not an object)."""
    import json

    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise ValueError(f"{p}: cannot read the {what} ({e.strerror or e})") from e
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{p}: not a {what} (a JSON object)")
    return data


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a file so that readers see either the old file or the complete new one.

    A file that already exists keeps its mode; a new one gets 0644 (a model or report should be
    readable). Refuses to replace anything that is not a regular file (a device, a FIFO).
    """
    path = Path(path)
    try:
        old_mode = path.stat().st_mode
    except FileNotFoundError:
        old_mode = None
    if old_mode is not None and not stat.S_ISREG(old_mode):
        kind = "a folder" if stat.S_ISDIR(old_mode) else "not a regular file (a device or FIFO)"
        raise OSError(f"{path} is {kind}; refusing to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:200]}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, stat.S_IMODE(old_mode) if old_mode is not None else 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


# --------------------------------------------------------------------------- finding images


@dataclass
class ImageListing:
    """The image paths found (each once, in order), what could not be searched, and the files
    of the folders searched that were left out for their suffix (hidden files are not listed)."""

    paths: list[Path] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    skipped: list[Path] = field(default_factory=list)
    _seen: set = field(default_factory=set, repr=False)

    def add(self, path: Path) -> None:
        try:
            key = os.path.realpath(path)
        except (OSError, ValueError):
            key = str(path)
        if key not in self._seen:
            self._seen.add(key)
            self.paths.append(path)


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith(".")


def _walk(root: Path, recursive: bool, problems: list,
          skipped: Optional[list] = None) -> Iterator[Path]:
    """Image files under ``root`` (sorted per folder), each folder visited once even through
    symlink loops; unreadable folders go to ``problems``, other files to ``skipped``."""
    visited: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            info = folder.stat()
            key = (info.st_dev, info.st_ino)
            if key in visited:
                continue
            visited.add(key)
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            problems.append((str(folder), f"cannot read folder ({e.strerror or e})"))
            continue
        subfolders = []
        for entry in entries:
            try:
                if entry.is_dir():
                    if recursive and not entry.name.startswith("."):
                        subfolders.append(Path(entry.path))
                elif _is_image_name(entry.name):
                    yield Path(entry.path)
                elif (skipped is not None and not entry.name.startswith(".")
                      and not entry.name.lower().endswith(TEXT_SUFFIXES) and entry.is_file()):
                    skipped.append(Path(entry.path))
            except OSError as e:
                problems.append((entry.path, f"cannot read ({e.strerror or e})"))
        stack.extend(reversed(subfolders))


def _match_parts(parts: Sequence[str], pattern: Sequence[str]) -> bool:
    """Component-wise glob match; ``**`` matches zero or more components."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_match_parts(parts[i:], pattern[1:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) \
        and _match_parts(parts[1:], pattern[1:])


def _expand_pattern(text: str, recursive: bool, listing: ImageListing) -> list[Path]:
    parts = Path(text).parts
    if "**" not in parts or not recursive:
        return sorted(Path(m) for m in glob.glob(text) if Path(m).is_file())  # no recursion
    split = next(i for i, p in enumerate(parts) if _MAGIC & set(p) or p == "**")
    base = Path(*parts[:split]) if split else Path(".")
    rest = parts[split:]
    found = []
    for path in _walk(base, True, listing.problems):
        if _match_parts(path.relative_to(base).parts, rest):
            found.append(path)
    return found


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # a name too long, an odd device: the file read reports it
        return False


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:
        return False


def find_images(args: Sequence[str | os.PathLike], recursive: bool = False) -> ImageListing:
    """Expand files, folders and glob patterns into image paths (each real file once).

    Files named explicitly are kept even when their suffix is unknown or they do not exist (the
    caller reports them per file); folders contribute their image files, sorted, recursively
    with ``recursive`` (folder links followed, loops visited once); patterns with ``**`` need
    ``recursive``.
    """
    listing = ImageListing()
    for raw in args:
        text = os.fspath(raw)
        path = Path(text)
        if _is_dir(path):
            for found in _walk(path, recursive, listing.problems, listing.skipped):
                listing.add(found)
        elif _MAGIC & set(text) and not _exists(path):
            for found in _expand_pattern(text, recursive, listing):
                listing.add(found)
        else:
            listing.add(path)
    return listing


def list_images(args: Sequence[str | os.PathLike], recursive: bool = False) -> list[Path]:
    """The paths of :func:`find_images` (folders that could not be read are left out)."""
    return find_images(args, recursive).paths
