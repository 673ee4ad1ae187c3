"""Grouped k-fold cross-validation of a training recipe over the development images.

Folds are stratified per class and built from duplicate groups (exact and near duplicates), so
no group straddles two folds. In each fold the other folds are split again (grouped, stratified)
into training and validation images; the validation images drive early stopping, the held-out
fold is only predicted. Each fold's results are written as it finishes (``fold<k>/oof.json``:
held-out paths, labels, logits; ``fold<k>/model.keras``), and a rerun skips the folds that are
done, so a long run resumes instead of restarting.

The recipe is a row of :mod:`leukedge.train.recipes`, the same row ``leukedge train --recipe``
trains. The folds' models are evaluated as the product runs them (ONNX FP32/INT8, colour
jitter, the summary table, ``calibration.json``) by ``leukedge crossval-eval``
(:mod:`leukedge.export.fold_evaluation`), which loads each fold with :func:`load_fold`.

Example:
    >>> run_crossval("../shared/data/ALL", "lite0-224-s3", "runs/cv", only_folds=[0])
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

from leukedge.modelkit.dataset import discover_dataset
from leukedge.modelkit.graph.runner import PreprocessRunner, network_logits
from leukedge.modelkit.run_folder import RunFolder
from leukedge.modelkit.run_record import RunRecord
from leukedge.modelkit.similar_fields import MAX_SHARE, similar_field_groups
from leukedge.modelkit.splits import make_folds, make_split
from leukedge.runtime.files import atomic_write_text

from .fit import Prepared, fit_partition, prepare_images
from .model import HybridConfig
from .recipes import CV_FOLDS, CV_SEED, get_recipe
from .run_folder import save_keras_model
from .two_phase import Partition

log = logging.getLogger(__name__)
VAL_FRACTION = 0.15  # of the non-held-out images, for early stopping


def fold_partition(prepared: Prepared, folds: dict[str, int], fold: int, seed: int
                   ) -> Partition:
    """Held-out fold ``fold``; the rest split into train / val without splitting a group."""
    held = np.array([i for i, p in enumerate(prepared.relpaths) if folds[p] == fold], np.int64)
    rest = prepared.dataset.without({p: "held out" for p in prepared.relpaths if folds[p] == fold})
    inner = make_split(rest, seed, (1 - VAL_FRACTION, VAL_FRACTION, 0.0),
                       {p: prepared.groups[p] for p in (r.relpath for r in rest.records)})
    split = {e["path"]: e["split"] for e in inner.entries}
    index = {p: i for i, p in enumerate(prepared.relpaths)}

    def pick(name: str) -> np.ndarray:
        return np.array(sorted(index[p] for p, s in split.items() if s == name), np.int64)

    return Partition(pick("train"), pick("val"), held)


def _predictions(prepared: Prepared, indices: np.ndarray, logits: np.ndarray) -> dict:
    return {"paths": [prepared.relpaths[i] for i in indices],
            "labels": prepared.labels[indices].tolist(), "logits": logits.round(6).tolist()}


def run_fold(recipe: str, fold: int, prepared: Prepared, folds: dict[str, int], out: Path,
             seed: int) -> Path:
    """Train and predict one fold into ``out/fold<k>/`` (skipped when its oof.json exists)."""
    folder = out / f"fold{fold}"
    if (folder / "oof.json").is_file():
        log.info("%s fold %d: done already, skipped", recipe, fold)
        return folder
    row = get_recipe(recipe)
    config, settings = row.config(), replace(row.settings(), seed=seed + fold)
    partition = fold_partition(prepared, folds, fold, seed)
    log.info("%s fold %d: train %d, val %d, held out %d", recipe, fold, len(partition.train),
             len(partition.val), len(partition.test))
    runner = PreprocessRunner(config.preprocess_spec())
    started = time.perf_counter()
    outcome = fit_partition(config, settings, row.weights, prepared, partition, runner)
    pick = lambda idx: [prepared.images[i] for i in idx]  # noqa: E731
    held_logits = network_logits(outcome.model, pick(partition.test), runner)
    val_logits = network_logits(outcome.model, pick(partition.val), runner)
    folder.mkdir(parents=True, exist_ok=True)
    if hasattr(outcome.model, "save") and hasattr(outcome.model, "logits"):  # SVM, XGBoost
        outcome.model.save(folder)
    else:
        save_keras_model(outcome.model, RunFolder(folder).keras_model)
    record = {
        "recipe": recipe, "fold": fold, "config": config.to_dict(),
        "settings": settings.to_dict(), "weights": row.weights,
        "seconds": round(time.perf_counter() - started, 1),
        "train_images_per_second": round(outcome.train_images_per_second, 1),
        "n_train": len(partition.train), "n_val": len(partition.val), "notes": outcome.notes,
        "classes": list(prepared.dataset.classes), "history": outcome.history,
        "held_out": _predictions(prepared, partition.test, held_logits),
        "val": _predictions(prepared, partition.val, val_logits),
    }
    atomic_write_text(folder / "oof.json", json.dumps(record) + "\n")
    acc = float((held_logits.argmax(1) == prepared.labels[partition.test]).mean())
    log.info("%s fold %d: held-out accuracy %.4f in %.0f s", recipe, fold, acc,
             record["seconds"])
    return folder


GROUPINGS = ("duplicates", "similar")


def fold_groups(prepared: Prepared, grouping: str) -> tuple[dict[str, str], str]:
    """(relpath -> group, description) that folds keep together: duplicate groups, or
    similar-field groups (one slide's fields, :mod:`leukedge.modelkit.similar_fields`)."""
    if grouping == "duplicates":
        return prepared.groups, prepared.grouping
    if grouping == "similar":
        groups = similar_field_groups(prepared.images, prepared.relpaths, prepared.labels,
                                      prepared.groups)
        return groups, (f"{prepared.grouping}, plus similar fields (stain and light; at most "
                        f"{MAX_SHARE:.0%} of a class per group)")
    raise ValueError(f"Unknown --grouping {grouping!r}. Valid: {', '.join(GROUPINGS)}")


def run_crossval(data_dir: str | os.PathLike, recipe: str, out_dir: str | os.PathLike,
                 folds: int = CV_FOLDS, seed: int = CV_SEED,
                 only_folds: Optional[Iterable[int]] = None,
                 grouping: str = "duplicates") -> Path:
    """Cross-validate ``recipe`` on ``data_dir``; returns ``out_dir/<recipe>`` (folds.json and
    one folder per fold), or ``out_dir/<recipe>-similar`` with similar-field grouping.

    Raises:
        ValueError: an unknown recipe or grouping, a fold number out of range, or an unusable
            dataset.
    """
    row = get_recipe(recipe)
    if grouping not in GROUPINGS:
        raise ValueError(f"Unknown --grouping {grouping!r}. Valid: {', '.join(GROUPINGS)}")
    if folds < 2:
        raise ValueError(f"--folds must be >= 2, got {folds}")
    wanted = list(range(folds)) if only_folds is None else sorted(set(only_folds))
    bad = [f for f in wanted if not 0 <= f < folds]
    if bad:
        raise ValueError(f"--only-folds {bad} out of range: folds are 0-{folds - 1}")
    out = Path(out_dir) / (row.name if grouping == "duplicates" else f"{row.name}-{grouping}")
    prepared = prepare_images(discover_dataset(data_dir))
    groups, described = fold_groups(prepared, grouping)
    assignment = make_folds(prepared.dataset, folds, seed, groups)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "folds.json", json.dumps(
        {"k": folds, "seed": seed, "grouping": described, "recipe": row.to_dict(),
         "data_manifest_sha256": prepared.dataset.manifest_sha256(), "folds": assignment},
        indent=1))
    for fold in wanted:
        run_fold(row.name, fold, prepared, assignment, out, seed)
    return out


