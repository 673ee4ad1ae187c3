"""A cross-validation's evaluated folds summarised: mean +- sd, the calibration file, a table.

Reads the per-fold dicts :mod:`leukedge.export.fold_evaluation` writes (``fold<k>/eval.json``)
and writes, beside the folds:

- ``summary.json``: mean +- sd over folds of every row, the pooled confusion matrices, the
  pooled out-of-fold temperature, ECE and review threshold, and what that threshold catches
  per fold (``bench/cv_table.py`` builds docs/RESULTS.md's table from it);
- ``summary.md``: the rows as a Markdown table;
- ``calibration.json`` (:mod:`leukedge.export.cv_calibration`), which ``leukedge export
  --calibration`` puts into the contract of the final model of the same recipe.

Example:
    >>> summary = summarise([json.loads(p.read_text()) for p in folder.glob("fold*/eval.json")])
    >>> print(markdown(summary))
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from leukedge.modelkit.confidence import (choose_review_threshold, expected_calibration_error,
                                         fit_temperature, review_outcome, softmax)
from leukedge.modelkit.metrics import evaluate
from leukedge.runtime.files import atomic_write_text

from .cv_calibration import CvCalibration, precision_metrics

MAX_REVIEW_RATE = 0.03
# the INT8 row: full-range static int8 per channel; the int8_avx2 row: as the -int8-avx2 files
# (7-bit weights but in depthwise convolutions); the int8_rr row of older evaluations: 7-bit
INT8_SETTING = {"method": "static", "per_channel": True, "reduce_range": False,
                "weight_type": "int8"}
INT8_AVX2_SETTING = {**INT8_SETTING, "reduce_range": True, "depthwise_full_range": True}
KEYS = ("accuracy", "cost_per_sample", "cost_sensitive_accuracy", "macro_f1", "weighted_f1")
ROW_NAMES = {"fp32": "ONNX FP32", "int8": "ONNX INT8", "fp32_tta": "FP32 + TTA (8 views)",
             "fp32_tta4": "FP32 + TTA (4 quarter turns)",
             "int8_rr": "ONNX INT8, 7-bit weights", "int8_rr_jitter": "INT8 7-bit, colour jitter",
             "int8_avx2": "ONNX INT8 for AVX2 (7-bit, 8-bit depthwise)",
             "int8_avx2_jitter": "INT8 for AVX2, colour jitter",
             "fp32_jitter": "FP32, colour jitter", "int8_jitter": "INT8, colour jitter"}


def fold_metrics(probs: np.ndarray, labels: np.ndarray, classes) -> dict:
    """The scores of one fold's probabilities: :data:`KEYS`, the confusion matrix and n."""
    m = evaluate(labels, probs.argmax(1), classes)
    return {k: m[k] for k in (*KEYS, "confusion_matrix", "n")}


def mean_sd(values) -> dict:
    v = np.asarray(values, float)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "folds": v.round(6).tolist()}


def pooled_calibration(folds: list[dict]) -> dict:
    """Temperature, ECE and review threshold on the pooled out-of-fold logits."""
    logits = np.concatenate([np.array(f["logits_keras"]) for f in folds])
    labels = np.concatenate([np.array(f["labels"]) for f in folds])
    t = fit_temperature(logits, labels)
    calibrated = softmax(logits, t)
    choice = choose_review_threshold(calibrated.max(1), calibrated.argmax(1) == labels,
                                     MAX_REVIEW_RATE)
    per_fold = []
    for f in folds:
        p = softmax(np.array(f["logits_keras"]), t)
        per_fold.append(review_outcome(p.max(1), p.argmax(1) == np.array(f["labels"]),
                                       choice.threshold).to_dict())
    return {"temperature": t, "ece_before": expected_calibration_error(softmax(logits), labels),
            "ece_after": expected_calibration_error(calibrated, labels),
            "review_threshold": choice.to_dict(), "per_fold": per_fold}


