"""An ensemble scored on the cross-validation: the weighted mean of several recipes' folds.

Every recipe evaluated by ``leukedge crossval-eval`` on the same fold assignment predicted the
same held-out images. Each member's probabilities are taken as ``leukedge ensemble`` combines
its shipped file: at the temperature of the member's own ``calibration.json`` (the one its
final model is exported with). They are averaged per image with the given weights (equal by
default: nothing is fitted on the held-out predictions) and the mean is scored in each fold,
clean, under the colour jitter and with the quantized members (INT8 where a member has it,
its FP32 file where it has none). The review threshold is placed on the pooled out-of-fold
means; :func:`ensemble_calibration_file` is the ``calibration.json`` that ``leukedge ensemble
--calibration`` takes.

Example:
    >>> result = score_ensemble(["runs/cv/lite0-224-s3", "runs/cv/xgboost-64"])
    >>> result["rows"]["int8"]["accuracy"]["mean"]
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from leukedge.modelkit.confidence import (choose_review_threshold, expected_calibration_error,
                                         softmax)

from .cv_calibration import CvCalibration, precision_metrics, read_cv_calibration
from .ensemble import normalised_weights
from .fold_summary import KEYS, fold_metrics, mean_sd

MAX_REVIEW_RATE = 0.03
VARIANTS = {"fp32": "fp32", "int8": "int8", "fp32_jitter": "jitter", "int8_jitter": "int8_jitter"}


def rescaled(probs, exported_at: float, wanted: float) -> np.ndarray:
    """Probabilities a softmax gave at temperature ``exported_at``, recomputed at ``wanted``
    (log p is the logits up to a per-row constant, which the softmax ignores)."""
    logp = np.log(np.clip(np.asarray(probs, np.float64), 1e-9, 1.0))
    return softmax(logp * exported_at, wanted)


def member_folds(cv_dir: Path) -> tuple[CvCalibration, dict[int, dict]]:
    """(the member's calibration.json, fold -> classes, labels, paths and calibrated probs).

    Raises:
        ValueError: no calibration.json or no evaluated fold (run crossval-eval first).
    """
    if not (cv_dir / "calibration.json").is_file():
        raise ValueError(f"CV_DIR {cv_dir}: no calibration.json; run `leukedge crossval-eval "
                         f"{cv_dir} --data DATA` first")
    calibration = read_cv_calibration(cv_dir / "calibration.json")
    t = calibration.temperature
    out = {}
    for path in sorted(cv_dir.glob("fold*/eval.json")):
        e = json.loads(path.read_text())
        t_fold = float(e["temperature"])
        oof = json.loads((path.parent / "oof.json").read_text())
        probs = {"fp32": softmax(np.array(e["logits_keras"]), t),
                 "jitter": rescaled(e["probs"]["fp32_jitter"], t_fold, t)}
        probs["int8"] = (rescaled(e["probs"]["int8"], t_fold, t) if "int8" in e["probs"]
                         else probs["fp32"])
        probs["int8_jitter"] = (rescaled(e["probs"]["int8_jitter"], t_fold, t)
                                if "int8_jitter" in e["probs"] else probs["jitter"])
        out[e["fold"]] = {"classes": tuple(oof["classes"]), "paths": e["paths"],
                          "labels": np.array(e["labels"]), **probs}
    if not out:
        raise ValueError(f"CV_DIR {cv_dir}: no evaluated fold (fold<k>/eval.json); run "
                         f"`leukedge crossval-eval {cv_dir} --data DATA` first")
    return calibration, out


def score_ensemble(cv_dirs: Sequence[str | os.PathLike],
                   weights: Optional[Sequence[float]] = None) -> dict:
    """The ensemble of the recipes in ``cv_dirs`` scored on their common folds.

    Raises:
        ValueError: fewer than two members, bad weights, a member not evaluated, members
            that held out different images or share no fold.
    """
    if len(cv_dirs) < 2:
        raise ValueError(f"CV_DIR: an ensemble needs two or more members, got {len(cv_dirs)}")
    w = normalised_weights(weights, len(cv_dirs))
    loaded = [member_folds(Path(d)) for d in cv_dirs]
    members = [m for _, m in loaded]
    folds = sorted(set.intersection(*(set(m) for m in members)))
    if not folds:
        raise ValueError("CV_DIR: the members share no evaluated fold")
    per_fold = {name: [] for name in VARIANTS}
    pooled_p, pooled_y, agreement = [], [], []
    for fold in folds:
        ref = members[0][fold]
        if any(m[fold]["paths"] != ref["paths"] for m in members[1:]):
            raise ValueError(f"fold {fold}: the recipes held out different images")
        means = {name: np.tensordot(w, [m[fold][key] for m in members], axes=1)
                 for name, key in VARIANTS.items()}
        for name, mean in means.items():
            per_fold[name].append(fold_metrics(mean, ref["labels"], ref["classes"]))
        pooled_p.append(means["fp32"])
        pooled_y.append(ref["labels"])
        agreement.append(float(np.mean(means["fp32"].argmax(1) == means["int8"].argmax(1))))
    p, y = np.concatenate(pooled_p), np.concatenate(pooled_y)
    review = choose_review_threshold(p.max(1), p.argmax(1) == y, MAX_REVIEW_RATE)
    diff = [100 * (i["accuracy"] - f["accuracy"])
            for f, i in zip(per_fold["fp32"], per_fold["int8"])]
    return {"members": [str(d) for d in cv_dirs],
            "member_temperatures": [c.temperature for c, _ in loaded],
            "weights": [round(float(v), 6) for v in w], "folds": folds, "n": int(len(y)),
            "rows": {name: {k: mean_sd([r[k] for r in rows]) for k in KEYS}
                     for name, rows in per_fold.items()},
            "confusion_matrix": {name: np.sum([r["confusion_matrix"] for r in rows],
                                              axis=0).tolist()
                                 for name, rows in per_fold.items()},
            "int8_minus_fp32_pp": [round(d, 3) for d in diff],
            "int8_agreement": [round(a, 6) for a in agreement],
            "ece": expected_calibration_error(p, y),
            "review_threshold": review.to_dict(),
            "int8_setting": next((c.int8 for c, _ in loaded if c.int8), {})}


def ensemble_calibration_file(result: dict) -> dict:
    """``calibration.json`` (leukedge.export.cv_calibration's format) for the ensemble file:
    no further temperature (the members carry theirs); its INT8 setting is the quantized
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
        int8=result["int8_setting"]).to_dict()
