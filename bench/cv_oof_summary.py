"""Cross-validation figures straight from the folds' out-of-fold predictions, before (or
without) `leukedge crossval-eval`: per fold and mean +- sd, accuracy and the reference study's
cost per image, for one recipe or for the equal-weight mean of several recipes run on the same
folds (softmax of each fold's held-out logits at temperature 1).

`leukedge crossval-eval` is the full evaluation (ONNX FP32 and INT8, colour jitter, TTA,
input checks, calibration); this reads only ``fold<k>/oof.json``, so it works on the folds
that are finished while others still train:

    python bench/cv_oof_summary.py runs/cv/lite0-224-acq
    python bench/cv_oof_summary.py runs/cv/lite0-224-acq runs/cv/xgboost-64-acq

With ``--review-below T`` (a shipped model's threshold) it also says, over the pooled
out-of-fold predictions, what that review flag would do (images flagged, errors, errors
flagged) and which threshold the review rule (:func:`leukedge.modelkit.confidence.
choose_review_threshold`: the highest flagging at most 3%) picks on them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from leukedge.modelkit.metrics import REFERENCE_COST_MATRIX, confusion_matrix, cost_metrics


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fold_probs(cv_dir: Path) -> dict[int, tuple[list, np.ndarray, np.ndarray]]:
    """fold -> (paths, labels, probabilities) of its held-out images."""
    out = {}
    for path in sorted(cv_dir.glob("fold*/oof.json")):
        oof = json.loads(path.read_text())
        held = oof["held_out"]
        out[int(oof["fold"])] = (held["paths"], np.asarray(held["labels"]),
                                 softmax(np.asarray(held["logits"], np.float64)))
    return out


def review(confidence: np.ndarray, correct: np.ndarray, threshold: float) -> dict:
    """The shipped threshold's outcome on the pooled predictions, and the rule's own pick."""
    from leukedge.modelkit.confidence import choose_review_threshold, review_outcome

    return {"shipped": review_outcome(confidence, correct, threshold).to_dict(),
            "chosen_on_these": choose_review_threshold(confidence, correct).to_dict()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cv_dirs", nargs="+", type=Path)
    parser.add_argument("--review-below", type=float,
                        help="a shipped review threshold to try on the pooled predictions")
    args = parser.parse_args(argv)
    members = [fold_probs(d) for d in args.cv_dirs]
    folds = sorted(set.intersection(*(set(m) for m in members)))
    if not folds:
        raise SystemExit("no fold finished in every folder")
    rows, pooled = [], []
    for k in folds:
        paths, labels, _ = members[0][k]
        probs = []
        for m in members:
            p_paths, p_labels, p = m[k]
            if p_paths != paths or not np.array_equal(p_labels, labels):
                raise SystemExit(f"fold {k}: the folders' held-out images differ")
            probs.append(p)
        mean = np.mean(probs, axis=0)
        pred = mean.argmax(axis=1)
        pooled.append((mean.max(axis=1), pred == labels))
        cm = confusion_matrix(labels, pred, probs[0].shape[1])
        cost = cost_metrics(cm, REFERENCE_COST_MATRIX)
        rows.append({"fold": k, "n": int(len(labels)), "accuracy": float((pred == labels).mean()),
                     "errors": int((pred != labels).sum()),
                     "cost_per_image": float(cost["cost_per_sample"])})
    acc = np.array([r["accuracy"] for r in rows])
    cost = np.array([r["cost_per_image"] for r in rows])
    summary = {"members": [str(d) for d in args.cv_dirs], "folds": rows,
               "accuracy_mean": float(acc.mean()), "accuracy_sd": float(acc.std(ddof=1))
               if len(acc) > 1 else 0.0, "cost_mean": float(cost.mean()),
               "cost_sd": float(cost.std(ddof=1)) if len(cost) > 1 else 0.0}
    if args.review_below is not None:
        summary["review"] = review(np.concatenate([c for c, _ in pooled]),
                                   np.concatenate([ok for _, ok in pooled]), args.review_below)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
