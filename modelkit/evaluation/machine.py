"""Describe the machine a benchmark ran on: results mean little without the CPU and its flags.

INT8 speed and exactness depend on AVX512-VNNI / AVX-VNNI / AMX: record them with every number.
Standard library and the runtime's affinity-aware CPU count, plus onnxruntime's version when
installed.
"""

from __future__ import annotations

import os
import platform

from leukedge.runtime.cpu import VNNI_FLAGS, cpu_flags, cpuinfo
from leukedge.runtime.session import usable_cpus

INTERESTING_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
                     "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16")


def _package_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def describe_machine() -> dict:
    """CPU model, core counts, SIMD flags relevant to INT8/FP16, and software versions."""
    flags = cpu_flags() or frozenset()
    return {
        "cpu_model": cpuinfo().get("model name") or platform.processor() or platform.machine(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "cpu_flags": {f: f in flags for f in INTERESTING_FLAGS} if flags else {},
        "int8_acceleration": _int8_word(flags),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": _package_version("onnxruntime") or _package_version("onnxruntime-gpu"),
        "leukedge": _package_version("leukedge"),
    }


def _int8_word(flags: frozenset[str]) -> str:
    if not flags:
        return "unknown (no /proc/cpuinfo)"
    if "amx_int8" in flags:
        return "AMX + VNNI"
    if flags & set(VNNI_FLAGS):
        return "VNNI"
    if "avx2" in flags:
        return "AVX2 without VNNI (INT8 gains smaller than on VNNI CPUs)"
    return "no AVX2"


def machine_line(machine: dict) -> str:
    """One line for a table footer."""
    return (f"{machine['cpu_model']}, {machine['usable_cpus']} usable CPUs, INT8: "
            f"{machine['int8_acceleration']}, onnxruntime {machine['onnxruntime']}")
