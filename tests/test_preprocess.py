"""The one preprocessing path: golden mask values, parity with TensorFlow's HSV kernel, equivalences
between sources, and every kind of bad input refused with the file's name in the message."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from leukedge.runtime.preprocess import (HsvMaskSpec, ImageError, PreprocessSpec, decode_image,
                                         hsv_mask, load_image, preprocess, preprocess_array,
                                         preprocess_batch, read_image)

SEED_MASK = HsvMaskSpec()  # 0.7 <= H <= 0.8, S >= 0.5, V >= 0.4, tolerance 1e-5


def unit(pixels) -> np.ndarray:
    """uint8 RGB pixels -> float32 [0, 1] exactly as preprocess_array scales them."""
    return np.asarray(pixels, np.uint8).astype(np.float32) * np.float32(1.0 / 255.0)


# --------------------------------------------------------------------------- golden mask values


@pytest.mark.parametrize("rgb, expected, why", [
    ((128, 0, 255), True, "H=0.7503, S=1, V=1: purple"),
    ((0, 0, 255), False, "H=0.667: blue"),
    ((255, 0, 255), False, "H=0.833: magenta"),
    ((51, 0, 255), True, "H=0.7000 exactly: lower hue bound is inclusive"),
    ((50, 0, 255), False, "H=0.6993: just under the hue bound"),
    ((204, 0, 255), True, "H=0.8000 exactly: upper hue bound is inclusive"),
    ((205, 0, 255), False, "H=0.8007: just over"),
    ((190, 127, 254), True, "S=127/254=0.5 exactly: saturation bound is inclusive"),
    ((190, 128, 254), False, "S=0.496: under the saturation bound"),
    ((51, 0, 102), True, "V=102/255=0.4 exactly: value bound is inclusive"),
    ((50, 0, 100), False, "V=0.392: too dark"),
    ((200, 150, 255), False, "S=0.41: pale"),
    ((255, 255, 255), False, "white background"),
    ((0, 0, 0), False, "black"),
])
def test_mask_golden_pixels(rgb, expected, why):
    assert bool(hsv_mask(unit([[rgb]]), SEED_MASK)[0, 0]) is expected, why


def test_preprocess_array_golden_values():
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[:4] = (128, 0, 255)  # purple: kept
    rgb[4:] = (255, 255, 255)  # background: masked out
    image, masked = preprocess_array(rgb, PreprocessSpec(input_size=(8, 8)))
    assert image.dtype == masked.dtype == np.float32 and image.shape == masked.shape == (8, 8, 3)
    np.testing.assert_allclose(image[0, 0], [128 / 255, 0.0, 1.0], rtol=1e-6)
    np.testing.assert_array_equal(masked[:4], image[:4])
    np.testing.assert_array_equal(masked[4:], 0.0)


def test_resize_and_scaling_follow_the_spec():
    rgb = np.full((64, 48, 3), 200, np.uint8)
    spec = PreprocessSpec(input_size=(16, 24), scale=1.0, offset=-100.0)
    image, masked = preprocess_array(rgb, spec)
    assert image.shape == (16, 24, 3)
    np.testing.assert_allclose(image, 100.0)
    np.testing.assert_array_equal(masked, 0.0)  # grey is not purple


# --------------------------------------------------------------------------- parity with TensorFlow


def tf_rgb_to_hsv(rgb: np.ndarray):
    """numpy port of RGBToHSV in tensorflow/core/kernels/image/colorspace_op.h (float32)."""
    f = np.float32
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = rgb.max(axis=-1)
    rng = v - rgb.min(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(v > f(0), rng / v, f(0))
        norm = (f(1) / rng) * (f(1) / f(6))  # range.inverse() * (T(1) / T(6))
        h = np.where(r == v, norm * (g - b),
                     np.where(g == v, norm * (b - r) + f(2) / f(6), norm * (r - g) + f(4) / f(6)))
    h = np.where(rng > f(0), h, f(0))
    h = np.where(h < f(0), h + f(1), h)
    return h.astype(f), s.astype(f), v.astype(f)


def test_mask_matches_tensorflow_kernel_up_to_documented_tolerance(sample_images):
    spec = PreprocessSpec()
    f = np.float32
    total = differing = 0
    for path in sample_images:
        image, _ = preprocess(path, spec)
        h, s, v = tf_rgb_to_hsv(image)
        reference = (h >= f(0.7)) & (h <= f(0.8)) & (s >= f(0.5)) & (v >= f(0.4))
        ours = hsv_mask(image, spec.hsv_mask)
        assert not (reference & ~ours).any(), f"{path}: a pixel TF keeps is dropped"
        extra = ours & ~reference
        # Pixels only we keep must sit in the documented 1e-5 band under a bound (plus a few ulps).
        band = 1e-5 + 1e-6
        near = ((np.abs(h - 0.7) <= band) | (np.abs(h - 0.8) <= band)
                | (np.abs(s - 0.5) <= band) | (np.abs(v - 0.4) <= band))
        assert near[extra].all(), f"{path}: {int((extra & ~near).sum())} unexplained differences"
        total += reference.size
        differing += int(extra.sum())
    assert differing / total < 1e-3


# --------------------------------------------------------------------------- equivalences


def test_batch_equals_single(sample_images):
    spec = PreprocessSpec(input_size=(64, 64))
    images, masked = preprocess_batch(sample_images, spec)
    assert images.shape == masked.shape == (len(sample_images), 64, 64, 3)
    for i, path in enumerate(sample_images):
        one_image, one_masked = preprocess(path, spec)
        np.testing.assert_array_equal(images[i], one_image)
        np.testing.assert_array_equal(masked[i], one_masked)


def test_empty_batch():
    images, masked = preprocess_batch([], PreprocessSpec(input_size=(16, 16)))
    assert images.shape == masked.shape == (0, 16, 16, 3)


def test_path_bytes_and_array_agree(sample_images):
    path = sample_images[0]
    spec = PreprocessSpec()
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    results = [preprocess(path, spec), preprocess(str(path), spec),
               preprocess(path.read_bytes(), spec), preprocess(bytearray(path.read_bytes()), spec),
               preprocess(rgb, spec)]
    for image, masked in results[1:]:
        np.testing.assert_array_equal(image, results[0][0])
        np.testing.assert_array_equal(masked, results[0][1])


# --------------------------------------------------------------------------- channel order and pixel types


def _png(path, bgr_or_gray: np.ndarray):
    assert cv2.imwrite(str(path), bgr_or_gray)
    return path


def test_files_decode_to_rgb_and_arrays_are_taken_as_rgb(tmp_path):
    bgr = np.zeros((8, 8, 3), np.uint8)
    bgr[..., 2] = 255  # red in OpenCV's BGR order
    assert tuple(load_image(_png(tmp_path / "red.png", bgr))[0, 0]) == (255, 0, 0)
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 255
    assert tuple(load_image(rgb)[0, 0]) == (255, 0, 0)  # no swap for arrays


def test_alpha_is_dropped(tmp_path):
    bgra = np.zeros((8, 8, 4), np.uint8)
    bgra[..., 0], bgra[..., 3] = 255, 10  # blue, nearly transparent
    assert tuple(load_image(_png(tmp_path / "alpha.png", bgra))[0, 0]) == (0, 0, 255)
    rgba = np.dstack([np.full((8, 8, 3), 7, np.uint8), np.zeros((8, 8, 1), np.uint8)])
    np.testing.assert_array_equal(load_image(rgba), np.full((8, 8, 3), 7, np.uint8))


@pytest.mark.parametrize("array, reason", [
    (np.zeros((8, 8), np.uint8), "grayscale"),
    (np.zeros((8, 8, 1), np.uint8), "grayscale"),
    (np.zeros((8, 8, 3), np.uint16), "16-bit"),
    (np.zeros((8, 8, 3), np.float32), "unsupported pixel type float32"),
    (np.zeros((8, 8, 2), np.uint8), "unsupported image shape"),
    (np.zeros((4, 4, 3), np.uint8), "too small"),
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


# --------------------------------------------------------------------------- broken files


def test_truncated_jpeg_is_refused(tmp_path, sample_images):
    data = sample_images[0].read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"cut\.jpg: truncated JPEG"):
        read_image(cut)


def test_truncated_png_is_refused(tmp_path):
    data = cv2.imencode(".png", np.zeros((32, 32, 3), np.uint8))[1].tobytes()
    with pytest.raises(ImageError, match="truncated PNG"):
        decode_image(data[:-20], "cut.png")


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


def test_non_ascii_paths(tmp_path, sample_images):
    target = tmp_path / "Ausstrich_Blüte_血液.jpg"
    shutil.copyfile(sample_images[0], target)
    np.testing.assert_array_equal(load_image(target), load_image(sample_images[0]))
    with pytest.raises(ImageError, match="Ausstrich_Blüte_不在.jpg: file not found"):
        load_image(tmp_path / "Ausstrich_Blüte_不在.jpg")


def test_unsupported_source_type():
    with pytest.raises(TypeError, match="expected a path, bytes or a numpy array"):
        load_image(12345)


def test_without_mask_the_image_is_the_same_and_no_mask_is_made(sample_images):
    rgb = load_image(sample_images[0])
    spec = PreprocessSpec(input_size=(64, 64))
    image, masked = preprocess_array(rgb, spec)
    alone, none = preprocess_array(rgb, spec, with_mask=False)
    assert none is None and np.array_equal(alone, image) and masked.any()
