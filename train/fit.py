"""``train()``: dataset folder -> trained classifier and a complete run folder.

Steps: decode the images (cached), group exact and near duplicates, split 64/20/16 per class
without splitting a group, train (end to end, or two-phase on the augmentation bank for a
pretrained EfficientNet-Lite, see :mod:`leukedge.train.settings`), calibrate the temperature and
the review threshold on the validation split, score the test split, write the run folder.

What is trained is a recipe (:mod:`leukedge.train.recipes`), the same one ``leukedge train``
trains: by default the bundled models' CNN; ``config``, ``settings`` and ``weights`` replace
parts of it.

Example:
    >>> result = train("/data/ALL", "runs/lite0")                     # the default recipe
    >>> result = train("/data/ALL", "runs/svm", recipe="svm-128")
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from leukedge.modelkit.backbones import resolve_weights
from leukedge.modelkit.dataset import Dataset, discover_dataset
from leukedge.modelkit.duplicates import duplicate_groups, thumbnail
from leukedge.modelkit.graph.runner import PreprocessRunner, network_logits
from leukedge.modelkit.run_folder import RunFolder
from leukedge.modelkit.run_record import RunRecord
from leukedge.modelkit.splits import make_split, write_split_manifest

from .end_to_end import fit_end_to_end
from .feature_bank import BankSpec, build_bank, model_fingerprint
from .image_cache import cached_images
from .model import HybridConfig, build_parts
from .recipes import pick_recipe
from .report import calibrate, new_record, score, test_table, write_run
from .settings import TrainSettings
from .two_phase import FitOutcome, Partition, fit_two_phase

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What :func:`train` returns: the run folder, its run record, the trained model."""

    out_dir: Path
    record: RunRecord
    model: Any = None


@dataclass
class Prepared:
    """Decoded images, their records and labels, and their duplicate groups."""

    dataset: Dataset
    images: list
    relpaths: list[str]
    labels: np.ndarray
    groups: dict[str, str]
    grouping: str