def summarise(folds: list[dict]) -> dict:
    """``summary.json``'s dict from the folds' ``eval.json`` dicts."""
    rows = {name: {k: mean_sd([f["rows"][name][k] for f in folds]) for k in KEYS}
            for name in folds[0]["rows"]  # a row every fold has (older folds: int8_rr)
            if all(name in f["rows"] for f in folds)}
    quantized = "int8" in folds[0]["rows"]
    diff = [100 * (f["rows"]["int8"]["accuracy"] - f["rows"]["fp32"]["accuracy"])
            for f in folds] if quantized else []
    checks = [f["input_checks"] for f in folds]
    return {
        "recipe": folds[0]["recipe"], "folds": len(folds),
        "n": int(sum(len(f["labels"]) for f in folds)),
        "rows": rows, "int8_minus_fp32_pp": mean_sd(diff) if quantized else None,
        "int8_agreement": (mean_sd([f["int8_agreement"] for f in folds]) if quantized
                           else None),
        "pooled_oof": pooled_calibration(folds),
        "input_checks": {"held_out_flagged": sum(c["held_out_flagged_by_checks"] for c in checks),
                         "not_smears_unflagged": sorted({k for c in checks for k, v in
                                                         c["not_smears"].items()
                                                         if not v["needs_review"]})},
        "confusion_matrix": {name: np.sum([f["rows"][name]["confusion_matrix"] for f in folds],
                                          axis=0).tolist() for name in ("fp32", "int8")
                             if name in folds[0]["rows"]},
        "size_bytes": folds[0]["size_bytes"],
        "train_seconds": mean_sd([f["train_seconds"] for f in folds]),
        "train_images_per_second": mean_sd([f["train_images_per_second"] for f in folds]),
    }


def calibration_file(s: dict) -> dict:
    """``calibration.json`` (leukedge.export.cv_calibration) from a summary."""
    pooled = s["pooled_oof"]
    return CvCalibration(
        source=f"{s['folds']}-fold grouped cross-validation of recipe {s['recipe']}, "
               f"{s['n']} out-of-fold images",
        temperature=pooled["temperature"], ece_before=pooled["ece_before"],
        ece_after=pooled["ece_after"], review_below=pooled["review_threshold"]["threshold"],
        review=pooled["review_threshold"],
        metrics={name: precision_metrics(s["rows"][name], s["n"], s["folds"],
                                         s["confusion_matrix"][name])
                 for name in ("fp32", "int8") if name in s["rows"]},
        int8=INT8_SETTING if "int8" in s["rows"] else {}).to_dict()


def markdown(s: dict) -> str:
    """The summary's rows as a Markdown table (mean +- sd over folds)."""
    head = ("| row | accuracy | cost/image | cost-sens. acc | macro F1 | weighted F1 |\n"
            "|---|---|---|---|---|---|")
    lines = [f"{s['recipe']}: {s['folds']} folds, {s['n']} held-out images in all", "", head]
    for key, row in s["rows"].items():
        cells = [f"{row[k]['mean']:.2%} +- {row[k]['sd']:.2%}" if k != "cost_per_sample"
                 else f"{row[k]['mean']:.3f} +- {row[k]['sd']:.3f}" for k in
                 ("accuracy", "cost_per_sample", "cost_sensitive_accuracy")]
        cells += [f"{row[k]['mean']:.4f} +- {row[k]['sd']:.4f}"
                  for k in ("macro_f1", "weighted_f1")]
        lines.append(f"| {ROW_NAMES.get(key, key)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_summary(cv_dir: Path, folds: list[dict]) -> tuple[dict, str, tuple[Path, ...]]:
    """Write summary.json, summary.md and calibration.json into ``cv_dir``."""
    summary = summarise(folds)
    table = markdown(summary)
    files = (cv_dir / "summary.json", cv_dir / "summary.md", cv_dir / "calibration.json")
    atomic_write_text(files[0], json.dumps(summary, indent=1) + "\n")
    atomic_write_text(files[1], table)
    atomic_write_text(files[2], json.dumps(calibration_file(summary), indent=1) + "\n")
    return summary, table, files
