"""The training input pipeline: decoded images in memory -> augmented uint8 -> the model's own
preprocessing graph -> batches.

Each image is decoded once (:mod:`leukedge.train.image_cache` keeps the decoded pixels on disk
between runs) and kept as uint8 at its native size. Every epoch augments at native size and then
runs :class:`~leukedge.modelkit.graph.runner.PreprocessRunner`, the very graph the exported model
carries, which resizes to the model's input size, normalises and computes the HSV mask. Without
augmentation the training inputs are therefore bit-identical to what the deployed model computes.

Batches are built in Python (OpenCV and ONNX Runtime release the GIL; TensorFlow trains
meanwhile thanks to ``prefetch``). The order of epoch ``e`` comes from
``np.random.default_rng([seed, e])`` and the augmentation of its batch ``i`` from
``default_rng([seed, e, i])``, so a run is reproducible.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from leukedge.modelkit.dataset import Dataset, ImageRecord
from leukedge.modelkit.graph.runner import PreprocessRunner
from leukedge.runtime.decode import ImageError, load_image

from .augment import AugmentSpec, augment


def load_images(dataset: Dataset, records: Sequence[ImageRecord]
                ) -> tuple[list[np.ndarray], list[ImageRecord], dict[str, str]]:
    """Decode ``records``: (images, records that decoded, {relpath: reason} of those that failed)."""
    images, kept, bad = [], [], {}
    for record in records:
        try:
            images.append(load_image(dataset.path(record)))
            kept.append(record)
        except ImageError as e:
            bad[record.relpath] = e.reason
    return images, kept, bad


def class_weights(labels: Sequence[int], num_classes: int) -> np.ndarray:
    """Balanced weights ``n / (k * count)`` per class (0 for an absent class)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(float)
    n = counts.sum()
    return np.divide(n, num_classes * counts, out=np.zeros(num_classes), where=counts > 0)


def run_graph(runner: PreprocessRunner, images: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """The preprocessing graph over images that may differ in size (one graph call per size)."""
    if len({im.shape for im in images}) == 1:
        return runner(np.stack(images))
    parts = [runner(im[None]) for im in images]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


class BatchSource:
    """A re-iterable batch generator; each call starts the next epoch.

    Args:
        images: uint8 RGB images (any size).
        labels: class indices.
        runner: the model's preprocessing graph.
        batch_size: images per batch (the last batch may be smaller).
        num_classes: length of the one-hot targets.
        augment_spec: augmentation, or None for none.
        shuffle: reshuffle every epoch.
        seed: base seed of the order and the augmentation.
        weights: per-class sample weights to yield as a third element, or None.
    """

    def __init__(self, images, labels, runner: PreprocessRunner, batch_size: int,
                 num_classes: int, augment_spec: Optional[AugmentSpec] = None,
                 shuffle: bool = False, seed: int = 0, weights: Optional[np.ndarray] = None):
        self.images, self.labels = images, np.asarray(labels, dtype=np.int64)
        self.runner, self.batch_size, self.num_classes = runner, int(batch_size), num_classes
        self.augment_spec, self.shuffle, self.seed, self.weights = augment_spec, shuffle, seed, weights
        self.inputs = ("image", "masked_image") if runner.spec.masked_input else ("image",)
        self.epoch = -1
        self._order = np.arange(len(self.images))

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def batch(self, indices: np.ndarray, rng: np.random.Generator):
        """One batch: ({input name: array}, one-hot[, sample weights])."""
        chosen = [self.images[i] for i in indices]
        if self.augment_spec is not None:
            chosen = [augment(im, self.augment_spec, rng) for im in chosen]
        x = run_graph(self.runner, chosen)
        y = np.eye(self.num_classes, dtype=np.float32)[self.labels[indices]]
        if self.weights is None:
            return x, y
        return x, y, self.weights[self.labels[indices]].astype(np.float32)

    def batch_at(self, index: int):
        """Batch ``index`` of the current epoch; asking for batch 0 starts the next epoch.

        The epoch's order comes from ``default_rng([seed, epoch])`` and each batch's augmentation
        from ``default_rng([seed, epoch, index])``, so batches do not depend on call timing.
        """
        index = int(index)
        if index == 0:
            self.epoch += 1
            rng = np.random.default_rng([self.seed, self.epoch])
            self._order = (rng.permutation(len(self.images)) if self.shuffle
                           else np.arange(len(self.images)))
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return self.batch(self._order[index * self.batch_size:(index + 1) * self.batch_size], rng)

    def __call__(self):
        """All batches of the next epoch."""
        for index in range(len(self)):
            yield self.batch_at(index)


def to_tf_dataset(source: BatchSource):
    """Wrap a :class:`BatchSource` in a prefetching ``tf.data.Dataset`` of known length.

    Batches come from ``tf.numpy_function`` over the batch indices, called in order (no parallel
    calls), which keeps the epochs deterministic. ``Dataset.from_generator`` was 1.5x slower per
    step here, with 4x the system time: its op lowers glibc's ``M_TRIM_THRESHOLD`` for the whole
    process, so memory is returned to the OS and faulted in again every step.
    """
    import tensorflow as tf

    h, w = source.runner.spec.input_size
    names = source.inputs
    n_out = len(names) + 1 + (source.weights is not None)

    def load(index):
        x, y, *weights = source.batch_at(index)
        return (*(x[name] for name in names), y, *weights)

    def to_batch(index):
        out = tf.numpy_function(load, [index], [tf.float32] * n_out)
        shapes = [(None, h, w, 3)] * len(names) + [(None, source.num_classes), (None,)]
        for tensor, shape in zip(out, shapes):
            tensor.set_shape(shape)
        return (dict(zip(names, out[:len(names)])), *out[len(names):])

    ds = tf.data.Dataset.range(len(source)).map(to_batch)
    return ds.prefetch(2)
