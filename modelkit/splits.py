"""Duplicate-aware stratified splits and cross-validation folds, and split manifests.

Training, export checks and the comparison command all select images through this module, so
"the test split" means the same files everywhere. Members of a duplicate group (exact copies,
and near-identical views, :mod:`leukedge.modelkit.duplicates`) always share a split or a fold.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from leukedge.runtime.files import atomic_write_text

from .dataset import Dataset, ImageRecord

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.64, 0.20, 0.16)  # the reference study: 80/20 train/test, then 80/20 train/val
MANIFEST_FORMAT = "leukedge.split"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class SplitManifest:
    """Which file went to which split, with the random seed, the fractions and the data's hash."""

    classes: tuple[str, ...]
    seed: int
    fractions: tuple[float, float, float]
    variant: str
    entries: tuple[dict, ...]  # {"path", "class", "split", "sha256"[, "group"]}
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
                       entries=tuple({k: e[k] for k in ("path", "class", "split", "sha256",
                                                         "group") if k in e}
                                     for e in d["files"]),
                       data_manifest_sha256=d["data_manifest_sha256"],
                       skipped=tuple(tuple(s) for s in d.get("skipped", ())),
                       extra={"grouping": d["grouping"]} if "grouping" in d else {})
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


def _groups_by_label(dataset: Dataset, groups: Optional[dict[str, str]]
                     ) -> dict[str, list[list[ImageRecord]]]:
    """Per class, the duplicate groups (sorted by key) of the dataset's records.

    ``groups`` maps relpath -> group key (:func:`~leukedge.modelkit.duplicates.duplicate_groups`);
    None groups byte-identical files only. A group whose members carry different labels is
    filed under its first member's label (sorted by path).
    """
    keys = groups or {r.relpath: r.sha256 for r in dataset.records}
    missing = [r.relpath for r in dataset.records if r.relpath not in keys]
    if missing:
        raise ValueError(f"{len(missing)} image(s) have no duplicate group, e.g. {missing[:3]}")
    members: dict[str, list[ImageRecord]] = {}
    for r in sorted(dataset.records, key=lambda r: r.relpath):
        members.setdefault(keys[r.relpath], []).append(r)
    out: dict[str, list[list[ImageRecord]]] = {label: [] for label in dataset.classes}
    for _, group in sorted(members.items()):
        out[group[0].label].append(group)
    return out


def make_split(dataset: Dataset, seed: int = 42,
               fractions: Sequence[float] = DEFAULT_FRACTIONS,
               groups: Optional[dict[str, str]] = None,
               grouping: str = "sha256 of file bytes") -> SplitManifest:
    """Duplicate-aware stratified split: the members of a duplicate group always share a split.

    Groups are sorted, shuffled per class with ``np.random.default_rng(seed)`` and dealt to
    test, val and train until each reaches its share of the class's images.

    Args:
        groups: relpath -> group key (exact and near duplicates); None: sha256 groups only.
        grouping: how the groups were made, recorded in the manifest.
    """
    fractions = _check_fractions(fractions)
    rng = np.random.default_rng(seed)
    assigned: dict[str, str] = {}
    for label, class_groups in _groups_by_label(dataset, groups).items():
        assigned.update(_assign_class(class_groups, fractions, rng))
    keys = groups or {r.relpath: r.sha256 for r in dataset.records}
    entries = tuple({"path": r.relpath, "class": r.label, "split": assigned[r.relpath],
                     "sha256": r.sha256, "group": keys[r.relpath]}
                    for r in sorted(dataset.records, key=lambda r: r.relpath))
    return SplitManifest(dataset.classes, int(seed), fractions, dataset.variant, entries,
                         dataset.manifest_sha256(), dataset.skipped,
                         extra={"grouping": grouping})


def make_folds(dataset: Dataset, k: int = 5, seed: int = 0,
               groups: Optional[dict[str, str]] = None) -> dict[str, int]:
    """Grouped, stratified k-fold assignment: relpath -> fold (0..k-1).

    Per class, groups are shuffled and each goes to the fold holding the fewest images of that
    class so far (ties to the lowest fold), so folds are balanced per class and no duplicate
    group straddles two folds.
    """
    if k < 2:
        raise ValueError(f"k must be >= 2 folds, got {k}")
    rng = np.random.default_rng(seed)
    fold_of: dict[str, int] = {}
    for label, class_groups in _groups_by_label(dataset, groups).items():
        if len(class_groups) < k:
            raise ValueError(f"class {label!r} has {len(class_groups)} duplicate groups, fewer "
                             f"than {k} folds")
        sizes = [0] * k
        for i in rng.permutation(len(class_groups)):
            fold = int(np.argmin(sizes))
            sizes[fold] += len(class_groups[i])
            fold_of.update({r.relpath: fold for r in class_groups[i]})
    return fold_of


def held_out_split(manifest_path: Optional[str | os.PathLike]) -> str:
    """"test", or "val" for a manifest without a test split (a final model trained on all
    images); "test" when there is no manifest (then every image is used)."""
    if manifest_path is None:
        return "test"
    return "test" if read_split_manifest(manifest_path).paths("test") else "val"


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
