"""The preprocessing graph, the one implementation of preprocessing: golden mask pixels, parity
with TensorFlow's HSV kernel, the resize, the normalisation and the input measures."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from leukedge.modelkit.graph.runner import PreprocessRunner
from leukedge.runtime.decode import load_image
from leukedge.runtime.preprocessing import HsvMaskSpec, PreprocessSpec

SPEC = PreprocessSpec(input_size=(8, 8), masked_input=True)  # x / 255, the mask as an input


def run(pixels: np.ndarray, spec: PreprocessSpec = SPEC) -> dict:
    runner = PreprocessRunner(spec)
    return {**runner(pixels), **runner.measures(pixels), "stain_mask": runner.mask(pixels)}


def mask_of(rgb: tuple[int, int, int]) -> bool:
    """The graph's mask for an 8x8 image of one colour."""
    pixels = np.zeros((1, 8, 8, 3), np.uint8)
    pixels[:] = rgb
    return bool(run(pixels)["masked_image"][0, 0, 0].any())


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
    assert mask_of(rgb) is expected, why


def tf_rgb_to_hsv(rgb: np.ndarray):
    """numpy port of RGBToHSV in tensorflow/core/kernels/image/colorspace_op.h (float32);
    checked once against tf.image.rgb_to_hsv (max difference 0)."""
    f = np.float32
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = rgb.max(axis=-1)
    rng = v - rgb.min(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(v > f(0), rng / v, f(0))
        norm = (f(1) / rng) * (f(1) / f(6))
        h = np.where(r == v, norm * (g - b),
                     np.where(g == v, norm * (b - r) + f(2) / f(6), norm * (r - g) + f(4) / f(6)))
    h = np.where(rng > f(0), h, f(0))
    h = np.where(h < f(0), h + f(1), h)
    return h.astype(f), s.astype(f), v.astype(f)


def test_mask_is_tensorflows_on_real_smears(sample_images):
    pixels = np.stack([load_image(p) for p in sample_images])
    out = run(pixels, PreprocessSpec(input_size=(224, 224), masked_input=True))
    h, s, v = tf_rgb_to_hsv(pixels.astype(np.float32) * np.float32(1 / 255))
    f = np.float32
    reference = (h >= f(0.7)) & (h <= f(0.8)) & (s >= f(0.5)) & (v >= f(0.4))
    ours = out["stain_mask"].astype(bool)
    assert reference.any()
    # Exactly TF's formula: the 1e-5 tolerance only matters for pixels on a bound, none here.
    assert np.array_equal(ours, reference)
    np.testing.assert_allclose(out["stain_fraction"], reference.mean(axis=(1, 2)), atol=1e-7)


def test_resize_is_identity_at_the_model_size_and_averages_when_shrinking():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    spec = PreprocessSpec(input_size=(16, 16))
    np.testing.assert_array_equal(PreprocessRunner(spec)(pixels)["image"],
                                  pixels.astype(np.float32) * np.float32(1 / 255))
    flat = np.full((1, 64, 48, 3), 200, np.uint8)
    out = PreprocessRunner(PreprocessSpec(input_size=(16, 24)))(flat)["image"]
    assert out.shape == (1, 16, 24, 3)
    np.testing.assert_allclose(out, 200 / 255, rtol=1e-6)  # an average of equal pixels
    checker = np.indices((32, 32)).sum(0) % 2 * 255
    halved = PreprocessRunner(PreprocessSpec(input_size=(16, 16)))(
        np.repeat(checker[None, :, :, None], 3, -1).astype(np.uint8))["image"]
    np.testing.assert_allclose(halved, 0.5, atol=0.04)  # antialiased: no aliasing to 0 or 1


def test_normalisation_and_channel_order():
    pixels = np.zeros((1, 8, 8, 3), np.uint8)
    pixels[..., 0], pixels[..., 1], pixels[..., 2] = 10, 100, 200
    lite = PreprocessRunner(PreprocessSpec((8, 8), mean=(127.0,) * 3, std=(128.0,) * 3))(pixels)
    np.testing.assert_allclose(lite["image"][0, 0, 0], (np.array([10, 100, 200]) - 127) / 128,
                               atol=1e-6)
    caffe = PreprocessSpec((8, 8), mean=(123.68, 116.779, 103.939), std=(1.0,) * 3,
                           channel_order="BGR")
    np.testing.assert_allclose(PreprocessRunner(caffe)(pixels)["image"][0, 0, 0],
                               [200 - 103.939, 100 - 116.779, 10 - 123.68], atol=1e-4)


def test_quality_measures():
    blank = np.full((1, 32, 32, 3), 240, np.uint8)
    out = run(blank, PreprocessSpec((32, 32)))
    assert out["contrast"][0] == pytest.approx(0.0, abs=1e-6)
    assert out["stain_coverage"][0] == 0.0 and out["stain_fraction"][0] == 0.0
    half = blank.copy()
    half[:, :16] = (110, 40, 160)  # a stained purple: in both masks
    out = run(half, PreprocessSpec((32, 32)))
    assert out["stain_fraction"][0] == pytest.approx(0.5)
    assert out["stain_coverage"][0] == pytest.approx(0.5)
    assert out["contrast"][0] > 0.2


def test_one_call_per_size_and_size_independence():
    rng = np.random.default_rng(1)
    runner = PreprocessRunner(PreprocessSpec((16, 16)))
    small, large = (rng.integers(0, 256, (1, s, s, 3), dtype=np.uint8) for s in (20, 40))
    assert runner(small)["image"].shape == runner(large)["image"].shape == (1, 16, 16, 3)
    batch = rng.integers(0, 256, (3, 20, 20, 3), dtype=np.uint8)
    np.testing.assert_array_equal(runner(batch)["image"][1], runner(batch[1:2])["image"][0])


def test_runner_refuses_what_is_not_uint8_rgb():
    runner = PreprocessRunner(PreprocessSpec((8, 8)))
    with pytest.raises(ValueError, match="uint8 RGB"):
        runner(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="uint8 RGB"):
        runner(np.zeros((1, 8, 8), np.uint8))


def test_spec_checks_its_numbers():
    with pytest.raises(ValueError, match="std > 0"):
        PreprocessSpec((8, 8), std=(0.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="finite"):
        PreprocessSpec((8, 8), mean=(float("nan"),) * 3)
    with pytest.raises(ValueError, match="out of range"):
        HsvMaskSpec(h_min=0.9, h_max=0.8)
    spec = PreprocessSpec((8, 8), mean=(1.0, 2.0, 3.0), std=(4.0, 5.0, 6.0), masked_input=True)
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec


def test_graph_resize_is_not_opencv_area_but_close():
    """Documented: the in-graph resize is ONNX's antialiased linear, not INTER_AREA."""
    rng = np.random.default_rng(2)
    pixels = cv2.GaussianBlur(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), (5, 5), 2)
    ours = PreprocessRunner(PreprocessSpec((32, 32)))(pixels[None])["image"][0] * 255
    area = cv2.resize(pixels, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    assert 0 < np.abs(ours - area).mean() < 3
