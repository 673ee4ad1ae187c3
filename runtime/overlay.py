"""Overlay images for a human check: the HSV mask outline and the prediction drawn on the smear.

The mask is computed at the image's original resolution with the model's own thresholds
(:func:`~leukedge.runtime.preprocess.hsv_mask`), so the outline shows what the segmentation
branch was given, and the PNG is written atomically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .classifier import Prediction
from .files import atomic_write_bytes
from .preprocess import HsvMaskSpec, hsv_mask

OUTLINE_BGR = (0, 255, 0)
TEXT_BGR = (255, 255, 255)
REVIEW_BGR = (0, 0, 255)
OVERLAY_SUFFIX = ".overlay.png"


def full_resolution_mask(rgb_uint8: np.ndarray, mask_spec: HsvMaskSpec) -> np.ndarray:
    """Boolean HSV mask of an RGB uint8 image at its own resolution."""
    return hsv_mask(rgb_uint8.astype(np.float32) * np.float32(1.0 / 255.0), mask_spec)


def _caption_lines(prediction: Prediction) -> list[tuple[str, tuple[int, int, int]]]:
    lines = [(f"{prediction.label} {prediction.confidence:.2f}", TEXT_BGR)]
    if prediction.needs_review:
        lines.append(("REVIEW", REVIEW_BGR))
    return lines


def _draw_caption(canvas: np.ndarray, prediction: Prediction) -> None:
    h, w = canvas.shape[:2]
    scale = max(0.4, min(h, w) / 500.0)
    thickness = max(1, round(scale * 2))
    font = cv2.FONT_HERSHEY_SIMPLEX
    y = 0
    for text, colour in _caption_lines(prediction):
        (tw, th), base = cv2.getTextSize(text, font, scale, thickness)
        pad = max(2, th // 4)
        cv2.rectangle(canvas, (0, y), (tw + 2 * pad, y + th + base + 2 * pad), (0, 0, 0), cv2.FILLED)
        cv2.putText(canvas, text, (pad, y + pad + th), font, scale, colour, thickness, cv2.LINE_AA)
        y += th + base + 2 * pad


def render_overlay(rgb_uint8: np.ndarray, mask: np.ndarray, prediction: Prediction) -> np.ndarray:
    """A BGR uint8 copy of the image with the mask outline and the prediction caption.

    Args:
        rgb_uint8: the original image, RGB uint8 HxWx3.
        mask: boolean HxW mask at the same resolution.
        prediction: what to write in the caption ("REVIEW" is added when it needs review).
    """
    if mask.shape != rgb_uint8.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match the image {rgb_uint8.shape[:2]}")
    canvas = cv2.cvtColor(np.ascontiguousarray(rgb_uint8), cv2.COLOR_RGB2BGR)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    thickness = max(1, round(min(canvas.shape[:2]) / 300))
    cv2.drawContours(canvas, contours, -1, OUTLINE_BGR, thickness, cv2.LINE_8)  # crisp, exact colour
    _draw_caption(canvas, prediction)
    return canvas


def write_overlay(path: str | os.PathLike, rgb_uint8: np.ndarray, mask_spec: HsvMaskSpec,
                  prediction: Prediction) -> Path:
    """Draw the overlay of one image and write it atomically as PNG; returns the path."""
    mask = full_resolution_mask(rgb_uint8, mask_spec)
    ok, encoded = cv2.imencode(".png", render_overlay(rgb_uint8, mask, prediction))
    if not ok:  # pragma: no cover - OpenCV's PNG encoder does not fail on uint8 BGR
        raise RuntimeError(f"{path}: OpenCV could not encode the overlay as PNG")
    atomic_write_bytes(path, encoded.tobytes())
    return Path(path)


def overlay_names(sources: Sequence[str | os.PathLike]) -> list[str]:
    """One distinct overlay file name per input, in input order.

    ``smear.jpg`` -> ``smear.overlay.png``; inputs with the same file name from different folders
    get ``smear-2.overlay.png``, ``smear-3.overlay.png``... in order of appearance (skipping
    names already taken).
    """
    used: set[str] = set()  # lower-case: overlays may land on a case-insensitive file system
    names = []
    for source in sources:
        stem = Path(source).stem or "image"
        name, n = f"{stem}{OVERLAY_SUFFIX}", 1
        while name.lower() in used:
            n += 1
            name = f"{stem}-{n}{OVERLAY_SUFFIX}"
        used.add(name.lower())
        names.append(name)
    return names
