"""Training augmentation on uint8 RGB images (OpenCV), deterministic given a numpy Generator.

:class:`AugmentSpec`'s defaults are the recipes' smear augmentation: exact quarter turns and
flips (a smear has no up), a small affine jitter (rotation 10 degrees, shift 0.1, zoom 0.05),
stain and lamp colour jitter. :data:`REFERENCE_AUGMENT` is the reference study's Keras
``ImageDataGenerator``: rotation 40 degrees, width/height shift 0.4 of the size, shear 0.4, zoom
0.4 (x and y drawn independently from [0.6, 1.4]), horizontal flip. Keras 2 reads
``shear_range`` in degrees, so the study's shear was 0.4 degrees, almost nothing; we keep that
meaning. Borders are reflected (``cv2.BORDER_REFLECT_101``) rather than Keras'
"nearest" smear, so no artificial stain-coloured streaks reach the HSV mask.

Optional right-angle rotations (``right_angles``: a random multiple of 90 degrees, which with the
horizontal flip covers all eight symmetries of the square) are exact: no interpolation, no
border fill. A smear has no "up", so these are free augmentation; the affine rotation can then
stay small.

Optional colour jitter (hue +-10 degrees, saturation x0.8-1.2, brightness x0.85-1.15) covers
stain and lamp variation between microscopes: models trained without it lost 87-93% accuracy
under that jitter.

Acquisition augmentation (off by default; :mod:`leukedge.modelkit.acquisition` has the functions
and the robustness suite measures the same changes): magnification (``magnification``, a
log-uniform isotropic factor inside the one affine warp), stain density in colour-deconvolution
space (``stain_density``), contrast, defocus, sensor noise and JPEG compression. Each draws its
random numbers only when enabled, so a spec without them augments exactly as before.

The augmented uint8 image then goes through the model's preprocessing graph (resize,
normalisation, HSV mask), so the mask is computed from the augmented pixels, as the deployed
model would compute it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from leukedge.modelkit.acquisition import (ColorJitter, defocus, exposure, jpeg, random_color,
                                           sensor_noise, stain_density)


@dataclass(frozen=True)
class AugmentSpec:
    """Augmentation ranges; ``AugmentSpec(enabled=False)`` is the identity."""

    rotation_deg: float = 10.0
    shift: float = 0.1
    shear_deg: float = 0.4
    zoom: float = 0.05
    horizontal_flip: bool = True
    right_angles: bool = True
    color_jitter: bool = True
    hue_deg: float = ColorJitter.hue_deg  # the colour ranges: modelkit/acquisition.py
    saturation: tuple[float, float] = ColorJitter.saturation
    brightness: tuple[float, float] = ColorJitter.brightness
    # acquisition: another microscope's objective, stain, focus, camera and file format
    magnification: tuple[float, float] = (1.0, 1.0)  # log-uniform; > 1: cells larger
    stain_density: float = 0.0  # per stain: scale U(1 -+ s), offset U(-+ s / 5) OD
    contrast: tuple[float, float] = (1.0, 1.0)
    defocus_sigma: float = 0.0  # half of the copies: Gaussian blur, sigma U(0, s) pixels
    noise_sigma: float = 0.0  # half of the copies: sensor noise, sigma U(0, s) grey levels
    jpeg_quality: tuple[int, int] = (100, 100)  # half of the copies when < 100: U(lo, hi)
    enabled: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


REFERENCE_AUGMENT = AugmentSpec(rotation_deg=40.0, shift=0.4, zoom=0.4, right_angles=False)


def affine_matrix(height: int, width: int, spec: AugmentSpec, rng: np.random.Generator) -> np.ndarray:
    """A random 2x3 map from output to input pixel coordinates, about the image centre."""
    theta = np.deg2rad(rng.uniform(-spec.rotation_deg, spec.rotation_deg))
    shear = np.deg2rad(rng.uniform(-spec.shear_deg, spec.shear_deg))
    zx, zy = rng.uniform(1 - spec.zoom, 1 + spec.zoom, size=2)
    tx, ty = rng.uniform(-spec.shift, spec.shift, size=2) * (width, height)
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    shearing = np.array([[1.0, -np.sin(shear)], [0.0, np.cos(shear)]])
    linear = rotation @ shearing @ np.diag([zx, zy])
    if spec.magnification != (1.0, 1.0):  # output -> input: cells m times larger
        low, high = np.log(spec.magnification)
        linear = linear / np.exp(rng.uniform(low, high))
    centre = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
    offset = centre + (tx, ty) - linear @ centre
    return np.hstack([linear, offset[:, None]]).astype(np.float64)


def random_geometry(image: np.ndarray, spec: AugmentSpec, rng: np.random.Generator) -> np.ndarray:
    """Rotation, shift, shear, zoom (one affine warp), a horizontal flip and right-angle turns."""
    h, w = image.shape[:2]
    matrix = affine_matrix(h, w, spec, rng)
    out = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_REFLECT_101)
    if spec.horizontal_flip and rng.random() < 0.5:
        out = out[:, ::-1]
    if spec.right_angles:
        # A non-square image keeps its shape only under half turns.
        quarter_turns = int(rng.integers(4)) if h == w else 2 * int(rng.integers(2))
        out = np.rot90(out, quarter_turns)
    return np.ascontiguousarray(out)


def random_acquisition(image: np.ndarray, spec: AugmentSpec, rng: np.random.Generator
                       ) -> np.ndarray:
    """Stain density, contrast, defocus, noise and JPEG, each only where the spec enables it."""
    out = image
    if spec.stain_density > 0:
        s = spec.stain_density
        out = stain_density(out, rng.uniform(1 - s, 1 + s, 3), rng.uniform(-s / 5, s / 5, 3))
    if spec.contrast != (1.0, 1.0):
        out = exposure(out, contrast=rng.uniform(*spec.contrast))
    if spec.defocus_sigma > 0 and rng.random() < 0.5:
        out = defocus(out, rng.uniform(0, spec.defocus_sigma))
    if spec.noise_sigma > 0 and rng.random() < 0.5:
        out = sensor_noise(out, rng.uniform(0, spec.noise_sigma), rng)
    if spec.jpeg_quality[0] < 100 and rng.random() < 0.5:
        out = jpeg(out, int(rng.integers(spec.jpeg_quality[0], spec.jpeg_quality[1] + 1)))
    return out


def augment(image: np.ndarray, spec: AugmentSpec, rng: np.random.Generator) -> np.ndarray:
    """Augmented copy of an RGB uint8 image (same size); the input is left untouched."""
    if not spec.enabled:
        return image
    out = random_geometry(image, spec, rng)
    if spec.color_jitter:
        out = random_color(out, spec, rng)
    return random_acquisition(out, spec, rng)
