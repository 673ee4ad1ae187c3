"""The cross-validation table of docs/RESULTS.md, from the summaries `leukedge crossval-eval`
wrote.

One row per recipe (and per variant of it: INT8, colour jitter, TTA), in the reference study's
layout: accuracy, misclassification cost per image, cost-sensitive accuracy, weighted F1, each as
mean +- sd over the folds, plus the folds used, INT8 - FP32 per fold, training time per fold
and the model size.

    python bench/cv_table.py runs/cv/lite0-224-s3 runs/cv/lite0-224 runs/cv/svm-128 ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

VARIANTS = {"fp32": "ONNX FP32", "int8": "ONNX INT8", "fp32_jitter": "FP32, colour jitter",
            "int8_jitter": "INT8, colour jitter", "fp32_tta4": "FP32 + TTA (4 quarter turns)",
            "fp32_tta": "FP32 + TTA (8 flips and turns)", "int8_rr": "INT8, 7-bit weights",
            "int8_avx2": "INT8 for AVX2 (7-bit, 8-bit depthwise)"}


def pct(row: dict, key: str) -> str:
    return f"{100 * row[key]['mean']:.2f} +- {100 * row[key]['sd']:.2f}"


def num(row: dict, key: str, digits: int) -> str:
    return f"{row[key]['mean']:.{digits}f} +- {row[key]['sd']:.{digits}f}"


def rows(summary: dict, variants) -> list[str]:
    out = []
    folds = summary["folds"]
    minutes = summary["train_seconds"]["mean"] / 60
    size = summary.get("size_bytes") or {}
    for key in variants:
        if key not in summary["rows"]:
            continue
        r = summary["rows"][key]
        extra = ""
        if key == "int8" and summary.get("int8_minus_fp32_pp"):
            d = summary["int8_minus_fp32_pp"]["folds"]
            extra = f"{min(d):+.2f} .. {max(d):+.2f}"
        file_mb = size.get("int8" if key.startswith("int8") else "fp32")
        cells = [summary["recipe"], VARIANTS.get(key, key), str(folds), pct(r, "accuracy"),
                 num(r, "cost_per_sample", 3), pct(r, "cost_sensitive_accuracy"),
                 num(r, "weighted_f1", 4), extra or "-", f"{minutes:.1f}",
                 f"{file_mb / 1e6:.1f}" if file_mb else "-"]
        out.append("| " + " | ".join(cells) + " |")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cv_dirs", type=Path, nargs="+")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    args = parser.parse_args(argv)
    print("| recipe | model | folds | accuracy % | cost / image | cost-sens. acc % | weighted F1 "
          "| INT8 - FP32 pp (per fold) | train min / fold | file MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for folder in args.cv_dirs:
        path = folder / "summary.json"
        if not path.is_file():
            print(f"| {folder.name} | (no summary: run leukedge crossval-eval) |||||||||")
            continue
        for line in rows(json.loads(path.read_text()), args.variants):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
