"""Size guard for Keras -> ONNX conversion: refuse before TensorFlow eats the machine.

tf2onnx freezes the graph, runs Grappler and builds the ONNX proto, holding several copies of
every weight at once. Measured on the project's 24 GB development machine: a 20.4 M-parameter
DenseNet-201 hybrid converted with ~3.5 GB; the 225.8 M-parameter Flatten variant was killed at
23.3 GB. A straight line through those points, ``1.5 GB + 100 bytes per parameter``, gives
3.5 GB and 24.1 GB: about 25 float32 copies of the weights on top of TensorFlow itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from .errors import ModelTooLargeError

BASE_BYTES = 1.5e9
BYTES_PER_PARAMETER = 100.0
GB = 1e9


def estimate_conversion_bytes(n_parameters: int) -> int:
    """Peak memory (bytes) that converting a model of ``n_parameters`` weights is expected to need."""
    if n_parameters < 0:
        raise ValueError(f"n_parameters must be >= 0, got {n_parameters}")
    return int(BASE_BYTES + BYTES_PER_PARAMETER * n_parameters)


def available_memory_bytes(meminfo: str | os.PathLike = "/proc/meminfo") -> Optional[int]:
    """``MemAvailable`` from /proc/meminfo in bytes, or None where the file does not exist."""
    try:
        text = Path(meminfo).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024  # the kernel reports kB
    return None


def check_conversion_memory(n_parameters: int, available: Optional[int] = None) -> int:
    """Raise :class:`ModelTooLargeError` when the conversion would not fit in memory.

    Args:
        n_parameters: the Keras model's parameter count (``model.count_params()``).
        available: bytes available; None reads MemAvailable from /proc/meminfo (no check when
            that is unknown, e.g. on macOS).

    Returns:
        The estimated peak memory in bytes.
    """
    needed = estimate_conversion_bytes(n_parameters)
    if available is None:
        available = available_memory_bytes()
    if available is not None and needed > available:
        raise ModelTooLargeError(
            f"Refusing to convert: a model of {n_parameters / 1e6:.1f} M parameters needs about "
            f"{needed / GB:.1f} GB of memory to convert (1.5 GB + 100 bytes per parameter, measured "
            f"with tf2onnx), and only {available / GB:.1f} GB is available. The 225.8 M-parameter "
            "Flatten variant was killed at 23.3 GB on a 24 GB machine. Use a model with pooled "
            "segmentation features (~20 M parameters), free memory, or convert on a larger machine.")
    return needed
