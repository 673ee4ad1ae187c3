"""How another microscope changes an image: magnification, focus, sensor noise, compression,
exposure and stain, as functions of a uint8 RGB image and a strength.

Training draws random strengths of these (:mod:`leukedge.train.augment`), so the model learns
what does not change between sites; the robustness suite applies fixed, named strengths
(:data:`SHIFTS`) to held-out images, so what it measures is what a site would see. The colour
jitter of training and of the cross-validation's evaluation (:func:`random_color`) is the
same HSV change as :func:`hue_saturation`, drawn at random. Every
function is the identity at its neutral strength (magnification 1, sigma 0, quality None,
factors 1, shifts 0) and returns a new uint8 array of the same shape.

The stain model is Ruifrok and Johnston's colour deconvolution: optical density
``OD = -log((I + 1) / 256)`` is a mix of stain concentrations along fixed stain vectors
(:data:`STAIN_VECTORS`: haematoxylin, eosin and a residual); another lab's staining scales and
offsets each concentration (Tellez et al. 2018 use the same perturbation for H&E).
Romanowsky stains (Wright, May-Gruenwald-Giemsa) are not H&E, but the same two dyes, a basic
blue-purple and an acidic red, make the colour, and the perturbation spans their variation.

Example:
    >>> shifted = apply_shift(image, "magnification", 1.43)
    >>> stained = stain_density(image, scale=(1.2, 0.8, 1.0), offset=(0.0, 0.05, 0.0))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import cv2
import numpy as np

# Ruifrok & Johnston (2001) haematoxylin, eosin, DAB optical-density vectors (rows, unit norm)
STAIN_VECTORS = np.array([[0.650, 0.704, 0.286],
                          [0.072, 0.990, 0.105],
                          [0.268, 0.570, 0.776]], np.float64)
STAIN_VECTORS /= np.linalg.norm(STAIN_VECTORS, axis=1, keepdims=True)
_UNMIX = np.linalg.inv(STAIN_VECTORS)


def _uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def magnify(image: np.ndarray, factor: float) -> np.ndarray:
    """The field as an objective ``factor`` times stronger sees it: cells ``factor`` times
    larger (a centre crop resized back); under 1, a wider field (shrunk, borders reflected)."""
    if factor <= 0:
        raise ValueError(f"magnification must be > 0, got {factor}")
    if factor == 1:
        return image.copy()
    h, w = image.shape[:2]
    centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    matrix = np.hstack([np.eye(2) / factor, (centre - centre / factor)[:, None]])
    return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT_101)


def defocus(image: np.ndarray, sigma: float) -> np.ndarray:
    """Out of focus: a Gaussian blur of ``sigma`` pixels."""
    if sigma <= 0:
        return image.copy()
    return cv2.GaussianBlur(image, (0, 0), sigmaX=float(sigma), borderType=cv2.BORDER_REFLECT_101)


def sensor_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Camera noise: shot noise (variance proportional to the signal) plus read noise, together
    ``sigma`` grey levels at mid-grey."""
    if sigma <= 0:
        return image.copy()
    x = image.astype(np.float32)
    std = sigma * np.sqrt(0.5 + x / 255.0)  # sigma at x = 127.5
    return _uint8(x + rng.standard_normal(x.shape, dtype=np.float32) * std)


def jpeg(image: np.ndarray, quality: Optional[int]) -> np.ndarray:
    """Saved as a JPEG of ``quality`` (1-100) and read back; None keeps the pixels."""
    if quality is None:
        return image.copy()
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"JPEG encoding failed at quality {quality}")
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def exposure(image: np.ndarray, brightness: float = 1.0, contrast: float = 1.0) -> np.ndarray:
    """Lamp and camera exposure: every level times ``brightness``, then the spread about the
    image's mean times ``contrast``."""
    if brightness == 1 and contrast == 1:
        return image.copy()
    x = image.astype(np.float32) * brightness
    mean = x.mean()
    return _uint8((x - mean) * contrast + mean)


def hsv_change(image: np.ndarray, hue_deg: float = 0.0, saturation: float = 1.0,
               value: float = 1.0) -> np.ndarray:
    """Hue turned by ``hue_deg``; saturation and HSV value times ``saturation``, ``value``."""
    hsv = cv2.cvtColor(image.astype(np.float32) * np.float32(1 / 255), cv2.COLOR_RGB2HSV)
    hsv[..., 0] = np.mod(hsv[..., 0] + hue_deg, 360.0)
    hsv[..., 1] = np.clip(hsv[..., 1] * saturation, 0.0, 1.0)
    if value != 1:
        hsv[..., 2] = np.clip(hsv[..., 2] * value, 0.0, 1.0)
    return _uint8(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0)


def hue_saturation(image: np.ndarray, hue_deg: float = 0.0, saturation: float = 1.0
                   ) -> np.ndarray:
    """Another stain's colour: hue turned by ``hue_deg``, saturation times ``saturation``."""
    if hue_deg == 0 and saturation == 1:
        return image.copy()
    return hsv_change(image, hue_deg, saturation)


