"""Labelled dataset discovery, duplicate-aware stratified split and split manifests.

Framework-free (numpy and the standard library): training, export parity checks and the
comparison command all select images through this module, so "the test split" means the same
files everywhere.

Layouts: ``<root>/<class>/*.jpg`` or the public ALL layout ``<root>/Original/<class>/...`` and
``<root>/Segmented/<class>/...`` (``variant`` picks one). Paths in a manifest are relative to the
class-folder root (``Pro/WBC-Malignant-Pro-011.jpg``), so one manifest fits both variants.

The split groups images by the sha256 of their bytes before splitting: the ALL data holds 40 pairs
of byte-identical images, and a random split would put copies of one image into train and test.

Example:
    >>> ds = discover_dataset("/data/ALL", variant="original")
    >>> manifest = make_split(ds, seed=42)
    >>> write_split_manifest("runs/a/split.json", manifest)
    >>> test = select_split(ds, read_split_manifest("runs/a/split.json"), "test")
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .contract import DEFAULT_CLASSES
from .files import atomic_write_text, sha256_file
from .preprocess import IMAGE_SUFFIXES

VARIANTS = ("original", "segmented")
SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.64, 0.20, 0.16)  # the seed: 80/20 train/test, then 80/20 train/val
MANIFEST_FORMAT = "leukedge.split"
MANIFEST_VERSION = 1


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


# --------------------------------------------------------------------------- split


@dataclass(frozen=True)
class SplitManifest:
    """Which file went to which split, with the seed, the fractions and the data's hash."""

    classes: tuple[str, ...]
    seed: int
    fractions: tuple[float, float, float]
    variant: str
    entries: tuple[dict, ...]  # {"path", "class", "split", "sha256"}
    data_manifest_sha256: str
    skipped: tuple[tuple[str, str], ...] = ()
    extra: dict = field(default_factory=dict)

    def paths(self, split: str) -> list[str]:
        """Relative paths of one split, in manifest order."""
        _check_split(split)
        return [e["path"] for e in self.entries if e["split"] == split]

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per split and class."""
        out = {s: {c: 0 for c in self.classes} for s in SPLITS}
        for e in self.entries:
            out[e["split"]][e["class"]] += 1
        return out

    def to_dict(self) -> dict:
        return {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION,
                "classes": list(self.classes), "seed": self.seed, "variant": self.variant,
                "fractions": dict(zip(SPLITS, self.fractions)),
                "data_manifest_sha256": self.data_manifest_sha256, "counts": self.counts(),
                "grouping": "sha256 of file bytes; byte-identical files share a split",
                "skipped": [list(s) for s in self.skipped], **self.extra,
                "files": list(self.entries)}

    @classmethod
    def from_dict(cls, d: dict, source: str = "manifest") -> "SplitManifest":
        if d.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"{source}: not a leukedge split manifest (format {d.get('format')!r})")
        try:
            return cls(classes=tuple(d["classes"]), seed=int(d["seed"]),
                       fractions=tuple(float(d["fractions"][s]) for s in SPLITS),
                       variant=d.get("variant", "original"),
                       entries=tuple({k: e[k] for k in ("path", "class", "split", "sha256")}
                                     for e in d["files"]),
                       data_manifest_sha256=d["data_manifest_sha256"],
                       skipped=tuple(tuple(s) for s in d.get("skipped", ())))
        except (KeyError, TypeError) as e:
            raise ValueError(f"{source}: split manifest lacks field {e}") from e


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}. Valid: {', '.join(SPLITS)}")


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers (train, val, test) "
                         f"summing to 1, got {tuple(fractions)}")
    return tuple(float(f) for f in fractions)  # type: ignore[return-value]


def _assign_class(groups: list[list[ImageRecord]], fractions, rng) -> dict[str, str]:
    """Shuffle one class's duplicate groups; fill test, then val, then train by image count."""
    n = sum(len(g) for g in groups)
    targets = {"test": round(fractions[2] * n), "val": round(fractions[1] * n)}
    filled = {"test": 0, "val": 0}
    out = {}
    for i in rng.permutation(len(groups)):
        group = groups[i]
        split = next((s for s in ("test", "val") if filled[s] + len(group) / 2 <= targets[s]),
                     "train")
        filled[split] = filled.get(split, 0) + len(group)
        out.update({r.relpath: split for r in group})
    return out


def make_split(dataset: Dataset, seed: int = 42,
               fractions: Sequence[float] = DEFAULT_FRACTIONS) -> SplitManifest:
    """Duplicate-aware stratified split: byte-identical images always share one split.

    Groups (by sha256) are sorted, shuffled per class with ``np.random.default_rng(seed)`` and
    dealt to test, val and train until each reaches its share of the class's images. A group
    whose copies carry different labels is stratified under its first label (sorted by path).
    """
    fractions = _check_fractions(fractions)
    by_sha: dict[str, list[ImageRecord]] = {}
    for r in sorted(dataset.records, key=lambda r: r.relpath):
        by_sha.setdefault(r.sha256, []).append(r)
    rng = np.random.default_rng(seed)
    assigned: dict[str, str] = {}
    for label in dataset.classes:
        groups = [g for _, g in sorted(by_sha.items()) if g[0].label == label]
        assigned.update(_assign_class(groups, fractions, rng))
    entries = tuple({"path": r.relpath, "class": r.label, "split": assigned[r.relpath],
                     "sha256": r.sha256} for r in sorted(dataset.records, key=lambda r: r.relpath))
    return SplitManifest(dataset.classes, int(seed), fractions, dataset.variant, entries,
                         dataset.manifest_sha256(), dataset.skipped)


def write_split_manifest(path: str | os.PathLike, manifest: SplitManifest) -> str:
    """Write the manifest atomically as JSON; returns the sha256 of the written bytes."""
    text = json.dumps(manifest.to_dict(), indent=1) + "\n"
    atomic_write_text(path, text)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_split_manifest(path: str | os.PathLike) -> SplitManifest:
    """Read a manifest written by :func:`write_split_manifest`."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"Cannot read split manifest {str(path)!r}: {e}") from e
    return SplitManifest.from_dict(data, source=str(path))


def select_split(dataset: Dataset, manifest: SplitManifest, split: str = "test",
                 verify_sha256: bool = True) -> list[ImageRecord]:
    """The records of ``dataset`` that the manifest puts in ``split`` (manifest order).

    Raises:
        ValueError: a file of the split is missing from the dataset, or (with ``verify_sha256``)
            its bytes differ from what the manifest recorded.
    """
    _check_split(split)
    by_path = {r.relpath: r for r in dataset.records}
    wanted = [e for e in manifest.entries if e["split"] == split]
    missing = [e["path"] for e in wanted if e["path"] not in by_path]
    if missing:
        raise ValueError(f"{len(missing)} file(s) of the {split} split are not in "
                         f"{str(dataset.root)!r}, e.g. {missing[:3]}")
    changed = [e["path"] for e in wanted if by_path[e["path"]].sha256 != e["sha256"]]
    if verify_sha256 and changed:
        raise ValueError(f"{len(changed)} file(s) of the {split} split differ from the manifest "
                         f"(sha256), e.g. {changed[:3]}; pass verify_sha256=False to compare "
                         "another variant of the same images")
    return [by_path[e["path"]] for e in wanted]
