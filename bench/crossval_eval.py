"""Evaluate the folds of a cross-validation (leukedge crossval) as the product would run them.

Per fold (``fold<k>/eval.json``, skipped when present, so a run resumes):

1. temperature fitted on the fold's validation logits;
2. ``export_keras``: the one-file ONNX model (parity with Keras on 32 held-out images; input
   checks set on the fold's training images);
3. static INT8, per-channel, 200 calibration images from the fold's training images: with
   full 8-bit weights (what VNNI CPUs run exactly) and with 7-bit weights (--reduce-range, the
   setting that cannot saturate on CPUs without VNNI);
4. the held-out fold through FP32 and INT8, clean and under the colour jitter of
   docs/RESULTS.md (hue +-10 degrees, saturation x0.8-1.2, brightness x0.85-1.15, one draw per
   image, seed 2026), and FP32 with test-time augmentation (mean of the 8 flips and quarter
   turns);
5. the input checks on the held-out images and on images that are not smears.

Then ``summary.json`` and ``summary.md``: mean +- sd over folds of every row, the pooled
confusion matrices, the pooled out-of-fold temperature, ECE and review threshold, and what the
threshold catches per fold; and ``calibration.json``, which ``leukedge export --calibration``
puts into the contract of the final model trained on all images with the same recipe.

    python bench/crossval_eval.py runs/cv/lite0-224 --data ../shared/data/ALL
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from leukedge.export.cv_calibration import CvCalibration, precision_metrics  # noqa: E402
from leukedge.export.onnx_export import (export_classical, export_keras,  # noqa: E402
                                         model_probabilities)
from leukedge.export.quantize import QuantizeOptions, quantize_model  # noqa: E402
from leukedge.modelkit.confidence import (choose_review_threshold, expected_calibration_error,  # noqa: E402
                                         fit_temperature, review_outcome, softmax)
from leukedge.modelkit.evaluation.labelled import select_evenly  # noqa: E402
from leukedge.modelkit.metrics import evaluate  # noqa: E402
from leukedge.modelkit.run_folder import RunFolder
from leukedge.modelkit.run_record import Calibration, RunRecord  # noqa: E402
from leukedge.runtime.classifier import Classifier  # noqa: E402
from leukedge.runtime.decode import load_image  # noqa: E402
from leukedge.runtime.files import atomic_write_text  # noqa: E402
from leukedge.runtime.session import create_session  # noqa: E402
from leukedge.train import load_model  # noqa: E402
from leukedge.train.augment import AugmentSpec, random_color  # noqa: E402
from leukedge.train.classical import load_network  # noqa: E402
from leukedge.train.model import HybridConfig  # noqa: E402

log = logging.getLogger("crossval_eval")
JITTER = AugmentSpec(rotation_deg=0, shift=0, shear_deg=0, zoom=0, horizontal_flip=False,
                     color_jitter=True)
JITTER_SEED = 2026
MAX_REVIEW_RATE = 0.03
# the INT8 row: full-range static int8 per channel (its 7-bit twin is the int8_rr row)
INT8_SETTING = {"method": "static", "per_channel": True, "reduce_range": False,
                "weight_type": "int8"}
KEYS = ("accuracy", "cost_per_sample", "cost_sensitive_accuracy", "macro_f1", "weighted_f1")


def not_smears() -> dict[str, np.ndarray]:
    """Blank frames, noise and scikit-image's natural photos (none is a blood smear)."""
    rng = np.random.default_rng(0)
    out = {"black": np.zeros((224, 224, 3), np.uint8),
           "white": np.full((224, 224, 3), 255, np.uint8),
           "grey": np.full((224, 224, 3), 128, np.uint8),
           "noise": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
           "noise_large": rng.integers(0, 256, (600, 800, 3), dtype=np.uint8)}
    try:
        from skimage import data
    except ImportError:
        return out
    for name in ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
                 "immunohistochemistry", "retina", "camera", "coins", "moon", "page", "text"):
        im = getattr(data, name)()
        out[name] = np.ascontiguousarray(np.stack([im] * 3, -1) if im.ndim == 2 else im[..., :3])
    return out


def dihedral(images: list[np.ndarray]) -> list[list[np.ndarray]]:
    """The 8 flips and quarter turns of every image."""
    views = []
    for flip in (False, True):
        for k in range(4):
            views.append([np.ascontiguousarray(np.rot90(im[:, ::-1] if flip else im, k))
                          for im in images])
    return views


