"""How far to trust a prediction: temperature scaling, calibration error, the review threshold.

Framework-free (numpy). Training fits the temperature on held-out logits (the validation split,
or out-of-fold predictions in cross-validation); export bakes it into the model graph
(``probs = softmax(logits / T)``), so every language sees the calibrated probabilities. The
review threshold is chosen on the same held-out predictions: the confidence under which a
prediction is flagged for a person to check.

Example:
    >>> t = fit_temperature(val_logits, val_labels)
    >>> expected_calibration_error(softmax(val_logits, t), val_labels)
    0.011
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

ECE_BINS = 15


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, labels: Sequence[int], temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true classes."""
    z = np.asarray(logits, np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(z)), np.asarray(labels)].mean())


def fit_temperature(logits: np.ndarray, labels: Sequence[int], low: float = 0.05,
                    high: float = 20.0) -> float:
    """The temperature that minimises the NLL (golden-section search on log T).

    Raises:
        ValueError: no predictions, or the logits are not finite.
    """
    logits = np.asarray(logits, np.float64)
    if logits.ndim != 2 or len(logits) == 0 or not np.isfinite(logits).all():
        raise ValueError("fit_temperature needs a non-empty, finite N x K logits array")
    a, b = math.log(low), math.log(high)
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = nll(logits, labels, math.exp(c)), nll(logits, labels, math.exp(d))
    for _ in range(80):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = nll(logits, labels, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = nll(logits, labels, math.exp(d))
    return float(math.exp((a + b) / 2))


def reliability_bins(probs: np.ndarray, labels: Sequence[int], bins: int = ECE_BINS) -> list[dict]:
    """Per equal-width confidence bin with images in it: its range, count, mean confidence and
    accuracy (what a reliability diagram draws)."""
    probs = np.asarray(probs, np.float64)
    if not len(probs):
        return []
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    return [{"low": float(edges[b]), "high": float(edges[b + 1]), "n": int((which == b).sum()),
             "confidence": float(confidence[which == b].mean()),
             "accuracy": float(correct[which == b].mean())}
            for b in range(bins) if (which == b).any()]


def expected_calibration_error(probs: np.ndarray, labels: Sequence[int],
                               bins: int = ECE_BINS) -> float:
    """ECE: the confidence-weighted gap between confidence and accuracy, in equal-width bins."""
    rows = reliability_bins(probs, labels, bins)
    n = sum(r["n"] for r in rows)
    return float(sum(r["n"] / n * abs(r["confidence"] - r["accuracy"]) for r in rows)) if n else 0.0


@dataclass(frozen=True)
class ReviewChoice:
    """A review threshold and what it does on the held-out predictions it was chosen on."""

    threshold: float
    flagged_rate: float
    errors: int
    errors_caught: int
    n: int

    @property
    def catch_rate(self) -> float:
        return self.errors_caught / self.errors if self.errors else 1.0

    def to_dict(self) -> dict:
        return {**asdict(self), "catch_rate": self.catch_rate}


def review_outcome(confidence: np.ndarray, correct: np.ndarray, threshold: float) -> ReviewChoice:
    """What flagging ``confidence < threshold`` does: share flagged, errors caught."""
    confidence, correct = np.asarray(confidence), np.asarray(correct, bool)
    flagged = confidence < threshold
    return ReviewChoice(threshold=float(threshold), flagged_rate=float(flagged.mean()),
                        errors=int((~correct).sum()), errors_caught=int((flagged & ~correct).sum()),
                        n=int(len(confidence)))


def choose_review_threshold(confidence: np.ndarray, correct: np.ndarray,
                            max_flagged: float = 0.03, decimals: int = 3) -> ReviewChoice:
    """The highest threshold (on a ``10**-decimals`` grid) that flags at most ``max_flagged`` of
    the predictions: it catches the most errors the review budget allows."""
    confidence = np.asarray(confidence, np.float64)
    step = 10.0 ** -decimals
    best = review_outcome(confidence, correct, 0.0)
    for t in np.arange(step, 1.0 + step / 2, step):
        outcome = review_outcome(confidence, correct, round(float(t), decimals))
        if outcome.flagged_rate > max_flagged:
            break
        best = outcome
    return best
