"""Learning-rate schedules shared by both training methods."""

from __future__ import annotations

import math

WARMUP_EPOCHS = 2
FINAL_LR_FRACTION = 0.01


def cosine_learning_rate(epoch: int, epochs: int, initial: float,
                         warmup: int = WARMUP_EPOCHS) -> float:
    """The cosine schedule's rate for 0-based ``epoch`` of ``epochs``: a linear warm-up, then
    cosine decay to 1% of ``initial`` at the last epoch."""
    warmup = min(warmup, max(epochs - 1, 0))
    if epoch < warmup:
        return initial * (epoch + 1) / (warmup + 1)
    span = max(epochs - 1 - warmup, 1)
    progress = min((epoch - warmup) / span, 1.0)
    floor = initial * FINAL_LR_FRACTION
    return floor + (initial - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
