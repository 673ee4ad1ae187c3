"""Header dimensions read without decoding: every TIFF integer tag type (classic and BigTIFF),
OS/2 and top-down BMP, WebP (VP8, VP8L, VP8X); bombs refused before OpenCV runs, unreadable
headers refused."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from leukedge.runtime import decode
from leukedge.runtime.decode import ImageError, decode_image, inspect_image
from leukedge.runtime.image_header import read_dimensions

# TIFF type code -> struct letter
TYPES = {"BYTE": (1, "B"), "SHORT": (3, "H"), "LONG": (4, "I"), "SBYTE": (6, "b"),
         "SSHORT": (8, "h"), "SLONG": (9, "i"), "LONG8": (16, "Q"), "SLONG8": (17, "q")}


def make_tiff(width: int, height: int, dim_type: str = "SHORT", big: bool = False,
              pixels: bytes | None = None, order: str = "<") -> bytes:
    """An uncompressed RGB TIFF, directory first, one strip after it (written by hand, so any
    tag type can declare the dimensions)."""
    pixels = bytes(width * height * 3) if pixels is None else pixels
    code, letter = TYPES[dim_type]
    offset_type, offset_fmt = (16, "Q") if big else (4, "I")
    value_size, count_fmt = (8, "Q") if big else (4, "H")
    header = (b"II" if order == "<" else b"MM") + (
        struct.pack(order + "HHHQ", 43, 8, 0, 16) if big else struct.pack(order + "HI", 42, 8))
    n = 8
    bits_at = len(header) + struct.calcsize(count_fmt) + n * (4 + 2 * value_size) + value_size
    strip_at = bits_at + 6

    def entry(tag, typ, count, value):
        head = struct.pack(order + "HH" + offset_fmt, tag, typ, count)
        return head + value.ljust(value_size, b"\x00")

    bits = (struct.pack(order + "HHH", 8, 8, 8) if big
            else struct.pack(order + offset_fmt, bits_at))
    entries = [entry(256, code, 1, struct.pack(order + letter, width)),
               entry(257, code, 1, struct.pack(order + letter, height)),
               entry(258, 3, 3, bits),
               entry(259, 3, 1, struct.pack(order + "H", 1)),
               entry(262, 3, 1, struct.pack(order + "H", 2)),
               entry(273, offset_type, 1, struct.pack(order + offset_fmt, strip_at)),
               entry(277, 3, 1, struct.pack(order + "H", 3)),
               entry(279, offset_type, 1, struct.pack(order + offset_fmt, len(pixels)))]
    ifd = struct.pack(order + count_fmt, n) + b"".join(entries) + bytes(value_size)
    return header + ifd + struct.pack(order + "HHH", 8, 8, 8) + pixels


@pytest.mark.parametrize("dim_type", ["BYTE", "SHORT", "LONG", "SBYTE", "SSHORT", "SLONG"])
def test_tiff_dimensions_of_every_integer_type(dim_type):
    data = make_tiff(40, 30, dim_type)
    assert read_dimensions(data, "TIFF") == (40, 30)
    assert decode_image(data).shape == (30, 40, 3)  # OpenCV agrees


@pytest.mark.parametrize("dim_type", ["SHORT", "LONG", "LONG8", "SLONG8"])
@pytest.mark.parametrize("order", ["<", ">"])
def test_bigtiff_and_big_endian_dimensions(dim_type, order):
    assert read_dimensions(make_tiff(40, 30, dim_type, big=True, order=order), "TIFF") == (40, 30)
    assert read_dimensions(make_tiff(40, 30, "LONG", order=order), "TIFF") == (40, 30)


@pytest.mark.parametrize("dim_type, big", [("SLONG", False), ("LONG", False), ("LONG8", True),
                                           ("SLONG8", True)])
def test_a_tiff_bomb_in_any_tag_type_is_refused_before_decoding(monkeypatch, dim_type, big):
    data = make_tiff(30000, 30000, dim_type, big=big, pixels=bytes(240_000))

    def never(*args, **kwargs):
        raise AssertionError("cv2.imdecode must not run on a bomb")

    monkeypatch.setattr(decode.cv2, "imdecode", never)
    with pytest.raises(ImageError, match=r"bomb\.tif: image too large: .*30000 x 30000"):
        decode_image(data, "bomb.tif")


def test_a_negative_or_missing_dimension_is_refused_as_unreadable(monkeypatch):
    monkeypatch.setattr(decode.cv2, "imdecode", lambda *a: pytest.fail("decoded"))
    with pytest.raises(ImageError, match="not a readable image .*TIFF header"):
        decode_image(make_tiff(-40, 30, "SLONG", pixels=bytes(3600)))
    png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    with pytest.raises(ImageError, match="not a readable image .*PNG header"):
        decode_image(png[:12] + b"IHDx" + png[16:])


def _bmp(pixels_bgr: np.ndarray, os2: bool = False, top_down: bool = False) -> bytes:
    h, w = pixels_bgr.shape[:2]
    stride = (w * 24 + 31) // 32 * 4
    order = pixels_bgr if top_down else pixels_bgr[::-1]
    rows = b"".join(r.tobytes().ljust(stride, b"\x00") for r in order)
    if os2:
        dib = struct.pack("<IHHHH", 12, w, h, 1, 24)
    else:
        dib = struct.pack("<IiiHHIIiiII", 40, w, -h if top_down else h, 1, 24, 0, len(rows),
                          2835, 2835, 0, 0)
    offset = 14 + len(dib)
    return b"BM" + struct.pack("<IHHI", offset + len(rows), 0, 0, offset) + dib + rows


def test_os2_bmp_dimensions_are_read_right():
    data = _bmp(np.zeros((20, 40, 3), np.uint8), os2=True)
    assert read_dimensions(data, "BMP") == (40, 20)  # was "declares 14680288 x 1572865"
    assert inspect_image(data) == (40, 20)


def test_top_down_bmp_is_fine():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (20, 40, 3), dtype=np.uint8)
    data = _bmp(pixels, top_down=True)
    assert read_dimensions(data, "BMP") == (40, 20)
    np.testing.assert_array_equal(decode_image(data), pixels[..., ::-1])
    np.testing.assert_array_equal(decode_image(_bmp(pixels)), pixels[..., ::-1])


def _webp_vp8x(width: int, height: int) -> bytes:
    body = b"VP8X" + struct.pack("<I", 10) + bytes(4) + (width - 1).to_bytes(3, "little") \
        + (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


@pytest.mark.parametrize("params, chunk", [([cv2.IMWRITE_WEBP_QUALITY, 80], b"VP8 "),
                                           ([cv2.IMWRITE_WEBP_QUALITY, 101], b"VP8L")])
def test_webp_is_accepted_with_its_header_dimensions(sample_images, params, chunk):
    bgr = cv2.imread(str(sample_images[0]))[:50, :70]
    data = cv2.imencode(".webp", bgr, params)[1].tobytes()
    assert data[12:16] == chunk
    assert read_dimensions(data, "WebP") == (70, 50)
    rgb = decode_image(data, "x.webp")
    assert rgb.shape == (50, 70, 3)
    if chunk == b"VP8L":  # lossless
        np.testing.assert_array_equal(rgb, bgr[..., ::-1])


def test_a_webp_bomb_is_refused_before_decoding(monkeypatch):
    monkeypatch.setattr(decode.cv2, "imdecode", lambda *a: pytest.fail("decoded"))
    data = _webp_vp8x(16000, 16000)
    assert read_dimensions(data, "WebP") == (16000, 16000)
    with pytest.raises(ImageError, match="image too large: its header declares 16000 x 16000"):
        decode_image(data)


def test_other_riff_files_are_named():
    with pytest.raises(ImageError, match=r"unsupported image format RIFF \(not WebP\)"):
        decode_image(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(32))
