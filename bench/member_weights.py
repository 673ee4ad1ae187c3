"""How much should each member of an ensemble weigh, judged under acquisition shifts?

Runs two one-file models (a CNN and a feature model) over held-out images under the robustness
suite's main shifts, then scores their weighted mean for several CNN weights. Each weighting
gets the review threshold that flags ``--flag-rate`` of the unshifted images (chosen on the same
images, so the clean row is a little optimistic, equally for every weighting); a prediction is
also flagged by the CNN's input checks, as in a joined file (`leukedge ensemble` keeps the first
member's checks). Prints accuracy, flagged rate and unflagged errors per shift and weighting:

    python bench/member_weights.py --cnn runs/probe-acq/model.onnx \\
        --features runs/probe-xgb/model.onnx --data ../shared/data/ALL \\
        --split-manifest runs/probe-acq/split.json --out weights.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from leukedge.modelkit.acquisition import SHIFTS, get_shift
from leukedge.modelkit.evaluation.labelled import load_labelled
from leukedge.modelkit.evaluation.machine import describe_machine
from leukedge.modelkit.splits import held_out_split
from leukedge.runtime.classifier import Classifier
from leukedge.runtime.decode import load_image
from leukedge.runtime.files import atomic_write_text

from robustness import SEED, predictions

WEIGHTS = (1.0, 0.8, 0.67, 0.5)


def member_outputs(clf: Classifier, images: list) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities [N, K] and whether an input check (not the confidence) flagged each."""
    preds = predictions(clf, images)
    probs = np.array([[p.probabilities[c] for c in clf.classes] for p in preds])
    checked = np.array([any(r.code != "low_confidence" for r in p.review_reasons)
                        for p in preds])
    return probs, checked


def score(labels, cnn, features, checked, weight: float, threshold: float) -> dict:
    mean = weight * cnn + (1 - weight) * features
    wrong = mean.argmax(1) != labels
    flagged = (mean.max(1) < threshold) | checked
    return {"accuracy": float(1 - wrong.mean()), "flagged_rate": float(flagged.mean()),
            "unflagged_errors": int((wrong & ~flagged).sum())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cnn", required=True)
    parser.add_argument("--features", required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split-manifest", type=Path)
    parser.add_argument("--flag-rate", type=float, default=0.03)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    cnn, feat = Classifier(args.cnn, provider="cpu"), Classifier(args.features, provider="cpu")
    labelled = load_labelled(args.data, cnn.classes, args.split_manifest,
                             held_out_split(args.split_manifest))
    images = [load_image(p) for p in labelled.paths]
    shifts = [("none", None)] + [(s.kind, s.main) for s in SHIFTS]
    outputs = {}
    for kind, strength in shifts:
        shifted = images if kind == "none" else [
            get_shift(kind).apply(im, strength, np.random.default_rng([SEED, i]))
            for i, im in enumerate(images)]
        (p_cnn, checked), (p_feat, _) = member_outputs(cnn, shifted), member_outputs(feat, shifted)
        outputs[kind] = (p_cnn, p_feat, checked)
    rows = []
    print("| CNN weight | threshold | shift | accuracy | flagged | unflagged errors |")
    print("|---|---|---|---|---|---|")
    for w in WEIGHTS:
        clean = np.sort((w * outputs["none"][0] + (1 - w) * outputs["none"][1]).max(1))
        threshold = float(clean[int(args.flag_rate * len(clean))])
        for kind, _ in shifts:
            r = {"cnn_weight": w, "threshold": threshold, "shift": kind,
                 **score(labelled.labels, *outputs[kind], w, threshold)}
            rows.append(r)
            print(f"| {w:g} | {threshold:.4f} | {kind} | {100 * r['accuracy']:.2f}% | "
                  f"{100 * r['flagged_rate']:.1f}% | {r['unflagged_errors']} of {len(images)} |")
    if args.out is not None:
        atomic_write_text(args.out, json.dumps({
            "command": "python bench/member_weights.py " + " ".join(argv or sys.argv[1:]),
            "source": labelled.source, "n": len(images), "rows": rows,
            "machine": describe_machine()}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
