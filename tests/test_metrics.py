"""The reference study's metrics against hand-computed confusion matrices (no TensorFlow)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from leukedge.modelkit.metrics import (REFERENCE_COST_MATRIX, confusion_matrix, evaluate,
                                      metrics_from_confusion, wilson_interval)

CLASSES = ("Benign", "Early", "Pre", "Pro")


def _labels_from_confusion(cm):
    """y_true, y_pred reproducing a confusion matrix (rows = true)."""
    pairs = [(t, p) for t, row in enumerate(cm) for p, n in enumerate(row) for _ in range(n)]
    return [t for t, _ in pairs], [p for _, p in pairs]


def test_cost_matrix_is_the_seeds():
    costs = np.array(REFERENCE_COST_MATRIX)
    assert costs.tolist() == [[0, 10, 20, 30], [10, 0, 15, 25], [20, 15, 0, 10], [30, 25, 10, 0]]
    assert (costs == costs.T).all() and costs.sum() == 220


def test_confusion_matrix_rows_are_truth():
    cm = confusion_matrix([0, 0, 1, 2, 3, 3], [0, 1, 1, 2, 3, 2], 4)
    assert cm.tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]


def test_hand_computed_example():
    # true:  B B B E E P P P Pro Pro ; errors: B->E (10), P->Pro (10), Pro->B (30)
    y_true = [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]
    y_pred = [0, 0, 1, 1, 1, 2, 2, 3, 3, 0]
    r = evaluate(y_true, y_pred, CLASSES)
    assert r["n"] == 10 and r["accuracy"] == pytest.approx(0.7)
    assert r["total_cost"] == 50 and r["cost_per_sample"] == pytest.approx(5.0)
    assert r["cost_sensitive_accuracy"] == pytest.approx(1 - 50 / (220 * 10 / 4))
    # per class: B p=2/3 r=2/3; E p=2/3 r=1; P p=1 r=2/3; Pro p=1/2 r=1/2
    f1 = [2 / 3, 0.8, 0.8, 0.5]
    assert [r["per_class"][c]["f1"] for c in CLASSES] == pytest.approx(f1)
    assert r["macro_f1"] == pytest.approx(np.mean(f1))
    assert r["weighted_f1"] == pytest.approx((3 * f1[0] + 2 * f1[1] + 3 * f1[2] + 2 * f1[3]) / 10)
    assert r["per_class"]["Early"]["precision"] == pytest.approx(2 / 3)
    assert r["per_class"]["Pro"]["support"] == 2
    assert r["confusion_matrix"][3] == [1, 0, 0, 1]
    json.dumps(r)  # JSON-ready


def test_seed_densenet201_numbers():
    """The seed reported cost 20, 0.0386 per sample, cost-sensitive accuracy 0.999298.

    The study's confusion matrix itself is not in the repository; this one has the same n (518 = 20 / 0.0386)
    and total cost (two errors of cost 10). The 0.999298 comes out with sum(C) = 220, the sum of
    the study's cost matrix: 1 - 20 / (220 * 518 / 4) = 0.9992980.
    """
    cm = [[80, 0, 0, 0], [1, 157, 0, 0], [0, 0, 153, 0], [0, 0, 1, 126]]
    y_true, y_pred = _labels_from_confusion(cm)
    r = evaluate(y_true, y_pred, CLASSES)
    assert r["n"] == 518 and r["total_cost"] == 20
    assert round(r["cost_per_sample"], 4) == 0.0386
    assert round(r["cost_sensitive_accuracy"], 6) == 0.999298
    assert r["confusion_matrix"] == cm


def test_perfect_and_empty_predictions():
    r = evaluate([0, 1, 2, 3], [0, 1, 2, 3], CLASSES)
    assert r["accuracy"] == 1 and r["total_cost"] == 0 and r["macro_f1"] == 1
    assert r["cost_sensitive_accuracy"] == 1
    empty = evaluate([], [], CLASSES)
    assert empty["n"] == 0 and empty["accuracy"] == 0 and empty["accuracy_ci95"] == [0.0, 1.0]


def test_class_never_predicted_gets_zero_scores():
    r = evaluate([0, 1, 2, 3], [0, 0, 2, 2], CLASSES)
    assert r["per_class"]["Early"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_wilson_interval_known_values():
    assert wilson_interval(8, 10) == pytest.approx((0.490162, 0.943318), abs=1e-6)
    low, high = wilson_interval(0, 10)
    assert low == 0 and high == pytest.approx(0.277533, abs=1e-6)
    assert evaluate([0] * 10, [0] * 8 + [1] * 2, CLASSES)["accuracy_ci95"] == pytest.approx(
        [0.490162, 0.943318], abs=1e-6)


def test_without_cost_matrix_and_other_class_counts():
    r = evaluate([0, 1, 1], [0, 1, 0], ("a", "b"), cost_matrix=None)
    assert "total_cost" not in r and r["accuracy"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="cost matrix shape"):
        evaluate([0, 1], [0, 1], ("a", "b"))


@pytest.mark.parametrize("y_pred, match", [([0, 4], r"y_pred must hold integer class indices"),
                                           ([0, 1, 2], "differ in length"),
                                           ([0.5, 1.0], "integer class indices")])
def test_bad_labels_are_refused(y_pred, match):
    with pytest.raises(ValueError, match=match):
        evaluate([0, 1], y_pred, CLASSES)


def test_metrics_from_confusion_matches_evaluate():
    cm = np.array([[5, 1, 0, 0], [0, 4, 2, 0], [1, 0, 6, 1], [0, 0, 0, 7]])
    y_true, y_pred = _labels_from_confusion(cm)
    assert metrics_from_confusion(cm, CLASSES) == evaluate(y_true, y_pred, CLASSES)
