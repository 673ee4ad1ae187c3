"""Accuracy of ONNX models on a run's test split, clean and under stain/lamp colour jitter.

The jitter is the one issue 5 names (hue +-10 degrees, saturation x0.8-1.2, brightness
x0.85-1.15), applied to the uint8 RGB image with the training code's own `random_color`, one
fixed draw per image (seeded by the image's position), before the shared preprocessing. Each model
sees exactly the same jittered pixels. Reports the seed's metric set with a 95% Wilson interval.

Usage:
    python bench/eval_robustness.py runtime/assets/models/leukedge-default-fp32.onnx \
        runtime/assets/models/leukedge-default-int8.onnx \
        --data ../shared/data/ALL --split-manifest runs/default-small_cnn-128/split.json \
        --json docs/robustness.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from leukedge.export.evaluation import load_labelled
from leukedge.runtime import Classifier
from leukedge.runtime.dataset import read_split_manifest
from leukedge.runtime.metrics import evaluate
from leukedge.runtime.preprocess import load_image
from leukedge.train.augment import AugmentSpec, random_color

JITTER = AugmentSpec(rotation_deg=0, shift=0, shear_deg=0, zoom=0, horizontal_flip=False,
                     color_jitter=True)


def test_images(data: Path, manifest_path: Path) -> tuple[list[np.ndarray], np.ndarray, tuple]:
    classes = read_split_manifest(manifest_path).classes
    test = load_labelled(data, classes, manifest_path, "test")
    return [load_image(p) for p in test.paths], test.labels, test.classes


def jittered(images: list[np.ndarray], seed: int) -> list[np.ndarray]:
    return [random_color(im, JITTER, np.random.default_rng([seed, i])) for i, im in enumerate(images)]


def score(model: Classifier, images: list[np.ndarray], labels: np.ndarray, classes) -> dict:
    preds = model.predict_batch(images, batch_size=32)
    index = {c: i for i, c in enumerate(model.classes)}
    y_pred = np.array([index[p.label] for p in preds])
    m = evaluate(labels, y_pred, classes)
    m["top1"] = y_pred.tolist()
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split-manifest", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    images, labels, classes = test_images(args.data, args.split_manifest)
    shifted = jittered(images, args.seed)
    rows, reference = [], None
    for path in args.models:
        model = Classifier(path, provider="cpu")
        clean, jit = score(model, images, labels, classes), score(model, shifted, labels, classes)
        if reference is None:
            reference = clean["top1"]
        agree = float(np.mean(np.array(clean["top1"]) == np.array(reference)))
        rows.append({"model": path, "precision": model.contract.precision, "n": clean["n"],
                     "clean": {k: v for k, v in clean.items() if k != "top1"},
                     "jitter": {k: v for k, v in jit.items() if k != "top1"},
                     "top1_agreement_with_first": agree})
    for r in rows:
        c, j = r["clean"], r["jitter"]
        lo, hi = c["accuracy_ci95"]
        print(f"{Path(r['model']).name}: clean {c['accuracy']:.4f} (95% CI {lo:.4f}-{hi:.4f}), "
              f"cost/sample {c['cost_per_sample']:.4f}; jitter {j['accuracy']:.4f}; "
              f"agreement with first {r['top1_agreement_with_first']:.4f} (n={r['n']})")
    if args.json:
        args.json.write_text(json.dumps({"jitter": JITTER.to_dict(), "seed": args.seed,
                                         "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
