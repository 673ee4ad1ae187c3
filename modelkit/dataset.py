"""Labelled dataset discovery: which files are which class, and their content hashes.

Framework-free (numpy and the standard library). Splits and folds of a dataset are
:mod:`leukedge.modelkit.splits`.

Layouts: ``<root>/<class>/*.jpg`` or the public ALL layout ``<root>/Original/<class>/...`` and
``<root>/Segmented/<class>/...`` (``variant`` picks one). Paths in a manifest are relative to the
class-folder root (``Pro/WBC-Malignant-Pro-011.jpg``), so one manifest fits both variants.

The split groups images by the sha256 of their bytes before splitting: the ALL data holds 40 pairs
of byte-identical images, and a random split would put copies of one image into train and test.

Example:
    >>> ds = discover_dataset("/data/ALL", variant="original")
    >>> len(ds.records), ds.classes
    (2604, ('Benign', 'Early', 'Pre', 'Pro'))
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from leukedge.runtime.contract import DEFAULT_CLASSES
from leukedge.runtime.files import IMAGE_SUFFIXES, sha256_file

VARIANTS = ("original", "segmented")


@dataclass(frozen=True)
class ImageRecord:
    """One labelled image: path relative to the class-folder root (POSIX), class, sha256."""

    relpath: str
    label: str
    sha256: str


@dataclass(frozen=True)
class Dataset:
    """A discovered dataset: its class-folder root, classes, usable images and skipped files."""

    root: Path
    classes: tuple[str, ...]
    records: tuple[ImageRecord, ...]
    skipped: tuple[tuple[str, str], ...] = ()  # (relpath, reason)
    variant: str = "original"

    def path(self, record: ImageRecord) -> Path:
        """Absolute path of a record's file."""
        return self.root / record.relpath

    def label_indices(self, records: Sequence[ImageRecord] | None = None) -> np.ndarray:
        """Class indices (int64) of ``records`` (default: all), in ``classes`` order."""
        index = {c: i for i, c in enumerate(self.classes)}
        records = self.records if records is None else records
        return np.array([index[r.label] for r in records], dtype=np.int64)

    def without(self, bad: dict[str, str]) -> "Dataset":
        """A copy without the files in ``bad`` (relpath -> reason), which join ``skipped``."""
        kept = tuple(r for r in self.records if r.relpath not in bad)
        return replace(self, records=kept, skipped=self.skipped + tuple(sorted(bad.items())))

    def manifest_sha256(self) -> str:
        """Hash of the dataset's content: see :func:`data_manifest_sha256`."""
        return data_manifest_sha256(self.records)


def data_manifest_sha256(records: Iterable[ImageRecord]) -> str:
    """sha256 of the sorted ``"<relpath>\\t<sha256>\\n"`` lines: names the exact data used."""
    lines = sorted(f"{r.relpath}\t{r.sha256}\n" for r in records)
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- discovery


def class_root(data_dir: str | os.PathLike, variant: str = "original") -> Path:
    """The folder holding the class folders: ``data_dir`` itself or its Original/Segmented part."""
    if variant not in VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}. Valid: {', '.join(VARIANTS)}")
    root = Path(data_dir)
    if not root.is_dir():
        raise ValueError(f"Dataset folder {str(root)!r} does not exist or is not a folder")
    subdirs = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    if variant in subdirs:
        return subdirs[variant]
    if variant == "segmented":
        raise ValueError(f"{str(root)!r} has no 'Segmented' folder; variant 'segmented' needs "
                         "<root>/Segmented/<class>/... (the public ALL layout)")
    return root


def _class_folders(root: Path, classes: Sequence[str]) -> dict[str, Path]:
    folders = {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")}
    unknown = sorted(set(folders) - set(classes))
    if unknown:
        raise ValueError(f"Unknown class folder(s) {unknown} in {str(root)!r}. "
                         f"Valid classes: {', '.join(classes)}")
    missing = [c for c in classes if c not in folders]
    if missing:
        raise ValueError(f"Class folder(s) {missing} missing in {str(root)!r}. "
                         f"Expected one folder per class: {', '.join(classes)}")
    return {c: folders[c] for c in classes}


def _scan_class(root: Path, folder: Path, label: str, skipped: list) -> list[ImageRecord]:
    records = []
    for f in sorted(folder.iterdir()):
        rel = f.relative_to(root).as_posix()
        if f.name.startswith(".") or f.is_dir():
            continue
        if f.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append((rel, f"not an image file (suffix {f.suffix or 'none'})"))
            continue
        try:
            if f.stat().st_size == 0:
                skipped.append((rel, "empty file (0 bytes)"))
                continue
            records.append(ImageRecord(rel, label, sha256_file(f)))
        except OSError as e:
            skipped.append((rel, f"cannot read file ({e.strerror or e})"))
    return records


def discover_dataset(data_dir: str | os.PathLike, variant: str = "original",
                     classes: Sequence[str] = DEFAULT_CLASSES) -> Dataset:
    """Find the labelled images of a dataset folder and hash them.

    Unreadable and empty files are listed in ``Dataset.skipped``, not fatal; files that fail to
    decode are found when the images are loaded (drop them with :meth:`Dataset.without`).

    Raises:
        ValueError: the folder is missing, has unknown class folders, misses a class, or a class
            has no usable image.
    """
    root = class_root(data_dir, variant)
    skipped: list[tuple[str, str]] = []
    records: list[ImageRecord] = []
    for label, folder in _class_folders(root, classes).items():
        found = _scan_class(root, folder, label, skipped)
        if not found:
            raise ValueError(f"Class {label!r} has no usable image in {str(folder)!r} "
                             f"(supported: {', '.join(IMAGE_SUFFIXES)})")
        records.extend(found)
    return Dataset(root, tuple(classes), tuple(records), tuple(skipped), variant)
