"""Logits of a Keras classifier for decoded images, through the model's preprocessing graph."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from leukedge.runtime.graph.runner import PreprocessRunner

from .data import run_graph


def predict_logits(model, images: Sequence[np.ndarray], runner: PreprocessRunner,
                   batch_size: int = 32) -> np.ndarray:
    """float32 [N, classes] logits of un-augmented uint8 RGB images."""
    if not len(images):
        return np.zeros((0, int(model.output.shape[-1])), np.float32)
    parts = []
    for start in range(0, len(images), batch_size):
        x = run_graph(runner, list(images[start:start + batch_size]))
        parts.append(np.asarray(model(x, training=False), np.float32))
    return np.concatenate(parts)
