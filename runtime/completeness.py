"""Whether an image file holds all the bytes its header promises.

OpenCV decodes a cut-short JPEG, PNG, BMP or TIFF without a word (grey or black rows), so a file
still being copied into an inbox would be classified on half its pixels. Each accepted format is
checked against its own structure:

- JPEG: the end-of-image marker; PNG: the IEND chunk (trailing zero bytes ignored);
- BMP: pixel data offset + row stride x height (uncompressed), else the file size field;
- TIFF (classic and BigTIFF): the first directory and every strip or tile (offset + byte count);
- WebP: the RIFF size.

A file preallocated to its final size (``truncate(N)``) and only partly written has the right
size and a tail of zero bytes. For BMP, TIFF and WebP, the last :data:`ZERO_TAIL_BYTES` (and at
least one row, for uncompressed pixels) of the image data all zero is taken as such a file:
compressed data never ends in thousands of zero bytes, and a smear whose last stored row is pure
black (0, 0, 0) is rare. Such an image is refused as truncated (the message says to save it as
PNG). Every reason starts with "truncated", which ``watch`` reads as "not ready yet".
"""

from __future__ import annotations

import struct
from typing import Optional

from .image_header import (TIFF_BITS, TIFF_COMPRESSION, TIFF_STRIP_COUNTS, TIFF_STRIP_OFFSETS,
                           TIFF_TILE_COUNTS, TIFF_TILE_OFFSETS, TIFF_WIDTH, bmp_dib_size,
                           tiff_directory)

ZERO_TAIL_BYTES = 4096
_RAW_BMP = (0, 3, 6)  # BI_RGB, BI_BITFIELDS, BI_ALPHABITFIELDS: rows of raw pixels


def truncation_reason(data: bytes, fmt: Optional[str]) -> Optional[str]:
    """Why ``data`` (of format ``fmt``) is incomplete, or None when it looks whole."""
    check = _CHECKS.get(fmt or "")
    try:
        return check(data) if check else None
    except (struct.error, IndexError):
        return f"truncated {fmt} (the file ends inside its header)"


def _jpeg(data: bytes) -> Optional[str]:
    if not data[-1024:].rstrip(b"\x00").endswith(b"\xff\xd9"):
        return "truncated JPEG (no end-of-image marker); the file was cut short"
    return None


def _png(data: bytes) -> Optional[str]:
    if b"IEND" not in data[-1024:].rstrip(b"\x00")[-16:]:
        return "truncated PNG (no IEND chunk); the file was cut short"
    return None


def _zero_tail(data: bytes, start: int, end: int, row_bytes: int, fmt: str) -> Optional[str]:
    need = max(ZERO_TAIL_BYTES, row_bytes)
    if end - start < need or any(data[end - need:end]):
        return None
    return (f"truncated {fmt} (the last {need} bytes of its image data are zero bytes: the file "
            "looks preallocated and not yet written; if its last row really is pure black, "
            "save it as PNG)")


def _bmp(data: bytes) -> Optional[str]:
    file_size, offset = struct.unpack("<I", data[2:6])[0], struct.unpack("<I", data[10:14])[0]
    if bmp_dib_size(data) == 12:  # OS/2 1.x: 16-bit width and height, no compression
        width, height = struct.unpack("<HH", data[18:22])
        bits, compression = struct.unpack("<H", data[24:26])[0], 0
    else:
        width, height, _, bits, compression = struct.unpack("<iiHHI", data[18:34])
    if compression in _RAW_BMP:
        stride = (abs(width) * bits + 31) // 32 * 4
        end, row = offset + stride * abs(height), stride
    else:  # RLE or embedded JPEG/PNG: the file size field is all there is
        end, row = (file_size if file_size > offset else 0), 0
    if end > len(data):
        return (f"truncated BMP (its header declares image data up to byte {end}; the file has "
                f"{len(data)} bytes)")
    return _zero_tail(data, offset, end, row, "BMP") if end else None


def _tiff(data: bytes) -> Optional[str]:
    ifd = tiff_directory(data)
    if ifd is None:
        return None
    if ifd.missing:
        return (f"truncated TIFF (its directory needs {ifd.missing} bytes past the end of the "
                f"file's {len(data)} bytes)")
    if ifd.entries == 0:
        return (f"truncated TIFF (its first directory, at byte {ifd.offset}, is empty: the file "
                "looks preallocated and not yet written)")
    offsets = ifd.tags.get(TIFF_STRIP_OFFSETS) or ifd.tags.get(TIFF_TILE_OFFSETS)
    counts = ifd.tags.get(TIFF_STRIP_COUNTS) or ifd.tags.get(TIFF_TILE_COUNTS)
    if not offsets or not counts or len(offsets) != len(counts):
        return None  # decoding decides
    start, end = max(((o, o + c) for o, c in zip(offsets, counts)), key=lambda span: span[1])
    if end > len(data):
        return (f"truncated TIFF (its image data ends at byte {end}; the file has {len(data)} "
                "bytes)")
    raw = ifd.first(TIFF_COMPRESSION) in (None, 1)
    row = (ifd.first(TIFF_WIDTH) or 0) * sum(ifd.tags.get(TIFF_BITS, (8,))) // 8 if raw else 0
    return _zero_tail(data, start, end, row, "TIFF")


def _webp(data: bytes) -> Optional[str]:
    end = 8 + struct.unpack("<I", data[4:8])[0]
    if end > len(data):
        return f"truncated WebP (its RIFF header declares {end} bytes; the file has {len(data)})"
    return _zero_tail(data, 12, end, 0, "WebP")


_CHECKS = {"JPEG": _jpeg, "PNG": _png, "BMP": _bmp, "TIFF": _tiff, "WebP": _webp}
