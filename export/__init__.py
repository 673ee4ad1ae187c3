"""leukedge export: Keras -> ONNX, quantization, comparison and benchmarking.

Depends on :mod:`leukedge.runtime` only (never on ``leukedge.train``). Importing this package
imports neither TensorFlow, tf2onnx, onnx nor matplotlib: the functions that need them import them.

Example:
    >>> from leukedge.export import export_keras, quantize_model, QuantizeOptions
    >>> export_keras(model, "runs/a/model.onnx", run_json, parity_images=test_paths)
    >>> quantize_model("runs/a/model.onnx", "runs/a/model-int8.onnx",
    ...                QuantizeOptions("static", tuple(calibration_files("calib/"))))
"""

from .bench import bench_model, format_bench_table
from .calibration import ImageCalibrationReader, calibration_files, calibration_set_sha256
from .compare import Comparison, compare_candidates, compare_models
from .errors import (AccuracyGateError, ExportError, ModelTooLargeError, ParityError,
                     QuantizationError, UnsupportedOpError)
from .evaluation import LabelledSet, load_labelled
from .gate import GateResult
from .memory import available_memory_bytes, check_conversion_memory, estimate_conversion_bytes
from .onnx_export import ExportResult, export_keras, keras_predictor
from .parity import ParityReport, compare_probabilities
from .quantize import QuantizeOptions, QuantizeResult, quantize_model
from .report import render, write_report

__all__ = [
    "bench_model", "format_bench_table",
    "ImageCalibrationReader", "calibration_files", "calibration_set_sha256",
    "Comparison", "compare_candidates", "compare_models",
    "AccuracyGateError", "ExportError", "ModelTooLargeError", "ParityError",
    "QuantizationError", "UnsupportedOpError",
    "LabelledSet", "load_labelled", "GateResult",
    "available_memory_bytes", "check_conversion_memory", "estimate_conversion_bytes",
    "ExportResult", "export_keras", "keras_predictor",
    "ParityReport", "compare_probabilities",
    "QuantizeOptions", "QuantizeResult", "quantize_model",
    "render", "write_report",
]
