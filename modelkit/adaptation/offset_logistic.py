"""A correction of a model's logits fitted on a few labelled images: multinomial logistic
regression on the features the model already computes, with the model's own logits as a fixed
offset, ``z = offset + features @ W + b``, and an L2 penalty on ``W``.

With no data the penalty keeps ``W`` at zero and the model unchanged; with a few images it
moves the logits only as far as those images justify. The penalty is chosen by stratified
k-fold on the same images (:func:`choose_l2`). numpy only: it runs where ``[cpu]`` runs.

The features are standardised while fitting, and the fit is done in the span of the training
images (at most n - 1 directions, however many features), which is exact for an L2 penalty
and keeps each fit to a few milliseconds. The returned ``W`` and ``b`` act on the raw features.

Example:
    >>> l2, oof = choose_l2(features, offsets, labels, folds)
    >>> correction = fit_offset_logistic(features, offsets, labels, l2)
    >>> adapted_logits = offsets + correction(features)
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from ..confidence import nll, softmax

# on standardised features, per mean log-loss; under 1e-2 the held-out predictions of a
# simulated site grew overconfident (bench/bench_adapt.py)
L2_GRID = (1e-2, 1e-1, 1.0, 10.0)
_BIAS_L2 = 1e-4  # fixes the softmax's free constant; a bias costs almost nothing
_MAX_STEPS = 60


@dataclass(frozen=True)
class LinearCorrection:
    """``features @ weights + bias``: what is added to the offset logits."""

    weights: np.ndarray  # [F, K]
    bias: np.ndarray  # [K]
    l2: float

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(features, np.float64) @ self.weights + self.bias


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """The fits are small (a few hundred unknowns): one BLAS thread is fastest, and on a busy
    2-core PC OpenBLAS's waiting threads made them 50 times slower. A no-op without
    threadpoolctl (which ``[adapt]`` installs)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def stratified_folds(labels: Sequence[int], k: int, seed: int = 0) -> np.ndarray:
    """Fold index (0..k-1) per image, each class spread evenly over the folds."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), np.int64)
    start = 0
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        fold[members] = (np.arange(len(members)) + start) % k
        start += len(members)  # the next class starts where this one ended: folds even out
    return fold


def _reduced(features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(design [n, r + 1] with a ones column, mean, scale, axes [F, r]) of standardised
    features: the span of the training images."""
    x = np.asarray(features, np.float64)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = (x - mean) / scale
    u, s, vt = np.linalg.svd(z, full_matrices=False)
    r = int((s > 1e-8 * s[0]).sum()) if s.size and s[0] > 0 else 0
    design = np.hstack([u[:, :r] * s[:r], np.ones((len(x), 1))])
    return design, mean, scale, vt[:r].T


def _objective(design, offsets, onehot, coef, penalty) -> float:
    z = offsets + design @ coef
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-(log_p * onehot).sum() / len(z) + 0.5 * (penalty[:, None] * coef ** 2).sum())


def fit_offset_logistic(features: np.ndarray, offsets: np.ndarray, labels: Sequence[int],
                        l2: float) -> LinearCorrection:
    """The correction that minimises mean log-loss + ``l2`` / 2 * |W|^2 (Newton's method with a
    backtracking line search; the problem is convex).

    Raises:
        ValueError: shapes that disagree, or values that are not finite.
    """
    offsets = np.asarray(offsets, np.float64)
    labels = np.asarray(labels, np.int64)
    features = np.asarray(features, np.float64)
    n, k = offsets.shape
    if len(features) != n or len(labels) != n or not (np.isfinite(features).all()
                                                      and np.isfinite(offsets).all()):
        raise ValueError(f"fit_offset_logistic needs finite features, offsets and labels for "
                         f"the same {n} images")
    design, mean, scale, axes = _reduced(features)
    d = design.shape[1]
    onehot = np.eye(k)[labels]
    penalty = np.full(d, float(l2))
    penalty[-1] = _BIAS_L2
    coef = np.zeros((d, k))
    value = _objective(design, offsets, onehot, coef, penalty)
    for _ in range(_MAX_STEPS):
        p = softmax(offsets + design @ coef)
        grad = design.T @ (p - onehot) / n + penalty[:, None] * coef
        curvature = p[:, :, None] * np.eye(k)[None] - p[:, :, None] * p[:, None, :]  # n K K
        hess = np.tensordot(design, design[:, :, None, None] * curvature[:, None], axes=(0, 0))
        hess = hess.transpose(0, 2, 1, 3).reshape(d * k, d * k) / n
        hess[np.diag_indices_from(hess)] += np.repeat(penalty, k)
        step = np.linalg.solve(hess, grad.reshape(-1)).reshape(d, k)
        t, decrease = 1.0, float((grad * step).sum())
        while True:
            new_value = _objective(design, offsets, onehot, coef - t * step, penalty)
            if new_value <= value - 1e-4 * t * decrease or t < 1e-8:
                break
            t *= 0.5
        coef = coef - t * step
        done = value - new_value < 1e-10
        value = new_value
        if done:
            break
    weights = axes @ coef[:-1] / scale[:, None]
    bias = coef[-1] - mean @ weights
    return LinearCorrection(weights, bias, float(l2))


def out_of_fold(features: np.ndarray, offsets: np.ndarray, labels: Sequence[int],
                folds: np.ndarray, l2: float) -> np.ndarray:
    """Corrected logits of every image from a fit on the other folds."""
    labels = np.asarray(labels)
    out = np.empty(np.shape(offsets), np.float64)
    for f in np.unique(folds):
        train, held = folds != f, folds == f
        correction = fit_offset_logistic(features[train], offsets[train], labels[train], l2)
        out[held] = offsets[held] + correction(features[held])
    return out


def choose_l2(features: np.ndarray, offsets: np.ndarray, labels: Sequence[int],
              folds: np.ndarray, grid: Sequence[float] = L2_GRID) -> tuple[float, np.ndarray]:
    """(the penalty with the lowest out-of-fold log-loss, its out-of-fold corrected logits);
    on a tie, the stronger penalty (the model nearer the parent)."""
    best = None
    for l2 in sorted(grid, reverse=True):
        logits = out_of_fold(features, offsets, labels, folds, l2)
        loss = nll(logits, labels)
        if best is None or loss < best[0] - 1e-9:
            best = (loss, l2, logits)
    return best[1], best[2]
