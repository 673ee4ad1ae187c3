"""Reviewed images as a labelled folder: ``OUT/<label>/<image>``, the layout `leukedge validate`
reads.

:func:`export_decisions` reads an audit file whose chain is whole (runtime/review_audit.py),
takes the last decision on each image (its path), and copies the image file the decision hashed
into the folder of its decided label. Images are copied, never moved, and nothing is
overwritten:

- the same bytes already at the target name: nothing to do (an export can be run again);
- another file at that name (a different image with the same name): the copy gets ``-2``,
  ``-3``... before its suffix (runtime/moves.py's :func:`unique_target`), and the report says so;
- a file gone, or whose bytes are no longer those decided on: reported, the rest goes on;
- the same image left in *another* label's folder by an earlier export (the decision changed
  since): reported, so it can be removed by hand.

Each copy is written to a hidden temp file beside its target, fsync'd, and linked to its name
(a link never replaces an existing file); where links are not supported (FAT/exFAT) the name
is created exclusively instead.
"""

from __future__ import annotations

import errno
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .errors import LeukedgeError
from .files import display_path
from .moves import unique_target
from .review_audit import line_sha256, read_records


@dataclass
class ExportReport:
    """What an export did; ``problems`` are (path, reason) of images not exported."""

    copied: list[tuple[str, Path]] = field(default_factory=list)
    already: list[tuple[str, Path]] = field(default_factory=list)
    renamed: list[tuple[str, Path]] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    elsewhere: list[tuple[str, Path]] = field(default_factory=list)  # stale earlier copies


def latest_decisions(records: list[dict]) -> dict[str, dict]:
    """Path -> its last decision, in order of first decision."""
    out: dict[str, dict] = {}
    for record in records:
        out[record["path"]] = record
    return out


def folder_name_problem(label: object) -> str | None:
    """Why ``label`` cannot be a folder name (an audit file is text anyone can edit)."""
    if not isinstance(label, str) or label in ("", ".", "..") or any(
            c in label for c in "/\\\0:") or not label.isprintable():
        return f"label {label!r} cannot be a folder name"
    return None


def _write_new(target: Path, data: bytes) -> None:
    """Write ``data`` as ``target``; FileExistsError when the name is taken (never replaced)."""
    tmp = target.with_name(f".leukedge-export-{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, target)
            return
        except FileExistsError:
            raise
        except OSError as e:  # no hard links here (FAT, exFAT, some shares)
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV,
                               errno.EMLINK, errno.EACCES):
                raise
        _write_exclusive(target, data)
    finally:
        tmp.unlink(missing_ok=True)


def _write_exclusive(target: Path, data: bytes) -> None:
    try:
        with open(target, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except FileExistsError:
        raise
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def _same_bytes(path: Path, digest: str) -> bool:
    try:
        return path.is_file() and line_sha256(path.read_bytes()) == digest
    except OSError:
        return False


def _place(data: bytes, digest: str, folder: Path, name: str) -> tuple[Path, str]:
    """Put one image into ``folder``: (where it is, "copied"/"already"/"renamed")."""
    target = folder / name
    if _same_bytes(target, digest):
        return target, "already"
    while True:
        candidate = unique_target(folder, name)
        try:
            _write_new(candidate, data)
        except FileExistsError:
            continue  # taken meanwhile: the next free name
        return candidate, "copied" if candidate.name == name else "renamed"


def _stale_copies(out: Path, label: str, name: str, digest: str) -> list[Path]:
    return [d / name for d in sorted(out.iterdir()) if d.is_dir() and d.name != label
            and _same_bytes(d / name, digest)]


def export_decisions(audit: str | os.PathLike, out: str | os.PathLike) -> ExportReport:
    """Copy the decided images of ``audit`` into ``out/<label>/`` (see the module docstring).

    Raises:
        AuditError: the audit file cannot be read or its chain is broken.
        LeukedgeError: ``out`` cannot be created.
    """
    out = Path(out)
    records = read_records(audit)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LeukedgeError(f"--out {display_path(out)}: cannot create the folder "
                            f"({e.strerror or e})") from e
    report = ExportReport()
    for path, record in latest_decisions(records).items():
        problem = folder_name_problem(record.get("label"))
        source = Path(record.get("file") or path)
        try:
            data = source.read_bytes() if problem is None else b""
        except OSError as e:
            problem = f"{display_path(source)}: cannot read it ({e.strerror or e})"
        if problem is None and line_sha256(data) != record["sha256"]:
            problem = (f"{display_path(source)} changed since it was decided (its sha256 is "
                       "not the audit's); not exported")
        if problem is not None:
            report.problems.append((path, problem))
            continue
        folder = out / record["label"]
        try:
            folder.mkdir(exist_ok=True)
            target, how = _place(data, record["sha256"], folder, source.name)
        except OSError as e:
            report.problems.append((path, f"cannot write into {display_path(folder)} "
                                          f"({e.strerror or e})"))
            continue
        getattr(report, how).append((path, target))
        report.elsewhere += [(path, p) for p in _stale_copies(out, record["label"], source.name,
                                                              record["sha256"])]
    return report
