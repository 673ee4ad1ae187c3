"""Image file, bytes or array -> RGB uint8 pixels, refusing what cannot be trusted.

The only preprocessing outside the model: everything after decoding (resize, normalisation, the
stain mask) runs inside the model's graph. Decoding is defensive, because a microscope PC's
inbox holds whatever was saved there:

- only regular files are opened (non-blocking, so a FIFO never hangs a run), and at most
  :data:`MAX_FILE_BYTES` are read;
- the format is recognised by content: JPEG, PNG, TIFF, BMP or WebP; GIF, PDF and others are
  named in the error;
- the header's width and height are checked *before* decoding: an image above
  :data:`MAX_PIXELS` (a 26 KB JPEG can declare 30000 x 30000 pixels, 2.7 GB once decoded) is
  refused, and so is a header whose dimensions cannot be read (OpenCV would allocate whatever
  it finds, up to 2**30 pixels);
- incomplete files are refused, every format checked against its own structure
  (:mod:`~leukedge.runtime.completeness`; OpenCV fills them with grey and reports nothing);
- grayscale and 16-bit images are refused with the reason (the stain colour needs 8-bit RGB);
- a JPEG's EXIF orientation is applied, so the pixels are those a viewer shows;
- alpha is dropped; BGR becomes RGB.

Example:
    >>> rgb = load_image("smear.jpg")          # uint8 [H, W, 3], RGB
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Optional, Union

import cv2
import numpy as np

from .errors import LeukedgeError
from .completeness import truncation_reason
from .image_header import ORIENTATIONS, jpeg_orientation, read_dimensions

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, np.ndarray]

MAX_PIXELS = 50_000_000  # well above a 100x-objective camera frame (5-20 MP)
MAX_FILE_BYTES = 256 * 1024 * 1024
MIN_SIDE = 8
SUPPORTED_FORMATS = "JPEG, PNG, TIFF, BMP, WebP"


class ImageError(LeukedgeError, ValueError):
    """An input image could not be used; the message names the file and the reason."""

    def __init__(self, source: str, reason: str):
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


def describe_source(source: ImageSource) -> str:
    """A short human name for an input, used in error messages."""
    if isinstance(source, (str, os.PathLike)):
        return os.fsdecode(source)
    if isinstance(source, np.ndarray):
        return f"<array {source.shape} {source.dtype}>"
    return f"<{len(source)} bytes>"


# Leading bytes of the accepted formats, and of a few recognised only to name them in errors.
_ACCEPTED = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"II*\x00", "TIFF"),
             (b"MM\x00*", "TIFF"), (b"II+\x00", "TIFF"), (b"MM\x00+", "TIFF"), (b"BM", "BMP"))
_OTHER = ((b"GIF8", "GIF"), (b"RIFF", "RIFF (not WebP)"), (b"%PDF", "PDF"),
          (b"\x00\x00\x00\x0cjP", "JPEG 2000"), (b"\xff\x4f\xff\x51", "JPEG 2000"),
          (b"v/1\x01", "OpenEXR"), (b"#?RADIANCE", "Radiance HDR"))


def image_format(data: bytes) -> Optional[str]:
    """'JPEG', 'PNG', 'TIFF', 'BMP' or 'WebP' by content, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return next((fmt for sig, fmt in _ACCEPTED if data.startswith(sig)), None)


def _format_problem(data: bytes) -> Optional[str]:
    if image_format(data):
        return None
    for sig, fmt in _OTHER:
        if data.startswith(sig):
            return f"unsupported image format {fmt}; supported: {SUPPORTED_FORMATS}"
    return f"not an image file (content is not {SUPPORTED_FORMATS})"


def inspect_image(data: bytes, name: str = "<bytes>", max_pixels: int = MAX_PIXELS
                  ) -> tuple[int, int]:
    """(width, height) from the header of encoded image bytes, after every check that needs
    no decoding: content type, declared size against ``max_pixels``, completeness, a readable
    header. What a decode of ``data`` will hold is known before it runs.

    Raises:
        ImageError: the reason starts with "truncated" for an incomplete file (``watch``
            waits for those), "image too large" for a bomb.
    """
    if len(data) == 0:
        raise ImageError(name, "empty file (0 bytes)")
    problem = _format_problem(data)
    if problem:
        raise ImageError(name, problem)
    fmt = image_format(data)
    dims = read_dimensions(data, fmt)
    if dims is not None and dims[0] * dims[1] > max_pixels:
        width, height = dims
        raise ImageError(name, f"image too large: its header declares {width} x {height} pixels "
                               f"({width * height / 1e6:.0f} MP), over the limit of "
                               f"{max_pixels / 1e6:.0f} MP (--max-pixels)")
    problem = truncation_reason(data, fmt)
    if problem:
        raise ImageError(name, problem)
    if dims is None:
        raise ImageError(name, f"not a readable image (its {fmt} header gives no valid width and "
                               "height: a corrupt file or a variant leukedge does not read)")
    return dims


