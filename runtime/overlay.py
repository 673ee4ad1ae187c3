"""Overlay images for a human check: where the model looked, the stain mask outline and the
prediction drawn on the smear.

The heatmap (``Prediction.heatmap``, the model's ``heatmap`` output: the predicted class's
activation map at the network's last feature resolution) is scaled to the image (bilinear),
coloured (OpenCV's JET: blue = little evidence, red = most) and blended in at
:data:`HEATMAP_ALPHA`; a model without that output gives the plain image. The mask is the
model's own (its ``stain_mask`` output, at the model's input size), so the outline shows
exactly what the model computed. The overlay is drawn at display size: the image
is shrunk to at most :data:`DISPLAY_MAX` pixels on its longer side first (a 50-megapixel frame
would otherwise need gigabytes), the mask scaled to it, and the PNG written atomically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from .classifier import Prediction
from .files import atomic_write_bytes

OUTLINE_BGR = (0, 255, 0)
TEXT_BGR = (255, 255, 255)
REVIEW_BGR = (0, 0, 255)
OVERLAY_SUFFIX = ".overlay.png"
DISPLAY_MAX = 1024
HEATMAP_ALPHA = 0.4  # the map's share of each pixel: the cells stay visible beneath
MAX_STEM = 150  # file systems allow 255 bytes per name


def display_size(height: int, width: int, limit: int = DISPLAY_MAX) -> tuple[int, int]:
    """(height, width) scaled down so the longer side is at most ``limit``."""
    scale = min(1.0, limit / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def display_pair(rgb_uint8: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The image at display size and the model's mask scaled to it (nearest neighbour)."""
    h, w = display_size(*rgb_uint8.shape[:2])
    image = rgb_uint8 if (h, w) == rgb_uint8.shape[:2] else cv2.resize(
        rgb_uint8, (w, h), interpolation=cv2.INTER_AREA)
    scaled = cv2.resize(np.asarray(mask, np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    return image, scaled.astype(bool)


def caption_lines(prediction: Prediction) -> list[tuple[str, tuple[int, int, int]]]:
    """What an overlay says: the label and the runner-up with their probabilities, and, when a
    person should look, REVIEW and each reason in words (the review codes' messages)."""
    ranked = sorted(prediction.probabilities.items(), key=lambda kv: -kv[1])
    top = "  ".join(f"{name} {p:.3f}" for name, p in ranked[:2])
    lines = [(top, TEXT_BGR)]
    if prediction.needs_review:
        lines.append(("REVIEW", REVIEW_BGR))
        lines += [(str(reason), REVIEW_BGR) for reason in prediction.review_reasons]
    return lines


def _fit(text: str, width: int, scale: float, font: int) -> tuple[list[str], float]:
    """``text`` as lines that fit ``width`` pixels: smaller type first (down to 0.3), then
    wrapped between words."""
    def wide(t: str, s: float) -> int:
        return cv2.getTextSize(t, font, s, max(1, round(s * 2)))[0][0]

    if wide(text, scale) > width:
        scale = max(0.3, scale * width / wide(text, scale))
    lines: list[str] = []
    for word in text.split(" "):
        if lines and wide(f"{lines[-1]} {word}", scale) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines, scale


def _draw_caption(canvas: np.ndarray, prediction: Prediction) -> None:
    h, w = canvas.shape[:2]
    base_scale = max(0.4, min(h, w) / 500.0)
    font = cv2.FONT_HERSHEY_SIMPLEX
    y = 0
    for text, colour in caption_lines(prediction):
        lines, scale = _fit(text, w - 8, base_scale, font)
        thickness = max(1, round(scale * 2))
        for line in lines:
            (tw, th), base = cv2.getTextSize(line, font, scale, thickness)
            pad = max(2, th // 4)
            cv2.rectangle(canvas, (0, y), (tw + 2 * pad, y + th + base + 2 * pad), (0, 0, 0),
                          cv2.FILLED)
            cv2.putText(canvas, line, (pad, y + pad + th), font, scale, colour, thickness,
                        cv2.LINE_AA)
            y += th + base + 2 * pad


def blend_heatmap(canvas_bgr: np.ndarray, heatmap: np.ndarray,
                  alpha: float = HEATMAP_ALPHA) -> np.ndarray:
    """The BGR image with the [0, 1] ``heatmap`` (any size) scaled to it, coloured and
    blended in."""
    h, w = canvas_bgr.shape[:2]
    heat = np.nan_to_num(np.asarray(heatmap, np.float32), nan=0.0)
    if heat.ndim != 2 or heat.size == 0:
        raise ValueError(f"heatmap must be a 2-D map, got shape {list(heat.shape)}")
    scaled = cv2.resize(np.clip(heat, 0.0, 1.0), (w, h), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap(np.round(scaled * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.addWeighted(canvas_bgr, 1.0 - alpha, colour, alpha, 0.0)


def render_overlay(rgb_uint8: np.ndarray, mask: np.ndarray, prediction: Prediction) -> np.ndarray:
    """A BGR uint8 copy of the image with the heatmap blended in (when the prediction has
    one), the mask outline and the prediction caption.

    Args:
        rgb_uint8: the original image, RGB uint8 HxWx3.
        mask: boolean HxW mask at the same resolution.
        prediction: its ``heatmap`` (or None) and what to write in the caption
            (:func:`caption_lines`).
    """
    if mask.shape != rgb_uint8.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match the image {rgb_uint8.shape[:2]}")
    canvas = cv2.cvtColor(np.ascontiguousarray(rgb_uint8), cv2.COLOR_RGB2BGR)
    if prediction.heatmap is not None:
        canvas = blend_heatmap(canvas, prediction.heatmap)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    thickness = max(1, round(min(canvas.shape[:2]) / 300))
    cv2.drawContours(canvas, contours, -1, OUTLINE_BGR, thickness, cv2.LINE_8)  # crisp, exact colour
    _draw_caption(canvas, prediction)
    return canvas


def write_overlay(path: str | os.PathLike, rgb_uint8: np.ndarray, mask: Optional[np.ndarray],
                  prediction: Prediction) -> Path:
    """Draw the overlay of one image (``mask``: the model's stain mask, any size; None for a
    model without that output: no outline) at display size and write it atomically as PNG;
    returns the path."""
    if mask is None:
        mask = np.zeros(np.shape(rgb_uint8)[:2], np.uint8)
    image, scaled = display_pair(rgb_uint8, mask)
    ok, encoded = cv2.imencode(".png", render_overlay(image, scaled, prediction))
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
        stem = (Path(source).stem or "image")[:MAX_STEM]
        name, n = f"{stem}{OVERLAY_SUFFIX}", 1
        while name.lower() in used:
            n += 1
            name = f"{stem}-{n}{OVERLAY_SUFFIX}"
        used.add(name.lower())
        names.append(name)
    return names
