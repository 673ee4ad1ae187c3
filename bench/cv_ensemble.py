"""An ensemble scored on the cross-validation: the weighted mean of several recipes' probabilities.

Every recipe evaluated by bench/crossval_eval.py on the same fold assignment predicted the same
held-out images. Each member's probabilities are taken as `leukedge ensemble` would combine its
shipped file: at the temperature of the member's own ``calibration.json`` (the one its final
model is exported with). They are averaged per image with the given weights (equal by default:
nothing is fitted on the held-out predictions) and the mean is scored in each fold, clean, under
the colour jitter and with the quantized members (INT8 where a member has it, its FP32 file
where it has none). The review threshold is placed on the pooled out-of-fold means.

    python bench/cv_ensemble.py runs/cv/lite0-224-s3 runs/cv/xgboost-128 runs/cv/svm-128 \\
        --json docs/results/cv_ensemble.json --calibration-out runs/cv/ensemble-calibration.json

The calibration file feeds `leukedge ensemble --calibration`, as crossval_eval.py's feeds
`leukedge export --calibration`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from leukedge.export.cv_calibration import CvCalibration, precision_metrics, read_cv_calibration
from leukedge.modelkit.confidence import (choose_review_threshold, expected_calibration_error,
                                         softmax)
from leukedge.modelkit.metrics import REFERENCE_COST_MATRIX, evaluate
from leukedge.runtime.files import atomic_write_text

KEYS = ("accuracy", "cost_per_sample", "cost_sensitive_accuracy", "weighted_f1", "macro_f1")
MAX_REVIEW_RATE = 0.03
VARIANTS = {"fp32": "fp32", "int8": "int8", "fp32_jitter": "jitter", "int8_jitter": "int8_jitter"}


def rescaled(probs: np.ndarray, exported_at: float, wanted: float) -> np.ndarray:
    """Probabilities a softmax gave at temperature ``exported_at``, recomputed at ``wanted``
    (log p is the logits up to a per-row constant, which the softmax ignores)."""
    logp = np.log(np.clip(np.asarray(probs, np.float64), 1e-9, 1.0))
    return softmax(logp * exported_at, wanted)


def member_folds(cv_dir: Path) -> tuple[CvCalibration, dict[int, dict]]:
    """(the member's calibration.json, fold -> labels, paths and calibrated probs)."""
    calibration = read_cv_calibration(cv_dir / "calibration.json")
    temperature = calibration.temperature
    out = {}
    for path in sorted(cv_dir.glob("fold*/eval.json")):
        e = json.loads(path.read_text())
        t_fold = float(e["temperature"])
        probs = {"fp32": softmax(np.array(e["logits_keras"]), temperature),
                 "jitter": rescaled(e["probs"]["fp32_jitter"], t_fold, temperature)}
        probs["int8"] = (rescaled(e["probs"]["int8"], t_fold, temperature)
                         if "int8" in e["probs"] else probs["fp32"])
        probs["int8_jitter"] = (rescaled(e["probs"]["int8_jitter"], t_fold, temperature)
                                if "int8_jitter" in e["probs"] else probs["jitter"])
        out[e["fold"]] = {"paths": e["paths"], "labels": np.array(e["labels"]), **probs}
    return calibration, out


def scores(labels: np.ndarray, probs: np.ndarray, classes) -> dict:
    m = evaluate(labels, probs.argmax(1), classes, REFERENCE_COST_MATRIX)
    return {**{k: m[k] for k in KEYS}, "confusion_matrix": m["confusion_matrix"]}


def mean_sd(rows: list[dict]) -> dict:
    out = {}
    for k in KEYS:
        v = np.array([r[k] for r in rows], float)
        out[k] = {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                  "folds": v.round(6).tolist()}
    return out


def calibration_file(result: dict, int8_setting: dict) -> dict:
    """``calibration.json`` (leukedge.export.cv_calibration's format) for the ensemble file:
    no further temperature (the members carry theirs); ``int8_setting``: the quantized
    member's."""
    members = " + ".join(Path(m).name for m in result["members"])
    return CvCalibration(
        source=f"{len(result['folds'])}-fold grouped cross-validation of the ensemble {members} "
               f"(weights {result['weights']}), {result['n']} out-of-fold images",
        temperature=1.0, ece_before=result["ece"], ece_after=result["ece"],
        review_below=result["review_threshold"]["threshold"], review=result["review_threshold"],
        metrics={name: precision_metrics(result["rows"][name], result["n"], len(result["folds"]),
                                         result["confusion_matrix"][name])
                 for name in ("fp32", "int8")},
        int8=int8_setting).to_dict()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cv_dirs", type=Path, nargs="+")
    parser.add_argument("--weights", type=float, nargs="+",
                        help="one per member (default: equal)")
    parser.add_argument("--json", type=Path, help="write the result here too")
    parser.add_argument("--calibration-out", type=Path,
                        help="write the ensemble's calibration.json here")
    args = parser.parse_args(argv)
    weights = np.array(args.weights or [1.0] * len(args.cv_dirs), float)
    if len(weights) != len(args.cv_dirs) or (weights <= 0).any():
        raise SystemExit("--weights: one positive number per member")
    weights = weights / weights.sum()
    loaded = [member_folds(d) for d in args.cv_dirs]
    members = [m for _, m in loaded]
    folds = sorted(set.intersection(*(set(m) for m in members)))
    classes = ("Benign", "Early", "Pre", "Pro")
    per_fold = {name: [] for name in VARIANTS}
    confusion = {name: np.zeros((4, 4), int) for name in VARIANTS}
    pooled_p, pooled_y, agreement = [], [], []
    for fold in folds:
        ref = members[0][fold]
        for m in members[1:]:
            if m[fold]["paths"] != ref["paths"]:
                raise SystemExit(f"fold {fold}: the recipes held out different images")
        means = {}
        for name, key in VARIANTS.items():
            means[name] = np.tensordot(weights, [m[fold][key] for m in members], axes=1)
            row = scores(ref["labels"], means[name], classes)
            per_fold[name].append(row)
            confusion[name] += np.array(row["confusion_matrix"])
        pooled_p.append(means["fp32"])
        pooled_y.append(ref["labels"])
        agreement.append(float(np.mean(means["fp32"].argmax(1) == means["int8"].argmax(1))))
    p, y = np.concatenate(pooled_p), np.concatenate(pooled_y)
    review = choose_review_threshold(p.max(1), p.argmax(1) == y, MAX_REVIEW_RATE)
    diff = [100 * (i["accuracy"] - f["accuracy"]) for f, i in zip(per_fold["fp32"],
                                                                    per_fold["int8"])]
    result = {"members": [str(d) for d in args.cv_dirs],
              "member_temperatures": [c.temperature for c, _ in loaded],
              "weights": [round(float(w), 6) for w in weights], "folds": folds, "n": int(len(y)),
              "rows": {name: mean_sd(rows) for name, rows in per_fold.items()},
              "confusion_matrix": {k: v.tolist() for k, v in confusion.items()},
              "int8_minus_fp32_pp": [round(d, 3) for d in diff],
              "int8_agreement": [round(a, 6) for a in agreement],
              "ece": expected_calibration_error(p, y),
              "review_threshold": review.to_dict()}
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        atomic_write_text(args.json, text + "\n")
    if args.calibration_out:
        int8 = next((c.int8 for c, _ in loaded if c.int8), {})
        atomic_write_text(args.calibration_out,
                          json.dumps(calibration_file(result, int8), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
