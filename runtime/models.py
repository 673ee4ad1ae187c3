"""Where the bundled default models live inside the installed package.

A leukedge wheel may ship one default classifier per precision under
``leukedge/runtime/assets/models/leukedge-default-<precision>.onnx``. A source checkout or a
runtime-only wheel built before a model was trained has none; asking for it then fails with an
error that says how to get or point to a model, never with a bare ``FileNotFoundError``.
"""

from __future__ import annotations

from pathlib import Path

from .contract import PRECISIONS

MODELS_DIR = Path(__file__).resolve().parent / "assets" / "models"
DEFAULT_MODEL_TEMPLATE = "leukedge-default-{precision}.onnx"


class ModelNotFoundError(FileNotFoundError):
    """A requested model file (bundled default or user path) does not exist."""


def default_model_path(precision: str = "int8") -> Path:
    """Path of the bundled default model of a precision.

    Args:
        precision: "int8" (the microscope-PC default), "fp16" or "fp32".

    Returns:
        The path of the ONNX file inside the installed package.

    Raises:
        ValueError: ``precision`` is not one of the known precisions.
        ModelNotFoundError: this installation ships no such model.

    Example:
        >>> default_model_path("int8").name
        'leukedge-default-int8.onnx'
    """
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}. Valid: {', '.join(PRECISIONS)}")
    path = MODELS_DIR / DEFAULT_MODEL_TEMPLATE.format(precision=precision)
    if not path.is_file():
        shipped = sorted(p.name for p in MODELS_DIR.glob("*.onnx")) if MODELS_DIR.is_dir() else []
        raise ModelNotFoundError(
            f"No bundled default model ({precision}) in this installation: {path} does not exist "
            f"(bundled models: {', '.join(shipped) or 'none'}). Point to a model explicitly, e.g. "
            "`leukedge infer --model path/to/model.onnx IMAGES...` or "
            "`Classifier('path/to/model.onnx')`; make one with `leukedge export` (and "
            "`leukedge quantize` for int8), or install a leukedge release that bundles one.")
    return path
