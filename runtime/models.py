"""The models bundled with leukedge, and how a model argument becomes a file.

A wheel ships its models under ``leukedge/runtime/assets/models/leukedge-<name>.onnx``; each is
selectable by name (``--model default-fp32``, ``Classifier("fast-int8")``). A name without a
precision (``default``, ``fast``) picks the INT8 file on CPUs with VNNI, the INT8 file made for
AVX2 (``default-int8-avx2``) on x86 CPUs without VNNI, where INT8 kernels with full 8-bit
weights can saturate, and the FP32 file wherever the CPU cannot be told
(:mod:`leukedge.runtime.cpu`) or the variant is not bundled.
``default`` is what ``leukedge infer`` uses when no model is given. What each is, measured, is
in docs/RESULTS.md and in the models' own contracts (``leukedge models``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from .cpu import has_int8_vnni
from .errors import LeukedgeError

MODELS_DIR = Path(__file__).resolve().parent / "assets" / "models"
SAMPLES_DIR = MODELS_DIR.parent / "samples"  # the bundled sample smears, <class>/<file>.jpg
PREFIX = "leukedge-"
DEFAULT_MODEL = "default"
# name suffix of the INT8 files for x86 CPUs without VNNI: 7-bit weights where ONNX Runtime's
# kernels add pairs of products in 16 bits, 8-bit in the depthwise convolutions
AVX2_VARIANT = "int8-avx2"


class ModelNotFoundError(LeukedgeError, FileNotFoundError):
    """A requested model file (bundled or user path) does not exist."""


def bundled_models() -> dict[str, Path]:
    """Bundled model name -> file, sorted by name (empty in an installation without models)."""
    if not MODELS_DIR.is_dir():
        return {}
    return {p.stem[len(PREFIX):]: p for p in sorted(MODELS_DIR.glob(f"{PREFIX}*.onnx"))}


def best_variant(name: str, bundled: dict[str, Path]) -> Optional[str]:
    """The file a precision-free ``name`` stands for on this CPU, of those bundled:

    - ``name-int8`` (full 8-bit weights) on a CPU with VNNI, whose INT8 kernels are exact;
    - ``name-int8-avx2`` (:data:`AVX2_VARIANT`) on an x86 CPU without VNNI (AVX2), where
      full 8-bit weights can saturate; its weights cannot (``leukedge quantize --reduce-range
      --depthwise-8bit``); bundled only after it gave, under an emulated AVX2-only CPU, the
      same results as natively and FP32's labels (docs/RESULTS.md, "INT8 and the CPU");
    - else ``name-fp32``: where the CPU cannot be told (no /proc/cpuinfo with numpy 1.x, ARM)
      FP32 is the file known to be exact;
    - else whichever INT8 file there is.
    """
    return _pick({"int8": f"{name}-int8", AVX2_VARIANT: f"{name}-{AVX2_VARIANT}",
                  "fp32": f"{name}-fp32"}, lambda n: n in bundled)


def _pick(files: dict, present) -> Optional[str]:
    """Of ``files`` (precision -> file, those for which ``present`` holds), the one this CPU
    runs exactly (the rule of :func:`best_variant`)."""
    vnni = has_int8_vnni()
    if vnni is True and present(files["int8"]):
        return files["int8"]
    if vnni is False and present(files[AVX2_VARIANT]):
        return files[AVX2_VARIANT]
    return next((files[p] for p in ("fp32", "int8", AVX2_VARIANT) if present(files[p])), None)


def run_folder_file(precision: str = "fp32") -> str:
    """A run folder's file for ``precision``: ``model.onnx`` (FP32), ``model-int8.onnx``,
    ``model-int8-avx2.onnx`` (what train, crossval-eval and adapt write)."""
    return "model.onnx" if precision == "fp32" else f"model-{precision}.onnx"


def run_folder_model(folder: Path) -> Optional[Path]:
    """The model file of a run folder (:func:`run_folder_file`: FP32, with its INT8 files
    where made) that this CPU runs exactly, by the rule of :func:`best_variant`; None when the
    folder has none of them."""
    files = {p: run_folder_file(p) for p in ("fp32", "int8", AVX2_VARIANT)}
    chosen = _pick(files, lambda n: (folder / n).is_file())
    return folder / chosen if chosen else None


def _looks_like_a_name(text: str) -> bool:
    return os.sep not in text and "/" not in text and not text.endswith(".onnx")


def resolve_model(model: str | os.PathLike | None = None) -> Path:
    """A bundled model's name, a path, or a run folder (the file of it that this CPU runs
    exactly, :func:`run_folder_model`) -> the model file.

    Raises:
        ModelNotFoundError: no such bundled model, or no such file; the message lists the
            bundled names.
    """
    bundled = bundled_models()
    text = DEFAULT_MODEL if model is None else str(model)
    if text in bundled:
        return bundled[text]
    variant = best_variant(text, bundled) if _looks_like_a_name(text) else None
    if variant is not None:
        return bundled[variant]
    path = Path(text)
    if path.is_file():
        return path
    if path.is_dir():
        chosen = run_folder_model(path)
        if chosen is None:
            raise ModelNotFoundError(f"{path}: a folder without model.onnx (a run folder of "
                                     "`leukedge train` or `leukedge adapt` has one)")
        return chosen
    names = ", ".join(_names(bundled)) or "none in this installation"
    if model is None or _looks_like_a_name(text):
        raise ModelNotFoundError(
            f"No bundled model {text!r} (bundled: {names}). Pass a model file with --model "
            "PATH.onnx, or make one with `leukedge export`.")
    raise ModelNotFoundError(f"{path}: model file not found (bundled models, selectable by "
                             f"name: {names})")


def _names(bundled: dict[str, Path]) -> list[str]:
    """Bundled names, with the precision-free aliases first."""
    suffixes = ("-int8", "-fp32", f"-{AVX2_VARIANT}")
    aliases = sorted({n[:n.rindex(s)] for n in bundled for s in suffixes if n.endswith(s)})
    return aliases + list(bundled)


def default_model_path(name: str = DEFAULT_MODEL) -> Path:
    """Path of a bundled model (default: the one ``leukedge infer`` uses)."""
    return resolve_model(name)
