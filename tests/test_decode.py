"""Decoding: every kind of bad input refused with the file's name, bombs refused before decoding,
EXIF orientation applied, non-regular files never hang."""

from __future__ import annotations

import os
import shutil
import struct
import threading

import cv2
import numpy as np
import pytest

from leukedge.runtime.decode import (MAX_PIXELS, ImageError, decode_image, load_image,
                                     read_file_bytes, read_image)
from leukedge.runtime.image_header import jpeg_orientation, read_dimensions


def _png(path, pixels: np.ndarray):
    ok, buf = cv2.imencode(".png", pixels)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def test_files_decode_to_rgb_and_arrays_are_taken_as_rgb(tmp_path):
    bgr = np.zeros((16, 16, 3), np.uint8)
    bgr[..., 0] = 255  # blue in OpenCV's order
    rgb = read_image(_png(tmp_path / "blue.png", bgr))
    assert (rgb[0, 0] == (0, 0, 255)).all()
    arr = np.zeros((16, 16, 3), np.uint8)
    arr[..., 0] = 200
    assert (load_image(arr)[0, 0] == (200, 0, 0)).all()


def test_alpha_is_dropped(tmp_path):
    bgra = np.zeros((16, 16, 4), np.uint8)
    bgra[..., 2], bgra[..., 3] = 255, 10
    rgb = read_image(_png(tmp_path / "alpha.png", bgra))
    assert rgb.shape == (16, 16, 3) and (rgb[0, 0] == (255, 0, 0)).all()


@pytest.mark.parametrize("array, reason", [
    (np.zeros((16, 16), np.uint8), "grayscale"),
    (np.zeros((16, 16, 3), np.float32), "unsupported pixel type float32"),
    (np.zeros((16, 16, 3), np.uint16), "16-bit"),
    (np.zeros((4, 4, 3), np.uint8), "too small"),
    (np.zeros((16, 16, 2), np.uint8), "unsupported image shape"),
])
def test_unusable_arrays_are_refused(array, reason):
    with pytest.raises(ImageError, match=reason):
        load_image(array)


def test_grayscale_and_16bit_files_are_refused_by_name(tmp_path):
    gray = _png(tmp_path / "gray.png", np.full((8, 8), 128, np.uint8))
    deep = _png(tmp_path / "deep.png", np.full((8, 8, 3), 1000, np.uint16))
    with pytest.raises(ImageError, match=r"gray\.png: grayscale"):
        read_image(gray)
    with pytest.raises(ImageError, match=r"deep\.png: 16-bit"):
        read_image(deep)


def test_truncated_jpeg_and_png_are_refused(tmp_path, sample_images):
    data = sample_images[0].read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"cut\.jpg: truncated JPEG"):
        read_image(cut)
    png = cv2.imencode(".png", np.zeros((32, 32, 3), np.uint8))[1].tobytes()
    with pytest.raises(ImageError, match="truncated PNG"):
        decode_image(png[:-20], "cut.png")


@pytest.mark.parametrize("name, content, reason", [
    ("empty.jpg", b"", "empty file"),
    ("notes.jpg", b"these are lab notes, not pixels\n" * 4, "not an image file"),
    ("anim.gif", bytes.fromhex("47494638396101000100800000000000ffffff2c000000000100010000020244"
                               "01003b"), "unsupported image format GIF"),
])
def test_non_images_are_refused_by_name(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageError, match=f"{name}: {reason}") as info:
        read_image(path)
    assert info.value.source == str(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageError, match=r"nope\.jpg: file not found"):
        read_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="is a directory"):
        read_image(tmp_path)


def test_non_ascii_and_overlong_names(tmp_path, sample_images):
    target = tmp_path / "Ausstrich_Blüte_血液.jpg"
    shutil.copyfile(sample_images[0], target)
    np.testing.assert_array_equal(load_image(target), load_image(sample_images[0]))
    with pytest.raises(ImageError, match="file name too long"):
        read_image(tmp_path / ("x" * 300 + ".jpg"))


def test_undecodable_utf8_names_are_reported(tmp_path):
    raw = os.path.join(os.fsencode(tmp_path), b"bad-\xff-name.jpg")
    with open(raw, "wb") as f:
        f.write(b"not an image")
    with pytest.raises(ImageError, match="not an image file"):
        read_image(raw)


def _bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header that declares a huge image (the pixel data is never reached)."""
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, body: (struct.pack(">I", len(body)) + kind + body  # noqa: E731
                                + struct.pack(">I", zlib.crc32(kind + body)))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b""))


def test_a_decompression_bomb_is_refused_before_decoding(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_bomb_png(30000, 30000))
    assert read_dimensions(bomb.read_bytes(), "PNG") == (30000, 30000)
    with pytest.raises(ImageError, match=r"bomb\.png: image too large: .*30000 x 30000.*--max-pixels"):
        read_image(bomb)
    small = _png(tmp_path / "ok.png", np.zeros((40, 50, 3), np.uint8))
    with pytest.raises(ImageError, match="too large"):
        read_image(small, max_pixels=1000)
    assert MAX_PIXELS >= 20_000_000


def test_header_dimensions_of_every_format(tmp_path):
    pixels = np.zeros((37, 53, 3), np.uint8)
    for ext, fmt in ((".jpg", "JPEG"), (".png", "PNG"), (".bmp", "BMP"), (".tif", "TIFF")):
        data = cv2.imencode(ext, pixels)[1].tobytes()
        assert read_dimensions(data, fmt) == (53, 37), fmt


def _with_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Insert an EXIF APP1 segment holding only the orientation tag after the SOI marker."""
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1)
    tiff += struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    body = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body + jpeg[2:]