def fold_record(oof: dict, temperature: float) -> RunRecord:
    config = HybridConfig.from_dict(oof["config"])
    return RunRecord(
        classes=tuple(oof["classes"]), backbone=config.backbone, model=config.to_dict(),
        preprocessing=config.preprocess_spec(), input_names=config.input_names,
        settings=oof["settings"], weights={"init": oof["weights"] or "none"}, data={},
        data_manifest_sha256="", split_manifest_sha256="", seed=oof["settings"]["seed"],
        parameters={}, test_metrics={}, training={}, versions={}, created="",
        run_id=f"{oof['recipe']}-fold{oof['fold']}",
        calibration=Calibration(temperature=temperature, fitted_on="fold validation split"))


def metrics(probs: np.ndarray, labels: np.ndarray, classes) -> dict:
    m = evaluate(labels, probs.argmax(1), classes)
    return {k: m[k] for k in (*KEYS, "confusion_matrix", "n")}


def evaluate_fold(folder: Path, data: Path) -> dict:
    oof = json.loads((folder / "oof.json").read_text())
    classes, root = oof["classes"], data / "Original"
    held = oof["held_out"]
    labels = np.array(held["labels"])
    pixels = [load_image(root / p) for p in held["paths"]]
    taken = set(held["paths"]) | set(oof["val"]["paths"])
    train_paths = sorted(p.relative_to(root).as_posix() for c in classes
                         for p in (root / c).glob("*.jpg")
                         if p.relative_to(root).as_posix() not in taken)
    temperature = fit_temperature(np.array(oof["val"]["logits"]), np.array(oof["val"]["labels"]))
    record = fold_record(oof, temperature)
    started = time.perf_counter()
    train_pixels = [load_image(root / p) for p in train_paths]
    run = RunFolder(folder)
    classical = run.classical
    if classical:  # SVM, XGBoost: no TensorFlow, no quantization
        export = export_classical(load_network(run.network), run.onnx_model,
                                  record, parity_images=pixels[::16],
                                  parity_source="held-out fold", train_images=train_pixels)
    else:
        export = export_keras(load_model(run.keras_model), run.onnx_model, record,
                              parity_images=pixels[::16], parity_source="held-out fold",
                              train_images=train_pixels)
    export_s = time.perf_counter() - started
    quant, quant_s = None, 0.0
    if not classical:
        calib = select_evenly([root / p for p in train_paths], 200)
        started = time.perf_counter()
        quant = quantize_model(folder / "model.onnx", folder / "model-int8.onnx",
                               QuantizeOptions(calib_paths=tuple(calib), **INT8_SETTING),
                               force=True)
        quant_s = time.perf_counter() - started
        quantize_model(folder / "model.onnx", folder / "model-int8-rr.onnx",
                       QuantizeOptions(calib_paths=tuple(calib),
                                       **{**INT8_SETTING, "reduce_range": True}), force=True)
    jittered = [random_color(im, JITTER, np.random.default_rng([JITTER_SEED, i]))
                for i, im in enumerate(pixels)]
    rows, probs = {}, {}
    files = {"fp32": "model.onnx"} if classical else {
        "fp32": "model.onnx", "int8": "model-int8.onnx", "int8_rr": "model-int8-rr.onnx"}
    for name, file in files.items():
        path = folder / file
        session, _ = create_session(path, provider="cpu")
        probs[name] = model_probabilities(session, pixels)
        probs[f"{name}_jitter"] = model_probabilities(session, jittered)
        if name == "fp32":
            views = [model_probabilities(session, view) for view in dihedral(pixels)]
            probs["fp32_tta"] = np.mean(views, axis=0)
            probs["fp32_tta4"] = np.mean(views[:4], axis=0)  # the quarter turns, no flip
    for name, p in probs.items():
        rows[name] = metrics(p, labels, classes)
    clf = Classifier(folder / ("model.onnx" if classical else "model-int8.onnx"), provider="cpu")
    preds = clf.predict_pixels(pixels)
    checks_flagged = sum(any(r.code != "low_confidence" for r in p.review_reasons)
                         for p in preds)
    outsiders = {name: clf.predict_pixels([im])[0] for name, im in not_smears().items()}
    return {
        "fold": oof["fold"], "recipe": oof["recipe"], "n": len(labels),
        "temperature": temperature, "export_seconds": round(export_s, 1),
        "quantize_seconds": round(quant_s, 1), "train_seconds": oof["seconds"],
        "train_images_per_second": oof["train_images_per_second"],
        "size_bytes": {"fp32": export.size_bytes, "int8": quant.size_bytes if quant else None},
        "parity_max_abs_diff": export.parity.max_abs_diff,
        "int8_agreement": (float(np.mean(probs["fp32"].argmax(1) == probs["int8"].argmax(1)))
                           if "int8" in probs else None),
        "rows": rows, "probs": {k: v.round(6).tolist() for k, v in probs.items()},
        "labels": labels.tolist(), "paths": held["paths"],
        "logits_keras": held["logits"],
        "input_checks": {"limits": export.contract.input_checks.to_dict(),
                   "held_out_flagged_by_checks": int(checks_flagged),
                   "not_smears": {k: {"label": v.label, "confidence": v.confidence,
                                      "needs_review": v.needs_review,
                                      "reasons": [r.to_dict() for r in v.review_reasons]}
                                  for k, v in outsiders.items()}},
    }


