"""Decoded training images, cached once per dataset so later runs skip decoding.

The cache holds the decoded uint8 RGB pixels at their native size: resizing belongs to the
model's preprocessing graph, and augmenting before it keeps training identical to deployment.
Its key is the dataset's content hash (paths and file sha256s), so any change to the data makes
a new cache. Only datasets whose images share one size are cached (as one array); others are
decoded every run. Files are written atomically and read without pickle.

Example:
    >>> images, records, bad = cached_images(dataset)
"""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from leukedge.modelkit.dataset import Dataset, ImageRecord
from leukedge.runtime.files import atomic_write_bytes

from .data import load_images
from .pretrained import cache_dir

log = logging.getLogger(__name__)


def _cache_path(dataset: Dataset) -> Path:
    return cache_dir() / "images" / f"{dataset.variant}-{dataset.manifest_sha256()[:32]}.npz"


def _read(path: Path, dataset: Dataset):
    try:
        with np.load(path, allow_pickle=False) as data:
            relpaths = [str(p) for p in data["relpaths"]]
            bad = json.loads(str(data["bad"]))
            pixels = data["pixels"]
    except (OSError, ValueError, KeyError):
        return None
    by_path = {r.relpath: r for r in dataset.records}
    if any(p not in by_path for p in relpaths):
        return None
    return list(pixels), [by_path[p] for p in relpaths], bad


def _write(path: Path, images: Sequence[np.ndarray], records: Sequence[ImageRecord],
           bad: dict[str, str]) -> None:
    buf = io.BytesIO()
    np.savez(buf, pixels=np.stack(images), relpaths=np.array([r.relpath for r in records]),
             bad=np.array(json.dumps(bad)))
    atomic_write_bytes(path, buf.getvalue())


def cached_images(dataset: Dataset, use_cache: bool = True
                  ) -> tuple[list[np.ndarray], list[ImageRecord], dict[str, str]]:
    """(images, records that decoded, {relpath: reason} of those that failed), all records of
    ``dataset``, from the cache when it is there."""
    path = _cache_path(dataset)
    started = time.perf_counter()
    if use_cache and path.is_file():
        hit = _read(path, dataset)
        if hit is not None:
            log.info("Decoded images from the cache %s (%.1f s)", path,
                     time.perf_counter() - started)
            return hit
    images, records, bad = load_images(dataset, dataset.records)
    log.info("Decoded %d images in %.1f s", len(images), time.perf_counter() - started)
    if use_cache and images and len({im.shape for im in images}) == 1:
        try:
            _write(path, images, records, bad)
        except OSError as e:
            log.warning("Image cache not written (%s)", e)
    return images, records, bad
