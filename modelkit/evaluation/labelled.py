"""Labelled images for evaluation: a class-folder tree, or one split of a split manifest.

Images are chosen through :mod:`leukedge.modelkit.dataset`, so "the test split" means the same
files everywhere, and decoded through :mod:`leukedge.runtime.decode`. Files that cannot be
decoded are reported by name, never a traceback.

Example:
    >>> data = load_labelled("/data/ALL", classes, split_manifest="runs/a/split.json")
    >>> pixels = data.decode()
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from leukedge.runtime.decode import ImageError, load_image

from ..dataset import discover_dataset
from ..splits import read_split_manifest, select_split


def select_evenly(paths: Sequence[Path], size: Optional[int]) -> list[Path]:
    """``size`` paths spread evenly over the sorted list (every class folder gets its share)."""
    ordered = sorted(Path(p) for p in paths)
    if size is None or size >= len(ordered):
        return ordered
    if size < 1:
        raise ValueError(f"the number of images must be >= 1, got {size}")
    picks = np.unique(np.linspace(0, len(ordered) - 1, size).round().astype(int))
    return [ordered[i] for i in picks]


@dataclass(frozen=True)
class LabelledSet:
    """Image files with their class indices, and a line saying where they came from."""

    paths: tuple[Path, ...]
    labels: np.ndarray
    classes: tuple[str, ...]
    source: str

    def __len__(self) -> int:
        return len(self.paths)

    def decode(self) -> list[np.ndarray]:
        """The images as RGB uint8 arrays.

        Raises:
            ImageError: naming every file that could not be decoded (up to 5) and how many.
        """
        images, bad = [], []
        for path in self.paths:
            try:
                images.append(load_image(path))
            except ImageError as e:
                bad.append(str(e))
        if bad:
            shown = "; ".join(bad[:5])
            raise ImageError(self.source, f"{len(bad)} labelled image(s) cannot be decoded: "
                                          f"{shown}")
        return images


def run_split_of(model_path: str | os.PathLike, contract) -> Optional[Path]:
    """The ``split.json`` beside a model that its contract names (by sha256): the run it was
    exported from, whose held-out split a comparison should score. None when there is none."""
    from leukedge.runtime.files import sha256_file

    wanted = (contract.provenance or {}).get("split_manifest_sha256")
    candidate = Path(model_path).with_name("split.json")
    if wanted and candidate.is_file() and sha256_file(candidate) == wanted:
        return candidate
    return None


def load_labelled(data_dir: str | os.PathLike, classes: Sequence[str],
                  split_manifest: Optional[str | os.PathLike] = None, split: str = "test",
                  limit: Optional[int] = None) -> LabelledSet:
    """Labelled images of ``data_dir``: all of them, or one split of a manifest.

    Args:
        data_dir: ``<root>/<class>/*.jpg`` (or the ALL layout with ``Original/``).
        classes: the model's class names, in output order.
        split_manifest: a ``split.json``; its ``split`` part is used (files checked by sha256).
        split: which part of the manifest.
        limit: at most this many images, spread evenly over the sorted list (None = all).
    """
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    variant = "original"
    manifest = None
    if split_manifest is not None:
        manifest = read_split_manifest(split_manifest)
        variant = manifest.variant
    dataset = discover_dataset(data_dir, variant=variant, classes=tuple(classes))
    records = (select_split(dataset, manifest, split) if manifest is not None
               else list(dataset.records))
    where = f"{split} split of {split_manifest}" if manifest is not None else "all images"
    if limit is not None and limit < len(records):
        keep = {str(p) for p in select_evenly([dataset.path(r) for r in records], limit)}
        records = [r for r in records if str(dataset.path(r)) in keep]
        where += f", {len(records)} spread evenly"
    return LabelledSet(paths=tuple(dataset.path(r) for r in records),
                       labels=dataset.label_indices(records), classes=tuple(classes),
                       source=f"{dataset.root} ({where})")
