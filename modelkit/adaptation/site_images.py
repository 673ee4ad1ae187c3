"""A site's labelled images for ``leukedge adapt``: read, counted, decoded and hashed.

The folder is ``DATA_DIR/<class>/...`` as for ``leukedge validate``
(:func:`~leukedge.modelkit.evaluation.validation.read_site_folder`: a folder the model does not
know is an error). Adapt then refuses a class with fewer than :data:`MIN_PER_CLASS` images
(:data:`TARGET_PER_CLASS` recommended) and any image it cannot decode, naming them: a fit on
what happened to be readable would not be the fit the lab asked for. Each file is read once;
its sha256 and its pixels come from the same bytes, and the sorted list of (relative path,
sha256) is hashed into the adapted model's provenance (:func:`file_list_sha256`).

Example:
    >>> site = load_site("site_images/", ("Benign", "Early", "Pre", "Pro"))
    >>> len(site.images), site.files_sha256
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from leukedge.runtime.decode import ImageError, decode_image, read_file_bytes
from leukedge.runtime.files import display_path

from ..evaluation.validation import SiteFolder, read_site_folder

MIN_PER_CLASS = 10
TARGET_PER_CLASS = 20


class TooFewImagesError(ValueError):
    """A class has fewer labelled images than adapt needs."""


@dataclass(frozen=True)
class SiteImages:
    """The decoded labelled images of a site, in sorted path order."""

    folder: SiteFolder
    paths: tuple[Path, ...]
    labels: np.ndarray
    images: tuple[np.ndarray, ...]
    sha256: tuple[str, ...]

    @property
    def counts(self) -> dict[str, int]:
        return {c: int((self.labels == i).sum()) for i, c in enumerate(self.folder.classes)}

    @property
    def relpaths(self) -> list[str]:
        return [p.relative_to(self.folder.root).as_posix() for p in self.paths]

    @property
    def files_sha256(self) -> str:
        return file_list_sha256(self.relpaths, self.sha256)


def file_list_sha256(relpaths: Sequence[str], sha256s: Sequence[str]) -> str:
    """sha256 of the sorted lines ``<relative path>\\t<file sha256>\\n``: names the exact set
    of files a model was adapted on, whatever folder they were copied to."""
    lines = sorted(f"{p}\t{h}\n" for p, h in zip(relpaths, sha256s))
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def check_counts(folder: SiteFolder, minimum: int = MIN_PER_CLASS) -> None:
    """Refuse classes with fewer than ``minimum`` images, naming each with its count.

    Raises:
        TooFewImagesError: naming the classes, their counts and how many adapt needs.
    """
    labels = np.array([label for _, label in folder.images], np.int64)
    short = [(c, int((labels == i).sum())) for i, c in enumerate(folder.classes)
             if (labels == i).sum() < minimum]
    if short:
        listed = ", ".join(f"{c}: {n}" for c, n in short)
        raise TooFewImagesError(
            f"{display_path(folder.root)}: too few labelled images ({listed}); adapt needs at "
            f"least {minimum} per class, {TARGET_PER_CLASS} recommended, in "
            f"DATA_DIR/<class>/ for every class ({', '.join(folder.classes)})")


def load_site(data_dir: str | os.PathLike, classes: Sequence[str],
              minimum: int = MIN_PER_CLASS) -> SiteImages:
    """Read, count, decode and hash a site's labelled folder.

    Raises:
        ValueError: no such folder, a class folder the model does not know, no images
            (from :func:`read_site_folder`), too few per class (:class:`TooFewImagesError`),
            or images that cannot be decoded (named, up to 5, and counted).
    """
    folder = read_site_folder(data_dir, classes)
    check_counts(folder, minimum)
    ordered = sorted(folder.images, key=lambda pair: str(pair[0]))
    images, hashes, bad = [], [], []
    for path, _ in ordered:
        try:
            data = read_file_bytes(path)
            images.append(decode_image(data, str(path)))
            hashes.append(hashlib.sha256(data).hexdigest())
        except (ImageError, OSError) as e:
            bad.append(str(e))
    if bad:
        raise ValueError(f"{len(bad)} image(s) in {display_path(folder.root)} cannot be "
                         f"decoded; adapt fits on every labelled image, so fix or remove "
                         f"them: {'; '.join(bad[:5])}")
    return SiteImages(folder, tuple(p for p, _ in ordered),
                      np.array([label for _, label in ordered], np.int64), tuple(images),
                      tuple(hashes))
