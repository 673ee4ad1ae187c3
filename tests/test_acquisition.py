"""Acquisition shifts (another microscope's magnification, focus, noise, compression, exposure,
stain) and the training augmentation built from them: seeded, identity at the neutral
strength, every kind visibly changes a real smear."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from leukedge.runtime.decode import read_image
from leukedge.modelkit.acquisition import (SHIFTS, apply_shift, get_shift, magnify,
                                        stain_density)
from leukedge.train.augment import AugmentSpec, augment, random_color, random_geometry

STILL = AugmentSpec(rotation_deg=0, shift=0, shear_deg=0, zoom=0, horizontal_flip=False,
                    right_angles=False, color_jitter=False)


@pytest.fixture(scope="module")
def smear(sample_images):
    return cv2.resize(read_image(sample_images[6]), (160, 160), interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("shift", SHIFTS, ids=lambda s: s.kind)
def test_neutral_strength_is_the_identity(smear, shift):
    out = shift.apply(smear, shift.neutral, np.random.default_rng(0))
    assert out.dtype == np.uint8 and out.shape == smear.shape
    assert np.array_equal(out, smear) and out is not smear


@pytest.mark.parametrize("kind, strength", [(s.kind, v) for s in SHIFTS for v in s.strengths])
def test_every_strength_visibly_changes_a_smear(smear, kind, strength):
    out = apply_shift(smear, kind, strength, seed=3)
    assert out.shape == smear.shape and out.dtype == np.uint8
    change = np.abs(out.astype(float) - smear).mean()
    assert change > 1.0, f"{kind} at {strength} changed the image by {change:.2f} grey levels"


@pytest.mark.parametrize("shift", SHIFTS, ids=lambda s: s.kind)
def test_shifts_are_seeded(smear, shift):
    a = apply_shift(smear, shift.kind, shift.main, seed=1)
    assert np.array_equal(a, apply_shift(smear, shift.kind, shift.main, seed=1))
    if shift.kind in ("noise", "site"):  # the random ones
        assert not np.array_equal(a, apply_shift(smear, shift.kind, shift.main, seed=2))


def test_every_kind_names_its_main_strength_among_its_strengths():
    for shift in SHIFTS:
        assert shift.main in shift.strengths and len(shift.strengths) >= 2
    with pytest.raises(ValueError, match="Unknown shift 'zoom'. Valid: magnification"):
        get_shift("zoom")


def test_magnification_is_a_centre_crop_resized_back(smear):
    out = magnify(smear, 2.0)
    crop = cv2.resize(smear[40:120, 40:120], (160, 160), interpolation=cv2.INTER_LINEAR)
    assert np.abs(out[20:140, 20:140].astype(int) - crop[20:140, 20:140]).mean() < 3
    wider = magnify(smear, 0.5)  # a wider field: the whole smear in the centre half
    half = cv2.resize(smear, (80, 80), interpolation=cv2.INTER_AREA)
    assert np.abs(wider[40:120, 40:120].astype(int) - half).mean() < 12


def test_stain_density_unmixes_and_remixes_the_same_colours(smear):
    nearly = stain_density(smear, (1.0 + 1e-9, 1.0, 1.0))
    assert np.abs(nearly.astype(int) - smear).max() <= 1
    more_haematoxylin = stain_density(smear, (1.5, 1.0, 1.0))
    assert more_haematoxylin.astype(float).mean() < smear.astype(float).mean()  # darker


def test_acquisition_augmentation_is_deterministic_given_a_seed(smear):
    spec = AugmentSpec(magnification=(0.7, 1.5), stain_density=0.2, contrast=(0.7, 1.3),
                       defocus_sigma=1.5, noise_sigma=8, jpeg_quality=(40, 95))
    a = augment(smear, spec, np.random.default_rng(7))
    assert np.array_equal(a, augment(smear, spec, np.random.default_rng(7)))
    assert not np.array_equal(a, augment(smear, spec, np.random.default_rng(8)))


def test_a_spec_without_acquisition_draws_no_more_random_numbers(smear):
    spec = AugmentSpec()
    rng_a, rng_b = np.random.default_rng(11), np.random.default_rng(11)
    out = augment(smear, spec, rng_a)
    before = random_color(random_geometry(smear, spec, rng_b), spec, rng_b)
    assert np.array_equal(out, before)
    assert rng_a.random() == rng_b.random()


def test_magnification_augmentation_scales_the_field(smear):
    out = augment(smear, AugmentSpec(**{**STILL.to_dict(), "magnification": (2.0, 2.0)}),
                  np.random.default_rng(0))
    assert np.abs(out.astype(int) - magnify(smear, 2.0)).max() <= 1