def decode_image(data: bytes, name: str = "<bytes>", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode encoded image bytes into an RGB uint8 HxWx3 array (EXIF orientation applied)."""
    inspect_image(data, name, max_pixels)
    return decode_inspected(data, name)


def decode_inspected(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """:func:`decode_image` of bytes that :func:`inspect_image` has already passed (the
    pipeline inspects first, to count the pixels before it decodes)."""
    fmt = image_format(data)
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise ImageError(name, "not a readable image (corrupt file, or a variant of "
                               f"{fmt} that OpenCV cannot decode)")
    rgb = _to_rgb_uint8(decoded, name, bgr=True)
    return _apply_orientation(rgb, jpeg_orientation(data) if fmt == "JPEG" else 1)


def _apply_orientation(rgb: np.ndarray, orientation: int) -> np.ndarray:
    flip, quarter_turns = ORIENTATIONS.get(orientation, (False, 0))
    out = rgb[:, ::-1] if flip else rgb
    if quarter_turns:
        out = np.rot90(out, quarter_turns)
    return np.ascontiguousarray(out)


OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)


def regular_file_info(fd: int, name: str, max_bytes: int = MAX_FILE_BYTES) -> os.stat_result:
    """``fstat`` of an open file; ImageError unless it is a regular file of at most
    ``max_bytes`` (a folder, FIFO, socket or device is never read)."""
    info = os.fstat(fd)
    if stat.S_ISDIR(info.st_mode):
        raise ImageError(name, "is a directory, not an image file")
    if not stat.S_ISREG(info.st_mode):
        raise ImageError(name, "not a regular file (a FIFO, socket or device); "
                               "only image files are read")
    if info.st_size > max_bytes:
        raise ImageError(name, f"file too large ({info.st_size / 2**20:.0f} MiB > "
                               f"{max_bytes / 2**20:.0f} MiB)")
    return info


def read_file_bytes(path: str | os.PathLike, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file, opened without blocking, at most ``max_bytes``.

    Raises:
        ImageError: missing, a folder, a FIFO/socket/device, unreadable, or too large.
    """
    name = os.fsdecode(path)
    try:
        fd = os.open(path, OPEN_FLAGS)
    except FileNotFoundError:
        raise ImageError(name, "file not found") from None
    except IsADirectoryError:
        raise ImageError(name, "is a directory, not an image file") from None
    except PermissionError:
        raise ImageError(name, "permission denied") from None
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            raise ImageError(name, "file name too long") from None
        raise ImageError(name, f"cannot open file ({e.strerror or e})") from None
    try:
        regular_file_info(fd, name, max_bytes)
        with os.fdopen(fd, "rb", closefd=True) as f:
            fd = -1
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise ImageError(name, f"cannot read file ({e.strerror or e})") from None
    finally:
        if fd >= 0:
            os.close(fd)
    if len(data) > max_bytes:
        raise ImageError(name, f"file grew past {max_bytes / 2**20:.0f} MiB while being read")
    return data


def read_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file into an RGB uint8 HxWx3 array (non-ASCII paths work)."""
    return decode_image(read_file_bytes(path), os.fsdecode(path), max_pixels)


def _to_rgb_uint8(arr: np.ndarray, name: str, bgr: bool) -> np.ndarray:
    if arr.dtype == np.uint16:
        raise ImageError(name, "16-bit image; leukedge expects 8-bit RGB (convert it, e.g. "
                               "`cv2.convertScaleAbs(img, alpha=1/257)`, after checking the exposure)")
    if arr.dtype != np.uint8:
        raise ImageError(name, f"unsupported pixel type {arr.dtype}; expected uint8 RGB")
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 1):
        raise ImageError(name, "grayscale image; the classifier needs a colour (RGB) smear image: "
                               "its stain colour cannot be judged without colour")
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ImageError(name, f"unsupported image shape {arr.shape}; expected HxWx3 (RGB) or HxWx4")
    if arr.shape[0] < MIN_SIDE or arr.shape[1] < MIN_SIDE:
        raise ImageError(name, f"image too small ({arr.shape[1]}x{arr.shape[0]} pixels)")
    if arr.shape[0] * arr.shape[1] > MAX_PIXELS:
        raise ImageError(name, f"image too large ({arr.shape[1]} x {arr.shape[0]} pixels)")
    if bgr and arr.shape[2] == 4:
        return cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_BGRA2RGB)
    if arr.shape[2] == 4:
        arr = arr[:, :, :3]
    arr = np.ascontiguousarray(arr)
    if bgr:  # in place: a 50-megapixel frame is 150 MB, no second copy of it
        arr = arr if arr.flags.writeable else arr.copy()
        cv2.cvtColor(arr, cv2.COLOR_BGR2RGB, dst=arr)
    return arr


def load_image(source: ImageSource, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Any supported source -> RGB uint8 HxWx3.

    Paths and bytes are decoded; arrays are taken as RGB (or RGBA) uint8, the convention of
    PIL, matplotlib and most camera SDKs. Use ``cv2.cvtColor(img, cv2.COLOR_BGR2RGB)`` first
    for an array from ``cv2.imread``.
    """
    if isinstance(source, np.ndarray):
        return _to_rgb_uint8(source, describe_source(source), bgr=False)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return decode_image(bytes(source), describe_source(source), max_pixels)
    if isinstance(source, (str, os.PathLike)):
        return read_image(source, max_pixels)
    raise TypeError(f"Unsupported image source type {type(source).__name__}; "
                    "expected a path, bytes or a numpy array")
