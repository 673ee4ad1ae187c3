"""``train()``: dataset folder -> trained hybrid and a complete run folder.

Adam (1e-4), categorical cross-entropy with balanced class weights, early stopping on val_loss
(patience 5, best weights restored), ReduceLROnPlateau (factor 0.1, patience 3) and a best
checkpoint, as the seed trained; ``tf.distribute.MirroredStrategy`` when several GPUs are visible.

``schedule="cosine"`` is the alternative for small from-scratch models: a linear warm-up over
``WARMUP_EPOCHS`` epochs, then cosine decay to 1% of the initial rate at the last epoch, and no
early stopping (the weights of the best val_loss epoch are still restored). On the ALL data the
validation accuracy of a from-scratch model swings by tens of points between epochs until the
rate has decayed, so a plateau rule on val_loss stops such runs too early.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from leukedge.runtime.dataset import (DEFAULT_FRACTIONS, Dataset, SplitManifest, discover_dataset,
                                      make_split, select_split, write_split_manifest)
from leukedge.runtime.preprocess import PreprocessSpec

from .augment import AugmentSpec
from .backbones import resolve_weights
from .data import BatchSource, class_weights, load_images, to_tf_dataset
from .model import HybridConfig
from .run_folder import RUN_FILES

log = logging.getLogger(__name__)
CHECKPOINT = ".checkpoint_best.keras"
SCHEDULES = ("plateau", "cosine")
WARMUP_EPOCHS = 2
FINAL_LR_FRACTION = 0.01


def cosine_learning_rate(epoch: int, epochs: int, initial: float,
                         warmup: int = WARMUP_EPOCHS) -> float:
    """The cosine schedule's rate for 0-based ``epoch`` of ``epochs``: warm-up, then decay."""
    warmup = min(warmup, max(epochs - 1, 0))
    if epoch < warmup:
        return initial * (epoch + 1) / (warmup + 1)
    span = max(epochs - 1 - warmup, 1)
    progress = min((epoch - warmup) / span, 1.0)
    floor = initial * FINAL_LR_FRACTION
    return floor + (initial - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class TrainSettings:
    """How to train (recorded in run.json); the architecture is a :class:`HybridConfig`."""

    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 1e-4
    seed: int = 42
    variant: str = "original"
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    patience: int = 5
    lr_patience: int = 3
    schedule: str = "plateau"
    augment: AugmentSpec = field(default_factory=AugmentSpec)

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "patience", "lr_patience"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"Unknown schedule {self.schedule!r}. Valid: {', '.join(SCHEDULES)}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")


@dataclass
class SplitData:
    """The decoded images, labels and records of one split."""

    images: list
    labels: np.ndarray
    records: list


@dataclass
class TrainResult:
    """What :func:`train` returns: the run folder, its run.json content, the trained model."""

    out_dir: Path
    run: dict
    model: Any = None


def _prepare_out_dir(out_dir: str | os.PathLike, overwrite: bool) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"Output {str(out)!r} exists and is not a folder")
    existing = [f for f in RUN_FILES if (out / f).exists()]
    if existing and not overwrite:
        raise ValueError(f"{str(out)!r} already holds a run ({', '.join(existing)}); choose another "
                         "folder or pass overwrite=True")
    out.mkdir(parents=True, exist_ok=True)
    return out


def load_splits(dataset: Dataset, settings: TrainSettings
                ) -> tuple[Dataset, SplitManifest, dict[str, SplitData]]:
    """Decode (dropping unreadable files), split and group the images by split."""
    images, records, bad = load_images(dataset, dataset.records)
    for relpath, reason in sorted(bad.items()):
        log.warning("Skipping %s: %s", relpath, reason)
    dataset = dataset.without(bad)
    manifest = make_split(dataset, settings.seed, settings.fractions)
    empty = [split for split, counts in manifest.counts().items() if not sum(counts.values())]
    if empty:
        raise ValueError(f"Too few images for a {'/'.join(map(str, settings.fractions))} split: "
                         f"the {', '.join(empty)} split(s) would be empty "
                         f"({len(dataset.records)} usable images)")
    by_path = {r.relpath: im for r, im in zip(records, images)}
    splits = {}
    for split in ("train", "val", "test"):
        recs = select_split(dataset, manifest, split)
        splits[split] = SplitData([by_path[r.relpath] for r in recs],
                                  dataset.label_indices(recs), recs)
    return dataset, manifest, splits


def _strategy():
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        log.info("Training on %d GPUs with MirroredStrategy", len(gpus))
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _compile(config: HybridConfig, weights: Optional[str], learning_rate: float):
    import keras

    from .model import build_hybrid

    with _strategy().scope():
        model = build_hybrid(config, weights=weights)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                      loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def _callbacks(out: Path, settings: TrainSettings, extra: Sequence) -> list:
    import keras

    checkpoint = keras.callbacks.ModelCheckpoint(str(out / CHECKPOINT), monitor="val_loss",
                                                 save_best_only=True)
    if settings.schedule == "cosine":
        # No early stop: patience covers the whole run, the best epoch's weights come back.
        rate = keras.callbacks.LearningRateScheduler(
            lambda epoch: cosine_learning_rate(epoch, settings.epochs, settings.learning_rate))
        keep_best = keras.callbacks.EarlyStopping("val_loss", patience=settings.epochs + 1,
                                                  restore_best_weights=True)
        return [rate, keep_best, checkpoint, *extra]
    return [keras.callbacks.EarlyStopping("val_loss", patience=settings.patience,
                                          restore_best_weights=True),
            keras.callbacks.ReduceLROnPlateau("val_loss", factor=0.1, patience=settings.lr_patience),
            checkpoint, *extra]