def prepare_out_dir(out_dir: str | os.PathLike, overwrite: bool) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} exists and is not a folder")
    run = RunFolder(out)
    existing = run.existing()
    # run.json is written last: without it the folder holds what a failed run left behind
    if existing and run.record.exists() and not overwrite:
        raise ValueError(f"--out {str(out)!r} already holds a run ({', '.join(existing)}); choose "
                         "another folder or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    return out


def prepare_images(dataset: Dataset, near_duplicates: bool = True) -> Prepared:
    """Decode (dropping unreadable files, which are logged) and group duplicates."""
    images, records, bad = cached_images(dataset)
    for relpath, reason in sorted(bad.items()):
        log.warning("Skipping %s: %s", relpath, reason)
    dataset = dataset.without(bad)
    relpaths = [r.relpath for r in records]
    thumbs = np.stack([thumbnail(im) for im in images]) if near_duplicates and images else None
    groups = duplicate_groups(relpaths, [r.sha256 for r in records], thumbs)
    grouping = ("sha256 of file bytes, plus near duplicates (32x32 grey thumbnails within "
                "12 RMS)" if near_duplicates else "sha256 of file bytes")
    return Prepared(dataset, images, relpaths, dataset.label_indices(records), groups, grouping)


def exclude_images(prepared: Prepared, files: Sequence[str | os.PathLike]
                   ) -> tuple[Prepared, list[str]]:
    """Keep the images ``files`` name (image files or folders of them) out of training.

    A dataset image is left out when its bytes equal one of the given files, and so is every
    image of its duplicate group (a near copy would leak it back). Returns the reduced images
    and the sorted sha256 of everything kept out (the given files and the dataset images left
    out), which the run record and the model contract carry.

    Raises:
        ValueError: a path under ``--exclude`` does not exist or holds no image.
    """
    from leukedge.runtime.files import find_images, sha256_file

    if not files:
        return prepared, []
    listing = find_images([str(f) for f in files], recursive=True)
    if listing.problems:
        where, why = listing.problems[0]
        raise ValueError(f"--exclude: cannot read {where}: {why}")
    missing = [str(p) for p in listing.paths if not p.is_file()]
    if missing or not listing.paths:
        raise ValueError(f"--exclude: no image file {missing[0] if missing else ', '.join(map(str, files))}")
    digests = {sha256_file(p) for p in listing.paths}
    records = {r.relpath: r for r in prepared.dataset.records}
    groups = {prepared.groups[p] for p in prepared.relpaths if records[p].sha256 in digests}
    out = {p: "kept out of training (--exclude)" for p in prepared.relpaths
           if prepared.groups[p] in groups}
    keep = [i for i, p in enumerate(prepared.relpaths) if p not in out]
    reduced = Prepared(prepared.dataset.without(out), [prepared.images[i] for i in keep],
                       [prepared.relpaths[i] for i in keep], prepared.labels[keep],
                       {p: g for p, g in prepared.groups.items() if p not in out},
                       prepared.grouping)
    log.info("--exclude: %d given image(s) keep %d dataset image(s) out of training",
             len(digests), len(out))
    return reduced, sorted(digests | {records[p].sha256 for p in out})


def fit_partition(config: HybridConfig, settings: TrainSettings, weights: Optional[str],
                  prepared: Prepared, partition: Partition, runner: PreprocessRunner,
                  callbacks: Sequence = (), verbose: int | str = 2) -> FitOutcome:
    """Train one model on one partition (what a run and every cross-validation fold do)."""
    settings = settings.for_backbone(config.row)
    method = settings.resolved_method(config.row.kind, weights)
    if method == "classical":
        from .classical import fit_classical

        return fit_classical(config, settings, prepared, partition, runner)
    import keras

    keras.utils.set_random_seed(settings.seed)
    if method == "end_to_end":
        return fit_end_to_end(lambda: _full_model(config, weights), config, settings,
                              prepared.images, prepared.labels, partition, runner, callbacks,
                              verbose)
    parts = build_parts(config, weights, settings.fine_tune_from)
    started = time.perf_counter()
    bank = build_bank(prepared.images, prepared.relpaths, parts.lower, runner,
                      BankSpec(settings.bank_copies, settings.bank_seed, settings.augment),
                      model_fingerprint(parts.lower))
    bank_seconds = time.perf_counter() - started
    outcome = fit_two_phase(parts, config, settings, bank, prepared.images, prepared.labels,
                            partition, runner)
    outcome.notes.append(f"feature bank {bank.key} ready in {bank_seconds:.1f} s")
    outcome.seconds += bank_seconds
    outcome.cut = parts.cut
    return outcome


def _full_model(config: HybridConfig, weights: Optional[str]):
    """The model for end-to-end training; a pretrained EfficientNet-Lite keeps its ImageNet
    BatchNorm statistics (its BatchNorm layers frozen), as in two-phase training."""
    import keras

    parts = build_parts(config, weights)
    if parts.backbone is not None and weights is not None:
        for layer in parts.backbone.layers.values():
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    return parts.full


def partition_from_manifest(prepared: Prepared, manifest) -> Partition:
    where = {e["path"]: e["split"] for e in manifest.entries}
    index = {split: np.array([i for i, p in enumerate(prepared.relpaths) if where[p] == split],
                             np.int64) for split in ("train", "val", "test")}
    return Partition(index["train"], index["val"], index["test"])


def weights_info(config: HybridConfig, weights: Optional[str]) -> dict:
    """Where the initial weights came from, for the run record and the contract."""
    if weights is None:
        return {"init": "none"}
    if weights != "imagenet":
        from leukedge.runtime.files import sha256_file

        return {"init": weights, "sha256": sha256_file(weights)}
    if config.row.kind == "efficientnet_lite":
        from .pretrained import checkpoint_source

        source = checkpoint_source(config.row.constructor)
        return {"init": "imagenet", "origin": source.origin, "sha256": source.sha256,
                "license": source.license}
    return {"init": "imagenet", "origin": f"keras.applications.{config.row.constructor}"}


RECIPE_WEIGHTS = "recipe"  # train()'s default: the weights the recipe names


def resolve_recipe(recipe: Optional[str], config: Optional[HybridConfig],
                   settings: Optional[TrainSettings], weights: Optional[str]
                   ) -> tuple[HybridConfig, TrainSettings, Optional[str]]:
    """(config, settings, weights): the recipe's, with what the caller gave put in their place.

    The recipe is ``recipe``; else, with a ``config``, its backbone's first recipe; else the
    default recipe.
    """
    row = pick_recipe(recipe, config.backbone if config is not None else None)
    return (config or row.config(), settings or row.settings(),
            row.weights if weights == RECIPE_WEIGHTS else weights)


def train(data_dir: str | os.PathLike, out_dir: str | os.PathLike,
          config: Optional[HybridConfig] = None, settings: Optional[TrainSettings] = None,
          weights: Optional[str] = RECIPE_WEIGHTS, *, recipe: Optional[str] = None,
          callbacks: Sequence = (), verbose: int | str = 2, overwrite: bool = False,
          exclude: Sequence[str | os.PathLike] = ()) -> TrainResult:
    """Train a classifier on a labelled dataset folder and write a complete run folder.

    Args:
        data_dir: ``<root>/<class>/*.jpg`` or the ALL layout (``<root>/Original/<class>/...``).
        out_dir: the run folder to create (refused if it already holds a run, unless overwrite).
        config: the architecture; default: the recipe's.
        settings: how to train; default: the recipe's.
        weights: None, "imagenet" or a local weights file of the backbone; default: the
            recipe's.
        recipe: a row of :mod:`leukedge.train.recipes`; default: ``config``'s backbone's first
            recipe, or :data:`~leukedge.train.recipes.DEFAULT_RECIPE` without a ``config``.
        callbacks: extra Keras callbacks (end-to-end training only).
        verbose: Keras ``fit`` verbosity (end-to-end training only).
        overwrite: replace the run files of an existing run folder.
        exclude: images (files or folders) to keep out of training with their duplicates,
            e.g. the sample images shipped beside a model (see :func:`exclude_images`).

    Raises:
        ValueError: a setting, the dataset or the output folder is unusable; the message names
            the option.
    """
    config, settings, weights = resolve_recipe(recipe, config, settings, weights)
    config.validate()
    settings.validate()
    settings = settings.for_backbone(config.row)  # the run record keeps what was used
    weights = resolve_weights(config.row, weights)
    settings.resolved_method(config.row.kind, weights)
    dataset = discover_dataset(data_dir, settings.variant)
    out = prepare_out_dir(out_dir, overwrite)
    started = time.perf_counter()
    prepared, excluded = exclude_images(prepare_images(dataset, settings.near_duplicates),
                                        exclude)
    manifest = make_split(prepared.dataset, settings.seed, settings.fractions, prepared.groups,
                          prepared.grouping)
    _check_split_sizes(manifest, settings, len(prepared.relpaths))
    split_sha = write_split_manifest(RunFolder(out).split, manifest)
    partition = partition_from_manifest(prepared, manifest)
    runner = PreprocessRunner(config.preprocess_spec())
    outcome = fit_partition(config, settings, weights, prepared, partition, runner, callbacks,
                            verbose)
    return _finish(out, config, settings, weights, prepared, manifest, split_sha, partition,
                   runner, outcome, time.perf_counter() - started, excluded)


def _check_split_sizes(manifest, settings: TrainSettings, n: int) -> None:
    empty = [split for split, counts in manifest.counts().items()
             if not sum(counts.values()) and not (split == "test" and settings.fractions[2] == 0)]
    if empty:
        raise ValueError(f"Too few images for a {'/'.join(map(str, settings.fractions))} split: "
                         f"the {', '.join(empty)} split(s) would be empty ({n} usable images)")


def _finish(out: Path, config, settings, weights, prepared: Prepared, manifest, split_sha: str,
            partition: Partition, runner, outcome: FitOutcome, seconds: float,
            excluded: Sequence[str] = ()) -> TrainResult:
    model, classes = outcome.model, prepared.dataset.classes
    pick = lambda idx: [prepared.images[i] for i in idx]  # noqa: E731
    val_logits = network_logits(model, pick(partition.val), runner, settings.batch_size)
    calibration, review_below, review = calibrate(val_logits, prepared.labels[partition.val])
    test_logits = network_logits(model, pick(partition.test), runner, settings.batch_size)
    test_labels = prepared.labels[partition.test]
    history = outcome.history
    val_loss = history.get("val_loss") or [float("nan")]
    val_labels = prepared.labels[partition.val]
    val_errors = int((val_logits.argmax(axis=1) != val_labels).sum()) if len(val_labels) else 0
    training = {"method": settings.resolved_method(config.row.kind, weights),
                # the kept model on the validation images, as calibration saw it (the epoch
                # log's val_accuracy is measured on the float16 feature bank and may differ)
                "val_images": int(len(val_labels)), "val_errors": val_errors,
                "epochs_run": len(val_loss), "best_val_loss": float(np.nanmin(val_loss)),
                "best_epoch": int(np.nanargmin(val_loss)) + 1, "seconds": round(seconds, 1),
                "train_images_per_second": round(outcome.train_images_per_second, 1),
                "notes": outcome.notes, "fine_tune_from": outcome.cut}
    if "chosen" in history:  # the classical rows: the hyper-parameters the grid chose
        training["chosen"] = history["chosen"]
    record = new_record(model=model, config=config, settings=settings,
                        weights=weights_info(config, weights), dataset=prepared.dataset,
                        manifest=manifest, split_sha=split_sha,
                        test_metrics=score(test_logits, test_labels, classes,
                                           calibration.temperature),
                        training=training, calibration=calibration, review_below=review_below,
                        run_name=out.resolve().name, excluded_sha256=excluded)
    table = test_table([prepared.relpaths[i] for i in partition.test], classes, test_labels,
                       test_logits, calibration.temperature)
    record = write_run(out, model, history, record, table, review)
    return TrainResult(out, record, model)

