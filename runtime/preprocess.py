"""The one preprocessing path: image file, bytes or array -> model inputs.

Training, calibration, export parity checks and the runtime all call this module, so the pixels a
model saw in training are exactly the pixels it sees on the microscope PC. It depends on numpy and
OpenCV only.

Steps (all parameters come from the model contract's ``preprocessing`` block, see
:class:`PreprocessSpec`):

1. Decode (``cv2.imdecode`` on the file's bytes, so non-ASCII paths work; JPEG, PNG, TIFF or BMP,
   recognised by content, not by suffix), drop alpha, BGR -> RGB.
   Grayscale and 16-bit images are refused: the classifier and its HSV mask rely on 8-bit stain colour.
2. Resize to the model's input size (``INTER_AREA`` when shrinking, ``INTER_LINEAR`` when enlarging).
3. Scale to float32 ``x * scale + offset`` (the seed's ``rescale = 1/255``).
4. HSV purple mask of the seed, on the [0, 1] HSV scale: ``h_min <= H <= h_max``, ``S >= s_min``,
   ``V >= v_min`` (no upper bounds on S and V). OpenCV's float32 conversion gives H in degrees; the
   thresholds are compared as ``H / 360``. A tolerance of 1e-5 on every bound absorbs float32
   rounding: without it OpenCV's S of 0.49999985 would reject pixels that ``tf.image.rgb_to_hsv``
   (the seed's in-graph conversion) puts at exactly 0.5 (TOOLCHAIN.md: 0.039% of pixels).
5. The masked image is ``image * mask``; it feeds the segmentation branch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import cv2
import numpy as np

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, np.ndarray]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


class ImageError(ValueError):
    """An input image could not be used; the message names the file and the reason."""

    def __init__(self, source: str, reason: str):
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


@dataclass(frozen=True)
class HsvMaskSpec:
    """Thresholds of the purple (stained-cell) mask, all on the [0, 1] HSV scale."""

    h_min: float = 0.7
    h_max: float = 0.8
    s_min: float = 0.5
    v_min: float = 0.4
    tolerance: float = 1e-5

    def to_dict(self) -> dict:
        return {
            "h_min": self.h_min,
            "h_max": self.h_max,
            "s_min": self.s_min,
            "v_min": self.v_min,
            "tolerance": self.tolerance,
            "scale": "unit",
        }

    @classmethod
    def from_dict(cls, d: dict) -> "HsvMaskSpec":
        return cls(
            h_min=float(d["h_min"]),
            h_max=float(d["h_max"]),
            s_min=float(d["s_min"]),
            v_min=float(d["v_min"]),
            tolerance=float(d.get("tolerance", 1e-5)),
        )


@dataclass(frozen=True)
class PreprocessSpec:
    """How raw pixels become model inputs; travels inside the model contract.

    Example:
        >>> spec = PreprocessSpec(input_size=(128, 128))
        >>> image, masked = preprocess(rgb_uint8_array, spec)
    """

    input_size: tuple[int, int] = (224, 224)  # (height, width)
    scale: float = 1.0 / 255.0
    offset: float = 0.0
    hsv_mask: HsvMaskSpec = field(default_factory=HsvMaskSpec)

    def __post_init__(self) -> None:
        h, w = self.input_size
        if int(h) <= 0 or int(w) <= 0:
            raise ValueError(f"input_size must be positive (height, width), got {self.input_size}")
        object.__setattr__(self, "input_size", (int(h), int(w)))

    def to_dict(self) -> dict:
        return {
            "input_size": list(self.input_size),
            "channel_order": "RGB",
            "layout": "NHWC",
            "resize": "cv2.INTER_AREA when shrinking, cv2.INTER_LINEAR when enlarging",
            "scale": self.scale,
            "offset": self.offset,
            "hsv_mask": self.hsv_mask.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessSpec":
        return cls(
            input_size=tuple(d["input_size"]),
            scale=float(d["scale"]),
            offset=float(d.get("offset", 0.0)),
            hsv_mask=HsvMaskSpec.from_dict(d["hsv_mask"]),
        )


# --------------------------------------------------------------------------- decoding


def describe_source(source: ImageSource) -> str:
    """A short human name for an input, used in error messages."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, np.ndarray):
        return f"<array {source.shape} {source.dtype}>"
    return f"<{len(source)} bytes>"


