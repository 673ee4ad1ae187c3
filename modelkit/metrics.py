"""The reference study's evaluation metrics, framework-free (numpy only).

Accuracy (with a Wilson 95% interval), misclassification cost under the study's cost
matrix, cost per sample, cost-sensitive accuracy ``1 - cost / (sum(C) * n / k)``, macro F1 (what
the study called "weighted F1"), support-weighted F1, per-class precision/recall/F1 and the
confusion matrix (rows = true class, columns = predicted class). Training, export and the
comparison command share it.

Example:
    >>> report = evaluate([0, 1, 2, 3], [0, 1, 3, 3], classes=("Benign", "Early", "Pre", "Pro"))
    >>> report["total_cost"]
    10.0
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

# Cost of predicting column j when the truth is row i (Benign, Early, Pre, Pro). Its entries sum
# to 220, the sum(C) of the cost-sensitive accuracy.
REFERENCE_COST_MATRIX = ((0, 10, 20, 30), (10, 0, 15, 25), (20, 15, 0, 10), (30, 25, 10, 0))


def _as_labels(values: Sequence[int] | np.ndarray, k: int, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of class indices, got shape {arr.shape}")
    if arr.size and (not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0 or arr.max() >= k):
        raise ValueError(f"{name} must hold integer class indices in [0, {k - 1}], "
                         f"got values {np.unique(arr)[:10].tolist()}")
    return arr.astype(np.int64)


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """k x k counts, rows = true class, columns = predicted class."""
    t = _as_labels(y_true, num_classes, "y_true")
    p = _as_labels(y_pred, num_classes, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.size} vs {p.size}")
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of a proportion (95% by default); (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a, dtype=np.float64), where=b != 0)


def per_class_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class (0 where undefined)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    precision = _safe_div(tp, cm.sum(axis=0))
    recall = _safe_div(tp, cm.sum(axis=1))
    f1 = _safe_div(2 * precision * recall, precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "support": cm.sum(axis=1)}


def cost_metrics(cm: np.ndarray, cost_matrix: Sequence[Sequence[float]]) -> dict[str, float]:
    """Total cost, cost per sample and cost-sensitive accuracy of a confusion matrix."""
    cm = np.asarray(cm, dtype=np.float64)
    costs = np.asarray(cost_matrix, dtype=np.float64)
    if costs.shape != cm.shape:
        raise ValueError(f"cost matrix shape {costs.shape} does not match {cm.shape[0]} classes")
    n, k = cm.sum(), cm.shape[0]
    total = float((cm * costs).sum())
    reference = costs.sum() * n / k
    return {"total_cost": total,
            "cost_per_sample": total / n if n else 0.0,
            "cost_sensitive_accuracy": 1.0 - total / reference if reference else 1.0}


def metrics_from_confusion(cm: np.ndarray, classes: Sequence[str],
                           cost_matrix: Sequence[Sequence[float]] | None = REFERENCE_COST_MATRIX) -> dict:
    """All metrics of :func:`evaluate`, from a confusion matrix (rows = true class)."""
    cm = np.asarray(cm, dtype=np.int64)
    if cm.shape != (len(classes), len(classes)):
        raise ValueError(f"confusion matrix shape {cm.shape} does not match {len(classes)} classes")
    n = int(cm.sum())
    correct = int(np.trace(cm))
    scores = per_class_scores(cm)
    support = scores["support"]
    out = {"n": n, "accuracy": correct / n if n else 0.0,
           "accuracy_ci95": list(wilson_interval(correct, n)),
           "macro_f1": float(scores["f1"].mean()),
           "weighted_f1": float((scores["f1"] * support).sum() / n) if n else 0.0}
    if cost_matrix is not None:
        out.update(cost_metrics(cm, cost_matrix))
    out["per_class"] = {c: {"precision": float(scores["precision"][i]),
                            "recall": float(scores["recall"][i]), "f1": float(scores["f1"][i]),
                            "support": int(support[i])} for i, c in enumerate(classes)}
    out["classes"] = list(classes)
    out["confusion_matrix"] = cm.tolist()
    return out


def evaluate(y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[str],
             cost_matrix: Sequence[Sequence[float]] | None = REFERENCE_COST_MATRIX) -> dict:
    """The reference study's metrics for class-index predictions.

    Args:
        y_true: true class indices.
        y_pred: predicted class indices.
        classes: class names in index order.
        cost_matrix: misclassification costs (rows = true class); None skips the cost metrics
            (e.g. for a class set the reference study's matrix does not describe).

    Returns:
        A JSON-ready dict: n, accuracy, accuracy_ci95, total_cost, cost_per_sample,
        cost_sensitive_accuracy, macro_f1, weighted_f1, per_class, classes, confusion_matrix.
    """
    cm = confusion_matrix(y_true, y_pred, len(classes))
    return metrics_from_confusion(cm, classes, cost_matrix)
