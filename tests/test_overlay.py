"""Overlays that explain: the label with the runner-up and their probabilities, and, when a
person should look, the reasons in words; long reasons fit the image."""

from __future__ import annotations

import numpy as np

from leukedge.runtime.classifier import Prediction
from leukedge.runtime.input_checks import ReviewReason, low_confidence
from leukedge.runtime.overlay import REVIEW_BGR, caption_lines, render_overlay

PROBS = {"Benign": 0.01, "Early": 0.05, "Pre": 0.61, "Pro": 0.33}


def test_the_caption_gives_the_top_two_and_the_reasons():
    reasons = (low_confidence(0.61, 0.945),
               ReviewReason("unlike_training", "unlike the training images (score 9.12 > 4.02)"))
    lines = caption_lines(Prediction("Pre", 0.61, PROBS, True, reasons))
    assert [text for text, _ in lines] == [
        "Pre 0.610  Pro 0.330", "REVIEW", "low confidence (0.610 < 0.945)",
        "unlike the training images (score 9.12 > 4.02)"]
    assert all(colour == REVIEW_BGR for _, colour in lines[1:])
    calm = caption_lines(Prediction("Pre", 0.99, {**PROBS, "Pre": 0.99}, False))
    assert [text for text, _ in calm] == ["Pre 0.990  Pro 0.330"]


def test_a_long_reason_stays_inside_a_small_image():
    reasons = (ReviewReason("unlike_training", "unlike the training images (score 9.12 > 4.02)"),)
    image = np.full((96, 96, 3), 255, np.uint8)
    canvas = render_overlay(image, np.zeros((96, 96), bool),
                            Prediction("Pre", 0.61, PROBS, True, reasons))
    text_rows = np.flatnonzero((canvas[:, -3:] != 255).any(axis=(1, 2)))
    assert text_rows.size == 0  # nothing drawn in the last columns: the text fits


def test_the_heatmap_is_blended_in_where_it_is_high():
    from leukedge.runtime.overlay import HEATMAP_ALPHA

    image = np.full((80, 120, 3), 200, np.uint8)
    heatmap = np.zeros((4, 6), np.float32)
    heatmap[3, 5] = 1.0  # bottom right (the caption is at the top)
    plain = Prediction("Pre", 0.99, {**PROBS, "Pre": 0.99}, False)
    mapped = Prediction("Pre", 0.99, {**PROBS, "Pre": 0.99}, False, heatmap=heatmap)
    none = render_overlay(image, np.zeros((80, 120), bool), plain)
    blended = render_overlay(image, np.zeros((80, 120), bool), mapped)
    assert none.shape == blended.shape == (80, 120, 3)
    assert (none[40:] == 200).all()  # no map: the image itself (below the caption)
    assert not np.array_equal(none[40:], blended[40:])
    peak, cold = blended[76, 116].astype(int), blended[76, 3].astype(int)  # BGR
    assert peak[2] > peak[0] + 40  # most evidence: red
    assert cold[0] > cold[2] + 40  # none: blue
    assert abs(int(blended[70, 60, 1]) - 200) <= 255 * HEATMAP_ALPHA  # the cells stay visible


def test_an_odd_heatmap_is_refused_and_a_nan_drawn_as_nothing():
    import pytest

    from leukedge.runtime.overlay import blend_heatmap

    canvas = np.full((10, 10, 3), 100, np.uint8)
    with pytest.raises(ValueError, match="2-D map"):
        blend_heatmap(canvas, np.zeros((2, 2, 2)))
    assert blend_heatmap(canvas, np.full((3, 3), np.nan)).shape == (10, 10, 3)