def _truncation_reason(data: bytes) -> str | None:
    """Detect files cut short: OpenCV decodes a truncated JPEG with grey fill and no error."""
    tail = data[-1024:].rstrip(b"\x00")
    if data[:3] == b"\xff\xd8\xff" and not tail.endswith(b"\xff\xd9"):
        return "truncated JPEG (no end-of-image marker); the file was cut short"
    if data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" not in tail[-16:]:
        return "truncated PNG (no IEND chunk); the file was cut short"
    return None


# Leading bytes of the formats leukedge accepts, and of a few it recognises only to name them in
# the error (OpenCV would decode some of them, e.g. GIF, but they are not microscope formats).
_ACCEPTED_SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"),
                        (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"II+\x00", "TIFF"),
                        (b"MM\x00+", "TIFF"), (b"BM", "BMP"))
_KNOWN_OTHER_SIGNATURES = ((b"GIF8", "GIF"), (b"RIFF", "RIFF/WebP"), (b"%PDF", "PDF"),
                           (b"\x00\x00\x00\x0cjP", "JPEG 2000"), (b"\xff\x4f\xff\x51", "JPEG 2000"),
                           (b"v/1\x01", "OpenEXR"), (b"#?RADIANCE", "Radiance HDR"))
SUPPORTED_FORMATS = "JPEG, PNG, TIFF, BMP"


