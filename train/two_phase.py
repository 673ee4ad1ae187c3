"""Two-phase fine-tuning of a pretrained EfficientNet-Lite on the augmentation bank.

Phase 1 trains the head with the whole backbone frozen: for an image-only model on the
backbone's pooled features of every bank copy, computed once (seconds per epoch); for a hybrid,
head and segmentation branch together, through the frozen upper blocks. Phase 2 unfreezes the
upper blocks (BatchNorm layers keep ImageNet's statistics) and fine-tunes them with the head at
a lower rate, cosine-decayed; each epoch reads one random augmented copy of every training image
from the bank. Both phases stop early on the validation loss and restore the best epoch.

Example:
    >>> outcome = fit_two_phase(parts, config, settings, bank, images, labels, partition, runner)
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from leukedge.modelkit.confidence import nll
from leukedge.modelkit.graph.runner import PreprocessRunner

from .data import class_weights, run_graph
from .feature_bank import FeatureBank
from .schedule import cosine_learning_rate

log = logging.getLogger(__name__)
PHASE1_BATCH = 64


@dataclass(frozen=True)
class Partition:
    """Indices of the training, validation and (optional) test images."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


@dataclass
class FitOutcome:
    """The trained full model and what happened on the way."""

    model: object
    history: dict
    seconds: float
    train_images_per_second: float
    notes: list = field(default_factory=list)
    cut: Optional[int] = None  # first fine-tuned block (two-phase training)


class _EarlyStop:
    """Keeps the weights of the best validation loss; says when patience has run out."""

    def __init__(self, model, patience: int):
        self.model, self.patience = model, patience
        self.best, self.best_epoch, self.weights, self.waited = np.inf, -1, None, 0

    def update(self, epoch: int, val_loss: float) -> bool:
        if val_loss < self.best - 1e-6:
            self.best, self.best_epoch, self.waited = val_loss, epoch, 0
            self.weights = self.model.get_weights()
            return False
        self.waited += 1
        return self.waited >= self.patience

    def restore(self) -> None:
        if self.weights is not None:
            self.model.set_weights(self.weights)


def _one_hot(labels: np.ndarray, k: int) -> np.ndarray:
    return np.eye(k, dtype=np.float32)[labels]


