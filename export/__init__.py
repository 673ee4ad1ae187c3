"""leukedge export: Keras -> the one-file ONNX model, quantization, Triton repositories.

Depends on :mod:`leukedge.runtime` only (never on ``leukedge.train``). Importing this package
imports neither TensorFlow, tf2onnx nor onnx: names are loaded on first use, and the functions
that need those libraries import them.

Example:
    >>> from leukedge.export import export_keras, quantize_model, QuantizeOptions
    >>> export_keras(model, "runs/a/model.onnx", record, parity_images=test_pixels,
    ...              parity_source="test split", train_images=train_pixels)
    >>> quantize_model("runs/a/model.onnx", "runs/a/model-int8.onnx",
    ...                QuantizeOptions("static", tuple(calibration_files("calib/"))))
"""

from __future__ import annotations

import importlib

_LAZY = {
    "ImageCalibrationReader": ".calibration_images", "calibration_files": ".calibration_images",
    "calibration_set_sha256": ".calibration_images",
    "AccuracyGateError": ".errors", "ExportError": ".errors", "ModelTooLargeError": ".errors",
    "ParityError": ".errors", "QuantizationError": ".errors", "UnsupportedOpError": ".errors",
    "GateResult": ".gate",
    "available_memory_bytes": ".memory", "check_conversion_memory": ".memory",
    "estimate_conversion_bytes": ".memory",
    "EnsembleResult": ".ensemble", "make_ensemble": ".ensemble",
    "ExportResult": ".onnx_export", "export_keras": ".onnx_export",
    "export_classical": ".onnx_export",
    "ParityReport": ".parity", "compare_probabilities": ".parity",
    "QuantizeOptions": ".quantize", "QuantizeResult": ".quantize", "quantize_model": ".quantize",
    "write_triton_repository": ".triton",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_LAZY)