def fold_record(oof: dict) -> RunRecord:
    """The run record of a fold's model, from its ``oof.json`` (uncalibrated: the evaluation
    fits the temperature on the fold's validation logits)."""
    config = HybridConfig.from_dict(oof["config"])
    return RunRecord(
        classes=tuple(oof["classes"]), backbone=config.backbone, model=config.to_dict(),
        preprocessing=config.preprocess_spec(), input_names=config.input_names,
        settings=oof["settings"], weights={"init": oof["weights"] or "none"}, data={},
        data_manifest_sha256="", split_manifest_sha256="", seed=oof["settings"]["seed"],
        parameters={}, test_metrics={}, training={}, versions={}, created="",
        run_id=f"{oof['recipe']}-fold{oof['fold']}")


def load_fold(folder: str | os.PathLike) -> tuple[Any, RunRecord]:
    """A finished fold's trained model (Keras, or the ONNX network of an SVM/XGBoost row) and
    its run record: what :func:`leukedge.export.fold_evaluation.evaluate_crossval` evaluates.

    Raises:
        ValueError: the fold has no ``oof.json`` or its model cannot be read.
    """
    from . import load_model
    from .classical import load_network

    run = RunFolder(Path(folder))
    oof_file = run.root / "oof.json"
    if not oof_file.is_file():
        raise ValueError(f"{run.root}: not a finished fold (no oof.json)")
    record = fold_record(json.loads(oof_file.read_text()))
    model = load_network(run.network) if run.classical else load_model(run.keras_model)
    return model, record
