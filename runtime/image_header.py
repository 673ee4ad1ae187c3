"""What an image file's header says, read without decoding the pixels.

Width and height (to refuse a decompression bomb before OpenCV allocates it, and to count the
pixels a decode will hold before it runs) for JPEG, PNG, BMP (Windows and OS/2), TIFF (classic
and BigTIFF, every integer tag type) and WebP (VP8, VP8L, VP8X), and a JPEG's EXIF orientation.
Standard library only; a header that cannot be parsed gives None (decoding then refuses the file,
see :mod:`leukedge.runtime.decode`). Where each format's pixel data ends is checked in
:mod:`leukedge.runtime.completeness`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Optional

# EXIF orientation -> (mirror left-right first, then quarter turns counter-clockwise): what
# turns the stored pixels into the image a viewer shows.
ORIENTATIONS = {1: (False, 0), 2: (True, 0), 3: (False, 2), 4: (True, 2),
                5: (True, 1), 6: (False, 3), 7: (True, 3), 8: (False, 1)}
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
# Every TIFF integer type: BYTE, SHORT, LONG, SBYTE, SSHORT, SLONG, IFD, LONG8, SLONG8, IFD8.
_TIFF_INTS = {1: "B", 3: "H", 4: "I", 6: "b", 8: "h", 9: "i", 13: "I", 16: "Q", 17: "q", 18: "Q"}
MAX_TAG_VALUES = 1 << 20  # strip/tile tables longer than this are not read (no real image has one)
TIFF_WIDTH, TIFF_LENGTH, TIFF_COMPRESSION, TIFF_BITS, TIFF_SAMPLES = 256, 257, 259, 258, 277
TIFF_STRIP_OFFSETS, TIFF_STRIP_COUNTS, TIFF_TILE_OFFSETS, TIFF_TILE_COUNTS = 273, 279, 324, 325


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


@dataclass(frozen=True)
class TiffDirectory:
    """The integer tags of a TIFF's first IFD, and where that IFD lies."""

    offset: int  # of the IFD, from the start of the data
    entries: int  # as declared by the IFD
    tags: dict  # tag -> tuple of ints (values stored out of line are read when present)
    missing: int  # bytes past the end of the data that declared values would need (0 = none)

    def first(self, tag: int) -> Optional[int]:
        values = self.tags.get(tag)
        return values[0] if values else None


def tiff_directory(data: bytes, base: int = 0) -> Optional[TiffDirectory]:
    """The first IFD of a TIFF structure starting at ``base`` (classic or BigTIFF), or None when
    the header is not TIFF. An IFD past the end of the data gives ``entries=0`` and ``missing``."""
    order = {b"II": "<", b"MM": ">"}.get(data[base:base + 2])
    if order is None or len(data) < base + 8:
        return None
    (magic,) = struct.unpack(order + "H", data[base + 2:base + 4])
    if magic == 42:
        (offset,) = struct.unpack(order + "I", data[base + 4:base + 8])
        count_fmt, entry_size, value_size, count_field = "H", 12, 4, "I"
    elif magic == 43 and len(data) >= base + 16:
        (offset,) = struct.unpack(order + "Q", data[base + 8:base + 16])
        count_fmt, entry_size, value_size, count_field = "Q", 20, 8, "Q"
    else:
        return None
    start = base + offset
    count_len = struct.calcsize(count_fmt)
    if start + count_len > len(data):
        return TiffDirectory(offset, 0, {}, start + count_len - len(data))
    (entries,) = struct.unpack(order + count_fmt, data[start:start + count_len])
    tags, missing = {}, max(0, start + count_len + entries * entry_size - len(data))
    for k in range(min(entries, 4096)):
        at = start + count_len + entry_size * k
        entry = data[at:at + entry_size]
        if len(entry) < entry_size:
            break
        tag, typ, n = struct.unpack(order + "HH" + count_field, entry[:4 + struct.calcsize(count_field)])
        if typ not in _TIFF_INTS or not 0 < n <= MAX_TAG_VALUES:
            continue
        fmt = order + _TIFF_INTS[typ] * n
        size = struct.calcsize(fmt)
        field = entry[entry_size - value_size:]
        if size <= value_size:
            tags[tag] = struct.unpack(fmt, field[:size])
            continue
        (where,) = struct.unpack(order + ("I" if value_size == 4 else "Q"), field)
        where += base
        if where + size > len(data):
            missing = max(missing, where + size - len(data))
            continue
        tags[tag] = struct.unpack(fmt, data[where:where + size])
    return TiffDirectory(offset, entries, tags, missing)


def _tiff_dimensions(data: bytes) -> Optional[tuple[int, int]]:
    ifd = tiff_directory(data)
    if ifd is None:
        return None
    width, height = ifd.first(TIFF_WIDTH), ifd.first(TIFF_LENGTH)
    return None if width is None or height is None else (width, height)


def bmp_dib_size(data: bytes) -> int:
    """The DIB header's size: 12 for OS/2 1.x (BITMAPCOREHEADER, 16-bit fields), 16-64 for
    OS/2 2.x, 40/52/56/108/124 for Windows."""
    return struct.unpack("<I", data[14:18])[0]


def _bmp_dimensions(data: bytes) -> Optional[tuple[int, int]]:
    dib = bmp_dib_size(data)
    if dib == 12:
        return struct.unpack("<HH", data[18:22])
    if dib >= 16:
        width, height = struct.unpack("<ii", data[18:26])
        return width, abs(height)  # a negative height is a top-down BMP
    return None


def _webp_dimensions(data: bytes) -> Optional[tuple[int, int]]:
    chunk = data[12:16]
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and data[20:21] == b"\x2f":
        (bits,) = struct.unpack("<I", data[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return (int.from_bytes(data[24:27], "little") + 1,
                int.from_bytes(data[27:30], "little") + 1)
    return None


_READERS = {"JPEG": _jpeg_dimensions, "BMP": _bmp_dimensions, "TIFF": _tiff_dimensions,
            "WebP": _webp_dimensions,
            "PNG": lambda d: struct.unpack(">II", d[16:24]) if d[12:16] == b"IHDR" else None}


def read_dimensions(data: bytes, fmt: Optional[str]) -> Optional[tuple[int, int]]:
    """(width, height) declared by the header, or None when it cannot be read or is not
    positive (a negative width, a zero height...)."""
    reader = _READERS.get(fmt or "")
    if reader is None:
        return None
    try:
        dims = reader(data)
    except (struct.error, IndexError):
        return None
    if dims is None or len(dims) != 2 or min(dims) <= 0:
        return None
    return int(dims[0]), int(dims[1])


def jpeg_orientation(data: bytes) -> int:
    """The EXIF orientation (1-8) of a JPEG; 1 when it has none."""
    try:
        for marker, start, length in _jpeg_segments(data):
            if marker == 0xE1 and data[start:start + 6] == b"Exif\x00\x00":
                ifd = tiff_directory(data[:start + length], start + 6)
                value = ifd.first(0x0112) if ifd is not None else None
                return value if value in ORIENTATIONS else 1
    except struct.error:
        pass
    return 1
