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
