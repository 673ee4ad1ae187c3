"""How a model did on labelled images, as a lab reads it: accuracy with its interval, the
reference study's cost, and what the review flag did: how many it flagged, which errors it
caught, and the errors it let through, by file.

One function, :func:`review_scores`, scores the predictions of the product as it runs
(:class:`~leukedge.runtime.classifier.Prediction`: label, probabilities, needs_review and the
reasons), so every figure is what a lab would have seen. The robustness suite and local
verification report these keys.

Example:
    >>> scores = review_scores(labels, predictions, classes, paths)
    >>> scores["accuracy"], scores["flagged_rate"], scores["unflagged_errors"]
"""

from __future__ import annotations

from collections import Counter
from typing import Optional, Sequence

import numpy as np

from ..confidence import expected_calibration_error, reliability_bins
from ..metrics import REFERENCE_COST_MATRIX, evaluate


def review_scores(labels: Sequence[int], predictions: Sequence, classes: Sequence[str],
                  paths: Optional[Sequence[str]] = None,
                  cost_matrix=REFERENCE_COST_MATRIX) -> dict:
    """Scores of ``predictions`` (one per image, objects with ``label``, ``probabilities``,
    ``needs_review`` and ``review_reasons``) against true class indices ``labels``.

    Returns a JSON-ready dict: the keys of :func:`leukedge.modelkit.metrics.evaluate` (n,
    accuracy, accuracy_ci95, cost_per_sample, per_class, confusion_matrix, ...), and ece,
    reliability (per confidence bin: low, high, n, confidence, accuracy),
    flagged_rate, errors, errors_caught, unflagged_errors (count), unflagged (the files:
    path, true, predicted, confidence), review_reasons (review code -> images).
    """
    labels = np.asarray(labels, np.int64)
    if len(labels) != len(predictions):
        raise ValueError(f"{len(labels)} labels for {len(predictions)} predictions")
    index = {c: i for i, c in enumerate(classes)}
    predicted = np.array([index[p.label] for p in predictions], np.int64)
    probs = np.array([[p.probabilities[c] for c in classes] for p in predictions], np.float64)
    flagged = np.array([bool(p.needs_review) for p in predictions])
    wrong = predicted != labels
    out = evaluate(labels, predicted, classes, cost_matrix)
    names = list(paths) if paths is not None else [str(i) for i in range(len(labels))]
    out.update(
        ece=expected_calibration_error(probs, labels) if len(labels) else 0.0,
        reliability=reliability_bins(probs, labels),
        flagged_rate=float(flagged.mean()) if len(labels) else 0.0,
        errors=int(wrong.sum()), errors_caught=int((wrong & flagged).sum()),
        unflagged_errors=int((wrong & ~flagged).sum()),
        unflagged=[{"path": names[i], "true": classes[labels[i]],
                    "predicted": predictions[i].label,
                    "confidence": float(predictions[i].confidence)}
                   for i in np.flatnonzero(wrong & ~flagged)],
        review_reasons=dict(Counter(r.code for p in predictions for r in p.review_reasons)))
    return out
