"""End-to-end training: every trainable layer, every step, through the full network.

Adam, categorical cross-entropy on the logits with balanced class weights, and one of two
schedules: ``plateau`` (the reference study's: early stopping on the validation loss with
patience, best weights restored, ReduceLROnPlateau by 0.1) or ``cosine`` (a linear warm-up,
cosine decay to 1% of the rate, no early stop, the best validation-loss epoch restored). For
small from-scratch models the validation accuracy swings by tens of points from epoch to epoch
until the rate has decayed, so a plateau rule stops them too early.
``tf.distribute.MirroredStrategy`` is used when several GPUs are visible.
"""

from __future__ import annotations

import logging
import time
from typing import Sequence

import numpy as np

from leukedge.modelkit.graph.runner import PreprocessRunner

from .data import BatchSource, class_weights, to_tf_dataset
from .schedule import cosine_learning_rate
from .two_phase import FitOutcome, Partition

log = logging.getLogger(__name__)


def _strategy():
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        log.info("Training on %d GPUs with MirroredStrategy", len(gpus))
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _callbacks(settings, extra: Sequence) -> list:
    import keras

    if settings.schedule == "cosine":
        rate = keras.callbacks.LearningRateScheduler(
            lambda epoch: cosine_learning_rate(epoch, settings.epochs, settings.learning_rate))
        keep_best = keras.callbacks.EarlyStopping("val_loss", patience=settings.epochs + 1,
                                                  restore_best_weights=True)
        return [rate, keep_best, *extra]
    return [keras.callbacks.EarlyStopping("val_loss", patience=settings.patience,
                                          restore_best_weights=True),
            keras.callbacks.ReduceLROnPlateau("val_loss", factor=0.1, patience=settings.lr_patience),
            *extra]


def fit_end_to_end(build, config, settings, images: Sequence[np.ndarray], labels: np.ndarray,
                   partition: Partition, runner: PreprocessRunner, callbacks: Sequence = (),
                   verbose: int | str = 2) -> FitOutcome:
    """Train ``build()`` (a function returning the full Keras model) on the partition.

    The model is built inside the distribution strategy's scope.
    """
    import keras

    started = time.perf_counter()
    k = config.num_classes
    pick = lambda idx: [images[i] for i in idx]  # noqa: E731
    train_src = BatchSource(pick(partition.train), labels[partition.train], runner,
                            settings.batch_size, k, settings.augment, shuffle=True, seed=settings.seed,
                            weights=class_weights(labels[partition.train], k))
    val_src = BatchSource(pick(partition.val), labels[partition.val], runner, settings.batch_size, k)
    with _strategy().scope():
        model = build()
        model.compile(optimizer=keras.optimizers.Adam(settings.learning_rate),
                      loss=keras.losses.CategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
    fit_started = time.perf_counter()
    history = model.fit(to_tf_dataset(train_src), validation_data=to_tf_dataset(val_src),
                        epochs=settings.epochs, callbacks=_callbacks(settings, callbacks),
                        shuffle=False, verbose=verbose)  # BatchSource shuffles
    fit_seconds = time.perf_counter() - fit_started
    h = {key: [float(v) for v in values] for key, values in history.history.items()}
    seen = len(partition.train) * len(h.get("loss", []))
    return FitOutcome(model=model, history=h, seconds=time.perf_counter() - started,
                      train_images_per_second=seen / fit_seconds if fit_seconds else 0.0)