def mean_sd(values) -> dict:
    v = np.asarray(values, float)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "folds": v.round(6).tolist()}


def summarise(folds: list[dict]) -> dict:
    rows = {}
    for name in folds[0]["rows"]:
        rows[name] = {k: mean_sd([f["rows"][name][k] for f in folds]) for k in KEYS}
    quantized = "int8" in folds[0]["rows"]
    diff = [100 * (f["rows"]["int8"]["accuracy"] - f["rows"]["fp32"]["accuracy"]) for f in folds
            if quantized]
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
    return {
        "recipe": folds[0]["recipe"], "folds": len(folds), "n": int(len(labels)),
        "rows": rows, "int8_minus_fp32_pp": mean_sd(diff) if quantized else None,
        "int8_agreement": (mean_sd([f["int8_agreement"] for f in folds]) if quantized
                           else None),
        "pooled_oof": {"temperature": t,
                       "ece_before": expected_calibration_error(softmax(logits), labels),
                       "ece_after": expected_calibration_error(calibrated, labels),
                       "review_threshold": choice.to_dict(), "per_fold": per_fold},
        "input_checks": {"held_out_flagged": sum(f["input_checks"]["held_out_flagged_by_checks"]
                                           for f in folds),
                   "not_smears_unflagged": sorted({k for f in folds for k, v in
                                                   f["input_checks"]["not_smears"].items()
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
    names = {"fp32": "ONNX FP32", "int8": "ONNX INT8", "fp32_tta": "FP32 + TTA (8 views)",
             "fp32_tta4": "FP32 + TTA (4 quarter turns)",
             "int8_rr": "ONNX INT8, 7-bit weights", "int8_rr_jitter": "INT8 7-bit, colour jitter",
             "fp32_jitter": "FP32, colour jitter", "int8_jitter": "INT8, colour jitter"}
    head = ("| row | accuracy | cost/image | cost-sens. acc | macro F1 | weighted F1 |\n"
            "|---|---|---|---|---|---|")
    lines = [f"{s['recipe']}: {s['folds']} folds, {s['n']} held-out images in all", "", head]
    for key, row in s["rows"].items():
        cells = [f"{row[k]['mean']:.2%} +- {row[k]['sd']:.2%}" if k != "cost_per_sample"
                 else f"{row[k]['mean']:.3f} +- {row[k]['sd']:.3f}" for k in
                 ("accuracy", "cost_per_sample", "cost_sensitive_accuracy")]
        cells += [f"{row[k]['mean']:.4f} +- {row[k]['sd']:.4f}" for k in ("macro_f1", "weighted_f1")]
        lines.append(f"| {names.get(key, key)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cv_dir", type=Path)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ALL"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    folds = []
    for folder in sorted(args.cv_dir.glob("fold*")):
        if not (folder / "oof.json").is_file():
            continue
        target = folder / "eval.json"
        if not target.is_file():
            log.info("evaluating %s", folder)
            atomic_write_text(target, json.dumps(evaluate_fold(folder, args.data)) + "\n")
        folds.append(json.loads(target.read_text()))
    if not folds:
        raise SystemExit(f"no finished fold under {args.cv_dir}")
    summary = summarise(folds)
    atomic_write_text(args.cv_dir / "summary.json", json.dumps(summary, indent=1) + "\n")
    atomic_write_text(args.cv_dir / "summary.md", markdown(summary))
    atomic_write_text(args.cv_dir / "calibration.json",
                      json.dumps(calibration_file(summary), indent=1) + "\n")
    print(markdown(summary))
    print(json.dumps({k: summary[k] for k in ("int8_minus_fp32_pp", "pooled_oof", "input_checks")},
                     indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
