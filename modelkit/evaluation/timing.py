"""Wall-clock timing of model calls: warm-up, then per-call times and their percentiles."""

from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np


def time_calls(fn: Callable[[], object], iterations: int, warmup: int) -> np.ndarray:
    """Call ``fn`` ``warmup`` times untimed, then ``iterations`` times; seconds per call."""
    if iterations < 1 or warmup < 0:
        raise ValueError(f"iterations must be >= 1 and warmup >= 0, got {iterations} and {warmup}")
    for _ in range(warmup):
        fn()
    times = np.empty(iterations)
    for i in range(iterations):
        start = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - start
    return times


def percentiles_ms(times: np.ndarray, points: Sequence[int] = (50, 90, 99)) -> dict[str, float]:
    """{'p50_ms': ..., ...} of per-call times given in seconds."""
    return {f"p{p}_ms": float(np.percentile(times, p) * 1e3) for p in points}


def batch_of(arrays: np.ndarray, size: int) -> np.ndarray:
    """``size`` rows taken cyclically from ``arrays`` (a benchmark batch from a few images)."""
    idx = np.arange(size) % len(arrays)
    return np.ascontiguousarray(arrays[idx])