def _val_metrics(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of logits, unweighted."""
    return nll(logits, labels), float((np.asarray(logits).argmax(1) == labels).mean())


def _loss():
    import keras

    return keras.losses.CategoricalCrossentropy(from_logits=True)


def _freeze_backbone(parts, trainable_from: Optional[int]) -> None:
    """Backbone layers of blocks >= ``trainable_from`` trainable (None: all frozen); BatchNorm
    layers always frozen (inference mode)."""
    import keras

    net = parts.backbone
    frozen = set(net.frozen_layer_names(trainable_from if trainable_from is not None
                                        else net.num_blocks))
    if trainable_from is None:
        frozen |= {"head_conv", "head_bn", "head_relu"}
    for name, layer in net.layers.items():
        layer.trainable = (name not in frozen
                           and not isinstance(layer, keras.layers.BatchNormalization))


def _head_on_pooled_features(parts, settings, bank: FeatureBank, labels, partition, k,
                             history: dict) -> None:
    """Phase 1 for an image-only model: the head alone, on pooled features of every copy."""
    import keras

    cut_in = keras.Input(bank.features.shape[2:])
    pooled = keras.Model(cut_in, parts.head.pool(parts.backbone.features(cut_in, parts.cut)))
    head_in = keras.Input((pooled.output.shape[-1],))
    x = head_in
    for layer in parts.head.dense:
        x = layer(x)
    head = keras.Model(head_in, x)
    copies = bank.features.shape[0]
    train_x = np.concatenate([pooled.predict(bank.gather(partition.train, [c] * len(partition.train)),
                                             batch_size=PHASE1_BATCH, verbose=0)
                              for c in range(copies)])
    train_y = np.tile(labels[partition.train], copies)
    val_x = pooled.predict(bank.gather(partition.val, [0] * len(partition.val)),
                           batch_size=PHASE1_BATCH, verbose=0)
    weights = class_weights(labels[partition.train], k)[train_y].astype(np.float32)
    head.compile(optimizer=keras.optimizers.Adam(settings.head_learning_rate),
                 loss=_loss())
    stop = _EarlyStop(head, settings.patience)
    rng = np.random.default_rng([settings.seed, 1])
    for epoch in range(settings.head_epochs):
        order = rng.permutation(len(train_x))
        fit = head.fit(train_x[order], _one_hot(train_y[order], k), sample_weight=weights[order],
                       batch_size=PHASE1_BATCH, epochs=1, verbose=0, shuffle=False)
        val_loss, val_acc = _val_metrics(head.predict(val_x, verbose=0), labels[partition.val])
        _record(history, 1, epoch, fit.history["loss"][0], val_loss, val_acc,
                settings.head_learning_rate)
        if stop.update(epoch, val_loss):
            break
    stop.restore()


def _record(history: dict, phase: int, epoch: int, loss: float, val_loss: float, val_acc: float,
            lr: float) -> None:
    for key, value in (("phase", phase), ("epoch", epoch + 1), ("loss", loss),
                       ("val_loss", val_loss), ("val_accuracy", val_acc), ("learning_rate", lr)):
        history.setdefault(key, []).append(float(value))
    log.info("phase %d epoch %d: loss %.4f val_loss %.4f val_accuracy %.4f lr %.2g", phase,
             epoch + 1, loss, val_loss, val_acc, lr)


class _BankBatches:
    """Per-epoch batches of bank copies (and, for a hybrid, their masked images)."""

    def __init__(self, bank: FeatureBank, images: Sequence[np.ndarray], labels: np.ndarray,
                 indices: np.ndarray, runner: Optional[PreprocessRunner], batch_size: int, k: int):
        self.bank, self.images, self.labels, self.indices = bank, images, labels, indices
        self.runner, self.batch_size, self.k = runner, batch_size, k
        self.weights = class_weights(labels[indices], k)

    def epoch(self, rng: np.random.Generator, augmented: bool = True):
        order = rng.permutation(self.indices)
        copies = (rng.integers(1, self.bank.features.shape[0], len(order)) if augmented
                  else np.zeros(len(order), np.int64))
        for start in range(0, len(order), self.batch_size):
            idx, cps = order[start:start + self.batch_size], copies[start:start + self.batch_size]
            x = {"cut": self.bank.gather(idx, cps)}
            if self.runner is not None:
                pixels = [self.bank.augmented(self.images[i], int(i), int(c)) for i, c in zip(idx, cps)]
                x["masked_image"] = run_graph(self.runner, pixels)["masked_image"]
            y = self.labels[idx]
            yield x, _one_hot(y, self.k), self.weights[y].astype(np.float32)


def _upper_epochs(parts, settings, batches: _BankBatches, val: _BankBatches, lr0: float,
                  epochs: int, phase: int, history: dict) -> tuple[int, float]:
    """Train ``upper`` for up to ``epochs`` (cosine rate from ``lr0``); returns (images, seconds)."""
    import keras

    upper = parts.upper
    upper.compile(optimizer=keras.optimizers.Adam(lr0), loss=_loss())
    stop = _EarlyStop(upper, settings.patience)
    rng = np.random.default_rng([settings.seed, phase])
    seen, seconds = 0, 0.0
    for epoch in range(epochs):
        lr = cosine_learning_rate(epoch, epochs, lr0, warmup=1 if epochs > 3 else 0)
        upper.optimizer.learning_rate.assign(lr)
        started, losses = time.perf_counter(), []
        for x, y, w in batches.epoch(rng):
            losses.append(float(np.ravel(upper.train_on_batch(x, y, sample_weight=w))[0]))
            seen += len(y)
        seconds += time.perf_counter() - started
        logits, labels = _ordered_predictions(upper, val)
        val_loss, val_acc = _val_metrics(logits, labels)
        _record(history, phase, epoch, float(np.mean(losses)), val_loss, val_acc, lr)
        if stop.update(epoch, val_loss):
            break
    stop.restore()
    return seen, seconds


def _ordered_predictions(upper, val: _BankBatches) -> tuple[np.ndarray, np.ndarray]:
    logits, labels = [], []
    for x, y, _ in val.epoch(np.random.default_rng(0), augmented=False):
        logits.append(np.asarray(upper(x, training=False)))
        labels.append(y.argmax(1))
    return np.concatenate(logits), np.concatenate(labels)


def fit_two_phase(parts, config, settings, bank: FeatureBank, images: Sequence[np.ndarray],
                  labels: np.ndarray, partition: Partition,
                  runner: Optional[PreprocessRunner]) -> FitOutcome:
    """Phase 1 (head) then phase 2 (upper blocks); returns the full model, restored to the best
    validation epoch of phase 2.

    Args:
        runner: the preprocessing graph, needed for a hybrid's masked images; None otherwise.
    """
    started = time.perf_counter()
    k = config.num_classes
    history: dict = {}
    hybrid_runner = runner if config.hybrid else None
    batches = _BankBatches(bank, images, labels, partition.train, hybrid_runner,
                           settings.batch_size, k)
    val = _BankBatches(bank, images, labels, partition.val, hybrid_runner, settings.batch_size, k)
    _freeze_backbone(parts, None)
    if config.hybrid:
        _upper_epochs(parts, settings, batches, val, settings.head_learning_rate,
                      settings.head_epochs, 1, history)
    else:
        _head_on_pooled_features(parts, settings, bank, labels, partition, k, history)
    _freeze_backbone(parts, parts.cut)
    seen, seconds = _upper_epochs(parts, settings, batches, val, settings.learning_rate,
                                  settings.epochs, 2, history)
    return FitOutcome(model=parts.full, history=history, seconds=time.perf_counter() - started,
                      train_images_per_second=seen / seconds if seconds else 0.0)
