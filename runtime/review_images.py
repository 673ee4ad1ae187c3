"""The pictures the review page shows, drawn only from the files a results file names.

A client asks for an image by its row's id and a view, never by a path, so nothing but the
images (and overlays) of the results file can be read through the page. Views:

- ``image``: the image file, decoded by runtime/decode.py (EXIF orientation applied; bombs,
  truncation and non-images refused), shrunk to display size;
- ``overlay``: the image with the served model's stain-mask outline and caption
  (runtime/overlay.py), the model run on it once;
- ``saved``: the overlay PNG ``infer --overlay-dir`` wrote for the row (its ``overlay`` field),
  decoded and encoded again like any other image.

A view a model can add (a class-activation heatmap output) is one more entry of
:func:`~leukedge.runtime.review_station.views_of` and :meth:`ImageViews.draw`. Every view is sent as JPEG; the last few are
cached by id, view, and the file's size and mtime.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any

import cv2
import numpy as np

from .decode import MAX_PIXELS, ImageError, read_image
from .overlay import display_pair, display_size, render_overlay
from .review_station import ReviewRefused, ReviewStation, views_of

JPEG_QUALITY = 90
CACHE_SIZE = 32


def plain_bgr(pixels: np.ndarray) -> np.ndarray:
    """The image at display size, BGR for OpenCV's encoder."""
    h, w = display_size(*pixels.shape[:2])
    small = pixels if (h, w) == pixels.shape[:2] else cv2.resize(
        pixels, (w, h), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_RGB2BGR)


def overlay_bgr(classifier: Any, pixels: np.ndarray) -> np.ndarray:
    """The served model's overlay of one image: its stain-mask outline and prediction."""
    names = classifier.default_outputs + ["stain_mask"]
    outputs = classifier.run(pixels[None], names)
    prediction = classifier.prediction_from_outputs(
        {k: v[0] for k, v in outputs.items() if k != "stain_mask"})
    image, mask = display_pair(pixels, outputs["stain_mask"][0])
    return render_overlay(image, mask, prediction)


class ImageViews:
    """Draws and caches the views of a station's images.

    Example:
        >>> jpeg = ImageViews(station).render(item_id, "overlay")
    """

    def __init__(self, station: ReviewStation, max_pixels: int = MAX_PIXELS,
                 cache_size: int = CACHE_SIZE):
        self.station, self.max_pixels, self.cache_size = station, max_pixels, cache_size
        self._cache: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def render(self, item_id: str, view: str) -> bytes:
        """JPEG bytes of one view of one row's image.

        Raises:
            ReviewRefused: 404 for an unknown id or view, 410 for a file no longer there, 422
                for a file that cannot be shown (the reason from the decoder).
        """
        row = self.station.row(item_id)
        views = views_of(self.station.classifier, row)
        if view not in views:
            raise ReviewRefused(404, f"no view {view!r} of {row.path}. Valid: {', '.join(views)}")
        source = (self.station.file_of(row.overlay) if view == "saved"
                  else self.station.image_file(row))
        if source is None:
            raise ReviewRefused(410, f"{row.path}: the {'overlay' if view == 'saved' else 'image'}"
                                     " file is no longer there (moved or deleted)")
        try:
            info = os.stat(source)
        except OSError as e:
            raise ReviewRefused(410, f"{row.path}: cannot read the file ({e.strerror or e})")
        key = (item_id, view, str(source), info.st_size, info.st_mtime_ns)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        data = self.draw(source, view)
        with self._lock:
            self._cache[key] = data
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return data

    def draw(self, source: os.PathLike, view: str) -> bytes:
        try:
            pixels = read_image(source, self.max_pixels)
        except ImageError as e:
            raise ReviewRefused(422, f"cannot show {e}") from e
        if view == "overlay":
            bgr = overlay_bgr(self.station.classifier, pixels)
        else:
            bgr = plain_bgr(pixels)
        ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:  # pragma: no cover - OpenCV's JPEG encoder does not fail on uint8 BGR
            raise ReviewRefused(500, "OpenCV could not encode the view as JPEG")
        return encoded.tobytes()
