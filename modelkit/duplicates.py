"""Duplicate groups: images that must never sit on both sides of a split or a fold.

Two kinds are joined into one group (union-find):

- exact duplicates: the same sha256 of file bytes (the ALL data holds 33 byte-identical Pro
  pairs in its development part);
- near duplicates: the same field of view saved twice with small differences, which the ALL
  data holds as consecutively numbered files. They are found on 32x32 grey thumbnails (area
  resize): a pair whose root-mean-square grey difference is at most
  :data:`NEAR_DUPLICATE_RMS` (0-255 scale) is one view. On the 2,604 development images the
  nearest-neighbour distances have a clear gap: 47 pairs at 0.6-11.0 (visibly the same view),
  then nothing until 13.6 and a continuum from 15 up (different views).

Example:
    >>> groups = duplicate_groups(records, thumbnails)    # relpath -> group key
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

NEAR_DUPLICATE_RMS = 12.0
THUMB_SIZE = 32
_CHUNK = 2048


def thumbnail(rgb_uint8: np.ndarray) -> np.ndarray:
    """The 32x32 grey float32 thumbnail that near-duplicate detection compares."""
    grey = cv2.cvtColor(np.ascontiguousarray(rgb_uint8), cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (THUMB_SIZE, THUMB_SIZE), interpolation=cv2.INTER_AREA
                      ).astype(np.float32).reshape(-1)


class UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def near_duplicate_pairs(thumbs: np.ndarray, threshold: float = NEAR_DUPLICATE_RMS
                         ) -> list[tuple[int, int, float]]:
    """(i, j, rms) for every pair i < j whose thumbnails differ by at most ``threshold`` RMS.

    Pairwise distances by the ``|a|^2 + |b|^2 - 2ab`` expansion in float64, in row chunks so
    memory stays at ``_CHUNK x n`` values.
    """
    x = np.asarray(thumbs, np.float64)
    n, d = x.shape
    norms = (x * x).sum(axis=1)
    pairs = []
    for start in range(0, n, _CHUNK):
        block = x[start:start + _CHUNK]
        sq = norms[start:start + _CHUNK, None] + norms[None, :] - 2.0 * block @ x.T
        rms = np.sqrt(np.maximum(sq, 0.0) / d)
        for a, b in zip(*np.nonzero(rms <= threshold)):
            i = start + int(a)
            if i < int(b):
                pairs.append((i, int(b), float(rms[a, b])))
    return pairs


def duplicate_groups(relpaths: Sequence[str], sha256s: Sequence[str],
                     thumbs: np.ndarray | None = None,
                     threshold: float = NEAR_DUPLICATE_RMS) -> dict[str, str]:
    """relpath -> group key (the group's first relpath in sorted order).

    ``thumbs`` (one :func:`thumbnail` row per relpath) adds near duplicates; None groups exact
    duplicates only.
    """
    if len(relpaths) != len(sha256s) or (thumbs is not None and len(thumbs) != len(relpaths)):
        raise ValueError("relpaths, sha256s and thumbnails must have one entry per image")
    order = sorted(range(len(relpaths)), key=lambda i: relpaths[i])
    uf = UnionFind(len(relpaths))
    first_of_sha: dict[str, int] = {}
    for i in order:
        uf.union(i, first_of_sha.setdefault(sha256s[i], i))
    if thumbs is not None:
        for i, j, _ in near_duplicate_pairs(thumbs, threshold):
            uf.union(i, j)
    roots: dict[int, str] = {}
    for i in order:
        roots.setdefault(uf.find(i), relpaths[i])
    return {relpaths[i]: roots[uf.find(i)] for i in range(len(relpaths))}
