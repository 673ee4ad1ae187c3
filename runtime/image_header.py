"""What an image file's header says, read without decoding the pixels.

Width and height (to refuse a decompression bomb before OpenCV allocates it) for JPEG, PNG,
BMP and TIFF, and a JPEG's EXIF orientation. Standard library only; a header that cannot be
parsed returns None and decoding decides.
"""

from __future__ import annotations

import struct
from typing import Optional

# EXIF orientation -> (mirror left-right first, then quarter turns counter-clockwise): what
# turns the stored pixels into the image a viewer shows.
ORIENTATIONS = {1: (False, 0), 2: (True, 0), 3: (False, 2), 4: (True, 2),
                5: (True, 1), 6: (False, 3), 7: (True, 3), 8: (False, 1)}
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_TIFF_TYPES = {3: ("H", 2), 4: ("I", 4)}  # SHORT, LONG


def _jpeg_segments(data: bytes):
    """(marker, payload start, payload length) of the segments before the scan data."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        yield marker, i + 4, length - 2
        if marker == 0xDA:  # start of scan
            return
        i += 2 + length


def _jpeg_dimensions(data: bytes) -> Optional[tuple[int, int]]:
    for marker, start, length in _jpeg_segments(data):
        if marker in _SOF and length >= 5:
            height, width = struct.unpack(">HH", data[start + 1:start + 5])
            return width, height
    return None


def _tiff_ifd0(data: bytes, base: int = 0) -> dict[int, int]:
    """Integer tags of a TIFF structure's first IFD (``base``: where the TIFF header starts)."""
    order = {b"II": "<", b"MM": ">"}.get(data[base:base + 2])
    if order is None or len(data) < base + 8:
        return {}
    (offset,) = struct.unpack(order + "I", data[base + 4:base + 8])
    start = base + offset
    if start + 2 > len(data):
        return {}
    (count,) = struct.unpack(order + "H", data[start:start + 2])
    tags = {}
    for k in range(min(count, 512)):
        entry = data[start + 2 + 12 * k:start + 14 + 12 * k]
        if len(entry) < 12:
            break
        tag, typ, n = struct.unpack(order + "HHI", entry[:8])
        if typ in _TIFF_TYPES and n == 1:
            fmt, size = _TIFF_TYPES[typ]
            tags[tag] = struct.unpack(order + fmt, entry[8:8 + size])[0]
    return tags


def read_dimensions(data: bytes, fmt: Optional[str]) -> Optional[tuple[int, int]]:
    """(width, height) declared by the header, or None when it cannot be read."""
    try:
        if fmt == "JPEG":
            return _jpeg_dimensions(data)
        if fmt == "PNG" and len(data) >= 24 and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        if fmt == "BMP" and len(data) >= 26:
            width, height = struct.unpack("<ii", data[18:26])
            return abs(width), abs(height)
        if fmt == "TIFF" and data[2:4] in (b"*\x00", b"\x00*"):
            tags = _tiff_ifd0(data)
            if 256 in tags and 257 in tags:
                return tags[256], tags[257]
    except struct.error:
        return None
    return None


def jpeg_orientation(data: bytes) -> int:
    """The EXIF orientation (1-8) of a JPEG; 1 when it has none."""
    try:
        for marker, start, length in _jpeg_segments(data):
            if marker == 0xE1 and data[start:start + 6] == b"Exif\x00\x00":
                value = _tiff_ifd0(data[:start + length], start + 6).get(0x0112, 1)
                return value if value in ORIENTATIONS else 1
    except struct.error:
        pass
    return 1
