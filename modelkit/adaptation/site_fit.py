"""What ``leukedge adapt`` fits on a site's labelled images, in numpy: the site head's
correction, its temperature, the review threshold and the input-check limits.

- The correction: :func:`~.offset_logistic.fit_offset_logistic` on every member's head input
  (concatenated), the parent's log-probabilities as the fixed offset, the L2 penalty chosen by
  stratified k-fold (:func:`~.offset_logistic.choose_l2`).
- The temperature: fitted on the out-of-fold corrected logits, kept within
  :data:`TEMPERATURE_RANGE` (with a few images and no out-of-fold error the log-loss would
  sharpen without limit).
- The review threshold: the highest that flags at most :data:`MAX_REVIEW_RATE` of the
  out-of-fold predictions (the rule training uses), and never lower than the parent's, so the
  flagged rate adapt reports is never bought by flagging less.
- The input-check limits: the parent's, widened (never tightened) where the site's own
  labelled smears would fail them: minimums to ``MIN_FACTOR`` x the site's lowest value, the
  OOD maximum to ``OOD_MARGIN`` x its highest. Under :data:`MIN_LIMIT_IMAGES` images the
  parent's limits stay as they are.

Example:
    >>> fit = fit_site(data, parent_contract, folds=5)
    >>> fit.probabilities(data).argmax(1), fit.review_below, fit.input_checks
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from leukedge.runtime.input_checks import InputChecks

from ..confidence import (ReviewChoice, choose_review_threshold, expected_calibration_error,
                          fit_temperature, softmax)
from .offset_logistic import LinearCorrection, choose_l2, fit_offset_logistic, stratified_folds
from .site_graph import parent_offsets

TEMPERATURE_RANGE = (0.5, 4.0)
MAX_REVIEW_RATE = 0.03  # as training: flag at most 3% of the held-out predictions
MIN_LIMIT_IMAGES = 40  # fewer site images: the parent's input-check limits are kept
MIN_FACTOR = 0.5  # as export's input checks: half the lowest value a smear showed
OOD_MARGIN = 1.5  # as export's: 1.5 x the highest score a smear showed


@dataclass(frozen=True)
class SiteData:
    """What the parent computes on a site's labelled images (rows in the same order)."""

    features: dict[str, np.ndarray]  # features tensor name -> [n, F]
    parent_probs: np.ndarray  # [n, K]
    measures: dict[str, np.ndarray]  # contrast, stain_coverage, ood_score (those it has)
    labels: np.ndarray  # [n] class indices

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, rows: np.ndarray) -> "SiteData":
        return SiteData({k: v[rows] for k, v in self.features.items()}, self.parent_probs[rows],
                        {k: v[rows] for k, v in self.measures.items()}, self.labels[rows])

    def design(self) -> np.ndarray:
        """Every member's features side by side, in tensor-name order."""
        return np.hstack([self.features[k] for k in sorted(self.features)]).astype(np.float64)


@dataclass(frozen=True)
class SiteFit:
    """A fitted site head and what the site's images say about it (out of fold)."""

    correction: LinearCorrection
    feature_sizes: dict[str, int]
    temperature: float
    review: ReviewChoice  # the threshold chosen on the out-of-fold predictions
    review_below: float  # the one the model carries: max(chosen, parent's)
    input_checks: InputChecks
    summary: dict

    def weights(self) -> dict[str, np.ndarray]:
        """features tensor name -> its rows of W."""
        out, start = {}, 0
        for name in sorted(self.feature_sizes):
            size = self.feature_sizes[name]
            out[name] = self.correction.weights[start:start + size]
            start += size
        return out

    def logits(self, data: SiteData) -> np.ndarray:
        return parent_offsets(data.parent_probs) + self.correction(data.design())

    def probabilities(self, data: SiteData) -> np.ndarray:
        """What the adapted model's ``probs`` output is, computed in numpy."""
        return softmax(self.logits(data), self.temperature)


def widened_checks(parent: InputChecks, measures: dict[str, np.ndarray]) -> InputChecks:
    """The parent's limits, widened where the site's own smears would fail them (never
    tightened); the parent's when there are fewer than :data:`MIN_LIMIT_IMAGES` images."""
    n = min((len(v) for v in measures.values()), default=0)
    if n < MIN_LIMIT_IMAGES:
        return parent
    contrast, coverage = measures.get("contrast"), measures.get("stain_coverage")
    ood = measures.get("ood_score")
    return InputChecks(
        min_contrast=(min(parent.min_contrast, round(MIN_FACTOR * float(contrast.min()), 4))
                      if contrast is not None else parent.min_contrast),
        min_stain_coverage=(min(parent.min_stain_coverage,
                                round(MIN_FACTOR * float(coverage.min()), 4))
                            if coverage is not None else parent.min_stain_coverage),
        max_ood_score=(max(parent.max_ood_score, round(OOD_MARGIN * float(ood.max()), 3))
                       if parent.max_ood_score is not None and ood is not None
                       else parent.max_ood_score))


def fit_site(data: SiteData, parent_review_below: float, parent_checks: InputChecks,
             folds: int = 5, seed: int = 0) -> SiteFit:
    """Fit the site head on ``data`` (every class at least ``folds`` images).

    Raises:
        ValueError: a class with fewer images than folds.
    """
    counts = np.bincount(data.labels, minlength=data.parent_probs.shape[1])
    if counts.min() < folds:
        raise ValueError(f"{folds}-fold fitting needs at least {folds} images of every class; "
                         f"the counts are {counts.tolist()}")
    fold_of = stratified_folds(data.labels, folds, seed)
    x, offsets = data.design(), parent_offsets(data.parent_probs)
    l2, oof_logits = choose_l2(x, offsets, data.labels, fold_of)
    correction = fit_offset_logistic(x, offsets, data.labels, l2)
    temperature = float(np.clip(fit_temperature(oof_logits, data.labels), *TEMPERATURE_RANGE))
    oof = softmax(oof_logits, temperature)
    correct = oof.argmax(1) == data.labels
    review = choose_review_threshold(oof.max(1), correct, MAX_REVIEW_RATE)
    review_below = max(float(parent_review_below), review.threshold)
    summary = {"images": len(data), "folds": folds, "l2": l2, "temperature": temperature,
               "out_of_fold": {"accuracy": float(correct.mean()),
                               "parent_accuracy": float(np.mean(
                                   data.parent_probs.argmax(1) == data.labels)),
                               "ece": expected_calibration_error(oof, data.labels),
                               "parent_ece": expected_calibration_error(data.parent_probs,
                                                                        data.labels),
                               "review": review.to_dict()},
               "review_below": {"chosen": review.threshold, "parent": parent_review_below,
                                "kept": review_below}}
    return SiteFit(correction, {k: v.shape[1] for k, v in data.features.items()}, temperature,
                   review, review_below, widened_checks(parent_checks, data.measures), summary)


def outer_folds(labels: np.ndarray, folds: int, seed: int = 1) -> np.ndarray:
    """The held-out folds of adapt's report (another draw than the fitting's inner folds)."""
    return stratified_folds(labels, folds, seed)


def fold_count(counts: np.ndarray, wanted: int = 5) -> Optional[int]:
    """The largest k <= ``wanted`` such that, with one of k folds held out, every class keeps at
    least k images for the inner k-fold fit; None when not even 2 folds fit."""
    smallest = int(np.min(counts))
    for k in range(wanted, 1, -1):
        if smallest - -(-smallest // k) >= k:  # images left for the inner fit >= k
            return k
    return None
