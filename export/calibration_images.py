"""Calibration images for static INT8 quantization: a thin, deterministic adapter.

A sorted file list, decoded to uint8 RGB and fed as they are to the one-file model, whose own
preprocessing graph prepares them, and ``rewind()``: the same folder always gives the same
scales. onnxruntime's ``CalibrationDataReader`` is duck-typed (``get_next``), so this module does
not import it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from leukedge.modelkit.evaluation.labelled import select_evenly
from leukedge.runtime.contract import INPUT_NAME
from leukedge.runtime.decode import load_image
from leukedge.runtime.files import find_images, sha256_file

DEFAULT_CALIB_SIZE = 200


def calibration_files(calib_dir: str | os.PathLike,
                      size: Optional[int] = DEFAULT_CALIB_SIZE) -> list[Path]:
    """Image files under ``calib_dir`` (recursively), sorted, ``size`` of them spread evenly.

    Raises:
        ValueError: the folder does not exist or holds no image.
    """
    root = Path(calib_dir)
    if not root.is_dir():
        raise ValueError(f"--calib {str(root)!r} does not exist or is not a folder")
    found = find_images([root], recursive=True).paths
    if not found:
        raise ValueError(f"--calib {str(root)!r} holds no image (.jpg, .jpeg, .png, .tif, "
                         ".tiff, .bmp)")
    return select_evenly(found, size)


def calibration_set_sha256(paths: Sequence[str | os.PathLike]) -> str:
    """sha256 of the sorted per-file sha256s: names the image set wherever the files lie."""
    digests = sorted(sha256_file(p) for p in paths)
    return hashlib.sha256("\n".join(digests).encode("ascii")).hexdigest()


class ImageCalibrationReader:
    """Feeds decoded images (uint8, one per batch) to onnxruntime's calibrators.

    Args:
        paths: image files; they are used in sorted order.

    Example:
        >>> reader = ImageCalibrationReader(calibration_files("calib/", 200))
        >>> quantize_static(model_in, model_out, reader, ...)
    """

    def __init__(self, paths: Sequence[str | os.PathLike]):
        self.paths = sorted(Path(p) for p in paths)
        if not self.paths:
            raise ValueError("ImageCalibrationReader needs at least one image")
        self._next = 0

    def __len__(self) -> int:
        return len(self.paths)

    def get_next(self) -> Optional[dict[str, np.ndarray]]:
        """The next image's feed (a batch of 1), or None at the end."""
        if self._next >= len(self.paths):
            return None
        pixels = load_image(self.paths[self._next])
        self._next += 1
        return {INPUT_NAME: pixels[None]}

    def rewind(self) -> None:
        """Start again from the first image."""
        self._next = 0

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        feeds = self.get_next()
        if feeds is None:
            raise StopIteration
        return feeds