@dataclass(frozen=True)
class ColorJitter:
    """The ranges of a colour jitter: training's defaults and the cross-validation's fixed
    jitter rows (hue +-10 degrees, saturation x0.8-1.2, brightness x0.85-1.15)."""

    hue_deg: float = 10.0
    saturation: tuple[float, float] = (0.8, 1.2)
    brightness: tuple[float, float] = (0.85, 1.15)


EVALUATION_JITTER = ColorJitter()


def random_color(image: np.ndarray, spec, rng: np.random.Generator) -> np.ndarray:
    """A random :func:`hsv_change` within ``spec``'s ranges (a :class:`ColorJitter` or an
    ``AugmentSpec``): hue shift, saturation and brightness (HSV value) scaling."""
    hue = rng.uniform(-spec.hue_deg, spec.hue_deg)
    sat = rng.uniform(*spec.saturation)
    val = rng.uniform(*spec.brightness)
    return hsv_change(image, hue, sat, val)


def stain_density(image: np.ndarray, scale: Sequence[float] = (1.0, 1.0, 1.0),
                  offset: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """Another lab's staining: each stain's concentration times ``scale`` plus ``offset``
    (optical density units), in the colour-deconvolution space of :data:`STAIN_VECTORS`."""
    scale, offset = np.asarray(scale, np.float64), np.asarray(offset, np.float64)
    if np.all(scale == 1) and np.all(offset == 0):
        return image.copy()
    od = -np.log((image.astype(np.float64) + 1.0) / 256.0)
    concentrations = od.reshape(-1, 3) @ _UNMIX
    mixed = (concentrations * scale + offset) @ STAIN_VECTORS
    return _uint8(256.0 * np.exp(-mixed.reshape(image.shape)) - 1.0)


# ----------------------------------------------------------------------------- named shifts


@dataclass(frozen=True)
class Shift:
    """One kind of acquisition change: a function of (image, strength, rng), its neutral
    strength, the strengths the suite measures and which of them is the main one."""

    kind: str
    apply: Callable[[np.ndarray, object, np.random.Generator], np.ndarray]
    neutral: object
    strengths: tuple
    main: object
    description: str


def _stain(image, strength, rng):
    """``strength`` in [0, 1]: haematoxylin x(1 + 0.3 s), eosin x(1 - 0.3 s), with offsets."""
    s = float(strength)
    return stain_density(image, (1 + 0.3 * s, 1 - 0.3 * s, 1.0), (0.03 * s, -0.03 * s, 0.0))


def _stain_colour(image, strength, rng):
    """``strength`` = hue turn in degrees; saturation x(1 - 0.02 |hue|) (another dye lot)."""
    h = float(strength)
    return hue_saturation(image, h, 1.0 - 0.02 * abs(h))


def _site(image, strength, rng):
    """One consistent other site at ``strength`` in [0, 1]: stain, magnification, slight
    defocus, noise and JPEG together."""
    s = float(strength)
    if s == 0:
        return image.copy()
    out = _stain(image, s, rng)
    out = magnify(out, 1 + 0.3 * s)
    out = defocus(out, 0.8 * s)
    out = sensor_noise(out, 4 * s, rng)
    return jpeg(out, int(round(100 - 15 * s)))


SHIFTS: tuple[Shift, ...] = (
    Shift("magnification", lambda im, f, rng: magnify(im, f), 1.0, (0.77, 1.25, 1.43), 1.43,
          "cells larger or smaller: another objective or camera pixel size"),
    Shift("defocus", lambda im, s, rng: defocus(im, s), 0.0, (1.0, 2.0), 1.0,
          "Gaussian blur, sigma in pixels"),
    Shift("noise", lambda im, s, rng: sensor_noise(im, s, rng), 0.0, (4.0, 8.0, 12.0), 8.0,
          "shot + read noise, sigma in grey levels at mid-grey"),
    Shift("jpeg", lambda im, q, rng: jpeg(im, q), None, (70, 50, 30), 50,
          "JPEG quality"),
    Shift("brightness", lambda im, b, rng: exposure(im, brightness=b), 1.0, (0.6, 0.8, 1.2),
          0.6, "every grey level times the factor"),
    Shift("contrast", lambda im, c, rng: exposure(im, contrast=c), 1.0, (0.7, 1.3), 0.7,
          "spread about the mean times the factor"),
    Shift("stain_colour", _stain_colour, 0.0, (-20.0, 20.0), 20.0,
          "hue turned (degrees), saturation lowered with it"),
    Shift("stain_density", _stain, 0.0, (0.5, 1.0), 1.0,
          "haematoxylin up, eosin down in optical density (colour deconvolution)"),
    Shift("site", _site, 0.0, (0.5, 1.0), 1.0,
          "one other site: stain, x1.3 magnification, defocus, noise, JPEG 85 at strength 1"),
)
_BY_KIND = {s.kind: s for s in SHIFTS}


def get_shift(kind: str) -> Shift:
    try:
        return _BY_KIND[kind]
    except KeyError:
        raise ValueError(f"Unknown shift {kind!r}. Valid: {', '.join(_BY_KIND)}") from None


def apply_shift(image: np.ndarray, kind: str, strength: object, seed: int = 0) -> np.ndarray:
    """``image`` under shift ``kind`` at ``strength``; seeded, so the same call gives the same
    pixels."""
    return get_shift(kind).apply(image, strength, np.random.default_rng(seed))
