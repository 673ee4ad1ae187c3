"""The safety net: images that are not B-ALL smear fields must never get an unflagged Early,
Pre or Pro label.

Other labs send what leukedge was not trained for: single white cells cropped by a cell
detector, fields of red cells without white cells, out-of-focus frames, blank frames, photos.
This script makes such images from labelled smears, classifies them, and counts per kind how
many were flagged for review, and which labels the unflagged ones got:

- ``red_cell_field``: the stained white cells painted out (the stain mask, dilated, filled by
  OpenCV inpainting from the surrounding red cells and plasma);
- ``single_cell``: a square crop around the largest stained cell, scaled up to fill the frame;
- ``out_of_focus``: the field under a Gaussian blur of sigma 8 pixels;
- ``blank``: uniform frames (black, white, grey, pink) and ``photo``: scikit-image's sample
  photographs (only where scikit-image is installed).

Use held-out images as sources (``--split-manifest`` of the run that trained the model, or a
folder the model never saw): the crops are of real cells. Prints a table and writes JSON
(``--out``) with the machine:

    python bench/safety_net.py --model runs/probe/model.onnx --data ../shared/data/ALL \\
        --split-manifest runs/probe/split.json --out safety.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from leukedge.modelkit.evaluation.labelled import load_labelled
from leukedge.modelkit.evaluation.machine import describe_machine
from leukedge.modelkit.splits import held_out_split
from leukedge.runtime.classifier import Classifier
from leukedge.runtime.decode import load_image
from leukedge.runtime.files import atomic_write_text, sha256_file

BLAST_CLASSES = ("Early", "Pre", "Pro")  # an unflagged one of these is the failure
BATCH = 32


def stain_mask(image: np.ndarray) -> np.ndarray:
    """uint8 0/255: the reference study's purple mask (hue 0.7-0.8, saturation >= 0.5, value
    >= 0.4 on [0, 1]), the stained white-cell nuclei and cytoplasm."""
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV_FULL).astype(np.float32) / 255.0
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    return (((h >= 0.7) & (h <= 0.8) & (s >= 0.5) & (v >= 0.4)) * 255).astype(np.uint8)


def red_cell_field(image: np.ndarray) -> np.ndarray | None:
    mask = stain_mask(image)
    if mask.mean() < 255 * 0.002:
        return None
    grown = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (15, 15)))
    return cv2.inpaint(np.ascontiguousarray(image), grown, 9, cv2.INPAINT_TELEA)


def single_cell(image: np.ndarray) -> np.ndarray | None:
    mask = cv2.morphologyEx(stain_mask(image), cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask)
    if n < 2:
        return None
    x, y, w, h, area = stats[1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))]
    if area < 50:
        return None
    side = int(max(w, h) * 1.6) + 8
    cx, cy = x + w // 2, y + h // 2
    H, W = image.shape[:2]
    x0, y0 = max(0, cx - side // 2), max(0, cy - side // 2)
    crop = image[y0:min(H, y0 + side), x0:min(W, x0 + side)]
    return cv2.resize(crop, (W, H), interpolation=cv2.INTER_CUBIC)


def out_of_focus(image: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), 8.0)


def blanks(shape: tuple[int, int]) -> list[np.ndarray]:
    return [np.full((*shape, 3), c, np.uint8) for c in
            ((0, 0, 0), (255, 255, 255), (128, 128, 128), (236, 200, 210))]


def photos(shape: tuple[int, int]) -> list[np.ndarray]:
    try:
        from skimage import data
    except ImportError:
        return []
    out = []
    for name in ("astronaut", "chelsea", "coffee", "rocket", "retina", "immunohistochemistry"):
        try:
            img = getattr(data, name)()
        except Exception:  # a sample that needs a download (pooch) is left out
            continue
        out.append(cv2.resize(np.ascontiguousarray(img[..., :3]), shape[::-1],
                              interpolation=cv2.INTER_AREA))
    return out


def make_cases(images: list[np.ndarray]) -> dict[str, list[np.ndarray]]:
    cases: dict[str, list[np.ndarray]] = {"red_cell_field": [], "single_cell": [],
                                          "out_of_focus": []}
    for image in images:
        for kind, make in (("red_cell_field", red_cell_field), ("single_cell", single_cell),
                           ("out_of_focus", out_of_focus)):
            made = make(image)
            if made is not None:
                cases[kind].append(made)
    shape = images[0].shape[:2]
    cases["blank"] = blanks(shape)
    cases["photo"] = photos(shape)
    return cases


def score(clf: Classifier, images: list[np.ndarray]) -> dict:
    preds = []
    for start in range(0, len(images), BATCH):
        preds += clf.predict_pixels(images[start:start + BATCH])
    unflagged = [p.label for p in preds if not p.needs_review]
    return {"n": len(preds), "flagged": sum(p.needs_review for p in preds),
            "unflagged_labels": {c: unflagged.count(c) for c in clf.classes},
            "unflagged_blast_labels": sum(unflagged.count(c) for c in BLAST_CLASSES)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True,
                        help="a bundled model's name or an ONNX file (repeatable)")
    parser.add_argument("--data", type=Path, required=True, help="labelled smears (sources)")
    parser.add_argument("--split-manifest", type=Path, help="use this run's held-out split")
    parser.add_argument("--limit", type=int, help="at most N source images, spread evenly")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    first = Classifier(args.model[0], provider="cpu")
    labelled = load_labelled(args.data, first.classes, args.split_manifest,
                             held_out_split(args.split_manifest), limit=args.limit)
    cases = make_cases([load_image(p) for p in labelled.paths])
    print("| model | kind | n | flagged | unflagged Early/Pre/Pro | unflagged labels |")
    print("|---|---|---|---|---|---|")
    results = {}
    for model in args.model:
        clf = first if model == args.model[0] else Classifier(model, provider="cpu")
        rows = {kind: score(clf, imgs) for kind, imgs in cases.items() if imgs}
        results[str(clf.model_path)] = {"sha256": sha256_file(clf.model_path), "rows": rows}
        for kind, r in rows.items():
            labels = ", ".join(f"{c} {k}" for c, k in r["unflagged_labels"].items() if k)
            print(f"| {clf.model_path.name} | {kind} | {r['n']} | {r['flagged']} | "
                  f"{r['unflagged_blast_labels']} | {labels or '-'} |")
    if args.out is not None:
        atomic_write_text(args.out, json.dumps({
            "command": "python bench/safety_net.py " + " ".join(argv or sys.argv[1:]),
            "sources": labelled.source, "results": results, "machine": describe_machine()},
            indent=1) + "\n")
    failed = any(r["unflagged_blast_labels"] for m in results.values() for r in m["rows"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