def train(data_dir: str | os.PathLike, out_dir: str | os.PathLike, backbone: str = "small_cnn",
          weights: Optional[str] = None, epochs: int = 30, batch_size: int = 32,
          seg_features: str = "gap", input_size: Optional[Sequence[int]] = None, seed: int = 42,
          variant: str = "original", color_jitter: bool = True, augment: bool = True,
          learning_rate: float = 1e-4, callbacks: Sequence = (), verbose: int | str = 2,
          overwrite: bool = False, augment_ranges: Optional[dict] = None,
          **model_options) -> TrainResult:
    """Train a hybrid on a labelled dataset folder and write a complete run folder.

    Args:
        data_dir: ``<root>/<class>/*.jpg`` or the ALL layout (``<root>/Original/<class>/...``).
        out_dir: the run folder to create (refused if it already holds a run, unless overwrite).
        backbone: a registry name (``leukedge.train.backbone_names()``).
        weights: None, "imagenet" or a local .h5/.weights.h5 file of the backbone.
        epochs: maximum epochs (early stopping may end sooner).
        batch_size: global batch size.
        seg_features: "gap" (edge default), "flatten" (the seed's) or "none" (no segmentation
            branch: the image-only ablation).
        input_size: (height, width); default: the backbone row's.
        seed: seed of the split, the weights' initialisation, the order and the augmentation.
        variant: "original" or "segmented" (the ALL layout's two folders).
        color_jitter: add hue/saturation/brightness jitter to the seed's augmentation.
        augment: False trains on un-augmented images.
        augment_ranges: overrides of the seed's geometric ranges (``rotation_deg``, ``shift``,
            ``zoom``, ``shear_deg``, ``right_angles``); see :class:`~leukedge.train.augment.AugmentSpec`.
        learning_rate: Adam's initial learning rate.
        callbacks: extra Keras callbacks (e.g. a progress display).
        verbose: Keras ``fit`` verbosity.
        overwrite: replace the run files of an existing run folder.
        **model_options: other :class:`HybridConfig` fields (seg_width, seg_depth, head_units,
            dropout, l2) and TrainSettings fields (patience, lr_patience, schedule, fractions).

    Returns:
        A :class:`TrainResult` with the run folder, its run.json content and the model.
    """
    settings_keys = {"patience", "lr_patience", "schedule", "fractions"}
    extra_settings = {k: model_options.pop(k) for k in list(model_options) if k in settings_keys}
    config = HybridConfig.resolve(backbone, input_size=input_size, seg_features=seg_features,
                                  **model_options)
    weights = resolve_weights(config.row, weights)
    settings = TrainSettings(epochs=int(epochs), batch_size=int(batch_size),
                             learning_rate=float(learning_rate), seed=int(seed), variant=variant,
                             augment=AugmentSpec(color_jitter=color_jitter, enabled=augment,
                                                 **(augment_ranges or {})),
                             **extra_settings)
    settings.validate()
    dataset = discover_dataset(data_dir, settings.variant)
    out = _prepare_out_dir(out_dir, overwrite)
    return _run(dataset, out, config, settings, weights, list(callbacks), verbose)


def _run(dataset: Dataset, out: Path, config: HybridConfig, settings: TrainSettings,
         weights: Optional[str], callbacks: list, verbose) -> TrainResult:
    import keras

    from .report import evaluate_split, write_run

    started = time.time()
    keras.utils.set_random_seed(settings.seed)
    dataset, manifest, splits = load_splits(dataset, settings)
    split_sha = write_split_manifest(out / "split.json", manifest)
    spec = PreprocessSpec(input_size=config.input_size, scale=config.row.scale)
    k = len(dataset.classes)
    weights_per_class = class_weights(splits["train"].labels, k)
    train_src = BatchSource(splits["train"].images, splits["train"].labels, spec,
                            settings.batch_size, k, settings.augment, shuffle=True,
                            seed=settings.seed, weights=weights_per_class,
                            inputs=config.input_names)
    val_src = BatchSource(splits["val"].images, splits["val"].labels, spec, settings.batch_size, k,
                          inputs=config.input_names)
    model = _compile(config, weights, settings.learning_rate)
    log.info("Training %s on %d images (val %d, test %d)", model.name, len(train_src.images),
             len(val_src.images), len(splits["test"].images))
    history = model.fit(to_tf_dataset(train_src), validation_data=to_tf_dataset(val_src),
                        epochs=settings.epochs, callbacks=_callbacks(out, settings, callbacks),
                        shuffle=False, verbose=verbose)  # BatchSource shuffles
    test_metrics, predictions = evaluate_split(model, splits["test"], dataset.classes, spec,
                                               settings.batch_size)
    run = write_run(out, model, history.history, test_metrics, predictions,
                    dict(dataset=dataset, manifest=manifest, split_sha=split_sha, spec=spec,
                         config=config, settings=settings, weights=weights,
                         class_weights=weights_per_class, data_dir=dataset.root,
                         seconds=time.time() - started))
    (out / CHECKPOINT).unlink(missing_ok=True)
    return TrainResult(out, run, model)
