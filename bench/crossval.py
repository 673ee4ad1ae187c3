"""Grouped k-fold cross-validation of a training recipe over the development images.

Folds are stratified per class and built from duplicate groups (exact and near duplicates,
runtime.duplicates), so no group straddles two folds. In each fold the other folds are split
again (grouped, stratified) into training and validation images; the validation images drive
early stopping, the held-out fold is only predicted. Per-fold results are written as they finish
(``fold<k>/oof.json``: held-out paths, labels, logits; ``fold<k>/model.keras``), and a rerun
skips the folds that are done, so a long run resumes instead of restarting.

    python bench/crossval.py --recipe lite0-224 --data ../shared/data/ALL --out runs/cv
    python bench/crossval.py --recipe small_cnn-128 --folds 5 --only-folds 0,1,2 ...

The evaluation of the folds' models (ONNX FP32/INT8, colour jitter, TTA, the summary table) is
bench/crossval_eval.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from leukedge.runtime.dataset import discover_dataset  # noqa: E402
from leukedge.runtime.splits import make_folds, make_split  # noqa: E402
from leukedge.runtime.files import atomic_write_text  # noqa: E402
from leukedge.runtime.graph.runner import PreprocessRunner  # noqa: E402
from leukedge.train.augment import AugmentSpec  # noqa: E402
from leukedge.train.fit import fit_partition, prepare_images  # noqa: E402
from leukedge.train.model import HybridConfig  # noqa: E402
from leukedge.train.predict import predict_logits  # noqa: E402
from leukedge.train.run_folder import save_keras_model  # noqa: E402
from leukedge.train.settings import TrainSettings  # noqa: E402
from leukedge.train.two_phase import Partition  # noqa: E402

log = logging.getLogger("crossval")
VAL_FRACTION = 0.15

# Smear augmentation shared by the recipes: exact quarter turns and flips (a smear has no up),
# a small affine jitter (cell size is a maturity cue), stain and lamp colour jitter.
SMEAR_AUGMENT = AugmentSpec(rotation_deg=10.0, shift=0.1, zoom=0.05, right_angles=True)

RECIPES = {
    # fine-tuning from stage 4 (block 8): the runner-up, measured when it was the backbone's cut
    "lite0-224": (dict(backbone="efficientnet_lite0", seg_features="none", input_size=(224, 224),
                       l2=1e-4),
                  dict(epochs=15, head_epochs=30, learning_rate=2e-4, patience=4,
                       bank_copies=10, fine_tune_from=8, augment=SMEAR_AUGMENT), "imagenet"),
    "lite0-224-s3": (dict(backbone="efficientnet_lite0", seg_features="none",
                          input_size=(224, 224), l2=1e-4),
                     dict(epochs=15, head_epochs=30, learning_rate=2e-4, patience=4,
                          bank_copies=10, fine_tune_from=5, augment=SMEAR_AUGMENT), "imagenet"),
    "lite0-224-s2": (dict(backbone="efficientnet_lite0", seg_features="none",
                          input_size=(224, 224), l2=1e-4),
                     dict(epochs=15, head_epochs=30, learning_rate=2e-4, patience=4,
                          bank_copies=8, fine_tune_from=3, augment=SMEAR_AUGMENT), "imagenet"),
    "lite0-224-e2e": (dict(backbone="efficientnet_lite0", seg_features="none",
                           input_size=(224, 224), l2=1e-4),
                      dict(method="end_to_end", epochs=10, learning_rate=2e-4, schedule="cosine",
                           augment=SMEAR_AUGMENT), "imagenet"),
    "lite0-160": (dict(backbone="efficientnet_lite0", seg_features="none", input_size=(160, 160),
                       l2=1e-4),
                  dict(epochs=15, head_epochs=30, learning_rate=2e-4, patience=4,
                       bank_copies=10, augment=SMEAR_AUGMENT), "imagenet"),
    "lite0-224-hybrid": (dict(backbone="efficientnet_lite0", seg_features="gap",
                              input_size=(224, 224), seg_width=0.25, l2=1e-4),
                         dict(epochs=15, head_epochs=10, learning_rate=2e-4, patience=4,
                              bank_copies=10, augment=SMEAR_AUGMENT), "imagenet"),
    "small_cnn-128": (dict(backbone="small_cnn", seg_features="none", input_size=(128, 128),
                           l2=1e-4),
                      dict(epochs=30, learning_rate=1e-3, schedule="cosine",
                           augment=SMEAR_AUGMENT), None),
    # the reference study's classical rows, on the hand-made features at 128 px
    "svm-128": (dict(backbone="svm", seg_features="none", input_size=(128, 128)),
                dict(bank_copies=3, augment=SMEAR_AUGMENT), None),
    "xgboost-128": (dict(backbone="xgboost", seg_features="none", input_size=(128, 128)),
                    dict(bank_copies=3, augment=SMEAR_AUGMENT), None),
    # a cheaper partner for the CNN: the same features on a 64 px copy (a quarter of the pixels)
    "xgboost-64": (dict(backbone="xgboost", seg_features="none", input_size=(64, 64)),
                   dict(bank_copies=3, augment=SMEAR_AUGMENT), None),
}


def recipe(name: str) -> tuple[HybridConfig, TrainSettings, str | None]:
    try:
        model, settings, weights = RECIPES[name]
    except KeyError:
        raise SystemExit(f"Unknown recipe {name!r}. Valid: {', '.join(RECIPES)}") from None
    model = dict(model)
    config = HybridConfig.resolve(model.pop("backbone"), **model)
    return config, TrainSettings(**settings), weights


def fold_partition(prepared, folds: dict[str, int], fold: int, seed: int) -> Partition:
    """Held-out fold ``fold``; the rest split into train / val without splitting a group."""
    held = np.array([i for i, p in enumerate(prepared.relpaths) if folds[p] == fold], np.int64)
    rest = prepared.dataset.without({p: "held out" for p in prepared.relpaths if folds[p] == fold})
    inner = make_split(rest, seed, (1 - VAL_FRACTION, VAL_FRACTION, 0.0),
                       {p: prepared.groups[p] for p in (r.relpath for r in rest.records)})
    split = {e["path"]: e["split"] for e in inner.entries}
    index = {p: i for i, p in enumerate(prepared.relpaths)}
    pick = lambda name: np.array(sorted(index[p] for p, s in split.items() if s == name),  # noqa: E731
                                 np.int64)
    return Partition(pick("train"), pick("val"), held)


def run_fold(name: str, fold: int, prepared, folds, out: Path, seed: int) -> None:
    folder = out / f"fold{fold}"
    if (folder / "oof.json").is_file():
        log.info("%s fold %d: done already, skipped", name, fold)
        return
    config, settings, weights = recipe(name)
    settings = replace(settings, seed=seed + fold)
    partition = fold_partition(prepared, folds, fold, seed)
    log.info("%s fold %d: train %d, val %d, held out %d", name, fold, len(partition.train),
             len(partition.val), len(partition.test))
    runner = PreprocessRunner(config.preprocess_spec())
    started = time.perf_counter()
    outcome = fit_partition(config, settings, weights, prepared, partition, runner)
    pick = lambda idx: [prepared.images[i] for i in idx]  # noqa: E731
    held_logits = predict_logits(outcome.model, pick(partition.test), runner)
    val_logits = predict_logits(outcome.model, pick(partition.val), runner)
    folder.mkdir(parents=True, exist_ok=True)
    if hasattr(outcome.model, "save") and hasattr(outcome.model, "logits"):  # SVM, XGBoost
        outcome.model.save(folder)
    else:
        save_keras_model(outcome.model, folder / "model.keras")
    record = {
        "recipe": name, "fold": fold, "config": config.to_dict(), "settings": settings.to_dict(),
        "weights": weights, "seconds": round(time.perf_counter() - started, 1),
        "train_images_per_second": round(outcome.train_images_per_second, 1),
        "n_train": len(partition.train), "n_val": len(partition.val), "notes": outcome.notes,
        "classes": list(prepared.dataset.classes), "history": outcome.history,
        "held_out": {"paths": [prepared.relpaths[i] for i in partition.test],
                     "labels": prepared.labels[partition.test].tolist(),
                     "logits": held_logits.round(6).tolist()},
        "val": {"paths": [prepared.relpaths[i] for i in partition.val],
                "labels": prepared.labels[partition.val].tolist(),
                "logits": val_logits.round(6).tolist()},
    }
    atomic_write_text(folder / "oof.json", json.dumps(record) + "\n")
    acc = float((held_logits.argmax(1) == prepared.labels[partition.test]).mean())
    log.info("%s fold %d: held-out accuracy %.4f in %.0f s", name, fold, acc, record["seconds"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", required=True, choices=sorted(RECIPES))
    parser.add_argument("--data", default="../shared/data/ALL")
    parser.add_argument("--out", default="runs/cv")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--only-folds", default="", help="e.g. 0,1,2 (default: all)")
    parser.add_argument("--seed", type=int, default=2026, help="fold assignment and training seed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    out = Path(args.out) / args.recipe
    prepared = prepare_images(discover_dataset(args.data))
    folds = make_folds(prepared.dataset, args.folds, args.seed, prepared.groups)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "folds.json", json.dumps(
        {"k": args.folds, "seed": args.seed, "grouping": prepared.grouping,
         "data_manifest_sha256": prepared.dataset.manifest_sha256(), "folds": folds}, indent=1))
    wanted = ([int(f) for f in args.only_folds.split(",") if f.strip()] if args.only_folds
              else range(args.folds))
    for fold in wanted:
        run_fold(args.recipe, fold, prepared, folds, out, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
