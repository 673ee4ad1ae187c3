"""A cheap ensemble scored on the cross-validation: the mean of several recipes' probabilities.

Every recipe evaluated by bench/crossval_eval.py on the same fold assignment predicted the same
held-out images; this averages their FP32 probabilities (clean and under the colour jitter) per
image with equal weights and scores the mean in each fold, as bench/crossval_eval.py scores a
single recipe. Equal weights, not tuned: nothing is fitted on the held-out predictions.

    python bench/cv_ensemble.py runs/cv/lite0-224-s3 runs/cv/xgboost-128 runs/cv/svm-128
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from leukedge.runtime.confidence import choose_review_threshold
from leukedge.runtime.metrics import REFERENCE_COST_MATRIX, evaluate

KEYS = ("accuracy", "cost_per_sample", "cost_sensitive_accuracy", "weighted_f1", "macro_f1")


def fold_probs(cv_dir: Path) -> dict[int, dict]:
    out = {}
    for path in sorted(cv_dir.glob("fold*/eval.json")):
        e = json.loads(path.read_text())
        out[e["fold"]] = {"paths": e["paths"], "labels": np.array(e["labels"]),
                          "fp32": np.array(e["probs"]["fp32"]),
                          "jitter": np.array(e["probs"]["fp32_jitter"])}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cv_dirs", type=Path, nargs="+")
    args = parser.parse_args(argv)
    members = [fold_probs(d) for d in args.cv_dirs]
    folds = sorted(set.intersection(*(set(m) for m in members)))
    classes = ("Benign", "Early", "Pre", "Pro")
    scores = {"clean": [], "jitter": []}
    pooled_conf, pooled_ok = [], []
    for fold in folds:
        ref = members[0][fold]
        for m in members[1:]:
            if m[fold]["paths"] != ref["paths"]:
                raise SystemExit(f"fold {fold}: the recipes held out different images")
        for kind, key in (("clean", "fp32"), ("jitter", "jitter")):
            p = np.mean([m[fold][key] for m in members], axis=0)
            metrics = evaluate(ref["labels"], p.argmax(1), classes, REFERENCE_COST_MATRIX)
            scores[kind].append({k: metrics[k] for k in KEYS})
            if kind == "clean":
                pooled_conf.append(p.max(1))
                pooled_ok.append(p.argmax(1) == ref["labels"])
    review = choose_review_threshold(np.concatenate(pooled_conf), np.concatenate(pooled_ok), 0.03)
    result = {"members": [str(d) for d in args.cv_dirs], "folds": folds,
              "weights": "equal", "review_threshold": review.to_dict()}
    for kind, rows in scores.items():
        result[kind] = {k: {"mean": float(np.mean([r[k] for r in rows])),
                            "sd": float(np.std([r[k] for r in rows], ddof=1)),
                            "folds": [round(r[k], 6) for r in rows]} for k in KEYS}
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