def _format_problem(data: bytes) -> str | None:
    """Why the bytes are not one of the accepted formats, or None when they are."""
    if any(data.startswith(sig) for sig, _ in _ACCEPTED_SIGNATURES):
        return None
    for sig, fmt in _KNOWN_OTHER_SIGNATURES:
        if data.startswith(sig):
            return f"unsupported image format {fmt}; supported: {SUPPORTED_FORMATS}"
    return f"not an image file (content is not {SUPPORTED_FORMATS})"


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes into an RGB uint8 HxWx3 array."""
    if len(data) == 0:
        raise ImageError(name, "empty file (0 bytes)")
    reason = _format_problem(data) or _truncation_reason(data)
    if reason:
        raise ImageError(name, reason)
    buf = np.frombuffer(data, dtype=np.uint8)
    decoded = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise ImageError(name, "not a readable image (corrupt file or unsupported format; "
                               f"supported: {', '.join(IMAGE_SUFFIXES)})")
    return _to_rgb_uint8(decoded, name, bgr=True)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file into an RGB uint8 HxWx3 array (non-ASCII paths work)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ImageError(str(path), "file not found") from None
    except IsADirectoryError:
        raise ImageError(str(path), "is a directory, not an image file") from None
    except PermissionError:
        raise ImageError(str(path), "permission denied") from None
    except OSError as e:
        raise ImageError(str(path), f"cannot read file ({e.strerror or e})") from e
    return decode_image(data, str(path))


def _to_rgb_uint8(arr: np.ndarray, name: str, bgr: bool) -> np.ndarray:
    if arr.dtype == np.uint16:
        raise ImageError(name, "16-bit image; leukedge expects 8-bit RGB (convert it, e.g. "
                               "`cv2.convertScaleAbs(img, alpha=1/257)`, after checking the exposure)")
    if arr.dtype != np.uint8:
        raise ImageError(name, f"unsupported pixel type {arr.dtype}; expected uint8 RGB")
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 1):
        raise ImageError(name, "grayscale image; the classifier needs a colour (RGB) smear image: "
                               "its stain-colour mask cannot be computed without colour")
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ImageError(name, f"unsupported image shape {arr.shape}; expected HxWx3 (RGB) or HxWx4")
    if arr.shape[0] < 8 or arr.shape[1] < 8:
        raise ImageError(name, f"image too small ({arr.shape[1]}x{arr.shape[0]} pixels)")
    if arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if bgr:
        arr = cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(arr)


def load_image(source: ImageSource) -> np.ndarray:
    """Any supported source -> RGB uint8 HxWx3.

    Paths and bytes are decoded; arrays are taken as RGB (or RGBA) uint8, the convention of
    PIL, matplotlib and most camera SDKs. Use ``cv2.cvtColor(img, cv2.COLOR_BGR2RGB)`` first
    for an array from ``cv2.imread``.
    """
    if isinstance(source, np.ndarray):
        return _to_rgb_uint8(source, describe_source(source), bgr=False)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return decode_image(bytes(source), describe_source(source))
    if isinstance(source, (str, os.PathLike)):
        return read_image(source)
    raise TypeError(f"Unsupported image source type {type(source).__name__}; "
                    "expected a path, bytes or a numpy array")


# --------------------------------------------------------------------------- pixels -> inputs


def resize(image: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """Resize an HxWxC image to (height, width); no-op when it already has that size."""
    h, w = input_size
    if image.shape[0] == h and image.shape[1] == w:
        return image
    shrinking = image.shape[0] * image.shape[1] > h * w
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (w, h), interpolation=interp)


def scale_pixels(image_uint8: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """uint8 RGB -> float32, ``x * scale + offset``."""
    out = image_uint8.astype(np.float32) * np.float32(spec.scale)
    if spec.offset:
        out += np.float32(spec.offset)
    return out


def hsv_mask(rgb01: np.ndarray, mask_spec: HsvMaskSpec) -> np.ndarray:
    """Boolean purple mask of a float32 RGB image in [0, 1] (HxWx3 or NxHxWx3)."""
    if rgb01.ndim == 4:
        return np.stack([hsv_mask(im, mask_spec) for im in rgb01])
    rgb01 = np.clip(rgb01, 0.0, 1.0).astype(np.float32, copy=False)
    hsv = cv2.cvtColor(rgb01, cv2.COLOR_RGB2HSV)
    tol = mask_spec.tolerance
    h = hsv[..., 0] * np.float32(1.0 / 360.0)
    s = hsv[..., 1]
    v = hsv[..., 2]
    return (
        (h >= mask_spec.h_min - tol)
        & (h <= mask_spec.h_max + tol)
        & (s >= mask_spec.s_min - tol)
        & (v >= mask_spec.v_min - tol)
    )


def masked_image(image01: np.ndarray, mask_spec: HsvMaskSpec) -> np.ndarray:
    """The image with everything outside the purple mask set to zero (float32)."""
    mask = hsv_mask(image01, mask_spec)
    return image01 * mask[..., None].astype(np.float32)


def preprocess_array(rgb_uint8: np.ndarray, spec: PreprocessSpec,
                     with_mask: bool = True) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """RGB uint8 HxWx3 (any size) -> (image, masked image), each float32 HxWx3 at the input size.

    The mask is computed on the [0, 1] RGB image; with the default ``scale=1/255, offset=0`` the
    model's image input *is* that image. A contract with another scaling (e.g. a backbone that wants
    0-255) still gets its mask from [0, 1] pixels, and the masked input in the same scaling as the
    image input. ``with_mask=False`` (a model without a masked-image input) skips the mask and
    returns ``(image, None)``; the image is the same either way.
    """
    resized = resize(rgb_uint8, spec.input_size)
    unit = resized.astype(np.float32) * np.float32(1.0 / 255.0)
    image = unit if (spec.scale == 1.0 / 255.0 and not spec.offset) else scale_pixels(resized, spec)
    if not with_mask:
        return image, None
    mask = hsv_mask(unit, spec.hsv_mask)[..., None].astype(np.float32)
    return image, image * mask


def preprocess(source: ImageSource, spec: PreprocessSpec) -> tuple[np.ndarray, np.ndarray]:
    """Path, bytes or array -> (image, masked image), float32 HxWx3 each."""
    return preprocess_array(load_image(source), spec)


def preprocess_batch(
    sources: Sequence[ImageSource], spec: PreprocessSpec
) -> tuple[np.ndarray, np.ndarray]:
    """Several sources -> (images, masked images), float32 NxHxWx3 each. Raises on the first bad one."""
    pairs = [preprocess(s, spec) for s in sources]
    h, w = spec.input_size
    if not pairs:
        empty = np.zeros((0, h, w, 3), np.float32)
        return empty, empty.copy()
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def list_images(paths: Sequence[str | os.PathLike], recursive: bool = False) -> list[Path]:
    """Expand files, folders and glob patterns into image paths, in a stable order.

    Files named explicitly are kept even when their suffix is unknown or they do not exist (the
    caller reports them as errors); folders contribute their image files, sorted.
    """
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        text = str(raw)
        if p.is_dir():
            it = p.rglob("*") if recursive else p.iterdir()
            out.extend(sorted(f for f in it if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES))
        elif any(ch in text for ch in "*?[") and not p.exists():
            import glob

            out.extend(sorted(Path(m) for m in glob.glob(text, recursive=recursive)
                              if Path(m).is_file()))
        else:
            out.append(p)
    return out
