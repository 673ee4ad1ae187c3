"""Calibration images for static INT8 quantization: a thin, deterministic adapter.

A sorted file list, the shared preprocessing (:func:`leukedge.runtime.preprocess.preprocess`) and
``rewind()``: the same folder always gives the same scales. onnxruntime's
``CalibrationDataReader`` is duck-typed (``get_next``), so this module does not import it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from leukedge.runtime.files import sha256_file
from leukedge.runtime.preprocess import PreprocessSpec, list_images, preprocess

DEFAULT_CALIB_SIZE = 100


def select_evenly(paths: Sequence[Path], size: Optional[int]) -> list[Path]:
    """``size`` paths spread evenly over the sorted list (every class folder gets its share)."""
    ordered = sorted(Path(p) for p in paths)
    if size is None or size >= len(ordered):
        return ordered
    if size < 1:
        raise ValueError(f"calibration size must be >= 1, got {size}")
    picks = np.unique(np.linspace(0, len(ordered) - 1, size).round().astype(int))
    return [ordered[i] for i in picks]


def calibration_files(calib_dir: str | os.PathLike, size: Optional[int] = DEFAULT_CALIB_SIZE) -> list[Path]:
    """Image files under ``calib_dir`` (recursively), sorted, ``size`` of them spread evenly.

    Raises:
        ValueError: the folder does not exist or holds no image.
    """
    root = Path(calib_dir)
    if not root.is_dir():
        raise ValueError(f"Calibration folder {str(root)!r} does not exist or is not a folder")
    found = list_images([root], recursive=True)
    if not found:
        raise ValueError(f"Calibration folder {str(root)!r} holds no image "
                         "(.jpg, .jpeg, .png, .tif, .tiff, .bmp)")
    return select_evenly(found, size)


def calibration_set_sha256(paths: Sequence[str | os.PathLike]) -> str:
    """sha256 of the sorted per-file sha256s: names the image set wherever the files lie."""
    digests = sorted(sha256_file(p) for p in paths)
    return hashlib.sha256("\n".join(digests).encode("ascii")).hexdigest()


class ImageCalibrationReader:
    """Feeds preprocessed images to onnxruntime's calibrators, one image per batch.

    Args:
        paths: image files; they are used in sorted order.
        spec: the model contract's preprocessing.
        input_names: content ('image', 'masked_image') -> the model's input name.

    Example:
        >>> reader = ImageCalibrationReader(calibration_files("calib/", 100),
        ...                                 contract.preprocessing, {"image": "image",
        ...                                 "masked_image": "masked_image"})
        >>> quantize_static(model_in, model_out, reader, ...)
    """

    def __init__(self, paths: Sequence[str | os.PathLike], spec: PreprocessSpec,
                 input_names: dict[str, str]):
        self.paths = sorted(Path(p) for p in paths)
        if not self.paths:
            raise ValueError("ImageCalibrationReader needs at least one image")
        self.spec = spec
        self.input_names = dict(input_names)
        self._next = 0

    def __len__(self) -> int:
        return len(self.paths)

    def get_next(self) -> Optional[dict[str, np.ndarray]]:
        """The next image's feeds (batch of 1), or None at the end."""
        if self._next >= len(self.paths):
            return None
        image, masked = preprocess(self.paths[self._next], self.spec)
        self._next += 1
        arrays = {"image": image[None], "masked_image": masked[None]}
        return {name: arrays[content] for content, name in self.input_names.items()}

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
