"""Logits of a Keras classifier for decoded images, through the model's preprocessing graph."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from leukedge.modelkit.graph.runner import PreprocessRunner

from .data import run_graph


def predict_logits(model, images: Sequence[np.ndarray], runner: PreprocessRunner,
                   batch_size: int = 32) -> np.ndarray:
    """float32 [N, classes] logits of un-augmented uint8 RGB images (a Keras model, or a
    :class:`~leukedge.train.classical.ClassicalModel`, whose logits are log-probabilities)."""
    classical = hasattr(model, "logits")
    if not len(images):
        classes = 0 if classical else int(model.output.shape[-1])
        return np.zeros((0, classes), np.float32)
    parts = []
    for start in range(0, len(images), batch_size):
        x = run_graph(runner, list(images[start:start + batch_size]))
        out = model.logits(x) if classical else model(x, training=False)
        parts.append(np.asarray(out, np.float32))
    return np.concatenate(parts)
