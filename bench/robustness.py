"""The robustness suite: named, seeded acquisition shifts applied to labelled images, each kind
at two or more strengths, scored as a lab would see them (accuracy, cost, flagged, errors
caught by the flag, unflagged errors).

Two ways to give it images and models:

- cross-validation folds (what the targets are measured on): ``--cv runs/cv/RECIPE`` with
  ``--model-file`` naming each fold's ONNX file (``fold<k>/model-int8.onnx``); each fold's
  model classifies its own held-out images (``fold<k>/oof.json``), so every image is scored
  out of fold;
- one model on a labelled folder: ``--model default --data DIR`` (``--limit N`` spreads N
  images evenly over the folder). On the development images this is *in sample* for the
  bundled models (they were trained on them): the clean row is then an upper bound, and the
  drop under each shift is what the suite shows.

    python bench/robustness.py --model default --data ../shared/data/ALL --limit 652
    python bench/robustness.py --cv runs/cv/ens --model-file model.onnx --data ../shared/data/ALL

Writes a JSON file (``--out``) with every row, the model's sha256, the shift definitions and
the machine, and prints the markdown table of docs/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from leukedge.modelkit.evaluation.labelled import LabelledSet, load_labelled
from leukedge.modelkit.evaluation.machine import describe_machine, machine_line
from leukedge.modelkit.evaluation.review_scores import review_scores
from leukedge.modelkit.splits import held_out_split
from leukedge.runtime.classifier import Classifier
from leukedge.runtime.decode import load_image
from leukedge.runtime.files import atomic_write_text, sha256_file
from leukedge.modelkit.acquisition import SHIFTS, get_shift

SEED = 2026
BATCH = 32


def fold_sets(cv_dir: Path, data: Path, model_file: str) -> list[tuple[Path, LabelledSet]]:
    """(fold model, its held-out images) per fold of a cross-validation folder."""
    out = []
    for folder in sorted(cv_dir.glob("fold*")):
        oof = json.loads((folder / "oof.json").read_text())
        root = data / "Original" if (data / "Original").is_dir() else data
        held = oof["held_out"]
        out.append((folder / model_file, LabelledSet(
            tuple(root / p for p in held["paths"]), np.asarray(held["labels"], np.int64),
            tuple(oof["classes"]), f"{folder} held-out")))
    if not out:
        raise SystemExit(f"no fold*/oof.json in {cv_dir}")
    return out


def predictions(clf: Classifier, images: list[np.ndarray]) -> list:
    out = []
    for start in range(0, len(images), BATCH):
        out += clf.predict_pixels(images[start:start + BATCH])
    return out


def settings(kinds: list[str]) -> list[tuple[str, object]]:
    """("none", None) first, then every kind at each of its strengths."""
    return [("none", None)] + [(k, v) for k in kinds for v in get_shift(k).strengths]


def run(pairs: list[tuple[Path | str, LabelledSet]], kinds: list[str]) -> list[dict]:
    """One row per (kind, strength): the scores pooled over every (model, images) pair."""
    pooled: dict[tuple, dict] = {}
    for model, labelled in pairs:
        clf = Classifier(model, provider="cpu")
        images = [load_image(p) for p in labelled.paths]
        names = [str(p) for p in labelled.paths]
        for kind, strength in settings(kinds):
            shifted = images if kind == "none" else [
                get_shift(kind).apply(im, strength, np.random.default_rng([SEED, i]))
                for i, im in enumerate(images)]
            entry = pooled.setdefault((kind, strength), {"labels": [], "preds": [], "paths": []})
            entry["labels"] += labelled.labels.tolist()
            entry["preds"] += predictions(clf, shifted)
            entry["paths"] += names
        classes = list(clf.classes)
    rows = []
    for (kind, strength), e in pooled.items():
        s = review_scores(e["labels"], e["preds"], classes, e["paths"])
        main = kind != "none" and get_shift(kind).main == strength
        rows.append({"kind": kind, "strength": strength, "main": main, "n": s["n"],
                     "accuracy": s["accuracy"], "cost_per_image": s["cost_per_sample"],
                     "flagged_rate": s["flagged_rate"], "errors": s["errors"],
                     "errors_caught": s["errors_caught"],
                     "unflagged_errors": s["unflagged_errors"], "unflagged": s["unflagged"],
                     "review_reasons": s["review_reasons"]})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| shift | strength | accuracy | cost/image | flagged | errors caught | "
             "unflagged errors |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        strength = "-" if r["strength"] is None else f"{r['strength']:g}"
        lines.append(f"| {r['kind']}{' (main)' if r['main'] else ''} | {strength} | "
                     f"{100 * r['accuracy']:.2f}% | {r['cost_per_image']:.3f} | "
                     f"{100 * r['flagged_rate']:.1f}% | {r['errors_caught']} of {r['errors']} | "
                     f"{r['unflagged_errors']} of {r['n']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="labelled images")
    parser.add_argument("--model", help="a bundled model's name or an ONNX file")
    parser.add_argument("--limit", type=int, help="at most N images, spread evenly")
    parser.add_argument("--split-manifest", type=Path,
                        help="a run's split.json: score its held-out split only")
    parser.add_argument("--cv", type=Path, help="a cross-validation folder (fold*/oof.json)")
    parser.add_argument("--model-file", default="model.onnx", help="each fold's ONNX file")
    parser.add_argument("--kinds", default=",".join(s.kind for s in SHIFTS))
    parser.add_argument("--out", type=Path, help="write the rows here (JSON)")
    args = parser.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    for k in kinds:
        get_shift(k)
    started = time.perf_counter()
    if args.cv is not None:
        pairs = fold_sets(args.cv, args.data, args.model_file)
        source = f"{args.cv} folds, {args.model_file}, out of fold"
    else:
        clf = Classifier(args.model)
        split = held_out_split(args.split_manifest)
        pairs = [(clf.model_path, load_labelled(args.data, clf.classes, args.split_manifest, split,
                                                limit=args.limit))]
        source = f"{clf.model_path.name} on {pairs[0][1].source}"
    rows = run(pairs, kinds)
    table = markdown(rows)
    print(table)
    machine = describe_machine()
    print(f"\n{source}; {time.perf_counter() - started:.0f} s on {machine_line(machine)}",
          file=sys.stderr)
    if args.out is not None:
        atomic_write_text(args.out, json.dumps({
            "command": "python bench/robustness.py " + " ".join(argv or sys.argv[1:]),
            "source": source, "models": {str(m): sha256_file(m) for m, _ in pairs},
            "shifts": {s.kind: {"strengths": list(s.strengths), "main": s.main,
                                "description": s.description} for s in SHIFTS},
            "seed": SEED, "machine": machine, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
