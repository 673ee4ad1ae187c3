"""INT8 for AVX2 CPUs on the cross-validation folds: held-out accuracy of each weight setting.

For each fold of a CNN cross-validation (``leukedge crossval``, then ``leukedge crossval-eval``,
which writes ``model.onnx``, ``model-int8.onnx`` with full 8-bit weights and
``model-int8-rr.onnx`` with 7-bit weights), this quantizes ``model.onnx`` once more with 7-bit
weights where ONNX Runtime's AVX2 kernels pair products in 16 bits and 8-bit weights in the
depthwise convolutions (``--reduce-range --depthwise-8bit``, same 200 calibration images as
crossval-eval) and scores the four files on the fold's held-out images, natively (this CPU's
kernels; run it on a VNNI CPU, where every file runs exactly).

    python bench/avx2_folds.py runs/cv/lite0-224-acq --data ../shared/data/ALL \\
        --folds 0 1 2 3 --json docs/results/avx2_folds.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from leukedge.export.fold_evaluation import CALIBRATION_IMAGES, fold_images
from leukedge.export.fold_summary import INT8_SETTING
from leukedge.export.onnx_export import model_probabilities
from leukedge.export.quantize import QuantizeOptions, quantize_model
from leukedge.modelkit.evaluation.labelled import select_evenly
from leukedge.modelkit.evaluation.machine import describe_machine
from leukedge.runtime.session import create_session

FILES = {"fp32": "model.onnx", "int8": "model-int8.onnx", "int8_7bit": "model-int8-rr.onnx",
         "int8_avx2": "model-int8-avx2.onnx"}


def fold_row(folder: Path, data: Path) -> dict:
    oof = json.loads((folder / "oof.json").read_text())
    images = fold_images(oof, data)
    calib = tuple(select_evenly(images.train_files, CALIBRATION_IMAGES))
    started = time.perf_counter()
    quantize_model(folder / "model.onnx", folder / FILES["int8_avx2"], QuantizeOptions(
        calib_paths=calib, **{**INT8_SETTING, "reduce_range": True, "depthwise_full_range": True}),
        force=True)
    row = {"images": len(images.labels), "quantize_s": round(time.perf_counter() - started, 1)}
    probs = {}
    for name, file in FILES.items():
        session, _ = create_session(folder / file, provider="cpu")
        probs[name] = model_probabilities(session, images.pixels)
        row[f"{name}_accuracy"] = float((probs[name].argmax(1) == images.labels).mean())
    for name in list(FILES)[1:]:
        row[f"{name}_agreement_with_fp32"] = float(
            (probs[name].argmax(1) == probs["fp32"].argmax(1)).mean())
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cv_dir", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    folds = {}
    for k in args.folds:
        folds[k] = fold_row(args.cv_dir / f"fold{k}", args.data)
        print(k, json.dumps(folds[k]), flush=True)
    summary = {}
    for name in FILES:
        acc = [100 * r[f"{name}_accuracy"] for r in folds.values()]
        delta = [100 * (r[f"{name}_accuracy"] - r["fp32_accuracy"]) for r in folds.values()]
        summary[name] = {"accuracy_mean": round(statistics.mean(acc), 2),
                         "accuracy_sd": round(statistics.stdev(acc), 2) if len(acc) > 1 else None,
                         "minus_fp32_points": [round(d, 2) for d in delta],
                         "minus_fp32_mean": round(statistics.mean(delta), 3)}
        print(f"{name:10s} {summary[name]}")
    result = {"command": "python bench/avx2_folds.py " + " ".join(
        [str(args.cv_dir), "--data", str(args.data), "--folds", *map(str, args.folds)]),
        "machine": describe_machine(), "folds": folds, "summary": summary}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
