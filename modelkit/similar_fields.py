"""Groups of similar fields: images that probably come from one slide, kept in one fold.

The ALL data has no patient or slide ids. Exact and near duplicates are grouped already
(:mod:`leukedge.modelkit.duplicates`), but other fields of the same slide (same stain batch,
same smear thickness, same lamp) still fall into different folds, and a model that recognises
the slide scores better in cross-validation than on a new slide. Grouping by similarity makes
the cross-validation figure predict new slides.

Each image is described by what a slide shares across its fields: the mean and spread of its
colour in CIELAB, and the mean colour of its stained (purple) pixels, standardised over the
dataset. Groups grow by single linkage, nearest pairs first, within a class, but a group never
grows past ``max_share`` of its class's images: fields of one slide join, while the continuum
of a whole class (every Pre smear looks a bit like the next) does not become one group.

Example:
    >>> groups = similar_field_groups(images, relpaths, labels, base_groups=duplicates)
"""

from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np

from .duplicates import UnionFind

MAX_SHARE = 0.02  # a group holds at most 2% of its class's images (Pre: 19 of 963)
NEIGHBOURS = 8  # nearest neighbours considered per image
SIZE = 64  # descriptors are measured on a 64 x 64 copy


def field_descriptor(rgb_uint8: np.ndarray) -> np.ndarray:
    """9 numbers a slide's fields share: LAB mean and spread, and the LAB mean of the stained
    pixels (the image mean when none is stained)."""
    small = cv2.resize(np.ascontiguousarray(rgb_uint8), (SIZE, SIZE),
                       interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float32)
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV_FULL).reshape(-1, 3).astype(np.float32) / 255
    stained = (hsv[:, 0] >= 0.7) & (hsv[:, 0] <= 0.8) & (hsv[:, 1] >= 0.5) & (hsv[:, 2] >= 0.4)
    stain = lab[stained].mean(axis=0) if stained.sum() >= 4 else lab.mean(axis=0)
    return np.concatenate([lab.mean(axis=0), lab.std(axis=0), stain])


def similar_field_groups(images: Sequence[np.ndarray], relpaths: Sequence[str],
                         labels: Sequence[int], base_groups: Optional[dict[str, str]] = None,
                         max_share: float = MAX_SHARE) -> dict[str, str]:
    """relpath -> group key (the group's first relpath in sorted order), joining
    ``base_groups`` (duplicates) and similar fields of the same class."""
    n = len(relpaths)
    if not (len(images) == len(labels) == n):
        raise ValueError("images, relpaths and labels must have one entry per image")
    x = np.stack([field_descriptor(im) for im in images]).astype(np.float64)
    x = (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), 1e-9)
    labels = np.asarray(labels)
    uf, size = UnionFind(n), np.ones(n, np.int64)
    index = {p: i for i, p in enumerate(relpaths)}
    for i, p in enumerate(relpaths):  # duplicates first: they are one image
        key = (base_groups or {}).get(p, p)
        _join(uf, size, i, index.get(key, i), cap=n)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        cap = max(2, int(max_share * len(members)))
        for dist, i, j in _nearest_pairs(x[members]):
            _join(uf, size, int(members[i]), int(members[j]), cap)
    order = sorted(range(n), key=lambda i: relpaths[i])
    roots: dict[int, str] = {}
    for i in order:
        roots.setdefault(uf.find(i), relpaths[i])
    return {relpaths[i]: roots[uf.find(i)] for i in range(n)}


def _join(uf: UnionFind, size: np.ndarray, i: int, j: int, cap: int) -> None:
    a, b = uf.find(i), uf.find(j)
    if a != b and size[a] + size[b] <= cap:
        uf.union(a, b)
        size[uf.find(a)] = size[a] + size[b]


def _nearest_pairs(x: np.ndarray) -> list[tuple[float, int, int]]:
    """(distance, i, j) of each point's ``NEIGHBOURS`` nearest others, nearest first."""
    sq = (x * x).sum(axis=1)
    d = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0))
    np.fill_diagonal(d, np.inf)
    k = min(NEIGHBOURS, len(x) - 1)
    if k < 1:
        return []
    near = np.argpartition(d, k - 1, axis=1)[:, :k]
    pairs = {(min(i, j), max(i, j)) for i in range(len(x)) for j in near[i]}
    return sorted((float(d[i, j]), i, j) for i, j in pairs)
