"""What this CPU offers for INT8 inference.

ONNX Runtime's x86 INT8 kernels multiply uint8 activations by int8 weights. With VNNI
(AVX512-VNNI, AVX-VNNI, AMX) the products accumulate in 32 bits; without it (SSE4/AVX2, older
AVX-512) its matrix-product kernels first sum pairs of products in 16 bits and can saturate,
which costs accuracy unless those weights were quantized to 7 bits (``leukedge quantize
--reduce-range --depthwise-8bit``). So an INT8 model with full 8-bit weights is run on VNNI CPUs
only; the bundled ``default`` name picks the ``-int8-avx2`` file on other x86 CPUs and FP32
where the CPU cannot be told (:mod:`leukedge.runtime.models`).

Detection: the flags of /proc/cpuinfo (Linux), else numpy's own dispatch table (AVX512-VNNI).
This module is the one reader of the CPU's description; benchmarks record it through
:func:`cpuinfo`.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path
from typing import Optional

VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


@functools.lru_cache(maxsize=1)
def cpuinfo() -> dict[str, str]:
    """The first processor block of /proc/cpuinfo as key -> value ({} where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return {}
    out: dict[str, str] = {}
    for line in text.split("\n\n")[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def cpu_flags() -> Optional[frozenset[str]]:
    """The CPU's feature flags (avx2, avx512_vnni, ...), or None where they cannot be read."""
    flags = cpuinfo().get("flags")
    return frozenset(flags.split()) if flags else None


@functools.lru_cache(maxsize=1)
def has_int8_vnni() -> Optional[bool]:
    """True / False on x86-64, None where it does not apply or cannot be told (other CPUs)."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return None
    flags = cpu_flags()
    if flags is not None:
        return any(f in flags for f in VNNI_FLAGS)
    try:
        import numpy as np

        features = np._core._multiarray_umath.__cpu_features__  # numpy's runtime dispatch
        return bool(features.get("AVX512VNNI"))
    except (AttributeError, ImportError):
        return None