@pytest.mark.parametrize("orientation, transform", [
    (1, lambda a: a), (3, lambda a: np.rot90(a, 2)), (6, lambda a: np.rot90(a, -1)),
    (8, lambda a: np.rot90(a, 1)), (2, lambda a: a[:, ::-1]),
])
def test_exif_orientation_is_applied(orientation, transform):
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[:20, :30] = (250, 10, 10)  # a red top-left quarter
    plain = cv2.imencode(".jpg", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR),
                         [cv2.IMWRITE_JPEG_QUALITY, 100])[1].tobytes()
    tagged = _with_orientation(plain, orientation)
    assert jpeg_orientation(tagged) == orientation
    expected = transform(decode_image(plain))
    np.testing.assert_array_equal(decode_image(tagged), expected)


def test_a_fifo_never_blocks(tmp_path):
    fifo = tmp_path / "camera.jpg"
    os.mkfifo(fifo)
    result = {}
    worker = threading.Thread(target=lambda: result.update(
        error=pytest.raises(ImageError, read_file_bytes, fifo)))
    worker.start()
    worker.join(timeout=5)
    assert not worker.is_alive(), "reading a FIFO blocked"
    assert "not a regular file" in str(result["error"].value)


def test_a_file_over_the_byte_cap_is_refused(tmp_path):
    big = tmp_path / "big.jpg"
    with open(big, "wb") as f:
        f.truncate(2048)
    with pytest.raises(ImageError, match="file too large"):
        read_file_bytes(big, max_bytes=1024)
    with pytest.raises(ImageError, match="not a regular file"):
        read_file_bytes("/dev/zero")


def _cut_and_preallocated(data: bytes) -> tuple[bytes, bytes]:
    """The first 30% of ``data``, and the same in a file preallocated to its full size."""
    head = data[: int(len(data) * 0.3)]
    return head, head + bytes(len(data) - len(head))


@pytest.mark.parametrize("ext, fmt", [(".bmp", "BMP"), (".tiff", "TIFF"), (".webp", "WebP"),
                                      (".jpg", "JPEG"), (".png", "PNG")])
def test_every_format_cut_or_preallocated_is_truncated(tmp_path, sample_images, ext, fmt):
    bgr = cv2.imread(str(sample_images[2]))
    data = cv2.imencode(ext, bgr)[1].tobytes()
    assert decode_image(data).shape == bgr.shape
    for label, partial in zip(("cut", "preallocated"), _cut_and_preallocated(data)):
        path = tmp_path / f"{label}{ext}"
        path.write_bytes(partial)
        with pytest.raises(ImageError, match=f"{label}{ext}: truncated {fmt}") as info:
            read_image(path)
        assert info.value.reason.startswith("truncated"), label  # watch waits for these


def test_a_tiff_with_its_directory_first_cut_or_preallocated(sample_images):
    from test_image_header import make_tiff

    rgb = load_image(sample_images[0])
    h, w = rgb.shape[:2]
    data = make_tiff(w, h, "LONG", pixels=rgb.tobytes())
    np.testing.assert_array_equal(decode_image(data), rgb)
    cut, preallocated = _cut_and_preallocated(data)
    with pytest.raises(ImageError, match=r"truncated TIFF \(its image data ends at byte"):
        decode_image(cut)
    with pytest.raises(ImageError, match="truncated TIFF .*zero bytes"):
        decode_image(preallocated)


def test_black_pixels_under_the_zero_tail_threshold_are_accepted(sample_images):
    bgr = cv2.imread(str(sample_images[0]))
    bgr[0, :] = 0  # one black row: the last row a bottom-up BMP stores (672 bytes < 4 KB)
    data = cv2.imencode(".bmp", bgr)[1].tobytes()
    np.testing.assert_array_equal(decode_image(data), bgr[..., ::-1])
    bgr[:8] = 0  # eight black rows (5.4 KB): taken for a preallocated file, and said so
    with pytest.raises(ImageError, match="truncated BMP .*pure black, save it as PNG"):
        decode_image(cv2.imencode(".bmp", bgr)[1].tobytes())


def test_bmp_declared_sizes_are_checked(sample_images):
    data = cv2.imencode(".bmp", cv2.imread(str(sample_images[0])))[1].tobytes()
    with pytest.raises(ImageError, match=r"truncated BMP \(its header declares image data up "
                                         rf"to byte {len(data)}; the file has {len(data) - 1}"):
        decode_image(data[:-1])
    with pytest.raises(ImageError, match="truncated BMP"):
        decode_image(data[:20])  # inside the header
